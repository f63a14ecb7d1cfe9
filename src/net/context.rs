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

/// Counters a worker keeps for itself (no shared cache line per message);
/// they are logged now and exported as metrics later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub ticks_published: u64,
    pub ticks_queued: u64,
    pub ticks_written: u64,
    pub write_syscalls: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub conflated: u64,
    pub dropped: u64,
    pub slow_disconnects: u64,
}

/// A worker's state lent to one connection for one event.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub settings: &'a Settings,
    pub table: &'a TopicTable,
    pub auth: &'a Auth,
    pub local: &'a mut LocalTopics,
    pub scratch: &'a mut ReadBuf,
    pub stats: &'a mut WorkerStats,
    /// This worker's index (its mailbox in the topic table).
    pub worker: usize,
    /// The connection being served.
    pub token: Token,
    pub now: Instant,
}
