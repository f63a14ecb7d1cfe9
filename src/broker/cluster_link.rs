//! The seam between the topic table and a cluster engine: what the table
//! needs of one, and nothing of how it talks to its peers.
//!
//! In single-node mode the table numbers ticks itself and there is no
//! link. In cluster mode (README.md, "Cluster") a publish is not numbered
//! here: the table hands it to the link, the engine stores it in the shared
//! stream, and the engine's stream follower brings it back through
//! [`super::topic_table::TopicTable::apply`] with the seq the stream gave
//! it, on every node alike. Keeping the engine behind this trait keeps the
//! broker layer free of NATS and of any async runtime, and the single-node
//! path free of any cluster check beyond one `Option`.

use std::fmt;

use crate::topic::TopicName;

/// A cluster engine as the topic table sees it. Every method is called
/// from worker threads and must never block.
pub trait ClusterLink: fmt::Debug + Send + Sync {
    /// Queues a publish of `data` (valid JSON) to `topic`, received at
    /// `ts_micros`, for the stream. Refused while the node does not serve.
    /// With `receipt`, the engine tells its outcome (the stream sequence,
    /// or that it was given up) through
    /// [`super::topic_table::TopicTable::report_stored`].
    fn submit(
        &self,
        topic: &TopicName<'_>,
        data: &[u8],
        ts_micros: u64,
        receipt: Option<Receipt>,
    ) -> Result<(), NotServing>;

    /// Whether the publish window is full (`cluster.publish_window`
    /// publishes not yet acknowledged by the stream): publishers pause
    /// while it is, the same backpressure as a long mailbox.
    fn window_full(&self) -> bool;

    /// Whether the node is connected to the stream and caught up with it;
    /// while it is not, it refuses clients (README.md, "Cluster").
    fn serving(&self) -> bool;
}

/// The node is cut off from the stream or still catching up: clients are
/// told to go elsewhere (HTTP 503, close 4000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotServing;

/// Where a publish's outcome is to be told: request `request` on
/// connection `token` of worker `worker` (an HTTP publish is answered only
/// once the stream has stored every tick it carries, so a 202 means stored;
/// README.md, "Cluster").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    pub worker: usize,
    pub token: usize,
    /// Unique in the process ([`super::topic_table::TopicTable::new_request_id`]),
    /// so an outcome for a connection that closed meanwhile, its token
    /// reused by another, is recognised and dropped.
    pub request: u64,
}

/// Who waits for one tick's outcome: the request, and the tick's place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub to: ReplyTo,
    pub item: usize,
}

impl ReplyTo {
    /// The receipt of the request's `item`-th tick.
    pub fn receipt(self, item: usize) -> Receipt {
        Receipt { to: self, item }
    }
}
