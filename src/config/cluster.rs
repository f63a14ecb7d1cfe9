//! The `[cluster]` section: how a node joins the others through NATS
//! JetStream, and the checks its keys need.
//!
//! Kept apart from the other sections because it is the only one about a
//! peer outside the process (the NATS servers): its rules (URLs, stream and
//! subject names as NATS allows them, credentials that exclude each other)
//! are NATS's, not tickfan's.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{in_range, int, off_if_empty, off_if_empty_path, ConfigError};

/// The `[cluster]` section; cluster mode is on when `nats_urls` is not empty.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `cluster.nats_urls`: the NATS servers; empty = single-node mode.
    pub nats_urls: Vec<String>,
    /// `cluster.stream`: the JetStream stream's name.
    pub stream: String,
    /// `cluster.subject_prefix`: ticks go to `<prefix>.t.<escaped topic>`.
    pub subject_prefix: String,
    /// `cluster.replicas`: copies of the stream (1 to 5).
    #[serde(deserialize_with = "int")]
    pub replicas: usize,
    /// `cluster.duplicate_window_ms`: how long JetStream remembers message ids.
    #[serde(deserialize_with = "int")]
    pub duplicate_window_ms: u64,
    /// `cluster.publish_window`: unacknowledged publishes at most.
    #[serde(deserialize_with = "int")]
    pub publish_window: usize,
    /// `cluster.publish_timeout_ms`: how long a publish is retried.
    #[serde(deserialize_with = "int")]
    pub publish_timeout_ms: u64,
    /// `cluster.ping_interval_ms`: the NATS client's ping period.
    #[serde(deserialize_with = "int")]
    pub ping_interval_ms: u64,
    /// `cluster.credentials_file`: a NATS `.creds` file.
    #[serde(deserialize_with = "off_if_empty_path")]
    pub credentials_file: Option<PathBuf>,
    /// `cluster.token`: a NATS token (secret).
    #[serde(deserialize_with = "off_if_empty")]
    pub token: Option<String>,
    /// `cluster.user`: a NATS user, with `password`.
    #[serde(deserialize_with = "off_if_empty")]
    pub user: Option<String>,
    /// `cluster.password`: the user's password (secret).
    #[serde(deserialize_with = "off_if_empty")]
    pub password: Option<String>,
    /// `cluster.tls_ca_file`: a CA to trust for the NATS servers' TLS.
    #[serde(deserialize_with = "off_if_empty_path")]
    pub tls_ca_file: Option<PathBuf>,
    /// `cluster.tls_cert_file`: a client certificate for NATS.
    #[serde(deserialize_with = "off_if_empty_path")]
    pub tls_cert_file: Option<PathBuf>,
    /// `cluster.tls_key_file`: the client certificate's key.
    #[serde(deserialize_with = "off_if_empty_path")]
    pub tls_key_file: Option<PathBuf>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("nats_urls", &self.nats_urls)
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("replicas", &self.replicas)
            .field("duplicate_window_ms", &self.duplicate_window_ms)
            .field("publish_window", &self.publish_window)
            .field("publish_timeout_ms", &self.publish_timeout_ms)
            .field("ping_interval_ms", &self.ping_interval_ms)
            .field("credentials_file", &self.credentials_file)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .finish()
    }
}

impl ClusterConfig {
    /// Whether cluster mode is on (some NATS server is named).
    pub fn enabled(&self) -> bool {
        !self.nats_urls.is_empty()
    }

    /// `cluster.duplicate_window_ms` as a [`Duration`].
    pub fn duplicate_window(&self) -> Duration {
        Duration::from_millis(self.duplicate_window_ms)
    }

    /// `cluster.publish_timeout_ms` as a [`Duration`].
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    /// `cluster.ping_interval_ms` as a [`Duration`].
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    /// Checks what the types do not say, naming the first key that is wrong.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        in_range("cluster.replicas", self.replicas, 1..=5)?;
        in_range(
            "cluster.duplicate_window_ms",
            self.duplicate_window_ms,
            1000..=86_400_000,
        )?;
        in_range("cluster.publish_window", self.publish_window, 1..=1_000_000)?;
        in_range(
            "cluster.publish_timeout_ms",
            self.publish_timeout_ms,
            100..=3_600_000,
        )?;
        // A retry is stored once only while JetStream still remembers its
        // message id: retrying past the duplicate window could store a
        // tick twice.
        if self.publish_timeout_ms > self.duplicate_window_ms {
            return Err(ConfigError::invalid(
                "cluster.publish_timeout_ms".to_owned(),
                format!(
                    "{} must be at most cluster.duplicate_window_ms ({}): a retry after the window could store a tick twice",
                    self.publish_timeout_ms, self.duplicate_window_ms
                ),
            ));
        }
        in_range(
            "cluster.ping_interval_ms",
            self.ping_interval_ms,
            100..=60_000,
        )?;
        for (index, url) in self.nats_urls.iter().enumerate() {
            if let Err(reason) = check_nats_url(url) {
                return Err(ConfigError::invalid(
                    format!("cluster.nats_urls[{index}]"),
                    format!("{url:?} {reason}"),
                ));
            }
        }
        if !is_name(&self.stream) {
            return Err(ConfigError::invalid(
                "cluster.stream".to_owned(),
                format!(
                    "{:?} must be 1 to 64 letters, digits, '-' or '_'",
                    self.stream
                ),
            ));
        }
        if self.subject_prefix.is_empty() || !self.subject_prefix.split('.').all(is_name) {
            return Err(ConfigError::invalid(
                "cluster.subject_prefix".to_owned(),
                format!(
                    "{:?} must be dot-separated tokens of letters, digits, '-' or '_'",
                    self.subject_prefix
                ),
            ));
        }
        let ways = [
            self.credentials_file.is_some(),
            self.token.is_some(),
            self.user.is_some(),
        ];
        if ways.iter().filter(|&&set| set).count() > 1 {
            return Err(ConfigError::invalid(
                "cluster.token".to_owned(),
                "cluster.credentials_file, cluster.token and cluster.user exclude each other: set one",
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            let key = if self.user.is_some() {
                "cluster.password"
            } else {
                "cluster.user"
            };
            return Err(ConfigError::invalid(
                key.to_owned(),
                "is required with the other of cluster.user and cluster.password",
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            let key = if self.tls_cert_file.is_some() {
                "cluster.tls_key_file"
            } else {
                "cluster.tls_cert_file"
            };
            return Err(ConfigError::invalid(
                key.to_owned(),
                "is required with the other of cluster.tls_cert_file and cluster.tls_key_file",
            ));
        }
        Ok(())
    }
}

/// A NATS server URL as the client takes it: `nats://`, `tls://` or no
/// scheme, then `host:port` (a missing port means 4222).
fn check_nats_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("nats://")
        .or_else(|| url.strip_prefix("tls://"))
        .unwrap_or(url);
    if rest.contains("://") {
        return Err("must use nats:// or tls://, e.g. \"nats://127.0.0.1:4222\"");
    }
    let host_port = rest.rsplit('@').next().unwrap_or(rest);
    if host_port.is_empty() || host_port.contains(['/', ' ', '?', '#']) {
        return Err("must be nats://HOST:PORT, e.g. \"nats://127.0.0.1:4222\"");
    }
    if let Some((_, port)) = host_port.rsplit_once(':') {
        if !host_port.ends_with(']') && port.parse::<u16>().is_err() {
            return Err("has a port that is not a number from 0 to 65535");
        }
    }
    Ok(())
}

/// A NATS name token: 1 to 64 of `[A-Za-z0-9_-]`.
fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn key_of(extra: &str) -> Option<String> {
        Config::from_toml_str(&format!("[cluster]\n{extra}"))
            .err()
            .and_then(|e| e.key().map(str::to_owned))
    }

    #[test]
    fn off_by_default() {
        let config = Config::embedded_default();
        assert!(!config.cluster.enabled());
        assert_eq!(config.cluster.stream, "TICKFAN");
        assert_eq!(config.cluster.replicas, 1);
    }

    #[test]
    fn good_cluster_parses() {
        let config = Config::from_toml_str(
            "[cluster]\nnats_urls = [\"nats://127.0.0.1:4222\", \"127.0.0.1:4223\", \"tls://h\"]\nreplicas = 3\n",
        )
        .unwrap();
        assert!(config.cluster.enabled());
        assert_eq!(config.cluster.replicas, 3);
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            key_of("nats_urls = [\"nats://a:1\", \"http://x\"]").as_deref(),
            Some("cluster.nats_urls[1]")
        );
        assert_eq!(
            key_of("nats_urls = [\"nats://a:port\"]").as_deref(),
            Some("cluster.nats_urls[0]")
        );
        assert_eq!(key_of("replicas = 0").as_deref(), Some("cluster.replicas"));
        assert_eq!(key_of("replicas = 6").as_deref(), Some("cluster.replicas"));
        assert_eq!(
            key_of("stream = \"a.b\"").as_deref(),
            Some("cluster.stream")
        );
        assert_eq!(
            key_of("subject_prefix = \"a..b\"").as_deref(),
            Some("cluster.subject_prefix")
        );
        assert_eq!(
            key_of("subject_prefix = \"a.*\"").as_deref(),
            Some("cluster.subject_prefix")
        );
        assert_eq!(
            key_of("duplicate_window_ms = 10").as_deref(),
            Some("cluster.duplicate_window_ms")
        );
        assert_eq!(
            key_of("publish_window = 0").as_deref(),
            Some("cluster.publish_window")
        );
        // Held HTTP publishes wait this long (plus a margin): a huge value
        // would overflow the deadline's Instant.
        for bad in [
            "publish_timeout_ms = 99",
            "publish_timeout_ms = 18446744073709551615",
        ] {
            assert_eq!(
                key_of(bad).as_deref(),
                Some("cluster.publish_timeout_ms"),
                "{bad}"
            );
        }
        assert_eq!(
            key_of("publish_timeout_ms = 200000").as_deref(),
            Some("cluster.publish_timeout_ms"),
            "longer than the default duplicate window"
        );
        assert_eq!(
            key_of("publish_timeout_ms = 200000\nduplicate_window_ms = 300000"),
            None
        );
        assert_eq!(key_of("user = \"u\"").as_deref(), Some("cluster.password"));
        assert_eq!(
            key_of("token = \"t\"\nuser = \"u\"\npassword = \"p\"").as_deref(),
            Some("cluster.token")
        );
        assert_eq!(
            key_of("tls_cert_file = \"c.pem\"").as_deref(),
            Some("cluster.tls_key_file")
        );
        assert_eq!(key_of("nats_url = []").as_deref(), Some("cluster.nats_url"));
    }

    #[test]
    fn secrets_are_not_shown() {
        let config = Config::from_toml_str("[cluster]\ntoken = \"s3cret-token\"\n").unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
        let error = Config::from_toml_str("[cluster]\npassword = 7\n").unwrap_err();
        assert!(matches!(error, ConfigError::WrongType { .. }));
        assert!(!error.to_string().contains('7'));
    }
}
