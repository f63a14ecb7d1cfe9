//! Fan-out on one worker, and the slow-consumer policy, in one place.
//!
//! A tick from the mailbox is handed to every local subscriber of its
//! topic as a reference to the one shared frame (no copy, no
//! re-serialisation); a `max_hz` subscription holds back the newest tick
//! until its interval has passed ([`Fanout::deliver`],
//! [`Fanout::release_held`], both on the worker's one timer heap). Each
//! connection that got something is marked for the next sweep's single
//! write. The queue bound the policy applies past is `broker.max_queue_bytes`,
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
use super::slab::Slab;
use super::timer::Timers;
use crate::broker::subscriptions::LocalTopics;
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
    /// Outbound bytes queued on this worker's connections, as last counted
    /// per connection, and how many connections have any.
    queued_bytes: usize,
    queued_connections: usize,
}

impl Fanout {
    /// Queues `tick` for every local subscriber of its topic; returns how
    /// many subscribers the tick reached (or was held for), the work done.
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
        let bound = self.tick_bound(settings);
        let Some(topic) = local.get_mut(tick.topic) else {
            return 0; // the last local subscriber left while it was in flight
        };
        topic.last_seq = topic.last_seq.max(tick.seq);
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
            let policy = settings.slow_consumer;
            slot.connection
                .enqueue_tick(&tick, bound, policy, stats, now);
            self.mark_dirty(slot, subscriber.connection);
        }
        topic.subscribers.len()
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
        self.mark_dirty(slot, token);
    }

    /// Marks a connection for the next sweep's write, once.
    fn mark_dirty(&mut self, slot: &mut Slot, token: Token) {
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(token);
        }
    }

    /// Whether some connection waits for the next sweep.
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
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
