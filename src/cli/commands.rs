//! The operator commands of the `tickfan` binary, beside running the broker
//! (which stays what `tickfan` with no command does):
//!
//! - `tickfan check-config [FILE]`: loads the configuration exactly as the
//!   broker would (the file, or `--config`, then every flag), reads the
//!   files it names (TLS certificate and key, JWT key or JWK Set), prints
//!   the effective configuration as TOML with every secret redacted, and
//!   exits 0, or 2 with the error naming the key — for CI.
//! - `tickfan gen-token --sub USER --sub-topics 'prices.>' --ttl 1h`: a JWT
//!   signed with the configured HMAC secret (`jwt.hmac_secret`), for
//!   testing; it is verified by the broker's own verifier before it is
//!   printed.
//!
//! Both print their result on stdout and errors on stderr, so a script can
//! capture one without the other.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use toml::{Table, Value};

use crate::config::{self, Config};
use crate::server;

/// The exit status of a configuration (or token) the command refused, as
/// for the broker refusing its configuration at start.
pub const CONFIG_ERROR_EXIT: u8 = 2;

/// What shows in place of a secret value.
const REDACTED: &str = "<redacted>";

/// An operator command.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Operation {
    /// Validate the configuration (FILE, or --config, plus every flag), print it with secrets redacted, and exit 0 if it is valid or 2 if not
    CheckConfig {
        /// The config file to check (overrides --config)
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Print a JWT signed with the configured jwt.hmac_secret, for testing
    GenToken {
        /// The user, the token's `sub`
        #[arg(long, value_name = "USER")]
        sub: String,
        /// Topics or patterns it may subscribe to (`tf.sub`), e.g. 'prices.>'; repeatable or comma-separated
        #[arg(long, value_name = "PATTERNS", value_delimiter = ',')]
        sub_topics: Vec<String>,
        /// Topics or patterns it may publish to (`tf.pub`); repeatable or comma-separated
        #[arg(long, value_name = "PATTERNS", value_delimiter = ',')]
        pub_topics: Vec<String>,
        /// How long it is valid: seconds, or a number with s, m, h or d, e.g. 1h
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
    },
}

/// Runs `operation` against the configuration `table` (already merged
/// with every flag); returns the exit status.
pub fn run(
    operation: &Operation,
    table: Result<Table, config::ConfigError>,
    out: &mut impl Write,
    err: &mut impl Write,
) -> u8 {
    let result = table.and_then(|table| {
        let config = Config::from_table(table.clone())?;
        Ok((table, config))
    });
    let (table, config) = match result {
        Ok(loaded) => loaded,
        Err(e) => {
            let _ = writeln!(err, "tickfan: {e}");
            return CONFIG_ERROR_EXIT;
        }
    };
    let outcome = match operation {
        Operation::CheckConfig { .. } => check_config(&table, &config, out),
        Operation::GenToken {
            sub,
            sub_topics,
            pub_topics,
            ttl,
        } => gen_token(&config, sub, sub_topics, pub_topics, *ttl, out),
    };
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "tickfan: {e}");
            CONFIG_ERROR_EXIT
        }
    }
}

/// Reads the files the configuration names, then prints it redacted.
fn check_config(table: &Table, config: &Config, out: &mut impl Write) -> Result<(), String> {
    server::check_files(config)?;
    let mut shown = table.clone();
    redact(&mut shown, "");
    let text = toml::to_string(&shown).map_err(|e| e.to_string())?;
    writeln!(
        out,
        "# tickfan: the configuration is valid; secrets are shown as {REDACTED:?}"
    )
    .and_then(|()| out.write_all(text.as_bytes()))
    .map_err(|e| e.to_string())
}

/// Replaces every non-empty value of a secret key with [`REDACTED`]
/// (each element of a list of tokens, so their number still shows).
fn redact(table: &mut Table, prefix: &str) {
    for (name, value) in table.iter_mut() {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Table(section) => redact(section, &key),
            _ if !config::is_secret_key(&key) => {}
            Value::String(secret) if !secret.is_empty() => *secret = REDACTED.to_owned(),
            Value::Array(items) => {
                for item in items {
                    *item = Value::String(REDACTED.to_owned());
                }
            }
            _ => {}
        }
    }
}

fn gen_token(
    config: &Config,
    sub: &str,
    sub_topics: &[String],
    pub_topics: &[String],
    ttl: Duration,
    out: &mut impl Write,
) -> Result<(), String> {
    let jwt = &config.jwt;
    let (Some(algorithm), Some(secret)) = (&jwt.algorithm, &jwt.hmac_secret) else {
        return Err(
            "gen-token signs with an HMAC secret: set jwt.algorithm (HS256, HS384 or HS512) \
             and jwt.hmac_secret"
                .to_owned(),
        );
    };
    let algorithm: Algorithm = algorithm
        .parse()
        .map_err(|_| format!("jwt.algorithm {algorithm:?} is not an algorithm"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut claims = serde_json::json!({
        "sub": sub,
        "iat": now,
        "exp": now.saturating_add(ttl.as_secs()),
        "tf.sub": sub_topics,
        "tf.pub": pub_topics,
    });
    if let Some(issuer) = &jwt.issuer {
        claims["iss"] = issuer.as_str().into();
    }
    if let Some(audience) = &jwt.audience {
        claims["aud"] = audience.as_str().into();
    }
    let token = encode(
        &Header::new(algorithm),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| {
        format!("cannot sign the token ({e}): jwt.algorithm must be HS256, HS384 or HS512")
    })?;
    // What the broker would say of it (a bad pattern, say), said now.
    server::verify_token(config, &token)?;
    writeln!(out, "{token}").map_err(|e| e.to_string())
}

/// Parses `90`, `90s`, `15m`, `1h` or `2d`; at least one second.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 15m, 1h or 2d"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    match n.checked_mul(unit_secs) {
        Some(0) => Err("the ttl must be at least one second".to_owned()),
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Err(format!("{text:?} is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "0", "1w", "h", "-1h", "1.5h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_redacted_and_counted() {
        let mut table = config::parse_over_default(
            "[auth]\npublish_tokens = [\"a\", \"b\"]\n[jwt]\nhmac_secret = \"s\"\n",
            "t",
        )
        .unwrap();
        redact(&mut table, "");
        let text = toml::to_string(&table).unwrap();
        assert!(
            text.contains("publish_tokens = [\"<redacted>\", \"<redacted>\"]"),
            "{text}"
        );
        assert!(text.contains("hmac_secret = \"<redacted>\""), "{text}");
        assert!(text.contains("subscribe_tokens = []"), "{text}");
    }
}
