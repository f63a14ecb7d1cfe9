//! The part of the configuration the network layer runs on, converted once
//! (durations, limits) so the hot path never looks at the config file's form.

use std::time::Duration;

// The one place the network layer reads the configuration: it is
// converted here, once, and the rest of `net` sees only `Settings`.
use super::pacer::Batching;
pub use crate::config::SlowConsumerPolicy;
use crate::config::{BatchingMode, Config};
use crate::protocol::decoder::Limits;
use crate::tick::DeflateForm;

/// Limits and timeouts every worker applies to its connections.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub frame_limits: Limits,
    pub handshake_timeout: Duration,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub close_timeout: Duration,
    pub shutdown_grace: Duration,
    /// The path whose WebSocket connections echo every message, if enabled.
    pub echo_path: Option<String>,
    /// The path of the pub/sub WebSocket endpoint.
    pub ws_path: String,
    pub max_topics_per_connection: usize,
    pub max_client_errors: usize,
    pub heartbeat_interval: Duration,
    pub max_queue_bytes: usize,
    pub slow_consumer: SlowConsumerPolicy,
    pub slow_consumer_grace: Duration,
    pub max_body_bytes: usize,
    pub poll_timeout: Duration,
    pub max_poll_timeout: Duration,
    pub max_request_topics: usize,
    pub metrics_path: Option<String>,
    /// `http.demo_path`: the demo page and client bundle; `None` when off.
    pub demo_path: Option<String>,
    /// Messages per second a connection may send; 0 = unlimited.
    pub max_messages_per_sec: u32,
    /// How a worker schedules its tick sweeps (`broker.max_batch_delay_ms`,
    /// `broker.batching`, overridden by `broker.flush_interval_ms`).
    pub batching: Batching,
    /// Mailbox backlog (ticks) past which publishing connections are not read.
    pub max_mailbox_ticks: usize,
    /// One worker's share of `broker.max_total_queue_bytes`.
    pub worker_queue_budget: usize,
    /// `websocket.deflate`: permessage-deflate offers are accepted.
    pub deflate: bool,
    pub deflate_level: u32,
    pub deflate_min_bytes: usize,
    /// `jwt.leeway_secs`: a connection lives this long past its token's `exp`.
    pub token_leeway: Duration,
    /// `jwt.expiry_warning_secs`: `token_expiring` is sent this long before
    /// the connection's token ends.
    pub token_warning: Duration,
    /// JWTs are on: a WebSocket without a token may authenticate in-band.
    pub jwt: bool,
    /// Cluster mode: how long a `POST /publish` waits for the stream's
    /// outcome of its ticks before it is answered 504. The engine gives a
    /// publish up after `cluster.publish_timeout_ms` and says so, so this
    /// is only a bound for an engine that went silent.
    pub stored_answer_timeout: Duration,
}

/// How much longer than `cluster.publish_timeout_ms` an HTTP publish waits
/// for the engine's word on its ticks.
const STORED_ANSWER_MARGIN: Duration = Duration::from_secs(5);

impl Settings {
    /// The settings of the embedded default configuration.
    pub fn embedded_default() -> Settings {
        Settings::from_config(&Config::embedded_default())
    }

    /// The network layer's settings from the configuration.
    pub fn from_config(config: &Config) -> Settings {
        let ws = &config.websocket;
        Settings {
            max_connections: config.server.max_connections,
            max_header_bytes: ws.max_header_bytes,
            frame_limits: Limits {
                max_frame_bytes: ws.max_frame_bytes,
                max_message_bytes: ws.max_message_bytes,
                max_fragments_per_message: ws.max_fragments_per_message,
            },
            handshake_timeout: ws.handshake_timeout(),
            ping_interval: ws.ping_interval(),
            idle_timeout: ws.idle_timeout(),
            close_timeout: ws.close_timeout(),
            shutdown_grace: config.server.shutdown_grace(),
            echo_path: ws.echo_path.clone(),
            ws_path: ws.path.clone(),
            max_topics_per_connection: config.broker.max_topics_per_connection,
            max_client_errors: config.broker.max_client_errors,
            heartbeat_interval: config.broker.heartbeat_interval(),
            max_queue_bytes: config.broker.max_queue_bytes,
            slow_consumer: config.broker.slow_consumer,
            slow_consumer_grace: config.broker.slow_consumer_grace(),
            max_body_bytes: config.http.max_body_bytes,
            poll_timeout: Duration::from_secs(config.http.poll_timeout_secs),
            max_poll_timeout: Duration::from_secs(config.http.max_poll_timeout_secs),
            max_request_topics: config.http.max_request_topics,
            metrics_path: config.http.metrics_path.clone(),
            demo_path: config.http.demo_path.clone(),
            max_messages_per_sec: ws.max_messages_per_sec,
            batching: batching(config),
            max_mailbox_ticks: config.broker.max_mailbox_ticks,
            worker_queue_budget: config.broker.max_total_queue_bytes / config.worker_count(),
            deflate: ws.deflate,
            deflate_level: ws.deflate_level,
            deflate_min_bytes: ws.deflate_min_bytes,
            token_leeway: Duration::from_secs(config.jwt.leeway_secs),
            token_warning: Duration::from_secs(config.jwt.expiry_warning_secs),
            jwt: config.jwt.enabled(),
            stored_answer_timeout: config.cluster.publish_timeout() + STORED_ANSWER_MARGIN,
        }
    }

    /// How ticks are compressed for a client whose window is `window_bits`.
    pub fn deflate_form(&self, window_bits: u8) -> DeflateForm {
        DeflateForm {
            window_bits,
            level: self.deflate_level,
            min_bytes: self.deflate_min_bytes,
        }
    }

    /// Outbound bytes past which a connection's reads pause until its peer
    /// reads: an echo client that never reads cannot make us buffer without
    /// bound.
    pub fn out_pause_bytes(&self) -> usize {
        self.frame_limits.max_message_bytes.max(1 << 20)
    }
}

/// The sweep schedule the broker section asks for: a fixed
/// `flush_interval_ms` overrides batching that follows load.
fn batching(config: &Config) -> Batching {
    let broker = &config.broker;
    let budget = broker.max_batch_delay();
    if !broker.flush_interval().is_zero() {
        Batching::Fixed(broker.flush_interval())
    } else if budget.is_zero() {
        Batching::Immediate
    } else {
        match broker.batching {
            BatchingMode::Sweep => Batching::Sweep { budget },
            BatchingMode::Connection => Batching::Connection { budget },
        }
    }
}
