//! What a connection may reach of its worker while it handles an event:
//! the settings, the shared topic table and auth, the worker's own
//! subscriber lists and counters, and the time of this loop turn.

use std::time::Instant;

use mio::Token;

use super::read_buf::ReadBuf;
use super::settings::Settings;
use crate::broker::auth::Auth;
use crate::broker::subscriptions::LocalTopics;
use crate::broker::topic_table::TopicTable;
pub use crate::metrics::worker_stats::{Transport, WorkerStats};
use crate::metrics::Metrics;
use crate::protocol::deflate::codec::Inflater;

/// A worker's state lent to one connection for one event.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub settings: &'a Settings,
    pub table: &'a TopicTable,
    pub auth: &'a Auth,
    pub metrics: &'a Metrics,
    /// Shutdown was asked for (draining or stopping): readiness answers 503.
    pub not_ready: bool,
    /// A worker died: liveness answers 503 too (the process is stopping
    /// and exits non-zero, see `Server::join`).
    pub unhealthy: bool,
    /// The queue bound past which the slow-consumer policy applies now:
    /// `broker.max_queue_bytes`, or less while the worker's queues together
    /// are over their share of `broker.max_total_queue_bytes`.
    pub tick_bound: usize,
    pub local: &'a mut LocalTopics,
    pub scratch: &'a mut ReadBuf,
    /// The worker's one inflater for permessage-deflate messages: with
    /// `client_no_context_takeover` agreed it is reset per message, so it
    /// serves every connection.
    pub inflater: &'a mut Inflater,
    /// TLS handshake steps this worker may still take in this loop turn
    /// (see `TLS_HANDSHAKES_PER_TURN` in the worker).
    pub tls_handshakes_left: &'a mut usize,
    pub stats: &'a mut WorkerStats,
    /// Publish-to-write latencies, buffered by the worker.
    pub latency: &'a prometheus::local::LocalHistogram,
    /// This worker's index (its mailbox in the topic table).
    pub worker: usize,
    /// The connection being served.
    pub token: Token,
    pub now: Instant,
}
