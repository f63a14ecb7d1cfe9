//! The part of the configuration the network layer runs on, converted once
//! (durations, limits) so the hot path never looks at the config file's form.

use std::time::Duration;

use crate::config::SlowConsumerPolicy;
use crate::protocol::decoder::Limits;

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
    /// Messages per second a connection may send; 0 = unlimited.
    pub max_messages_per_sec: u32,
    /// The least time between the starts of two tick sweeps of a worker.
    pub tick_flush_interval: Duration,
    /// Mailbox backlog (ticks) past which publishing connections are not read.
    pub max_mailbox_ticks: usize,
    /// One worker's share of `broker.max_total_queue_bytes`.
    pub worker_queue_budget: usize,
}

impl Settings {
    /// Outbound bytes past which a connection's reads pause until its peer
    /// reads: an echo client that never reads cannot make us buffer without
    /// bound.
    pub fn out_pause_bytes(&self) -> usize {
        self.frame_limits.max_message_bytes.max(1 << 20)
    }
}
