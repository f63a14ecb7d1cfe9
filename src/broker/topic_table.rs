//! The sharded topic table: for each topic its seq counter, epoch, last tick,
//! history ring, and how many subscribers each worker has.
//!
//! A publish takes its topic's shard lock, assigns the next seq, encodes the
//! tick once, and posts it to the mailbox of every worker with subscribers
//! *while still holding the lock*: so every worker receives a topic's ticks
//! in seq order even when publishers on different threads race. Wakes (a
//! syscall) happen after the lock is released. A subscribe takes the same
//! lock to register its worker and read the snapshot or replay, so the
//! replay and the live ticks that follow meet with no gap and no duplicate
//! (the worker skips live ticks at or below the subscription's start seq).
//!
//! Only published topics count against `broker.max_topics`. A subscribe to a
//! topic nobody has published to yet makes an entry (so the first publish
//! finds its subscribers), but that entry is free and is removed as soon as
//! its last subscriber leaves: anonymous clients inventing names can neither
//! fill the budget that publishers need nor leave entries behind. Such
//! entries are bounded by the subscriptions that hold them
//! (`max_connections` × `max_topics_per_connection`).
//!
//! In cluster mode ([`TopicTable::with_cluster`]) the table numbers
//! nothing itself: a publish is checked against `max_topics` and handed to
//! the [`ClusterLink`]; the engine's stream follower brings every tick back
//! through [`TopicTable::apply`] with the stream's sequence as its seq and
//! the topic's previous stream sequence as its `prev`, and from there it
//! takes the same locked path to the mailboxes, history and last value.
//! The stream is authoritative, so `apply` takes every topic it is given
//! (the limit was checked where the tick was published).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::sync::{Arc, OnceLock};

use super::cluster_link::{ClusterLink, NotServing, Receipt, ReplyTo};
use super::mailbox::{Delivery, Mailbox};
use crate::tick::{now_micros, Tick, TopicId};
use crate::topic::TopicName;

/// Sizing and limits of the table.
#[derive(Debug, Clone, Copy)]
pub struct TableLimits {
    pub shards: usize,
    pub history_depth: usize,
    pub max_topics: usize,
    pub topic_ttl: Duration,
}

/// Why a publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// The table is full: `max_topics` topics exist.
    TooManyTopics,
    /// Cluster mode, and the node is cut off from the stream or catching up.
    NotServing,
}

impl From<NotServing> for PublishError {
    fn from(_: NotServing) -> Self {
        PublishError::NotServing
    }
}

/// What a publish was assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The seq, or `None` in cluster mode, where the stream assigns it
    /// when it stores the tick (after this answer).
    pub seq: Option<u64>,
}

/// What a subscriber needs to start: the topic's identity and position,
/// and the ticks to send before live ones.
#[derive(Debug)]
pub struct Subscribed {
    pub topic: TopicId,
    pub epoch: String,
    /// The topic's seq when the subscription started; live ticks follow it.
    pub seq: u64,
    /// Ticks `from..=to` the client asked for but cannot be replayed.
    pub gap: Option<(u64, u64)>,
    /// The snapshot (last tick) or the replay after `since`, in seq order.
    pub ticks: Vec<Tick>,
}

/// Where a subscriber wants to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start<'a> {
    /// The current value, then live ticks.
    Latest,
    /// Every tick after `since` (of `epoch`, if the client gave one).
    After { since: u64, epoch: Option<&'a str> },
}

impl<'a> Start<'a> {
    /// After `since` when the client gave a cursor, else the latest.
    pub fn from_cursor(since: Option<u64>, epoch: Option<&'a str>) -> Self {
        match since {
            Some(since) => Start::After { since, epoch },
            None => Start::Latest,
        }
    }
}

#[derive(Debug)]
struct Topic {
    id: TopicId,
    epoch: String,
    seq: u64,
    /// The newest tick, kept here only when there is no history (with one,
    /// it is the history's back: one reference less per publish).
    last: Option<Tick>,
    history: VecDeque<Tick>,
    /// Subscribers per worker, indexed by worker id.
    subscribers: Box<[u32]>,
    last_active: Instant,
}

impl Topic {
    /// The newest tick (the snapshot a subscriber gets first).
    fn newest(&self) -> Option<&Tick> {
        self.history.back().or(self.last.as_ref())
    }

    fn has_subscribers(&self) -> bool {
        self.subscribers.iter().any(|&n| n > 0)
    }

    /// Whether the topic counts against `max_topics`: it has been published
    /// to (an entry made by a subscribe alone is free).
    fn is_counted(&self) -> bool {
        self.seq > 0
    }
}

/// A publish in a batch: the topic (a valid name) and its JSON data.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    pub topic: &'a TopicName<'a>,
    pub data: &'a [u8],
}

type Shard = HashMap<Box<str>, Topic>;

/// All topics, in shards, and the workers' mailboxes.
#[derive(Debug)]
pub struct TopicTable {
    shards: Box<[Mutex<Shard>]>,
    mailboxes: Box<[Mailbox]>,
    limits: TableLimits,
    topic_count: AtomicUsize,
    next_id: AtomicU64,
    /// Distinguishes this process's epochs from a previous run's.
    boot: u64,
    /// The cluster engine, in cluster mode (see the module's doc).
    cluster: Option<Arc<dyn ClusterLink>>,
    /// Cluster mode: the epoch of every topic, from the stream's identity,
    /// set by the engine once it has bound the stream.
    cluster_epoch: OnceLock<String>,
    /// The next [`Self::new_request_id`].
    next_request: AtomicU64,
}

impl TopicTable {
    /// An empty table delivering to `mailboxes` (one per worker, by worker id).
    pub fn new(limits: TableLimits, mailboxes: Vec<Mailbox>) -> Self {
        let shards = (0..limits.shards.max(1))
            .map(|_| Mutex::new(HashMap::new()))
            .collect();
        TopicTable {
            shards,
            mailboxes: mailboxes.into_boxed_slice(),
            limits,
            topic_count: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            boot: now_micros(),
            cluster: None,
            cluster_epoch: OnceLock::new(),
            next_request: AtomicU64::new(1),
        }
    }

    /// A table in cluster mode: publishes go to `link`, and ticks come back
    /// through [`Self::apply`].
    pub fn with_cluster(limits: TableLimits, mailboxes: Vec<Mailbox>, link: Arc<dyn ClusterLink>) -> Self {
        TopicTable {
            cluster: Some(link),
            ..TopicTable::new(limits, mailboxes)
        }
    }

    /// Cluster mode: fixes every topic's epoch (the stream's identity);
    /// called once, before any tick is applied. False if already set.
    pub fn set_cluster_epoch(&self, epoch: String) -> bool {
        self.cluster_epoch.set(epoch).is_ok()
    }

    /// Whether the node serves clients: always in single-node mode; in
    /// cluster mode while connected to the stream and caught up.
    pub fn serving(&self) -> bool {
        self.cluster.as_ref().is_none_or(|link| link.serving())
    }

    /// Cluster mode: tells every worker to close its subscribers with the
    /// "reconnect elsewhere" code (the node lost the stream).
    pub fn send_away_subscribers(&self) {
        for mailbox in self.mailboxes.iter() {
            mailbox.post(Delivery::Reconnect);
            mailbox.wake();
        }
    }

    /// Number of topics that exist now.
    pub fn topic_count(&self) -> usize {
        self.topic_count.load(Ordering::Relaxed)
    }

    /// The longest backlog of any worker's mailbox: publishers pause while
    /// it is long, so a publisher faster than fan-out cannot grow memory.
    pub fn mailbox_backlog(&self) -> usize {
        self.mailboxes
            .iter()
            .map(Mailbox::backlog)
            .max()
            .unwrap_or(0)
    }

    /// Cluster mode: whether the publish window is full. WebSocket
    /// publishers are not read while it is (the backpressure of a long
    /// mailbox); HTTP publishes are answered 503 (an HTTP connection also
    /// carries /readyz and /metrics, which must not wait for the stream).
    pub fn publish_window_full(&self) -> bool {
        self.cluster.as_ref().is_some_and(|link| link.window_full())
    }

    /// The mailbox of worker `worker` (a worker's own id: one mailbox was
    /// made per worker, so the index is in range).
    #[allow(clippy::indexing_slicing)]
    pub fn mailbox(&self, worker: usize) -> &Mailbox {
        &self.mailboxes[worker]
    }

    /// Publishes `data` (valid JSON) to `topic` (a valid name), fanning the
    /// tick out to every worker with subscribers.
    pub fn publish(&self, topic: &TopicName<'_>, data: &[u8]) -> Result<Published, PublishError> {
        let ts = now_micros();
        if let Some(link) = &self.cluster {
            if !link.serving() {
                return Err(PublishError::NotServing);
            }
            self.admit_cluster_topics(&[topic.as_str()])?;
            link.submit(topic, data, ts, None)?;
            return Ok(Published { seq: None });
        }
        let mut to_wake = WakeList::default();
        let published = {
            let mut shard = self.shard(topic);
            let entry = self.topic_entry(&mut shard, topic);
            if !entry.is_counted() && self.reserve_topics(1).is_err() {
                // Refused: an entry made just now for it leaves no trace.
                if !entry.has_subscribers() {
                    shard.remove(topic.as_str());
                }
                return Err(PublishError::TooManyTopics);
            }
            self.publish_locked(entry, topic, data, ts, &mut to_wake)
        };
        to_wake.wake(&self.mailboxes);
        Ok(published)
    }

    /// Publishes every item or none: the shards of all its topics are
    /// locked together (in index order, so two batches cannot deadlock; every
    /// other caller holds one shard at a time), the topics the batch would
    /// add are checked against `max_topics` and reserved, and only then is
    /// anything published. A refused batch published nothing, so retrying it
    /// cannot deliver a tick twice.
    // Shard ids come from `shard_index` (below the shard count) and every
    // item's shard is in `shard_ids`, so the indexing and the `expect` hold.
    ///
    /// In cluster mode the items go to the stream and their seqs are not
    /// known yet; with `reply_to`, the engine reports each item's outcome
    /// to that connection ([`Self::report_stored`]).
    #[allow(clippy::indexing_slicing, clippy::expect_used)]
    pub fn publish_batch(
        &self,
        items: &[BatchItem<'_>],
        reply_to: Option<ReplyTo>,
    ) -> Result<Vec<Published>, PublishError> {
        let ts = now_micros();
        if let Some(link) = &self.cluster {
            if !link.serving() {
                return Err(PublishError::NotServing);
            }
            let topics: Vec<&str> = items.iter().map(|item| item.topic.as_str()).collect();
            self.admit_cluster_topics(&topics)?;
            for (i, item) in items.iter().enumerate() {
                let receipt = reply_to.map(|reply_to| reply_to.receipt(i));
                link.submit(item.topic, item.data, ts, receipt)?;
            }
            return Ok(vec![Published { seq: None }; items.len()]);
        }
        let mut shard_ids: Vec<usize> = items.iter().map(|i| self.shard_index(i.topic)).collect();
        shard_ids.sort_unstable();
        shard_ids.dedup();
        let mut shards: Vec<MutexGuard<'_, Shard>> =
            shard_ids.iter().map(|&id| lock(&self.shards[id])).collect();
        let guard_of = |topic: &str| {
            shard_ids
                .binary_search(&self.shard_index(topic))
                .expect("every item's shard is locked")
        };
        let mut new_topics: Vec<&str> = items
            .iter()
            .map(|item| item.topic.as_str())
            .filter(|topic| {
                !shards[guard_of(topic)]
                    .get(*topic)
                    .is_some_and(Topic::is_counted)
            })
            .collect();
        new_topics.sort_unstable();
        new_topics.dedup();
        self.reserve_topics(new_topics.len())
            .map_err(|TooManyTopics| PublishError::TooManyTopics)?;
        let mut to_wake = WakeList::default();
        let published = items
            .iter()
            .map(|item| {
                let entry = self.topic_entry(&mut shards[guard_of(item.topic)], item.topic);
                self.publish_locked(entry, item.topic, item.data, ts, &mut to_wake)
            })
            .collect();
        drop(shards);
        to_wake.wake(&self.mailboxes);
        Ok(published)
    }

    /// Whether publishes are numbered by a cluster's stream, after they are
    /// accepted, rather than here (README.md, "Cluster").
    pub fn is_clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// A request id no other request of this process has (for
    /// [`ReplyTo::request`]).
    pub fn new_request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    /// Cluster mode: tells the connection that waits for it the outcome of
    /// a publish: the stream sequence it was stored at, or `None` when it
    /// was given up. Called by the engine; never blocks.
    pub fn report_stored(&self, receipt: Receipt, seq: Option<u64>) {
        if let Some(mailbox) = self.mailboxes.get(receipt.to.worker) {
            if mailbox.post(Delivery::Stored { receipt, seq }) {
                mailbox.wake();
            }
        }
    }

    /// Cluster mode: refuses a publish that would add topics past
    /// `max_topics`. Only checked, not reserved: the topic is counted when
    /// its first tick comes back from the stream, so two nodes racing for
    /// the last places may pass the limit by a few.
    fn admit_cluster_topics(&self, topics: &[&str]) -> Result<(), PublishError> {
        let mut new: Vec<&str> = topics
            .iter()
            .copied()
            .filter(|topic| !self.shard(topic).get(*topic).is_some_and(Topic::is_counted))
            .collect();
        new.sort_unstable();
        new.dedup();
        if self.topic_count().saturating_add(new.len()) > self.limits.max_topics {
            return Err(PublishError::TooManyTopics);
        }
        Ok(())
    }

    /// Cluster mode: applies a tick the stream follower read: `seq` is its
    /// stream sequence, `prev` the topic's previous one (0 for none). A
    /// tick at or below the topic's seq was applied already (a consumer
    /// that re-read after a reconnect) and is skipped. Never refused: the
    /// stream is authoritative (see the module's doc).
    pub fn apply(&self, topic: &TopicName<'_>, seq: u64, ts: u64, data: &[u8]) -> Option<u64> {
        let mut to_wake = WakeList::default();
        let prev = {
            let mut shard = self.shard(topic);
            let entry = self.topic_entry(&mut shard, topic);
            if seq <= entry.seq {
                return None;
            }
            if !entry.is_counted() {
                self.topic_count.fetch_add(1, Ordering::Relaxed);
            }
            let prev = entry.seq;
            entry.seq = seq;
            let tick = Tick::encode_with_prev(entry.id, topic, seq, prev, ts, data);
            self.deliver_locked(entry, tick, &mut to_wake);
            prev
        };
        to_wake.wake(&self.mailboxes);
        Some(prev)
    }

    /// Takes `n` places of `max_topics` for topics about to be published to
    /// for the first time, or none when they do not all fit.
    fn reserve_topics(&self, n: usize) -> Result<(), TooManyTopics> {
        if n == 0 {
            return Ok(());
        }
        self.topic_count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |count| {
                count
                    .checked_add(n)
                    .filter(|&total| total <= self.limits.max_topics)
            })
            .map(|_| ())
            .map_err(|_| TooManyTopics)
    }

    /// Assigns the next seq of `entry` (the topic `topic`, whose shard is
    /// locked and whose place in `max_topics` is taken) and hands the tick
    /// to the workers with subscribers.
    fn publish_locked(
        &self,
        entry: &mut Topic,
        topic: &TopicName<'_>,
        data: &[u8],
        ts: u64,
        to_wake: &mut WakeList,
    ) -> Published {
        // A u64 seq cannot wrap: it would take 584,000 years at a million
        // ticks a second on one topic.
        entry.seq = entry.seq.saturating_add(1);
        let tick = Tick::encode(entry.id, topic, entry.seq, ts, data);
        self.deliver_locked(entry, tick, to_wake);
        Published {
            seq: Some(entry.seq),
        }
    }

    /// Hands `tick` (the topic's newest, numbered) to the workers with
    /// subscribers and keeps it as history and last value; the shard of
    /// `entry` is locked.
    fn deliver_locked(&self, entry: &mut Topic, tick: Tick, to_wake: &mut WakeList) {
        // Only a topic without subscribers can expire, and the last one to
        // leave marks it active (`unsubscribe`): a subscribed topic's
        // publishes need no clock read of their own.
        let mut subscribed = false;
        for (mailbox, (worker, &count)) in self
            .mailboxes
            .iter()
            .zip(entry.subscribers.iter().enumerate())
        {
            if count > 0 {
                subscribed = true;
                if mailbox.post(Delivery::Tick(tick.clone())) {
                    to_wake.add(worker);
                }
            }
        }
        if !subscribed {
            entry.last_active = Instant::now();
        }
        if self.limits.history_depth > 0 {
            if entry.history.len() == self.limits.history_depth {
                entry.history.pop_front();
            }
            entry.history.push_back(tick);
        } else {
            entry.last = Some(tick);
        }
    }

    /// Registers a subscriber on `worker` and returns what it must send
    /// first. Never refused: a topic made by a subscribe is free (see the
    /// module's doc).
    pub fn subscribe(&self, topic: &TopicName<'_>, worker: usize, start: Start<'_>) -> Subscribed {
        let mut shard = self.shard(topic);
        let entry = self.topic_entry(&mut shard, topic);
        if let Some(count) = entry.subscribers.get_mut(worker) {
            *count = count.saturating_add(1);
        }
        let mut seq = entry.seq;
        let (gap, ticks) = match start {
            Start::Latest => (None, entry.newest().cloned().into_iter().collect()),
            // Cluster mode: seqs are the stream's, the same on every node,
            // so a client that saw more than this node applied yet (it came
            // from a node further ahead) is simply ahead: nothing is missing,
            // and live ticks start after what it has.
            Start::After { since, epoch }
                if self.cluster.is_some()
                    && since > entry.seq
                    && epoch.is_none_or(|e| e == entry.epoch) =>
            {
                seq = since;
                (None, Vec::new())
            }
            Start::After { since, epoch } => replay(entry, since, epoch),
        };
        Subscribed {
            topic: entry.id,
            epoch: entry.epoch.clone(),
            seq,
            gap,
            ticks,
        }
    }

    /// Removes one subscriber on `worker` from the topic `id` named `topic`;
    /// a topic never published to goes with its last subscriber.
    pub fn unsubscribe(&self, topic: &str, id: TopicId, worker: usize) {
        let mut shard = self.shard(topic);
        let Some(entry) = shard.get_mut(topic).filter(|t| t.id == id) else {
            return;
        };
        if let Some(count) = entry.subscribers.get_mut(worker) {
            *count = count.saturating_sub(1);
        }
        entry.last_active = Instant::now();
        if !entry.is_counted() && !entry.has_subscribers() {
            shard.remove(topic);
        }
    }

    /// The latest seq of a topic (0 if it has none or does not exist).
    pub fn latest_seq(&self, topic: &str) -> u64 {
        self.shard(topic).get(topic).map_or(0, |t| t.seq)
    }

    /// Removes topics without subscribers that saw no activity for the TTL,
    /// from the shards `part` of every `parts` (so workers can share the sweep).
    pub fn reclaim(&self, now: Instant, part: usize, parts: usize) -> usize {
        let ttl = self.limits.topic_ttl;
        let mut removed = 0usize;
        for shard in self.shards.iter().skip(part).step_by(parts.max(1)) {
            lock(shard).retain(|_, t| {
                let keep =
                    t.has_subscribers() || now.saturating_duration_since(t.last_active) < ttl;
                removed = removed.saturating_add(usize::from(!keep && t.is_counted()));
                keep
            });
        }
        self.topic_count.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    // `shard_index` is below the shard count.
    #[allow(clippy::indexing_slicing)]
    fn shard(&self, topic: &str) -> MutexGuard<'_, Shard> {
        lock(&self.shards[self.shard_index(topic)])
    }

    fn shard_index(&self, topic: &str) -> usize {
        let mut hasher = DefaultHasher::new();
        topic.hash(&mut hasher);
        let shards = u64::try_from(self.shards.len()).unwrap_or(u64::MAX);
        // The remainder is below the shard count, itself a usize.
        hasher
            .finish()
            .checked_rem(shards)
            .and_then(|index| usize::try_from(index).ok())
            .unwrap_or(0)
    }

    /// The entry of `topic`, made (uncounted, see [`Topic::is_counted`])
    /// when it does not exist yet.
    fn topic_entry<'s>(&self, shard: &'s mut Shard, topic: &str) -> &'s mut Topic {
        // Two lookups rather than `entry()`, which would allocate the key
        // on every publish to an existing topic.
        if !shard.contains_key(topic) {
            let id = TopicId(self.next_id.fetch_add(1, Ordering::Relaxed));
            let epoch = match self.cluster_epoch.get() {
                Some(epoch) => epoch.clone(),
                None => format!("{:x}-{:x}", self.boot % (1 << 40), id.0),
            };
            let entry = Topic {
                id,
                epoch,
                seq: 0,
                last: None,
                history: VecDeque::new(),
                subscribers: vec![0; self.mailboxes.len()].into_boxed_slice(),
                last_active: Instant::now(),
            };
            shard.insert(topic.into(), entry);
        }
        #[allow(clippy::expect_used)] // present, or inserted just above
        shard.get_mut(topic).expect("present or just inserted")
    }
}

/// The gap (if any) and ticks for a subscriber resuming after `since`.
fn replay(topic: &Topic, since: u64, epoch: Option<&str>) -> (Option<(u64, u64)>, Vec<Tick>) {
    let same_numbering = epoch.is_none_or(|e| e == topic.epoch) && since <= topic.seq;
    if !same_numbering {
        // Another numbering: nothing after `since` is comparable. The client
        // gets the whole current range as a gap, then the snapshot.
        let gap = (topic.seq > 0).then_some((1, topic.seq));
        return (gap, topic.newest().cloned().into_iter().collect());
    }
    if since == topic.seq {
        return (None, Vec::new());
    }
    // Nothing is missing when the first kept tick after `since` follows
    // `since` or an earlier seq: its `prev` (seq - 1 in single-node mode,
    // the previous stream sequence in cluster mode) is at most `since`.
    // `since < topic.seq` here, so `since + 1` does not wrap.
    let ticks: Vec<Tick> = topic
        .history
        .iter()
        .filter(|t| t.seq > since)
        .cloned()
        .collect();
    // No kept tick after `since`: the whole range up to the topic's seq
    // left the window (history off, or all of it older).
    let missing_to = ticks.first().map_or(topic.seq, Tick::prev);
    if missing_to <= since {
        return (None, ticks);
    }
    let gap = Some((since.saturating_add(1), missing_to));
    if ticks.is_empty() {
        (gap, topic.newest().cloned().into_iter().collect())
    } else {
        (gap, ticks)
    }
}

/// Shared with [`TopicTable::reserve_topics`]: it fits no more topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TooManyTopics;

/// A poisoned shard only means another thread panicked mid-update of plain
/// counters and queues; the data is still usable, so serving goes on.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Workers to wake after the shard lock is released.
#[derive(Default)]
struct WakeList {
    workers: Vec<usize>,
}

impl WakeList {
    fn add(&mut self, worker: usize) {
        self.workers.push(worker);
    }

    fn wake(self, mailboxes: &[Mailbox]) {
        for worker in self.workers {
            if let Some(mailbox) = mailboxes.get(worker) {
                mailbox.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests;
