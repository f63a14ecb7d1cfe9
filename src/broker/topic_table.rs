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

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::mailbox::{Delivery, Mailbox};
use super::tick::{now_micros, Tick, TopicId};

/// Sizing and limits of the table.
#[derive(Debug, Clone, Copy)]
pub struct TableLimits {
    pub shards: usize,
    pub history_depth: usize,
    pub max_topics: usize,
    pub topic_ttl: Duration,
}

/// The table is full: `max_topics` topics exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyTopics;

/// What a publish was assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub topic: TopicId,
    pub seq: u64,
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
    last: Option<Tick>,
    history: VecDeque<Tick>,
    /// Subscribers per worker, indexed by worker id.
    subscribers: Box<[u32]>,
    last_active: Instant,
}

impl Topic {
    fn has_subscribers(&self) -> bool {
        self.subscribers.iter().any(|&n| n > 0)
    }
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

    /// The mailbox of worker `worker`.
    pub fn mailbox(&self, worker: usize) -> &Mailbox {
        &self.mailboxes[worker]
    }

    /// Publishes `data` (valid JSON) to `topic` (a valid name), fanning the
    /// tick out to every worker with subscribers.
    pub fn publish(&self, topic: &str, data: &[u8]) -> Result<Published, TooManyTopics> {
        let ts = now_micros();
        let mut to_wake = WakeList::default();
        let published = {
            let mut shard = self.shard(topic);
            let entry = self.topic_entry(&mut shard, topic)?;
            entry.seq += 1;
            entry.last_active = Instant::now();
            let tick = Tick::encode(entry.id, topic, entry.seq, ts, data);
            for (worker, &count) in entry.subscribers.iter().enumerate() {
                if count > 0 && self.mailboxes[worker].post(Delivery::Tick(tick.clone())) {
                    to_wake.add(worker);
                }
            }
            if self.limits.history_depth > 0 {
                if entry.history.len() == self.limits.history_depth {
                    entry.history.pop_front();
                }
                entry.history.push_back(tick.clone());
            }
            entry.last = Some(tick);
            Published {
                topic: entry.id,
                seq: entry.seq,
            }
        };
        to_wake.wake(&self.mailboxes);
        Ok(published)
    }

    /// Registers a subscriber on `worker` and returns what it must send first.
    pub fn subscribe(
        &self,
        topic: &str,
        worker: usize,
        start: Start<'_>,
    ) -> Result<Subscribed, TooManyTopics> {
        let mut shard = self.shard(topic);
        let entry = self.topic_entry(&mut shard, topic)?;
        entry.subscribers[worker] += 1;
        let (gap, ticks) = match start {
            Start::Latest => (None, entry.last.iter().cloned().collect()),
            Start::After { since, epoch } => replay(entry, since, epoch),
        };
        Ok(Subscribed {
            topic: entry.id,
            epoch: entry.epoch.clone(),
            seq: entry.seq,
            gap,
            ticks,
        })
    }

    /// Removes one subscriber on `worker` from the topic `id` named `topic`.
    pub fn unsubscribe(&self, topic: &str, id: TopicId, worker: usize) {
        let mut shard = self.shard(topic);
        if let Some(entry) = shard.get_mut(topic).filter(|t| t.id == id) {
            entry.subscribers[worker] = entry.subscribers[worker].saturating_sub(1);
            entry.last_active = Instant::now();
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
        let mut removed = 0;
        for shard in self.shards.iter().skip(part).step_by(parts.max(1)) {
            let mut shard = lock(shard);
            let before = shard.len();
            shard.retain(|_, t| {
                t.has_subscribers() || now.saturating_duration_since(t.last_active) < ttl
            });
            removed += before - shard.len();
        }
        self.topic_count.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    fn shard(&self, topic: &str) -> MutexGuard<'_, Shard> {
        let mut hasher = DefaultHasher::new();
        topic.hash(&mut hasher);
        lock(&self.shards[(hasher.finish() % self.shards.len() as u64) as usize])
    }

    fn topic_entry<'s>(
        &self,
        shard: &'s mut Shard,
        topic: &str,
    ) -> Result<&'s mut Topic, TooManyTopics> {
        if !shard.contains_key(topic) {
            if self.topic_count.fetch_add(1, Ordering::Relaxed) >= self.limits.max_topics {
                self.topic_count.fetch_sub(1, Ordering::Relaxed);
                return Err(TooManyTopics);
            }
            let id = TopicId(self.next_id.fetch_add(1, Ordering::Relaxed));
            shard.insert(
                topic.into(),
                Topic {
                    id,
                    epoch: format!("{:x}-{:x}", self.boot % (1 << 40), id.0),
                    seq: 0,
                    last: None,
                    history: VecDeque::new(),
                    subscribers: vec![0; self.mailboxes.len()].into_boxed_slice(),
                    last_active: Instant::now(),
                },
            );
        }
        Ok(shard.get_mut(topic).expect("present or just inserted"))
    }
}

/// The gap (if any) and ticks for a subscriber resuming after `since`.
fn replay(topic: &Topic, since: u64, epoch: Option<&str>) -> (Option<(u64, u64)>, Vec<Tick>) {
    let same_numbering = epoch.is_none_or(|e| e == topic.epoch) && since <= topic.seq;
    if !same_numbering {
        // Another numbering: nothing after `since` is comparable. The client
        // gets the whole current range as a gap, then the snapshot.
        let gap = (topic.seq > 0).then_some((1, topic.seq));
        return (gap, topic.last.iter().cloned().collect());
    }
    if since == topic.seq {
        return (None, Vec::new());
    }
    let oldest = topic.history.front().map_or(topic.seq + 1, |t| t.seq);
    let ticks: Vec<Tick> = topic
        .history
        .iter()
        .filter(|t| t.seq > since)
        .cloned()
        .collect();
    if since + 1 >= oldest {
        return (None, ticks);
    }
    let gap = Some((since + 1, oldest - 1));
    if ticks.is_empty() {
        (gap, topic.last.iter().cloned().collect())
    } else {
        (gap, ticks)
    }
}

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
            mailboxes[worker].wake();
        }
    }
}

#[cfg(test)]
mod tests;
