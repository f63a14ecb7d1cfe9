//! The broker's configuration: the TOML schema, its defaults and its checks.
//!
//! This module owns the one path every setting takes, whatever its source:
//! text is parsed into a [`toml::Table`], merged over the embedded default
//! table ([`DEFAULT_TOML`], so a user file names only the keys it changes),
//! command-line overrides are applied with [`apply_override`], and
//! [`Config::from_table`] checks and converts the result into typed structs.
//! Because the command line and the file meet in the same table, there is one
//! validator and every error names the dotted key it is about
//! (`websocket.max_frame_bytes`), never a flag or a line of Rust.
//!
//! The embedded default file is the schema: a key it lacks is unknown. The
//! section structs are read from the table by serde's derive, each with
//! `deny_unknown_fields` and no field defaulted, so every key of the default
//! file must be a field and every field a key of the file; what a type cannot
//! say (ranges, the form of paths, tokens and log filters, rules between
//! keys) is checked in one place, `Config::validate`. To add a key, document
//! it in `config/tickfan.toml`, add the field to its section struct (an
//! integer field is read with `deserialize_with = "int"`) and its range or
//! rule to `validate`; the test `every_default_key_is_read` fails if the
//! field is forgotten, and `every_key_is_a_field_and_every_field_a_key` if a
//! field has a default. A new section is a new struct and a new field of
//! [`Config`].

use std::fmt;
use std::net::SocketAddr;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;
use toml::{Table, Value};

use crate::topic::TopicName;
use crate::wire::{is_b64token, BUILT_IN_PATHS};

mod jwt;
pub use jwt::JwtConfig;
mod cluster;
pub use cluster::ClusterConfig;

/// The default configuration file, compiled into the binary; it documents every key.
pub const DEFAULT_TOML: &str = include_str!("../config/tickfan.toml");

/// The whole, validated broker configuration.
///
/// Build it with [`Config::from_table`] (or [`Config::from_toml_str`]):
/// its derived `Deserialize` alone checks types, not `Config::validate`'s
/// rules, and names no key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`: listening socket, workers and connection limits.
    pub server: ServerConfig,
    /// `[websocket]`: protocol limits and timers per connection.
    pub websocket: WebSocketConfig,
    /// `[broker]`: topics, history, heartbeats and slow consumers.
    pub broker: BrokerConfig,
    /// `[http]`: long-polling, SSE, HTTP publish and metrics.
    pub http: HttpConfig,
    /// `[demo]`: the synthetic market the broker can publish into itself.
    pub demo: DemoConfig,
    /// `[auth]`: who may publish and subscribe; its `Debug` redacts the tokens.
    pub auth: AuthConfig,
    /// `[jwt]`: per-user signed tokens; its `Debug` redacts the secret.
    pub jwt: JwtConfig,
    /// `[tls]`: the TLS listener (wss, https) and its certificate.
    pub tls: TlsConfig,
    /// `[cluster]`: joining other nodes through NATS JetStream; off by default.
    pub cluster: ClusterConfig,
    /// `[log]`: diagnostics.
    pub log: LogConfig,
}

/// The `[server]` section: listening socket, workers and connection limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `server.listen`: the plain (ws, http) listener's address; `None`
    /// (`""`) when only the TLS listener serves.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub listen: Option<SocketAddr>,
    /// `server.workers`: worker threads; 0 means one per CPU core (see [`Config::worker_count`]).
    #[serde(deserialize_with = "int")]
    pub workers: usize,
    /// `server.backlog`: listen(2) backlog; at least 1.
    #[serde(deserialize_with = "int")]
    pub backlog: u32,
    /// `server.max_connections`: open connections across all workers; at least 1.
    #[serde(deserialize_with = "int")]
    pub max_connections: usize,
    /// `server.max_connections_per_ip`: open connections from one client
    /// address; 0 = unlimited.
    #[serde(deserialize_with = "int")]
    pub max_connections_per_ip: usize,
    /// `server.shutdown_grace_ms`: how long shutdown waits for clients to close.
    #[serde(deserialize_with = "int")]
    pub shutdown_grace_ms: u64,
    /// `server.drain_delay_ms`: how long after SIGTERM/SIGINT `/readyz` answers 503
    /// while everything else is still served, before shutdown proper.
    #[serde(deserialize_with = "int")]
    pub drain_delay_ms: u64,
}

/// The `[websocket]` section: protocol limits and timers per connection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// `websocket.path`: path where clients upgrade to the pub/sub protocol; starts with '/'.
    pub path: String,
    /// `websocket.echo_path`: path whose connections echo every message; `None` when off.
    #[serde(deserialize_with = "off_if_empty")]
    pub echo_path: Option<String>,
    /// `websocket.max_frame_bytes`: largest frame payload; larger closes with 1009.
    #[serde(deserialize_with = "int")]
    pub max_frame_bytes: usize,
    /// `websocket.max_message_bytes`: largest reassembled message; larger closes with 1009.
    #[serde(deserialize_with = "int")]
    pub max_message_bytes: usize,
    /// `websocket.max_fragments_per_message`: most frames in one message; more closes with 1009.
    #[serde(deserialize_with = "int")]
    pub max_fragments_per_message: usize,
    /// `websocket.max_header_bytes`: largest handshake request head; larger is answered 431.
    #[serde(deserialize_with = "int")]
    pub max_header_bytes: usize,
    /// `websocket.handshake_timeout_ms`: time allowed to finish the opening handshake.
    #[serde(deserialize_with = "int")]
    pub handshake_timeout_ms: u64,
    /// `websocket.ping_interval_ms`: quiet time after which the server pings.
    #[serde(deserialize_with = "int")]
    pub ping_interval_ms: u64,
    /// `websocket.idle_timeout_ms`: silence after which the connection is closed; > ping interval.
    #[serde(deserialize_with = "int")]
    pub idle_timeout_ms: u64,
    /// `websocket.close_timeout_ms`: wait for the peer's close reply before dropping TCP.
    #[serde(deserialize_with = "int")]
    pub close_timeout_ms: u64,
    /// `websocket.max_messages_per_sec`: per-connection message rate; 0 = unlimited.
    #[serde(deserialize_with = "int")]
    pub max_messages_per_sec: u32,
    /// `websocket.deflate`: whether permessage-deflate (RFC 7692) is agreed with clients that offer it.
    pub deflate: bool,
    /// `websocket.deflate_min_bytes`: envelopes shorter than this are sent uncompressed.
    #[serde(deserialize_with = "int")]
    pub deflate_min_bytes: usize,
    /// `websocket.deflate_level`: zlib compression level of ticks, 0 to 9.
    #[serde(deserialize_with = "int")]
    pub deflate_level: u32,
}

/// The `[broker]` section: topics, history, heartbeats and slow consumers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// `broker.shards`: topic table shards, each with its own lock; 1 to 65536.
    #[serde(deserialize_with = "int")]
    pub shards: usize,
    /// `broker.history_depth`: ticks kept per topic for `since` recovery and long-poll; 0 to 1000000.
    #[serde(deserialize_with = "int")]
    pub history_depth: usize,
    /// `broker.topic_ttl_ms`: how long an unused topic (no subscribers, no publish) lives; at least 1000.
    #[serde(deserialize_with = "int")]
    pub topic_ttl_ms: u64,
    /// `broker.max_topics`: topics alive at once; at least 1.
    #[serde(deserialize_with = "int")]
    pub max_topics: usize,
    /// `broker.max_topics_per_connection`: topics one connection may subscribe to; at least 1.
    #[serde(deserialize_with = "int")]
    pub max_topics_per_connection: usize,
    /// `broker.max_client_errors`: error events a connection may provoke before close 1008; at least 1.
    #[serde(deserialize_with = "int")]
    pub max_client_errors: usize,
    /// `broker.heartbeat_interval_ms`: quiet time before a subscribed connection gets a heartbeat; at least 100.
    #[serde(deserialize_with = "int")]
    pub heartbeat_interval_ms: u64,
    /// `broker.max_queue_bytes`: bound on a connection's outbound queue; at least 4096.
    #[serde(deserialize_with = "int")]
    pub max_queue_bytes: usize,
    /// `broker.slow_consumer`: what happens to a connection whose queue is over the bound.
    pub slow_consumer: SlowConsumerPolicy,
    /// `broker.slow_consumer_grace_ms`: with [`SlowConsumerPolicy::Disconnect`], how long a
    /// queue may stay over its bound (up to twice the bound) before close 1008.
    #[serde(deserialize_with = "int")]
    pub slow_consumer_grace_ms: u64,
    /// `broker.flush_interval_ms`: least time between two writes of ticks by
    /// a worker; 0 to 1000. Trades latency for CPU per delivered tick.
    #[serde(deserialize_with = "int")]
    pub flush_interval_ms: u64,
    /// `broker.max_batch_delay_ms`: the most a saturated worker lets ticks
    /// wait so each write carries more of them; 0 to 1000, 0 = never wait.
    #[serde(deserialize_with = "int")]
    pub max_batch_delay_ms: u64,
    /// `broker.batching`: how a saturated worker batches, per sweep or per connection.
    pub batching: BatchingMode,
    /// `broker.max_mailbox_ticks`: ticks a worker's mailbox may hold before
    /// connections that may publish stop being read; at least 1.
    #[serde(deserialize_with = "int")]
    pub max_mailbox_ticks: usize,
    /// `broker.max_total_queue_bytes`: outbound bytes all connections' queues may
    /// hold together before each one's bound shrinks to a fair share; at least 1 MiB.
    #[serde(deserialize_with = "int")]
    pub max_total_queue_bytes: usize,
}

/// `broker.slow_consumer`: what the broker does with a connection whose
/// outbound queue is over `broker.max_queue_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SlowConsumerPolicy {
    /// `"conflate"`: keep only the latest tick per topic queued for that connection.
    Conflate,
    /// `"drop"`: drop new ticks for that connection until its queue drains.
    Drop,
    /// `"disconnect"`: close with 1008 once over the bound for longer than
    /// `broker.slow_consumer_grace_ms`, or at twice the bound.
    Disconnect,
}

/// `broker.batching`: how a worker puts more ticks into each write when it
/// is saturated (see `net::pacer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum BatchingMode {
    /// `"sweep"`: the next write sweep waits as long as the last one took,
    /// up to `broker.max_batch_delay_ms`.
    Sweep,
    /// `"connection"`: a connection that wrote less than
    /// `broker.max_batch_delay_ms` ago waits for a fuller batch (Nagle-like).
    Connection,
}

/// The `[http]` section: long-polling, SSE, HTTP publish and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `http.max_body_bytes`: largest POST /publish body.
    #[serde(deserialize_with = "int")]
    pub max_body_bytes: usize,
    /// `http.poll_timeout_secs`: default long-poll hold.
    #[serde(deserialize_with = "int")]
    pub poll_timeout_secs: u64,
    /// `http.max_poll_timeout_secs`: cap on a requested hold.
    #[serde(deserialize_with = "int")]
    pub max_poll_timeout_secs: u64,
    /// `http.max_request_topics`: topics per long-poll or SSE request.
    #[serde(deserialize_with = "int")]
    pub max_request_topics: usize,
    /// `http.metrics_path`: the Prometheus endpoint; `None` when off.
    #[serde(deserialize_with = "off_if_empty")]
    pub metrics_path: Option<String>,
    /// `http.demo_path`: the demo page (its assets below it); `None` when off.
    #[serde(deserialize_with = "off_if_empty")]
    pub demo_path: Option<String>,
}

/// The `[demo]` section: the synthetic random-walk market (`--demo-feed`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// `demo.feed`: whether the broker publishes the synthetic market.
    pub feed: bool,
    /// `demo.feed_symbols`: the topics it publishes to.
    pub feed_symbols: Vec<String>,
    /// `demo.feed_ticks_per_second`: its rate over all symbols.
    #[serde(deserialize_with = "int")]
    pub feed_ticks_per_second: u32,
}

/// The `[auth]` section: the tokens that grant publishing and subscribing.
///
/// Tokens are secrets: `Debug` prints only how many there are, and no
/// [`ConfigError`] ever contains one. Comparing a presented token against
/// these is the broker's job (in constant time).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `auth.publish_tokens`: tokens that grant publishing (and subscribing);
    /// empty means publishing is open to everyone (see [`AuthConfig::publish_is_open`]).
    pub publish_tokens: Vec<String>,
    /// `auth.subscribe_tokens`: extra tokens that grant subscribing only.
    pub subscribe_tokens: Vec<String>,
    /// `auth.subscribe_requires_token`: whether subscribing needs a subscribe or publish token.
    pub subscribe_requires_token: bool,
}

/// The `[log]` section: diagnostics.
/// The `[tls]` section: the TLS listener and the files of its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `tls.listen`: the TLS listener's address; `None` when off.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub listen: Option<SocketAddr>,
    /// `tls.cert_file`: the certificate chain, PEM; `None` when unset.
    #[serde(deserialize_with = "off_if_empty_path")]
    pub cert_file: Option<PathBuf>,
    /// `tls.key_file`: the certificate's private key, PEM.
    #[serde(deserialize_with = "off_if_empty_path")]
    pub key_file: Option<PathBuf>,
    /// `tls.client_ca_file`: the CA client certificates must be signed by.
    #[serde(deserialize_with = "off_if_empty_path")]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `log.level`: a level name or a tracing `EnvFilter` directive.
    pub level: String,
}

/// Why a configuration was refused; every variant about a key names it dotted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The config file could not be read.
    Read {
        /// The file as given on the command line.
        path: PathBuf,
        /// The operating system's reason.
        message: String,
    },
    /// The text is not valid TOML.
    Syntax {
        /// Where the text came from (a file path, or `config`).
        origin: String,
        /// The dotted key whose value the error is in, when the error lies
        /// after the `=` of a `key = value` line (a number too large, say).
        key: Option<String>,
        /// toml's message, with line and column.
        message: String,
    },
    /// A key or section that tickfan does not know.
    UnknownKey {
        /// The dotted key, e.g. `websocket.max_frme_bytes`.
        key: String,
    },
    /// A key the configuration needs is absent.
    Missing {
        /// The dotted key.
        key: String,
    },
    /// A key whose value has the wrong TOML type.
    WrongType {
        /// The dotted key.
        key: String,
        /// The type the key takes, e.g. `an integer`.
        expected: &'static str,
        /// The value found, with its TOML type.
        found: String,
    },
    /// A key whose value has the right type but is not allowed.
    Invalid {
        /// The dotted key.
        key: String,
        /// Why the value is refused, e.g. `"abc" is not a socket address`.
        reason: String,
    },
}

impl ConfigError {
    /// Returns the dotted config key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { key, .. } => key.as_deref(),
            ConfigError::UnknownKey { key }
            | ConfigError::Missing { key }
            | ConfigError::WrongType { key, .. }
            | ConfigError::Invalid { key, .. } => Some(key),
        }
    }

    fn invalid(key: String, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key,
            reason: reason.into(),
        }
    }

    /// A [`ConfigError::WrongType`] for `key`, showing the value found unless the key holds secrets.
    fn wrong_type(key: String, expected: &'static str, found: &Value) -> Self {
        let found = match found {
            Value::Table(_) => "a table".to_owned(),
            other if is_secret_key(&key) => format!("{} (value not shown)", other.type_str()),
            other => format!("{} {}", other.type_str(), other),
        };
        ConfigError::WrongType {
            key,
            expected,
            found,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, message } => {
                write!(f, "cannot read config file {}: {message}", path.display())
            }
            ConfigError::Syntax {
                origin,
                key: None,
                message,
            } => write!(f, "invalid TOML in {origin}: {message}"),
            ConfigError::Syntax {
                origin,
                key: Some(key),
                message,
            } => write!(f, "invalid TOML in {origin}, config key `{key}`: {message}"),
            ConfigError::UnknownKey { key } => write!(f, "unknown config key `{key}`"),
            ConfigError::Missing { key } => write!(f, "config key `{key}` is missing"),
            ConfigError::WrongType {
                key,
                expected,
                found,
            } => write!(f, "config key `{key}`: expected {expected}, found {found}"),
            ConfigError::Invalid { key, reason } => write!(f, "config key `{key}`: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Returns the configuration of the embedded default file, [`DEFAULT_TOML`].
    pub fn embedded_default() -> Config {
        // The embedded file is part of the program, not input; the unit test
        // `embedded_default_parses_to_documented_values` proves it valid.
        Config::from_table(default_table()).expect("embedded config/tickfan.toml is valid")
    }

    /// Parses TOML text, merges it over the defaults and validates the result.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::from_table(parse_over_default(text, "config")?)
    }

    /// Checks and converts a table holding every key (as [`parse_over_default`] returns).
    ///
    /// serde reads the table into the section structs, which deny unknown
    /// fields and default none, so a key the table lacks is
    /// [`ConfigError::Missing`] and one beyond the schema is
    /// [`ConfigError::UnknownKey`]; [`serde_path_to_error`] says where a
    /// failure is, and `explain` turns it into the error naming that key.
    /// `Config::validate` then checks what types cannot say.
    pub fn from_table(table: Table) -> Result<Config, ConfigError> {
        let config: Config = serde_path_to_error::deserialize(table.clone())
            .map_err(|e| explain(&Value::Table(table), &e))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule a value's type does not express, naming the dotted
    /// key of the first value that breaks one: integer ranges, the form of
    /// route paths, tokens and log filters, and the rules between keys.
    ///
    /// This is the one place such rules live; the keys are checked in the
    /// order of the default file.
    fn validate(&self) -> Result<(), ConfigError> {
        let Config {
            websocket: ws,
            http,
            auth,
            log,
            ..
        } = self;

        // Integer ranges, keyed by the field's own name. 0 is allowed for
        // server.drain_delay_ms (close as soon as a signal comes),
        // broker.history_depth (no history, so no `since` recovery) and
        // broker.flush_interval_ms; any server.max_connections_per_ip and
        // websocket.max_messages_per_sec (0 = no limit),
        // server.shutdown_grace_ms (0 = do not wait for clients) and
        // broker.slow_consumer_grace_ms (0 = close at the first overflow) is taken.
        let config = self;
        macro_rules! range {
            ($section:ident . $key:ident, $range:expr) => {
                in_range(
                    concat!(stringify!($section), ".", stringify!($key)),
                    config.$section.$key,
                    $range,
                )?
            };
        }
        range!(server.workers, 0..=1024);
        range!(server.backlog, 1..);
        range!(server.max_connections, 1..);
        range!(server.drain_delay_ms, 0..=3_600_000);
        let min_payload = WebSocketConfig::MIN_PAYLOAD_BYTES;
        range!(websocket.max_frame_bytes, min_payload..);
        range!(websocket.max_message_bytes, min_payload..);
        range!(websocket.max_fragments_per_message, 1..);
        range!(websocket.max_header_bytes, 1024..=1024 * 1024);
        range!(websocket.handshake_timeout_ms, 1..);
        range!(websocket.ping_interval_ms, 1..);
        range!(websocket.idle_timeout_ms, 1..);
        range!(websocket.close_timeout_ms, 1..);
        range!(websocket.deflate_level, 0..=9);
        range!(broker.shards, 1..=65_536);
        range!(broker.history_depth, 0..=1_000_000);
        range!(broker.topic_ttl_ms, 1000..);
        range!(broker.max_topics, 1..);
        range!(broker.max_topics_per_connection, 1..);
        range!(broker.max_client_errors, 1..);
        range!(broker.heartbeat_interval_ms, 100..);
        range!(broker.max_queue_bytes, 4096..);
        range!(broker.flush_interval_ms, 0..=1000);
        range!(broker.max_batch_delay_ms, 0..=1000);
        range!(broker.max_mailbox_ticks, 1..);
        range!(broker.max_total_queue_bytes, 1 << 20..);
        range!(http.max_body_bytes, 1..);
        range!(http.poll_timeout_secs, 1..=3600);
        range!(http.max_poll_timeout_secs, 1..=3600);
        range!(http.max_request_topics, 1..=4096);
        range!(demo.feed_ticks_per_second, 1..=100_000);

        check_route_path(
            "websocket.path",
            Some(&ws.path),
            "must start with '/', e.g. \"/ws\"",
        )?;
        check_route_path(
            "websocket.echo_path",
            ws.echo_path.as_deref(),
            "must be empty (off) or start with '/', e.g. \"/echo\"",
        )?;
        // One path, one route: a shared path would make echo shadow pub/sub or the reverse.
        if ws.echo_path.as_deref() == Some(ws.path.as_str()) {
            return Err(ConfigError::invalid(
                "websocket.echo_path".to_owned(),
                format!(
                    "{:?} must differ from websocket.path ({:?})",
                    ws.path, ws.path
                ),
            ));
        }
        // A connection must get the chance to answer a ping before it counts as idle.
        if ws.idle_timeout_ms <= ws.ping_interval_ms {
            return Err(ConfigError::invalid(
                "websocket.idle_timeout_ms".to_owned(),
                format!(
                    "{} must be greater than websocket.ping_interval_ms ({})",
                    ws.idle_timeout_ms, ws.ping_interval_ms
                ),
            ));
        }

        check_route_path(
            "http.metrics_path",
            http.metrics_path.as_deref(),
            "must be empty (off) or start with '/'",
        )?;
        if http.poll_timeout_secs > http.max_poll_timeout_secs {
            return Err(ConfigError::invalid(
                "http.poll_timeout_secs".to_owned(),
                format!(
                    "{} must not exceed http.max_poll_timeout_secs ({})",
                    http.poll_timeout_secs, http.max_poll_timeout_secs
                ),
            ));
        }

        check_route_path(
            "http.demo_path",
            http.demo_path.as_deref(),
            "must be empty (off) or start with '/', e.g. \"/demo\"",
        )?;
        check_demo_symbols(&self.demo.feed_symbols)?;

        check_tokens("auth.publish_tokens", &auth.publish_tokens)?;
        check_tokens("auth.subscribe_tokens", &auth.subscribe_tokens)?;
        // Requiring a token that no list holds would lock every subscriber out.
        if auth.subscribe_requires_token
            && auth.publish_tokens.is_empty()
            && auth.subscribe_tokens.is_empty()
            && !self.jwt.enabled()
        {
            return Err(ConfigError::invalid(
                "auth.subscribe_requires_token".to_owned(),
                "is true but auth.subscribe_tokens and auth.publish_tokens are both empty \
                 and jwt.algorithm is not set, so nobody could subscribe",
            ));
        }
        self.jwt.validate()?;

        check_log_level("log.level", &log.level)?;
        check_tls(&self.tls)?;
        self.cluster.validate()?;
        if self.server.listen.is_none() && self.tls.listen.is_none() {
            return Err(ConfigError::invalid(
                "server.listen".to_owned(),
                "is empty and so is tls.listen: the broker would listen nowhere",
            ));
        }

        check_route_paths(ws, http)
    }

    /// Returns the number of worker threads to start: `server.workers`, or one per CPU core when 0.
    pub fn worker_count(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl ServerConfig {
    /// Returns `server.shutdown_grace_ms` as a [`Duration`].
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// Returns `server.drain_delay_ms` as a [`Duration`].
    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }
}

impl WebSocketConfig {
    /// The smallest frame and message limit: a control frame's payload may
    /// be 125 bytes (RFC 6455 §5.5), so anything lower would refuse valid pings.
    const MIN_PAYLOAD_BYTES: usize = 125;

    /// Returns `websocket.handshake_timeout_ms` as a [`Duration`].
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// Returns `websocket.ping_interval_ms` as a [`Duration`].
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    /// Returns `websocket.idle_timeout_ms` as a [`Duration`].
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// Returns `websocket.close_timeout_ms` as a [`Duration`].
    pub fn close_timeout(&self) -> Duration {
        Duration::from_millis(self.close_timeout_ms)
    }
}

impl BrokerConfig {
    /// Returns `broker.topic_ttl_ms` as a [`Duration`].
    pub fn topic_ttl(&self) -> Duration {
        Duration::from_millis(self.topic_ttl_ms)
    }

    /// Returns `broker.heartbeat_interval_ms` as a [`Duration`].
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// Returns `broker.slow_consumer_grace_ms` as a [`Duration`].
    pub fn slow_consumer_grace(&self) -> Duration {
        Duration::from_millis(self.slow_consumer_grace_ms)
    }

    /// Returns `broker.flush_interval_ms` as a [`Duration`].
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// Returns `broker.max_batch_delay_ms` as a [`Duration`].
    pub fn max_batch_delay(&self) -> Duration {
        Duration::from_millis(self.max_batch_delay_ms)
    }
}

impl BatchingMode {
    /// Returns the mode's name as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchingMode::Sweep => "sweep",
            BatchingMode::Connection => "connection",
        }
    }
}

/// How serde reads `broker.batching`; the error names both modes.
impl TryFrom<String> for BatchingMode {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "sweep" => Ok(BatchingMode::Sweep),
            "connection" => Ok(BatchingMode::Connection),
            _ => Err(format!(
                "{s:?} is not a batching mode: use sweep or connection"
            )),
        }
    }
}

impl SlowConsumerPolicy {
    /// What the error says the key takes when the value is none of the policies.
    const EXPECTED: &'static str = "a slow-consumer policy: use conflate, drop or disconnect";

    /// Returns the policy's name as written in the config file, e.g. `"conflate"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlowConsumerPolicy::Conflate => "conflate",
            SlowConsumerPolicy::Drop => "drop",
            SlowConsumerPolicy::Disconnect => "disconnect",
        }
    }
}

impl FromStr for SlowConsumerPolicy {
    type Err = ();

    /// Parses `conflate`, `drop` or `disconnect`, exactly as written in the config file.
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "conflate" => Ok(SlowConsumerPolicy::Conflate),
            "drop" => Ok(SlowConsumerPolicy::Drop),
            "disconnect" => Ok(SlowConsumerPolicy::Disconnect),
            _ => Err(()),
        }
    }
}

/// How serde reads `broker.slow_consumer`; the error names the three policies.
impl TryFrom<String> for SlowConsumerPolicy {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
            .map_err(|()| format!("{s:?} is not {}", SlowConsumerPolicy::EXPECTED))
    }
}

impl fmt::Display for SlowConsumerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AuthConfig {
    /// Returns whether anyone may publish without a token: `auth.publish_tokens` is empty.
    pub fn publish_is_open(&self) -> bool {
        self.publish_tokens.is_empty()
    }
}

/// Prints the number of tokens, never the tokens: configs get logged.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Redacted(usize);
        impl fmt::Debug for Redacted {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "[{} redacted]", self.0)
            }
        }
        f.debug_struct("AuthConfig")
            .field("publish_tokens", &Redacted(self.publish_tokens.len()))
            .field("subscribe_tokens", &Redacted(self.subscribe_tokens.len()))
            .field("subscribe_requires_token", &self.subscribe_requires_token)
            .finish()
    }
}

/// Returns whether the dotted key holds secrets whose values must never be shown.
///
/// The command line uses it to redact its own `Debug`; this module never
/// puts such a value into a [`ConfigError`].
pub fn is_secret_key(dotted_key: &str) -> bool {
    matches!(
        dotted_key,
        "auth.publish_tokens"
            | "auth.subscribe_tokens"
            | "jwt.hmac_secret"
            | "cluster.token"
            | "cluster.password"
    )
}

/// Refuses an integer outside `range`, naming the key.
fn in_range<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    range: impl RangeBounds<T>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    let reason = match (range.start_bound(), range.end_bound()) {
        (Bound::Included(lo), Bound::Included(hi)) => format!("must be between {lo} and {hi}"),
        (Bound::Included(lo), _) => format!("must be at least {lo}"),
        (_, Bound::Included(hi)) => format!("must be at most {hi}"),
        _ => "not allowed".to_owned(),
    };
    Err(ConfigError::invalid(
        key.to_owned(),
        format!("{value} is out of range: {reason}"),
    ))
}

/// Refuses a configurable route path that does not start with '/' or carries
/// more than a path: whitespace, control characters, a query or a fragment.
///
/// `None` is a route that is off (its key is `""`); `form` says what the
/// key takes, for a path without its leading '/'.
fn check_route_path(key: &str, path: Option<&str>, form: &str) -> Result<(), ConfigError> {
    let Some(path) = path else { return Ok(()) };
    if !path.starts_with('/') {
        return Err(ConfigError::invalid(
            key.to_owned(),
            format!("{path:?} {form}"),
        ));
    }
    if path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Err(ConfigError::invalid(
            key.to_owned(),
            format!("{path:?} must be a bare path, without spaces, '?' or '#'"),
        ));
    }
    Ok(())
}

/// Refuses configurable route paths that equal a fixed route's path or each
/// other: one of the two routes would shadow the other (a plain `GET` to
/// `websocket.path` = `/healthz` would be health, an upgrade there pub/sub).
///
/// `websocket.path` against `websocket.echo_path` is checked before, with its own message.
fn check_route_paths(ws: &WebSocketConfig, http: &HttpConfig) -> Result<(), ConfigError> {
    let configured = [
        ("websocket.path", Some(ws.path.as_str())),
        ("websocket.echo_path", ws.echo_path.as_deref()),
        ("http.metrics_path", http.metrics_path.as_deref()),
        ("http.demo_path", http.demo_path.as_deref()),
    ];
    for (i, &(key, path)) in configured.iter().enumerate() {
        let Some(path) = path else { continue };
        if BUILT_IN_PATHS.contains(&path) {
            return Err(ConfigError::invalid(
                key.to_owned(),
                format!("{path:?} is the path of a built-in route; choose another"),
            ));
        }
        let earlier = configured[..i].iter().find(|(_, p)| *p == Some(path));
        if let Some((other, _)) = earlier {
            return Err(ConfigError::invalid(
                key.to_owned(),
                format!("{path:?} must differ from {other} ({path:?})"),
            ));
        }
    }
    Ok(())
}

/// Refuses a demo feed without symbols, with too many, or with one that is
/// not a topic name (it would be refused at every publish).
fn check_demo_symbols(symbols: &[String]) -> Result<(), ConfigError> {
    let key = "demo.feed_symbols";
    if symbols.is_empty() || symbols.len() > 1000 {
        return Err(ConfigError::invalid(
            key.to_owned(),
            format!("has {} symbols; 1 to 1000 are allowed", symbols.len()),
        ));
    }
    for symbol in symbols {
        if let Err(error) = TopicName::new(symbol) {
            return Err(ConfigError::invalid(
                key.to_owned(),
                format!("{symbol:?} is not a topic name: {error}"),
            ));
        }
    }
    Ok(())
}

/// Refuses a token that is not an RFC 6750 `b64token`; the error gives the
/// token's index, never its value.
fn check_tokens(key: &str, tokens: &[String]) -> Result<(), ConfigError> {
    for (i, token) in tokens.iter().enumerate() {
        // A token `Authorization: Bearer` cannot carry could only ever
        // be sent as `?token=`, percent-encoded: refused so that it is
        // noticed at start rather than as a client's mysterious 401.
        let reason = if token.is_empty() {
            "is empty"
        } else if !is_b64token(token) {
            "must be an RFC 6750 bearer token: letters, digits and - . _ ~ + /, \
             optionally ending in = (value not shown)"
        } else {
            continue;
        };
        return Err(ConfigError::invalid(
            key.to_owned(),
            format!("token at index {i} {reason}"),
        ));
    }
    Ok(())
}

/// Refuses a `log.level` that is not a level or a list of levels and
/// `target=level` filters.
///
/// Checked here so a bad filter fails at startup with the key named, not
/// later inside logging setup.
fn check_log_level(key: &str, level: &str) -> Result<(), ConfigError> {
    if level.trim().is_empty() {
        return Err(ConfigError::invalid(
            key.to_owned(),
            "must not be empty; use error, warn, info, debug or trace",
        ));
    }
    // EnvFilter reads a bare word it does not know as a target name
    // (`inof` = "trace for target inof"), which silently turns every
    // other log line off; so only levels and `target=level` pass.
    if let Some(bad) = level.trim().split(',').find(|d| !is_level_directive(d)) {
        return Err(ConfigError::invalid(
            key.to_owned(),
            format!(
                "{level:?} is not a log level or filter: {:?} is neither one of \
                 {} nor `target=level`, e.g. \"warn,tickfan::net=trace\"",
                bad,
                LOG_LEVELS.join(", ")
            ),
        ));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(level) {
        return Err(ConfigError::invalid(
            key.to_owned(),
            format!("{level:?} is not a log level or tracing filter directive: {e}"),
        ));
    }
    Ok(())
}

/// The level names `log.level` takes, alone or after `target=`; case-insensitive.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Whether one comma-separated element of `log.level` is a level or `target=level`,
/// without spaces (EnvFilter takes none inside the list).
///
/// A target is a module path such as `tickfan::net`: letters, digits, `_`,
/// `-`, `.` and `::`. Span and field filters (`target[span]=level`) are not
/// taken: they are rarely wanted, and a typo in them fails just as silently.
fn is_level_directive(directive: &str) -> bool {
    let is_level = |word: &str| LOG_LEVELS.iter().any(|l| word.eq_ignore_ascii_case(l));
    match directive.split_once('=') {
        None => is_level(directive),
        Some((target, level)) => {
            !target.is_empty()
                && target
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
                && is_level(level)
        }
    }
}

/// An unsigned integer type a config key can hold.
trait ConfigInt: TryFrom<i64> + fmt::Display {
    const MAX: Self;
}

impl ConfigInt for u32 {
    const MAX: Self = u32::MAX;
}

impl ConfigInt for u64 {
    const MAX: Self = u64::MAX;
}

impl ConfigInt for usize {
    const MAX: Self = usize::MAX;
}

/// serde reader of an integer key: TOML's 64-bit integer, refused when the
/// field's type cannot hold it. Ranges are [`Config::validate`]'s.
fn int<'de, D: Deserializer<'de>, T: ConfigInt>(d: D) -> Result<T, D::Error> {
    let n = i64::deserialize(d)?;
    T::try_from(n).map_err(|_| {
        let reason = if n < 0 {
            "must not be negative".to_owned()
        } else {
            format!("must be at most {}", T::MAX)
        };
        D::Error::custom(format!("{n} is out of range: {reason}"))
    })
}

/// A TLS listener needs its certificate and key, and the files mean
/// nothing without one (the files themselves are read at start).
fn check_tls(tls: &TlsConfig) -> Result<(), ConfigError> {
    let files = [
        ("tls.cert_file", &tls.cert_file),
        ("tls.key_file", &tls.key_file),
        ("tls.client_ca_file", &tls.client_ca_file),
    ];
    match tls.listen {
        Some(_) => {
            for (key, file) in files.iter().take(2) {
                if file.is_none() {
                    return Err(ConfigError::invalid(
                        (*key).to_owned(),
                        "is required with tls.listen",
                    ));
                }
            }
        }
        None => {
            if let Some((key, _)) = files.iter().find(|(_, file)| file.is_some()) {
                return Err(ConfigError::invalid(
                    (*key).to_owned(),
                    "is set but tls.listen is empty: no TLS listener would use it",
                ));
            }
        }
    }
    Ok(())
}

/// serde reader of `server.listen` and `tls.listen`: a socket address, or
/// `""` for none.
fn optional_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| D::Error::custom(format!("{text:?} is not a socket address")))
}

/// serde reader of a file path that `""` leaves unset.
fn off_if_empty_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = String::deserialize(d)?;
    Ok((!path.is_empty()).then(|| PathBuf::from(path)))
}

/// serde reader of a route path that `""` turns off.
///
/// Unlike a plain `Option` field, one read this way is not defaulted to
/// `None` when the key is absent: the key must be there, like every other.
fn off_if_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let path = String::deserialize(d)?;
    Ok((!path.is_empty()).then_some(path))
}

/// Turns serde's failure to read `root` into the error naming the dotted key.
///
/// [`serde_path_to_error`] gives the path to the value serde failed on (for
/// an unknown or missing key, the path to its section); what went wrong
/// there is read from that value against the schema, the value at the same
/// path in [`default_table`], so the error does not hang on serde's wording:
/// no schema value is an unknown key, no value a missing one, another TOML
/// type a wrong type. Anything else came from a reader above (an integer
/// too large for its field, a bad address or policy), whose message is the
/// reason, never shown for a key that holds secrets.
fn explain(root: &Value, error: &serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let schema_root = Value::Table(default_table());
    let (mut found, mut schema) = (Some(root), Some(&schema_root));
    let mut parts: Vec<&str> = Vec::new();
    for segment in error.path().iter() {
        // An array element's error is told on the array, by index (below).
        let serde_path_to_error::Segment::Map { key } = segment else {
            break;
        };
        found = found.and_then(|v| v.get(key.as_str()));
        schema = schema.and_then(|v| v.get(key.as_str()));
        parts.push(key);
    }
    let key = parts.join(".");
    let child = |name: &str| {
        if key.is_empty() {
            name.to_owned()
        } else {
            format!("{key}.{name}")
        }
    };
    let (found, schema) = match (found, schema) {
        (_, None) => return ConfigError::UnknownKey { key },
        (None, Some(_)) => return ConfigError::Missing { key },
        (Some(found), Some(schema)) => (found, schema),
    };
    if found.type_str() != schema.type_str() {
        let expected = match schema {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Boolean(_) => "true or false",
            Value::Array(_) => "an array of strings",
            Value::Table(_) => "a table",
            Value::Float(_) => "a float",
            Value::Datetime(_) => "a datetime",
        };
        return ConfigError::wrong_type(key, expected, found);
    }
    match (found, schema) {
        (Value::Table(found), Value::Table(schema)) => {
            if let Some(name) = found.keys().find(|k| !schema.contains_key(*k)) {
                return ConfigError::UnknownKey { key: child(name) };
            }
            if let Some(name) = schema.keys().find(|k| !found.contains_key(*k)) {
                return ConfigError::Missing { key: child(name) };
            }
        }
        (Value::Array(items), _) => {
            if let Some((i, item)) = items.iter().enumerate().find(|(_, v)| !v.is_str()) {
                return ConfigError::WrongType {
                    key,
                    expected: "an array of strings",
                    found: format!("{} at index {i}", item.type_str()),
                };
            }
        }
        _ => {}
    }
    let reason = if is_secret_key(&key) {
        "is not valid (value not shown)".to_owned()
    } else {
        error.inner().message().to_owned()
    };
    ConfigError::Invalid { key, reason }
}

/// Returns the parsed embedded default file as a table; the schema every other table is checked against.
pub fn default_table() -> Table {
    static DEFAULT: OnceLock<Table> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            parse_table(DEFAULT_TOML, "config/tickfan.toml")
                .expect("embedded config/tickfan.toml is valid TOML")
        })
        .clone()
}

/// Parses TOML text and merges it over [`default_table`], refusing keys the default lacks.
///
/// `origin` names the text in syntax errors (a file path, say). The result
/// holds every key and is ready for [`apply_override`] and [`Config::from_table`].
pub fn parse_over_default(text: &str, origin: &str) -> Result<Table, ConfigError> {
    let user = parse_table(text, origin)?;
    let mut table = default_table();
    merge(&mut table, user, "")?;
    Ok(table)
}

/// Sets the dotted key in `table` from a command-line string.
///
/// The key must name a key (not a section) of the default config. The raw
/// value is read as a TOML value when it is one (`8`, `true`, `"quoted"`) and
/// as a plain string otherwise, so `server.listen=127.0.0.1:9001` needs no
/// quotes; for a key whose default is a string the raw text is always the
/// string (unless it is a quoted TOML string), so `log.level=1` gives the
/// string `"1"`. The value's type and range are checked later, by
/// [`Config::from_table`].
pub fn apply_override(
    table: &mut Table,
    dotted_key: &str,
    raw_value: &str,
) -> Result<(), ConfigError> {
    let unknown = || ConfigError::UnknownKey {
        key: dotted_key.to_owned(),
    };
    let path: Vec<&str> = dotted_key.split('.').collect();
    if path.iter().any(|part| part.is_empty()) {
        return Err(unknown());
    }
    let (leaf, parents) = path.split_last().ok_or_else(unknown)?;

    // The default file is the schema: the key must be a leaf there.
    let defaults = default_table();
    let mut schema = &defaults;
    for part in parents {
        match schema.get(*part) {
            Some(Value::Table(t)) => schema = t,
            _ => return Err(unknown()),
        }
    }
    let template = match schema.get(*leaf) {
        None => return Err(unknown()),
        Some(Value::Table(_)) => {
            return Err(ConfigError::invalid(
                dotted_key.to_owned(),
                "is a section, not a key; set one of its keys",
            ))
        }
        Some(v) => v,
    };
    let value = override_value(raw_value, template);

    let mut target = table;
    for (i, part) in parents.iter().enumerate() {
        let entry = target
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        match entry {
            Value::Table(t) => target = t,
            other => {
                return Err(ConfigError::wrong_type(
                    path[..=i].join("."),
                    "a table",
                    other,
                ))
            }
        }
    }
    target.insert((*leaf).to_owned(), value);
    Ok(())
}

/// Appends a command-line string to the array at the dotted key in `table`.
///
/// The key must name an array key of the default config (such as
/// `auth.publish_tokens`); anything else is refused naming the key. The raw
/// value is appended as a string exactly as given, with no TOML reading, so
/// a token is never reinterpreted. The array starts from what the table
/// holds (the default, or the config file's value), so appends add to the
/// file's list rather than replace it; `--set key=[...]` replaces it.
pub fn append_override(
    table: &mut Table,
    dotted_key: &str,
    raw_value: &str,
) -> Result<(), ConfigError> {
    let not_array = || {
        ConfigError::invalid(
            dotted_key.to_owned(),
            "is not a list, so it cannot be appended to; set it instead",
        )
    };
    match lookup_mut(&mut default_table(), dotted_key) {
        Some(Value::Array(_)) => {}
        Some(_) => return Err(not_array()),
        None => {
            return Err(ConfigError::UnknownKey {
                key: dotted_key.to_owned(),
            })
        }
    }
    // Make sure the key exists in `table` (it may lack it), then push.
    if lookup_mut(table, dotted_key).is_none() {
        apply_override(table, dotted_key, "[]")?;
    }
    match lookup_mut(table, dotted_key) {
        Some(Value::Array(items)) => {
            items.push(Value::String(raw_value.to_owned()));
            Ok(())
        }
        // The config file put something else here; its value may be a secret.
        Some(other) => Err(ConfigError::WrongType {
            key: dotted_key.to_owned(),
            expected: "an array of strings",
            found: format!("{} (value not shown)", other.type_str()),
        }),
        None => Err(ConfigError::UnknownKey {
            key: dotted_key.to_owned(),
        }),
    }
}

/// Returns the value at a dotted key of a table, if there is one.
fn lookup_mut<'t>(table: &'t mut Table, dotted_key: &str) -> Option<&'t mut Value> {
    let mut parts = dotted_key.split('.');
    let mut value = table.get_mut(parts.next()?)?;
    for part in parts {
        value = value.as_table_mut()?.get_mut(part)?;
    }
    Some(value)
}

/// Turns a command-line string into a TOML value shaped like `template`'s type.
fn override_value(raw: &str, template: &Value) -> Value {
    let parsed = Value::deserialize(toml::de::ValueDeserializer::new(raw)).ok();
    match (template, parsed) {
        (Value::String(_), Some(quoted @ Value::String(_))) => quoted,
        (Value::String(_), _) => Value::String(raw.to_owned()),
        (_, Some(value)) => value,
        (_, None) => Value::String(raw.to_owned()),
    }
}

/// Parses TOML text into a table.
///
/// A syntax error gives toml's message and the line and column, but not the
/// quoted source line toml would add: that line may hold a token from `[auth]`.
/// An error in a value (`max_connections = 99999999999999999999` is too
/// large for TOML's 64-bit integers) also names the dotted key, found from
/// the text around it ([`key_at`]), as toml's message does not.
fn parse_table(text: &str, origin: &str) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|e| {
        // One line: toml puts its "expected ..." hint on a line of its own.
        let message = e.message().trim_end().replace('\n', "; ");
        let key = e.span().and_then(|span| key_at(text, span.start));
        let message = match e.span() {
            Some(span) => {
                let before = &text.as_bytes()[..span.start.min(text.len())];
                let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                let line_start = before
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let column = String::from_utf8_lossy(&before[line_start..])
                    .chars()
                    .count()
                    + 1;
                format!("line {line}, column {column}: {message}")
            }
            None => message,
        };
        ConfigError::Syntax {
            origin: origin.to_owned(),
            key,
            message,
        }
    })
}

/// The dotted key whose value holds byte `offset` of `text`: the bare key
/// before the `=` of offset's line, under the nearest `[section]` header
/// above it. `None` when offset's line is no `key = value` line (a header,
/// a continued array) or the offset is not after its `=` (the error is in
/// the key itself). Only bare keys are read: tickfan's keys need no quotes.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let bytes = text.as_bytes();
    let offset = offset.min(bytes.len());
    let line_start = bytes[..offset]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line_end = bytes[offset..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| offset + i);
    // '\n' and '=' are ASCII, so these slices fall on character boundaries.
    let line = text.get(line_start..line_end)?;
    let equals = line.find('=')?;
    if offset <= line_start + equals {
        return None;
    }
    let key = dotted_bare_key(&line[..equals])?;
    let section = text[..line_start].lines().rev().find_map(|l| {
        let header = l.trim_start().strip_prefix('[')?;
        let header = header.strip_prefix('[').unwrap_or(header);
        dotted_bare_key(&header[..header.find(']')?])
    });
    Some(match section {
        Some(section) => format!("{section}.{key}"),
        None => key,
    })
}

/// `a.b . c` as `a.b.c` when every part is a non-empty bare key (TOML's
/// `A-Za-z0-9_-`), else `None`.
fn dotted_bare_key(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.split('.').map(str::trim).collect();
    let bare = |p: &&str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    parts.iter().all(bare).then(|| parts.join("."))
}

/// Merges `overlay` into `base` key by key; a key `base` lacks is unknown.
fn merge(base: &mut Table, overlay: Table, prefix: &str) -> Result<(), ConfigError> {
    for (name, value) in overlay {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let Some(slot) = base.get_mut(&name) else {
            return Err(ConfigError::UnknownKey { key });
        };
        match (slot, value) {
            (Value::Table(base_section), Value::Table(section)) => {
                merge(base_section, section, &key)?
            }
            (Value::Table(_), other) => {
                return Err(ConfigError::wrong_type(key, "a table", &other))
            }
            // A section where a key belongs: name the first key under it,
            // as that is what the user wrote.
            (_, Value::Table(_)) => return Err(ConfigError::UnknownKey { key }),
            // Leaves are replaced whole (arrays too); types are checked on conversion.
            (slot, value) => *slot = value,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        Config::from_toml_str(text).unwrap_err()
    }

    fn err_key(text: &str) -> String {
        err(text).key().unwrap().to_owned()
    }

    #[test]
    fn embedded_default_parses_to_documented_values() {
        let c = Config::embedded_default();
        assert_eq!(
            c,
            Config {
                server: ServerConfig {
                    listen: Some("127.0.0.1:9001".parse().unwrap()),
                    workers: 0,
                    backlog: 1024,
                    max_connections: 10_000,
                    max_connections_per_ip: 0,
                    shutdown_grace_ms: 5000,
                    drain_delay_ms: 0,
                },
                websocket: WebSocketConfig {
                    path: "/ws".to_owned(),
                    echo_path: None,
                    max_frame_bytes: 1_048_576,
                    max_message_bytes: 1_048_576,
                    max_fragments_per_message: 1024,
                    max_header_bytes: 8192,
                    handshake_timeout_ms: 5000,
                    ping_interval_ms: 30_000,
                    idle_timeout_ms: 60_000,
                    close_timeout_ms: 3000,
                    max_messages_per_sec: 50_000,
                    deflate: true,
                    deflate_min_bytes: 128,
                    deflate_level: 1,
                },
                broker: BrokerConfig {
                    shards: 64,
                    history_depth: 1024,
                    topic_ttl_ms: 300_000,
                    max_topics: 100_000,
                    max_topics_per_connection: 256,
                    max_client_errors: 32,
                    heartbeat_interval_ms: 5000,
                    max_queue_bytes: 1_048_576,
                    slow_consumer: SlowConsumerPolicy::Conflate,
                    slow_consumer_grace_ms: 2000,
                    flush_interval_ms: 0,
                    max_batch_delay_ms: 5,
                    batching: BatchingMode::Sweep,
                    max_mailbox_ticks: 65_536,
                    max_total_queue_bytes: 1 << 30,
                },
                http: HttpConfig {
                    max_body_bytes: 1_048_576,
                    poll_timeout_secs: 25,
                    max_poll_timeout_secs: 60,
                    max_request_topics: 64,
                    metrics_path: Some("/metrics".to_owned()),
                    demo_path: Some("/demo".to_owned()),
                },
                demo: DemoConfig {
                    feed: false,
                    feed_symbols: [
                        "AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "JPM", "V", "XOM",
                        "KO", "IBM"
                    ]
                    .map(String::from)
                    .to_vec(),
                    feed_ticks_per_second: 50,
                },
                auth: AuthConfig {
                    publish_tokens: vec![],
                    subscribe_tokens: vec![],
                    subscribe_requires_token: false,
                },
                jwt: JwtConfig {
                    algorithm: None,
                    hmac_secret: None,
                    public_key_file: None,
                    jwks_file: None,
                    issuer: None,
                    audience: None,
                    leeway_secs: 30,
                    expiry_warning_secs: 30,
                },
                tls: TlsConfig {
                    listen: None,
                    cert_file: None,
                    key_file: None,
                    client_ca_file: None,
                },
                cluster: ClusterConfig {
                    nats_urls: vec![],
                    stream: "TICKFAN".to_owned(),
                    subject_prefix: "tickfan".to_owned(),
                    replicas: 1,
                    duplicate_window_ms: 120_000,
                    publish_window: 1024,
                    publish_timeout_ms: 30_000,
                    ping_interval_ms: 2000,
                    credentials_file: None,
                    token: None,
                    user: None,
                    password: None,
                    tls_ca_file: None,
                    tls_cert_file: None,
                    tls_key_file: None,
                },
                log: LogConfig {
                    level: "info".to_owned(),
                },
            }
        );
        assert_eq!(Config::from_toml_str("").unwrap(), c);
        assert_eq!(c.websocket.ping_interval(), Duration::from_secs(30));
        assert_eq!(c.server.shutdown_grace(), Duration::from_secs(5));
        assert_eq!(c.broker.topic_ttl(), Duration::from_secs(300));
        assert_eq!(c.broker.heartbeat_interval(), Duration::from_secs(5));
        assert_eq!(c.broker.slow_consumer_grace(), Duration::from_secs(2));
        assert!(c.auth.publish_is_open());
    }

    #[test]
    fn every_default_key_is_read() {
        // from_table refuses leftovers, so this fails if a documented key has no field.
        Config::from_table(default_table()).unwrap();
    }

    #[test]
    fn every_key_is_a_field_and_every_field_a_key() {
        let section_of = |table: &mut Table, name: &str| -> Table {
            match table.get(name) {
                Some(Value::Table(t)) => t.clone(),
                other => panic!("{name} is not a section: {other:?}"),
            }
        };
        for (section, keys) in default_table() {
            let Value::Table(keys) = keys else {
                panic!("{section} is not a section");
            };
            // No field has a default: a table without any one key is refused, naming it.
            for key in keys.keys() {
                let mut table = default_table();
                let mut s = section_of(&mut table, &section);
                s.remove(key);
                table.insert(section.clone(), Value::Table(s));
                assert_eq!(
                    Config::from_table(table),
                    Err(ConfigError::Missing {
                        key: format!("{section}.{key}")
                    })
                );
            }
            // Every section denies unknown fields, even where no merge checked the key first.
            let mut table = default_table();
            let mut s = section_of(&mut table, &section);
            s.insert("not_a_key".to_owned(), Value::Integer(1));
            table.insert(section.clone(), Value::Table(s));
            assert_eq!(
                Config::from_table(table),
                Err(ConfigError::UnknownKey {
                    key: format!("{section}.not_a_key")
                })
            );
            let mut table = default_table();
            table.remove(&section);
            assert_eq!(
                Config::from_table(table),
                Err(ConfigError::Missing { key: section })
            );
        }
        let mut table = default_table();
        table.insert("nope".to_owned(), Value::Table(Table::new()));
        assert_eq!(
            Config::from_table(table),
            Err(ConfigError::UnknownKey {
                key: "nope".to_owned()
            })
        );
    }

    #[test]
    fn from_table_names_the_key_of_a_wrong_type() {
        // Tables that no merge checked: serde's error is explained against the schema.
        let mut table = default_table();
        table.insert("server".to_owned(), Value::Integer(3));
        assert_eq!(
            Config::from_table(table).unwrap_err().to_string(),
            "config key `server`: expected a table, found integer 3"
        );
        let mut table = default_table();
        apply_override(&mut table, "server.workers", "[1]").unwrap();
        assert_eq!(
            Config::from_table(table).unwrap_err().to_string(),
            "config key `server.workers`: expected an integer, found array [1]"
        );
        let mut table = default_table();
        apply_override(
            &mut table,
            "auth.publish_tokens",
            &format!("[\"{SECRET}\", 4]"),
        )
        .unwrap();
        let e = Config::from_table(table).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config key `auth.publish_tokens`: expected an array of strings, found integer at index 1"
        );
        let mut table = default_table();
        apply_override(&mut table, "auth.subscribe_requires_token", "1").unwrap();
        assert_eq!(
            Config::from_table(table).unwrap_err().to_string(),
            "config key `auth.subscribe_requires_token`: expected true or false, found integer 1"
        );
        // Too large for the field's type, though TOML holds it.
        let e = override_then_load(&[("server.backlog", "4294967296")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config key `server.backlog`: 4294967296 is out of range: must be at most 4294967295"
        );
    }

    #[test]
    fn every_default_key_is_documented_with_its_default() {
        // Each key line in the default file is preceded by a comment that says "Default".
        let lines: Vec<&str> = DEFAULT_TOML.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            let comment: Vec<&str> = lines[..i]
                .iter()
                .rev()
                .take_while(|l| l.trim_start().starts_with('#'))
                .copied()
                .collect();
            assert!(
                comment.iter().any(|l| l.contains("Default")),
                "key line {line:?} lacks a comment giving its default"
            );
        }
    }

    #[test]
    fn partial_file_merges_over_defaults() {
        let c = Config::from_toml_str(
            "[server]\nworkers = 4\n[websocket]\nmax_message_bytes = 65536\necho_path = \"/echo\"\n",
        )
        .unwrap();
        let d = Config::embedded_default();
        assert_eq!(c.server.workers, 4);
        assert_eq!(c.server.listen, d.server.listen);
        assert_eq!(c.websocket.max_message_bytes, 65536);
        assert_eq!(c.websocket.max_frame_bytes, d.websocket.max_frame_bytes);
        assert_eq!(c.websocket.echo_path.as_deref(), Some("/echo"));
        assert_eq!(c.log, d.log);
    }

    #[test]
    fn unknown_key_and_section_are_named() {
        let e = err("[websocket]\nmax_frme_bytes = 10\n");
        assert_eq!(e.key(), Some("websocket.max_frme_bytes"));
        assert_eq!(
            e.to_string(),
            "unknown config key `websocket.max_frme_bytes`"
        );
        assert_eq!(err_key("[brokr]\nx = 1\n"), "brokr");
        assert_eq!(err_key("listen = \"127.0.0.1:1\"\n"), "listen");
        assert_eq!(err_key("[server.listen]\nport = 1\n"), "server.listen");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = err("[server]\nworkers = \"four\"\n");
        assert_eq!(e.key(), Some("server.workers"));
        assert_eq!(
            e.to_string(),
            "config key `server.workers`: expected an integer, found string \"four\""
        );
        assert_eq!(err_key("[log]\nlevel = 3\n"), "log.level");
        assert_eq!(err_key("server = 3\n"), "server");
        assert!(matches!(
            err("[websocket]\nping_interval_ms = 1.5\n"),
            ConfigError::WrongType { .. }
        ));
    }

    #[test]
    fn bad_socket_address_is_named() {
        let e = err("[server]\nlisten = \"abc\"\n");
        assert_eq!(
            e.to_string(),
            "config key `server.listen`: \"abc\" is not a socket address"
        );
        let c = Config::from_toml_str("[server]\nlisten = \"[::1]:0\"\n").unwrap();
        assert_eq!(c.server.listen, Some("[::1]:0".parse().unwrap()));
    }

    #[test]
    fn the_plain_listener_is_off_only_beside_a_tls_listener() {
        let e = err("[server]\nlisten = \"\"\n");
        assert_eq!(
            e.to_string(),
            "config key `server.listen`: is empty and so is tls.listen: the broker would listen nowhere"
        );
        let c = Config::from_toml_str(
            "[server]\nlisten = \"\"\n[tls]\nlisten = \"127.0.0.1:0\"\n\
             cert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
        )
        .unwrap();
        assert_eq!(c.server.listen, None);
        assert_eq!(c.tls.listen, Some("127.0.0.1:0".parse().unwrap()));
    }

    #[test]
    fn range_errors_are_named() {
        for (text, key) in [
            ("[server]\nworkers = 1025", "server.workers"),
            ("[server]\nworkers = -1", "server.workers"),
            ("[server]\nbacklog = 0", "server.backlog"),
            ("[server]\nbacklog = 4294967296", "server.backlog"),
            ("[server]\nmax_connections = 0", "server.max_connections"),
            (
                "[server]\nshutdown_grace_ms = -5",
                "server.shutdown_grace_ms",
            ),
            (
                "[server]\ndrain_delay_ms = 3600001",
                "server.drain_delay_ms",
            ),
            (
                "[websocket]\nmax_frame_bytes = 124",
                "websocket.max_frame_bytes",
            ),
            (
                "[websocket]\nmax_message_bytes = 100",
                "websocket.max_message_bytes",
            ),
            (
                "[websocket]\nmax_fragments_per_message = 0",
                "websocket.max_fragments_per_message",
            ),
            (
                "[websocket]\nmax_header_bytes = 1023",
                "websocket.max_header_bytes",
            ),
            (
                "[websocket]\nmax_header_bytes = 1048577",
                "websocket.max_header_bytes",
            ),
            (
                "[websocket]\nhandshake_timeout_ms = 0",
                "websocket.handshake_timeout_ms",
            ),
            (
                "[websocket]\nclose_timeout_ms = 0",
                "websocket.close_timeout_ms",
            ),
            (
                "[websocket]\nping_interval_ms = 0",
                "websocket.ping_interval_ms",
            ),
            (
                "[websocket]\nidle_timeout_ms = 30000",
                "websocket.idle_timeout_ms",
            ),
            ("[broker]\nshards = 0", "broker.shards"),
            ("[broker]\nshards = 65537", "broker.shards"),
            ("[broker]\nhistory_depth = 1000001", "broker.history_depth"),
            ("[broker]\nhistory_depth = -1", "broker.history_depth"),
            ("[broker]\ntopic_ttl_ms = 999", "broker.topic_ttl_ms"),
            ("[broker]\nmax_topics = 0", "broker.max_topics"),
            (
                "[broker]\nmax_topics_per_connection = 0",
                "broker.max_topics_per_connection",
            ),
            (
                "[broker]\nmax_client_errors = 0",
                "broker.max_client_errors",
            ),
            (
                "[broker]\nheartbeat_interval_ms = 99",
                "broker.heartbeat_interval_ms",
            ),
            ("[broker]\nmax_queue_bytes = 4095", "broker.max_queue_bytes"),
            (
                "[broker]\nslow_consumer_grace_ms = -1",
                "broker.slow_consumer_grace_ms",
            ),
            (
                "[broker]\nflush_interval_ms = 1001",
                "broker.flush_interval_ms",
            ),
            (
                "[broker]\nmax_batch_delay_ms = 1001",
                "broker.max_batch_delay_ms",
            ),
            ("[broker]\nbatching = \"nagle\"", "broker.batching"),
            (
                "[broker]\nmax_mailbox_ticks = 0",
                "broker.max_mailbox_ticks",
            ),
            (
                "[broker]\nmax_total_queue_bytes = 1048575",
                "broker.max_total_queue_bytes",
            ),
            ("[log]\nlevel = \"\"", "log.level"),
            ("[log]\nlevel = \"info,=[\"", "log.level"),
            ("[log]\nlevel = \"inof\"", "log.level"),
            ("[log]\nlevel = \"warning\"", "log.level"),
        ] {
            let e = err(text);
            assert_eq!(e.key(), Some(key), "{text}: {e}");
            assert!(matches!(e, ConfigError::Invalid { .. }), "{text}: {e}");
        }
        assert_eq!(
            err("[server]\nworkers = 2000").to_string(),
            "config key `server.workers`: 2000 is out of range: must be between 0 and 1024"
        );
        assert_eq!(
            err("[websocket]\nidle_timeout_ms = 100\nping_interval_ms = 200").to_string(),
            "config key `websocket.idle_timeout_ms`: 100 must be greater than \
             websocket.ping_interval_ms (200)"
        );
    }

    #[test]
    fn log_level_takes_levels_and_target_directives_only() {
        for good in [
            "trace",
            "DEBUG",
            " Info ",
            "warn",
            "error",
            "off",
            "warn,tickfan::net=trace",
            "info,tickfan=DEBUG,hyper-util=off",
            "tickfan::net::worker=debug",
        ] {
            let c = Config::from_toml_str(&format!("[log]\nlevel = {good:?}"))
                .unwrap_or_else(|e| panic!("{good:?}: {e}"));
            assert_eq!(c.log.level, good);
        }
        // EnvFilter would take each of these as a target name and log nothing else.
        for bad in [
            "inof",
            "warning",
            "information",
            "info,tickfan",
            "info, tickfan=debug",
            "tickfan::net",
            "info,",
            "tickfan=verbose",
            "=info",
            "tickfan[conn]=debug",
        ] {
            let e = err(&format!("[log]\nlevel = {bad:?}"));
            assert_eq!(e.key(), Some("log.level"), "{bad:?}: {e}");
            assert!(matches!(e, ConfigError::Invalid { .. }), "{bad:?}: {e}");
        }
        assert_eq!(
            err("[log]\nlevel = \"inof\"").to_string(),
            "config key `log.level`: \"inof\" is not a log level or filter: \"inof\" is \
             neither one of trace, debug, info, warn, error, off nor `target=level`, \
             e.g. \"warn,tickfan::net=trace\""
        );
        let e = override_then_load(&[("log.level", "warning")]).unwrap_err();
        assert_eq!(e.key(), Some("log.level"));
    }

    #[test]
    fn limits_accept_their_bounds() {
        let c = Config::from_toml_str(
            "[server]\nworkers = 1024\nshutdown_grace_ms = 0\n\
             [websocket]\nmax_frame_bytes = 125\nmax_message_bytes = 16777216\n\
             max_header_bytes = 1048576\nping_interval_ms = 1\nidle_timeout_ms = 2\n\
             [broker]\nshards = 65536\nhistory_depth = 0\ntopic_ttl_ms = 1000\n\
             max_topics = 1\nmax_topics_per_connection = 1\nmax_client_errors = 1\n\
             heartbeat_interval_ms = 100\nmax_queue_bytes = 4096\nslow_consumer_grace_ms = 0\n\
             [log]\nlevel = \"warn,tickfan::net=trace\"\n",
        )
        .unwrap();
        assert_eq!(c.websocket.max_frame_bytes, 125);
        assert_eq!(c.broker.shards, 65_536);
        assert_eq!(c.broker.history_depth, 0);
        assert_eq!(c.broker.slow_consumer_grace(), Duration::ZERO);
        // A frame limit above the message limit is allowed: conformance runs raise one alone.
        assert!(c.websocket.max_message_bytes > c.websocket.max_frame_bytes);
    }

    #[test]
    fn echo_path_empty_is_off_and_must_start_with_slash() {
        assert_eq!(
            Config::from_toml_str("[websocket]\necho_path = \"\"")
                .unwrap()
                .websocket
                .echo_path,
            None
        );
        let e = err("[websocket]\necho_path = \"echo\"");
        assert_eq!(e.key(), Some("websocket.echo_path"));
        assert!(e.to_string().contains("start with '/'"), "{e}");
        assert_eq!(
            err_key("[websocket]\necho_path = \"/echo?x=1\""),
            "websocket.echo_path"
        );
    }

    #[test]
    fn ws_path_must_be_a_bare_path_apart_from_echo_path() {
        let c = Config::from_toml_str("[websocket]\npath = \"/feed/v1\"\necho_path = \"/echo\"")
            .unwrap();
        assert_eq!(c.websocket.path, "/feed/v1");
        assert_eq!(
            Config::from_toml_str("[websocket]\npath = \"/\"")
                .unwrap()
                .websocket
                .path,
            "/"
        );
        for bad in ["", "ws", "/ws?x=1", "/w s", "/ws#top"] {
            let e = err(&format!("[websocket]\npath = {bad:?}"));
            assert_eq!(e.key(), Some("websocket.path"), "{bad:?}: {e}");
            assert!(matches!(e, ConfigError::Invalid { .. }), "{bad:?}: {e}");
        }
        assert!(err("[websocket]\npath = \"ws\"")
            .to_string()
            .contains("must start with '/'"));
        let e = err("[websocket]\npath = \"/echo\"\necho_path = \"/echo\"");
        assert_eq!(
            e.to_string(),
            "config key `websocket.echo_path`: \"/echo\" must differ from websocket.path (\"/echo\")"
        );
    }

    #[test]
    fn route_paths_must_not_collide() {
        for (text, key) in [
            ("[http]\nmetrics_path = \"/publish\"", "http.metrics_path"),
            ("[http]\nmetrics_path = \"/healthz\"", "http.metrics_path"),
            ("[http]\nmetrics_path = \"/readyz\"", "http.metrics_path"),
            ("[http]\nmetrics_path = \"/poll\"", "http.metrics_path"),
            ("[http]\nmetrics_path = \"/sse\"", "http.metrics_path"),
            ("[http]\nmetrics_path = \"/ws\"", "http.metrics_path"),
            (
                "[http]\nmetrics_path = \"/echo\"\n[websocket]\necho_path = \"/echo\"",
                "http.metrics_path",
            ),
            ("[websocket]\npath = \"/sse\"", "websocket.path"),
            (
                "[websocket]\necho_path = \"/publish\"",
                "websocket.echo_path",
            ),
            ("[websocket]\npath = \"/metrics\"", "http.metrics_path"),
        ] {
            let e = err(text);
            assert_eq!(e.key(), Some(key), "{text}: {e}");
            assert!(matches!(e, ConfigError::Invalid { .. }), "{text}: {e}");
        }
        assert_eq!(
            err("[http]\nmetrics_path = \"/publish\"").to_string(),
            "config key `http.metrics_path`: \"/publish\" is the path of a built-in route; \
             choose another"
        );
        assert_eq!(
            err("[http]\nmetrics_path = \"/ws\"").to_string(),
            "config key `http.metrics_path`: \"/ws\" must differ from websocket.path (\"/ws\")"
        );
        // Off paths collide with nothing; near misses are fine.
        let c = Config::from_toml_str(
            "[http]\nmetrics_path = \"\"\n[websocket]\npath = \"/metrics\"\necho_path = \"/pollx\"",
        )
        .unwrap();
        assert_eq!(c.websocket.path, "/metrics");
        Config::from_toml_str("[http]\nmetrics_path = \"/publish/metrics\"").unwrap();
        let e = override_then_load(&[("http.metrics_path", "/healthz")]).unwrap_err();
        assert_eq!(e.key(), Some("http.metrics_path"));
    }

    #[test]
    fn slow_consumer_policy_parses_the_three_names() {
        for (name, policy) in [
            ("conflate", SlowConsumerPolicy::Conflate),
            ("drop", SlowConsumerPolicy::Drop),
            ("disconnect", SlowConsumerPolicy::Disconnect),
        ] {
            let c = Config::from_toml_str(&format!("[broker]\nslow_consumer = {name:?}")).unwrap();
            assert_eq!(c.broker.slow_consumer, policy);
            assert_eq!(policy.as_str(), name);
            assert_eq!(policy.to_string(), name);
        }
        let e = err("[broker]\nslow_consumer = \"Drop\"");
        assert_eq!(
            e.to_string(),
            "config key `broker.slow_consumer`: \"Drop\" is not a slow-consumer policy: \
             use conflate, drop or disconnect"
        );
        assert_eq!(
            err_key("[broker]\nslow_consumer = 1"),
            "broker.slow_consumer"
        );
        let e = override_then_load(&[("broker.slow_consumer", "block")]).unwrap_err();
        assert_eq!(e.key(), Some("broker.slow_consumer"));
        assert!(
            e.to_string().contains("conflate, drop or disconnect"),
            "{e}"
        );
    }

    #[test]
    fn tokens_parse_and_subscribe_requirement_needs_one() {
        let c = Config::from_toml_str(
            "[auth]\npublish_tokens = [\"p-1\", \"p~2\"]\nsubscribe_tokens = [\"s_1\"]\n\
             subscribe_requires_token = true\n",
        )
        .unwrap();
        assert_eq!(c.auth.publish_tokens, ["p-1", "p~2"]);
        assert_eq!(c.auth.subscribe_tokens, ["s_1"]);
        assert!(c.auth.subscribe_requires_token);
        assert!(!c.auth.publish_is_open());
        assert_eq!(
            err_key("[auth]\nsubscribe_requires_token = true"),
            "auth.subscribe_requires_token"
        );
        // A publish token alone is enough for subscribers to get in.
        Config::from_toml_str("[auth]\npublish_tokens = [\"p\"]\nsubscribe_requires_token = true")
            .unwrap();
        let e = err("[auth]\nsubscribe_requires_token = \"yes\"");
        assert_eq!(
            e.to_string(),
            "config key `auth.subscribe_requires_token`: expected true or false, found string \"yes\""
        );
        let c = override_then_load(&[
            ("auth.subscribe_requires_token", "true"),
            ("auth.publish_tokens", "[\"a\", \"b\"]"),
        ])
        .unwrap();
        assert_eq!(c.auth.publish_tokens, ["a", "b"]);
        assert!(c.auth.subscribe_requires_token);
    }

    /// A token value that must never appear in an error or a `Debug`.
    const SECRET: &str = "s3cr3t-SECRET";

    #[test]
    fn token_errors_name_the_key_but_not_the_token() {
        for (text, key) in [
            (
                format!("publish_tokens = [\"ok\", \"{SECRET} x\"]"),
                "auth.publish_tokens",
            ),
            (
                format!("publish_tokens = [\"{SECRET}\\u00e9\"]"),
                "auth.publish_tokens",
            ),
            (
                format!("publish_tokens = [\"{SECRET}\\t\"]"),
                "auth.publish_tokens",
            ),
            (
                "subscribe_tokens = [\"\"]".to_owned(),
                "auth.subscribe_tokens",
            ),
            (
                format!("publish_tokens = \"{SECRET}\""),
                "auth.publish_tokens",
            ),
            (
                format!("subscribe_tokens = [\"{SECRET}\", 3]"),
                "auth.subscribe_tokens",
            ),
            // Printable, but no `Authorization: Bearer` can carry them (RFC 6750 §2.1).
            (
                format!("publish_tokens = [\"{SECRET}@x\"]"),
                "auth.publish_tokens",
            ),
            (
                format!("publish_tokens = [\"{SECRET},x\"]"),
                "auth.publish_tokens",
            ),
            (
                format!("subscribe_tokens = [\"{SECRET}=x\"]"),
                "auth.subscribe_tokens",
            ),
            (
                format!("subscribe_tokens = [\"\\\"{SECRET}\\\"\"]"),
                "auth.subscribe_tokens",
            ),
            (
                "publish_tokens = [\"===\"]".to_owned(),
                "auth.publish_tokens",
            ),
        ] {
            let e = err(&format!("[auth]\n{text}\n"));
            assert_eq!(e.key(), Some(key), "{text}: {e}");
            assert!(!e.to_string().contains(SECRET), "{e}");
            assert!(!format!("{e:?}").contains(SECRET), "{e:?}");
        }
        assert_eq!(
            err("[auth]\npublish_tokens = [\"ok\", \"a b\"]").to_string(),
            "config key `auth.publish_tokens`: token at index 1 must be an RFC 6750 bearer \
             token: letters, digits and - . _ ~ + /, optionally ending in = (value not shown)"
        );
        // Every b64token character is taken, trailing '=' too.
        let c = Config::from_toml_str(
            "[auth]\npublish_tokens = [\"aZ09-._~+/==\", \"x\"]\nsubscribe_tokens = [\"s=\"]",
        )
        .unwrap();
        assert_eq!(c.auth.publish_tokens, ["aZ09-._~+/==", "x"]);
        assert_eq!(
            err("[auth]\nsubscribe_tokens = [\"\"]").to_string(),
            "config key `auth.subscribe_tokens`: token at index 0 is empty"
        );
        // A bare (non-TOML) value on the command line becomes a string, and is not shown either.
        let e = override_then_load(&[("auth.publish_tokens", SECRET)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config key `auth.publish_tokens`: expected an array of strings, \
             found string (value not shown)"
        );
        // A syntax error on a line holding a token does not quote the line.
        let e = err(&format!("[auth]\npublish_tokens = [\"{SECRET}\" \"x\"]\n"));
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
        assert!(!e.to_string().contains(SECRET), "{e}");
        assert!(e.to_string().contains("line 2, column"), "{e}");
        assert_eq!(e.key(), Some("auth.publish_tokens"));
    }

    #[test]
    fn debug_redacts_tokens() {
        let c = Config::from_toml_str(&format!(
            "[auth]\npublish_tokens = [\"{SECRET}\", \"{SECRET}2\"]\n\
             subscribe_tokens = [\"{SECRET}3\"]\n"
        ))
        .unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(debug.contains("publish_tokens: [2 redacted]"), "{debug}");
        assert!(debug.contains("subscribe_tokens: [1 redacted]"), "{debug}");
        assert!(!format!("{c:#?}").contains(SECRET));
    }

    #[test]
    fn append_override_adds_to_the_list_and_checks_the_key() {
        let mut table = parse_over_default("[auth]\npublish_tokens = [\"file\"]", "t").unwrap();
        append_override(&mut table, "auth.publish_tokens", "a").unwrap();
        // Appended raw: no TOML reading, so numbers stay as typed...
        append_override(&mut table, "auth.publish_tokens", "0x10").unwrap();
        append_override(&mut table, "auth.subscribe_tokens", "7").unwrap();
        let c = Config::from_table(table.clone()).unwrap();
        assert_eq!(c.auth.publish_tokens, ["file", "a", "0x10"]);
        assert_eq!(c.auth.subscribe_tokens, ["7"]);
        // ...and quotes too, which no bearer token may hold: refused, not unquoted.
        append_override(&mut table, "auth.publish_tokens", "\"q\"").unwrap();
        let e = Config::from_table(table).unwrap_err();
        assert_eq!(e.key(), Some("auth.publish_tokens"));
        assert!(e.to_string().contains("token at index 3"), "{e}");

        let mut table = default_table();
        let e = append_override(&mut table, "server.workers", "1").unwrap_err();
        assert_eq!(e.key(), Some("server.workers"));
        let e = append_override(&mut table, "auth.publish_tokenz", "1").unwrap_err();
        assert_eq!(
            e,
            ConfigError::UnknownKey {
                key: "auth.publish_tokenz".to_owned()
            }
        );
        let e = append_override(&mut table, "auth", "1").unwrap_err();
        assert_eq!(e.key(), Some("auth"));

        let mut table =
            parse_over_default(&format!("[auth]\npublish_tokens = \"{SECRET}\""), "t").unwrap();
        let e = append_override(&mut table, "auth.publish_tokens", "a").unwrap_err();
        assert_eq!(e.key(), Some("auth.publish_tokens"));
        assert!(!e.to_string().contains(SECRET), "{e}");
    }

    #[test]
    fn value_errors_name_the_key() {
        let e = err("[server]\nmax_connections = 99999999999999999999\n");
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
        assert_eq!(e.key(), Some("server.max_connections"));
        assert_eq!(
            e.to_string(),
            "invalid TOML in config, config key `server.max_connections`: line 2, column 19: \
             number too large to fit in target type"
        );
        for (text, key) in [
            ("[server] # s\n\nworkers = 1x\n", "server.workers"),
            (
                "[websocket]\n  max_frame_bytes=9e99999\n",
                "websocket.max_frame_bytes",
            ),
            (
                "[[ server ]]\n a . b = 99999999999999999999\n",
                "server.a.b",
            ),
            ("server.backlog = 99999999999999999999", "server.backlog"),
            (
                "[server]\nworkers = 1\n[broker]\nshards = 99999999999999999999",
                "broker.shards",
            ),
        ] {
            assert_eq!(err(text).key(), Some(key), "{text:?}: {}", err(text));
        }
        // Errors outside a value name no key.
        for text in [
            "[server\nworkers = 1",
            "[server]\nwor kers = 1",
            "[server]\n\"workers\" = 99999999999999999999",
            "[server]\nlisten = [\n  99999999999999999999]",
        ] {
            let e = err(text);
            assert!(matches!(e, ConfigError::Syntax { .. }), "{text:?}: {e}");
            assert_eq!(e.key(), None, "{text:?}: {e}");
        }
    }

    #[test]
    fn syntax_error_reports_toml_message() {
        let e = err("[server\nworkers = 1");
        assert_eq!(e.key(), None);
        let ConfigError::Syntax { message, .. } = &e else {
            panic!("expected a syntax error, got {e:?}");
        };
        assert!(!message.is_empty());
        assert!(e.to_string().starts_with("invalid TOML in config: "), "{e}");
    }

    fn override_then_load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut table = default_table();
        for (key, raw) in pairs {
            apply_override(&mut table, key, raw)?;
        }
        Config::from_table(table)
    }

    #[test]
    fn override_parses_numbers_strings_and_bare_addresses() {
        let c = override_then_load(&[
            ("server.workers", "8"),
            ("server.listen", "0.0.0.0:9100"),
            ("websocket.echo_path", "/echo"),
            ("log.level", "debug"),
            ("websocket.max_message_bytes", "16_777_216"),
        ])
        .unwrap();
        assert_eq!(c.server.workers, 8);
        assert_eq!(c.server.listen, Some("0.0.0.0:9100".parse().unwrap()));
        assert_eq!(c.websocket.echo_path.as_deref(), Some("/echo"));
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.websocket.max_message_bytes, 16 * 1024 * 1024);

        // Quoted TOML strings are unquoted; string keys keep number-like text as text.
        let c = override_then_load(&[("log.level", "\"warn\""), ("server.listen", "[::1]:80")])
            .unwrap();
        assert_eq!(c.log.level, "warn");
        assert_eq!(c.server.listen.unwrap().port(), 80);
        assert_eq!(
            override_then_load(&[("server.listen", "9001")])
                .unwrap_err()
                .to_string(),
            "config key `server.listen`: \"9001\" is not a socket address"
        );
    }

    #[test]
    fn override_errors_name_the_key() {
        let e = override_then_load(&[("server.workers", "many")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config key `server.workers`: expected an integer, found string \"many\""
        );
        // Trailing text after a valid value is not silently dropped.
        assert_eq!(
            override_then_load(&[("server.workers", "8 9")])
                .unwrap_err()
                .key(),
            Some("server.workers")
        );
        for key in [
            "server.listn",
            "nope.listen",
            "server",
            "server..listen",
            "",
            "server.listen.x",
        ] {
            let e = override_then_load(&[(key, "1")]).unwrap_err();
            assert_eq!(e.key(), Some(key), "{key}: {e}");
        }
        let e = override_then_load(&[("websocket.max_frame_bytes", "-1")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config key `websocket.max_frame_bytes`: -1 is out of range: must not be negative"
        );
    }

    #[test]
    fn worker_count_zero_means_at_least_one() {
        let mut c = Config::embedded_default();
        c.server.workers = 0;
        assert!(c.worker_count() >= 1);
        c.server.workers = 3;
        assert_eq!(c.worker_count(), 3);
    }
}
