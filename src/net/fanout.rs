//! Fan-out on one worker, and the slow-consumer policy, in one place.
//!
//! A tick from the mailbox is appended once to its topic's pending ticks
//! ([`Fanout::deliver`]); at the next sweep every local subscriber of the
//! topic takes what it is owed in one step, a reference to the shared run
//! of frames, and is marked for the sweep's single write ([`Fanout::hand_out`];
//! why per sweep and not per tick is in [`crate::broker::pending_ticks`]).
//! A connection about to act on its own input or deadline takes its share
//! first ([`Fanout::catch_up`]), so what it queues itself still follows the
//! ticks delivered before. A topic is handed out tick by tick instead where
//! a subscriber needs it ([`LocalTopic::takes_each_tick`]): a connection
//! subscribed to several topics gets their ticks interleaved as they came,
//! and a `max_hz` cap holds back the newest tick until its interval has
//! passed ([`Fanout::release_held`], on the worker's one timer heap).
//!
//! The queue bound the policy applies past is `broker.max_queue_bytes`,
//! or a fair share of the worker's part of `broker.max_total_queue_bytes`
//! while its queues together are over it ([`Fanout::tick_bound`], kept up
//! to date by [`Fanout::recount`]); what happens past the bound, and after
//! `slow_consumer_grace_ms` over it, is [`SlowConsumer`]'s decision.

use std::time::{Duration, Instant};

use mio::Token;

use super::connection::Connection;
use super::context::WorkerStats;
use super::out_queue::Pushed;
use super::settings::Settings;
use super::settings::SlowConsumerPolicy;
use super::slab::Slab;
use super::timer::Timers;
use crate::broker::pending_ticks::PendingTicks;
use crate::broker::subscriptions::{LocalSubscriber, LocalTopic, LocalTopics};
use crate::tick::{Tick, TopicId};

/// The least a connection's queue bound shrinks to while the worker is over
/// its share of `broker.max_total_queue_bytes`: hundreds of small ticks,
/// more than a reader that keeps up ever has queued.
const MIN_PRESSED_QUEUE_BYTES: usize = 64 * 1024;

/// A connection and the worker's bookkeeping about it (kept out of the
/// connection, which knows nothing of the worker's lists and timers).
#[derive(Debug)]
pub struct Slot {
    pub connection: Connection,
    /// Queued in the list of connections to write in the next sweep.
    pub dirty: bool,
    /// This connection's share of the worker's queued-bytes total, as last
    /// counted (see [`Fanout::recount`]).
    pub counted_queue_bytes: usize,
    /// The deadline this connection has filed with the worker's timers.
    pub timer_at: Option<Instant>,
    /// When a sweep last wrote this connection (for per-connection batching).
    pub last_write: Option<Instant>,
}

impl Slot {
    pub fn new(connection: Connection) -> Self {
        Slot {
            connection,
            dirty: false,
            counted_queue_bytes: 0,
            timer_at: None,
            last_write: None,
        }
    }
}

/// A worker's fan-out state.
#[derive(Debug, Default)]
pub struct Fanout {
    /// Connections with newly queued ticks, each written once in the next sweep.
    dirty: Vec<Token>,
    /// Topics whose pending ticks some subscriber has not taken yet (a
    /// topic may be listed twice, or after it left: both are harmless).
    pending_topics: Vec<TopicId>,
    /// The topics of the connection being caught up (kept for its capacity).
    scratch_topics: Vec<TopicId>,
    /// Outbound bytes queued on this worker's connections, as last counted
    /// per connection, and how many connections have any.
    queued_bytes: usize,
    queued_connections: usize,
}

impl Fanout {
    /// Appends `tick` to its topic's pending ticks for the local
    /// subscribers (at once, tick by tick, where a `max_hz` cap needs it);
    /// returns how many subscribers the tick is for, the work it causes.
    #[allow(clippy::too_many_arguments)] // the worker's parts, lent for one tick
    pub fn deliver(
        &mut self,
        tick: Tick,
        local: &mut LocalTopics,
        slots: &mut Slab<Slot>,
        timers: &mut Timers,
        settings: &Settings,
        stats: &mut WorkerStats,
        now: Instant,
    ) -> usize {
        let Some(topic) = local.get_mut(tick.topic) else {
            return 0; // the last local subscriber left while it was in flight
        };
        topic.last_seq = topic.last_seq.max(tick.seq);
        if !topic.takes_each_tick() {
            if topic.pending.is_empty() {
                self.pending_topics.push(tick.topic);
            }
            topic.pending.push(tick);
            return topic.subscribers.len();
        }
        let bound = self.tick_bound(settings);
        let policy = settings.slow_consumer;
        // What is pending (from before it had to go one by one) goes first.
        hand_out_topic(&mut self.dirty, topic, slots, bound, policy, stats, now);
        for subscriber in topic.subscribers.iter_mut() {
            if tick.seq <= subscriber.after_seq {
                continue; // already sent in its snapshot or replay
            }
            if let Some(rate) = &mut subscriber.rate {
                if now < rate.next_at {
                    if rate.held.replace(tick.clone()).is_none() {
                        timers.schedule_held(rate.next_at, tick.topic, subscriber.connection);
                    }
                    continue;
                }
                // This tick is newer than any held one, which must not follow it.
                rate.held = None;
                rate.next_at = now + rate.interval;
            }
            let Some(slot) = slots.get_mut(subscriber.connection) else {
                continue;
            };
            slot.connection
                .enqueue_tick(&tick, bound, policy, stats, now);
            mark_dirty(&mut self.dirty, slot, subscriber.connection);
        }
        topic.subscribers.len()
    }

    /// Every subscriber of a topic with pending ticks takes what it is
    /// owed (at the start of a sweep, and between its slices).
    pub fn hand_out(
        &mut self,
        local: &mut LocalTopics,
        slots: &mut Slab<Slot>,
        settings: &Settings,
        stats: &mut WorkerStats,
        now: Instant,
    ) {
        let bound = self.tick_bound(settings);
        let policy = settings.slow_consumer;
        let mut topics = std::mem::take(&mut self.pending_topics);
        hand_out_topics(
            &mut self.dirty,
            &topics,
            local,
            slots,
            bound,
            policy,
            stats,
            now,
        );
        topics.clear();
        self.pending_topics = topics;
    }

    /// `token` is about to act on its input or a deadline: the pending
    /// ticks of its topics are handed out first (to every subscriber of
    /// them, which costs no more than the sweep would have), so that what
    /// it queues itself — an answer, a heartbeat naming the last seq, a
    /// close — comes after the ticks delivered before it.
    pub fn catch_up(
        &mut self,
        token: Token,
        local: &mut LocalTopics,
        slots: &mut Slab<Slot>,
        settings: &Settings,
        stats: &mut WorkerStats,
        now: Instant,
    ) {
        let Some(slot) = slots.get_mut(token) else {
            return;
        };
        self.scratch_topics.clear();
        slot.connection.topic_ids(&mut self.scratch_topics);
        let bound = self.tick_bound(settings);
        let policy = settings.slow_consumer;
        let topics = &self.scratch_topics;
        hand_out_topics(
            &mut self.dirty,
            topics,
            local,
            slots,
            bound,
            policy,
            stats,
            now,
        );
    }

    /// A held-tick timer fired: sends the tick a `max_hz` subscription of
    /// `token` to `topic` held back, if its interval has passed.
    #[allow(clippy::too_many_arguments)] // the worker's parts, lent for one timer
    pub fn release_held(
        &mut self,
        topic: TopicId,
        token: Token,
        local: &mut LocalTopics,
        slots: &mut Slab<Slot>,
        settings: &Settings,
        stats: &mut WorkerStats,
        now: Instant,
    ) {
        let Some(rate) = local
            .subscriber_mut(topic, token)
            .and_then(|s| s.rate.as_mut())
        else {
            return;
        };
        if now < rate.next_at {
            // Stale: a tick was sent at once since this entry was filed,
            // and the newer entry for `next_at` is still in the heap.
            return;
        }
        let Some(tick) = rate.held.take() else {
            return;
        };
        rate.next_at = now + rate.interval;
        let bound = self.tick_bound(settings);
        let Some(slot) = slots.get_mut(token) else {
            return;
        };
        let policy = settings.slow_consumer;
        slot.connection
            .enqueue_tick(&tick, bound, policy, stats, now);
        mark_dirty(&mut self.dirty, slot, token);
    }

    /// Whether some connection, or some topic's pending ticks, wait for
    /// the next sweep.
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty() || !self.pending_topics.is_empty()
    }

    /// The connections to write in this sweep (their marks stay until the
    /// caller clears each slot's `dirty`).
    pub fn take_dirty(&mut self) -> Vec<Token> {
        std::mem::take(&mut self.dirty)
    }

    /// Brings the queued-bytes total up to date with one connection's
    /// queue. Done after every event, sweep and timer of the connection
    /// rather than on every change of its queue: in between the total lags
    /// by at most the ticks of one loop turn.
    pub fn recount(&mut self, slot: &mut Slot) {
        let now = slot.connection.queued_bytes();
        let before = std::mem::replace(&mut slot.counted_queue_bytes, now);
        self.queued_bytes = self.queued_bytes - before + now;
        self.queued_connections =
            self.queued_connections - usize::from(before > 0) + usize::from(now > 0);
    }

    /// A connection closed: its queue leaves the total.
    pub fn forget(&mut self, slot: &Slot) {
        self.queued_bytes -= slot.counted_queue_bytes;
        self.queued_connections -= usize::from(slot.counted_queue_bytes > 0);
    }

    /// The queue bound past which a connection's slow-consumer policy
    /// applies now: `broker.max_queue_bytes` while the worker's queues
    /// together are within its share of `broker.max_total_queue_bytes`,
    /// else a fair share of that per connection with anything queued (never
    /// below `MIN_PRESSED_QUEUE_BYTES`, so readers that keep up are left
    /// alone).
    pub fn tick_bound(&self, settings: &Settings) -> usize {
        if self.queued_bytes <= settings.worker_queue_budget {
            return settings.max_queue_bytes;
        }
        (settings.worker_queue_budget / self.queued_connections.max(1))
            .max(MIN_PRESSED_QUEUE_BYTES)
            .min(settings.max_queue_bytes)
    }
}

/// Marks a connection for the next sweep's write, once.
fn mark_dirty(dirty: &mut Vec<Token>, slot: &mut Slot, token: Token) {
    if !slot.dirty {
        slot.dirty = true;
        dirty.push(token);
    }
}

/// [`hand_out_topic`] for each of `ids` still subscribed here.
#[allow(clippy::too_many_arguments)] // the worker's parts, lent for one hand-out
fn hand_out_topics(
    dirty: &mut Vec<Token>,
    ids: &[TopicId],
    local: &mut LocalTopics,
    slots: &mut Slab<Slot>,
    bound: usize,
    policy: SlowConsumerPolicy,
    stats: &mut WorkerStats,
    now: Instant,
) {
    for id in ids {
        if let Some(topic) = local.get_mut(*id) {
            hand_out_topic(dirty, topic, slots, bound, policy, stats, now);
        }
    }
}

/// Every subscriber of `topic` takes what it is owed of the pending ticks,
/// which are then forgotten.
fn hand_out_topic(
    dirty: &mut Vec<Token>,
    topic: &mut LocalTopic,
    slots: &mut Slab<Slot>,
    bound: usize,
    policy: SlowConsumerPolicy,
    stats: &mut WorkerStats,
    now: Instant,
) {
    if topic.pending.is_empty() {
        return;
    }
    for subscriber in topic.subscribers.iter_mut() {
        hand_to(
            dirty,
            subscriber,
            &mut topic.pending,
            slots,
            bound,
            policy,
            stats,
            now,
        );
    }
    topic.pending.clear();
}

/// One subscriber takes what it is owed of `pending`.
#[allow(clippy::too_many_arguments)] // the worker's parts, lent for one subscriber
fn hand_to(
    dirty: &mut Vec<Token>,
    subscriber: &mut LocalSubscriber,
    pending: &mut PendingTicks,
    slots: &mut Slab<Slot>,
    bound: usize,
    policy: SlowConsumerPolicy,
    stats: &mut WorkerStats,
    now: Instant,
) {
    let at_end = pending.cursor_at_end();
    let owed = pending.owed(subscriber.cursor, subscriber.after_seq);
    subscriber.cursor = at_end;
    if owed.ticks.is_empty() {
        return;
    }
    let Some(slot) = slots.get_mut(subscriber.connection) else {
        return;
    };
    slot.connection
        .enqueue_ticks(owed, subscriber.after_seq, bound, policy, stats, now);
    mark_dirty(dirty, slot, subscriber.connection);
}

/// What `broker.slow_consumer` does with a connection whose queue is over
/// its bound: the decisions, which the connection carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumer {
    /// Nothing to do (or the policy already did it: conflated, dropped).
    Keep,
    /// Start (or keep) the grace period: the queue is over the bound.
    OverBound,
    /// Close with 1008 "slow consumer", discarding what it did not read.
    Disconnect,
    /// The queue came back under the bound within the grace period.
    Recovered,
}

impl SlowConsumer {
    /// After a tick was offered to the queue: `pushed` is what the queue
    /// did under the policy, `queued` its length now.
    pub fn after_push(
        pushed: Pushed,
        queued: usize,
        bound: usize,
        stats: &mut WorkerStats,
    ) -> Self {
        match pushed {
            Pushed::Queued => {}
            Pushed::Conflated => stats.conflated += 1,
            Pushed::Dropped => stats.dropped += 1,
            // `disconnect` past twice the bound: at once.
            Pushed::Overflow => return SlowConsumer::Disconnect,
        }
        if queued > bound {
            SlowConsumer::OverBound
        } else {
            SlowConsumer::Keep
        }
    }

    /// At a deadline: a queue over the bound since `over_since` for the
    /// whole `grace` is disconnected (the `disconnect` policy's grace;
    /// with the others the queue cannot stay over it).
    pub fn after_grace(
        over_since: Option<Instant>,
        queued: usize,
        bound: usize,
        grace: Duration,
        now: Instant,
    ) -> Self {
        match over_since {
            Some(since) if now >= since + grace && queued > bound => SlowConsumer::Disconnect,
            Some(since) if now >= since + grace => SlowConsumer::Recovered,
            _ => SlowConsumer::Keep,
        }
    }

    /// When a connection over its bound since `over_since` is next looked at.
    pub fn grace_deadline(over_since: Option<Instant>, grace: Duration) -> Option<Instant> {
        over_since.map(|since| since + grace)
    }
}
