//! Cluster mode: several tickfan nodes joined through one NATS JetStream
//! stream (README.md, "Cluster").
//!
//! The engine ([`engine`]) is one thread that owns the NATS client, on a
//! current-thread tokio runtime confined to it: the mio workers never
//! block on NATS and never enter a runtime. Workers reach it only through
//! the [`Link`] (the topic table's [`ClusterLink`]): a publish is queued on
//! a channel the engine reads, and the engine brings every tick back from
//! the stream into the topic table ([`TopicTable::apply`]), whose mailboxes
//! and wakers carry it to the workers as in single-node mode. So every node,
//! the publisher's own included, fans out only what the stream returned, in
//! the stream's order.
//!
//! [`TopicTable::apply`]: crate::broker::topic_table::TopicTable::apply

mod engine;
mod quorum;
pub mod subject;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::broker::cluster_link::{ClusterLink, NotServing, Receipt};
use crate::broker::topic_table::TopicTable;
use crate::config::ClusterConfig;
use crate::metrics::ClusterMetrics;
use crate::topic::TopicName;

/// A publish on its way from a worker to the engine.
#[derive(Debug)]
struct Submitted {
    topic: String,
    data: Vec<u8>,
    ts: u64,
    /// Who waits for the outcome (an HTTP publish), if anyone.
    receipt: Option<Receipt>,
}

/// What the engine and the workers share: counters and flags, no locks
/// (the engine's own counts are in [`ClusterMetrics`]).
#[derive(Debug, Default)]
struct LinkState {
    /// Publishes submitted and not yet acknowledged or given up.
    pending: AtomicUsize,
    /// Connected to NATS and caught up with the stream.
    serving: AtomicBool,
    /// Connected to NATS (the client's view).
    connected: AtomicBool,
    /// The last stream sequence applied.
    applied: AtomicU64,
}

/// The workers' side of the engine.
#[derive(Debug)]
pub struct Link {
    outbox: mpsc::UnboundedSender<Submitted>,
    state: Arc<LinkState>,
    /// `cluster.publish_window`: publishers pause while this many are pending.
    window: usize,
}

impl ClusterLink for Link {
    fn submit(
        &self,
        topic: &TopicName<'_>,
        data: &[u8],
        ts_micros: u64,
        receipt: Option<Receipt>,
    ) -> Result<(), NotServing> {
        if !self.serving() {
            return Err(NotServing);
        }
        self.state.pending.fetch_add(1, Ordering::Relaxed);
        let submitted = Submitted {
            topic: topic.as_str().to_owned(),
            data: data.to_vec(),
            ts: ts_micros,
            receipt,
        };
        // `send` on an unbounded channel never blocks nor needs a runtime;
        // it fails only once the engine is gone.
        self.outbox.send(submitted).map_err(|_| {
            self.state.pending.fetch_sub(1, Ordering::Relaxed);
            NotServing
        })
    }

    fn window_full(&self) -> bool {
        self.state.pending.load(Ordering::Relaxed) >= self.window
    }

    fn serving(&self) -> bool {
        self.state.serving.load(Ordering::Acquire)
    }
}

/// The workers' half, made before the topic table (which holds it); the
/// engine's half is started with [`Pending::start`] once the table exists.
#[derive(Debug)]
pub struct Pending {
    link: Arc<Link>,
    inbox: mpsc::UnboundedReceiver<Submitted>,
}

/// Makes the link the topic table is built with.
pub fn link(config: &ClusterConfig) -> Pending {
    let (outbox, inbox) = mpsc::unbounded_channel();
    Pending {
        link: Arc::new(Link {
            outbox,
            state: Arc::new(LinkState::default()),
            window: config.publish_window,
        }),
        inbox,
    }
}

impl Pending {
    /// The link, for [`TopicTable::with_cluster`].
    pub fn link(&self) -> Arc<dyn ClusterLink> {
        Arc::clone(&self.link) as Arc<dyn ClusterLink>
    }

    /// Starts the engine thread and waits until it has connected, bound the
    /// stream and caught up with it (so the node serves from its first
    /// client on), or failed; `wait` bounds the wait.
    pub fn start(
        self,
        config: &ClusterConfig,
        history_depth: usize,
        table: Arc<TopicTable>,
        metrics: ClusterMetrics,
        wait: Duration,
    ) -> io::Result<()> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let settings = engine::Settings::new(config, history_depth);
        let state = Arc::clone(&self.link.state);
        let inbox = self.inbox;
        std::thread::Builder::new()
            .name("tickfan-cluster".to_owned())
            .spawn(move || engine::run(settings, table, state, metrics, inbox, ready_tx))?;
        match ready_rx.recv_timeout(wait) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(io::Error::other(format!("cluster: {reason}"))),
            Err(_) => Err(io::Error::other(format!(
                "cluster: not connected and caught up with the stream after {} s",
                wait.as_secs()
            ))),
        }
    }
}
