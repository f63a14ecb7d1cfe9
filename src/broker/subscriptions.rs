//! A worker's own view of subscriptions: for each topic with subscribers on
//! this worker, which connections want it, from which seq, and at what rate.
//!
//! Kept per worker and touched only by it, so delivering a tick to local
//! subscribers takes no lock: one hash lookup per tick, then an append to
//! the topic's [`PendingTicks`], which its subscribers take at the sweep.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Token;

use super::pending_ticks::{Cursor, PendingTicks};
use crate::tick::{Tick, TopicId};

/// One connection's subscription to one topic on this worker.
#[derive(Debug)]
pub struct LocalSubscriber {
    pub connection: Token,
    /// Ticks at or below this seq reached the client in its snapshot or
    /// replay; the copies still in the mailbox are skipped.
    pub after_seq: u64,
    pub rate: Option<RateCap>,
    /// How much of the topic's pending ticks it has taken.
    pub cursor: Cursor,
    /// It takes each tick as it comes, not from the pending ticks: a
    /// `max_hz` cap, or a connection with several topics on this worker.
    each_tick: bool,
}

/// `max_hz`: at most one tick per `interval`, always the newest.
#[derive(Debug)]
pub struct RateCap {
    pub interval: Duration,
    /// The earliest time the next tick may be sent.
    pub next_at: Instant,
    /// The newest tick that arrived too early, waiting for `next_at`.
    pub held: Option<Tick>,
}

impl RateCap {
    /// The longest interval a cap uses, whatever it is asked for: the
    /// conversion below can then never fail, and `now + interval` never
    /// overflows an `Instant`.
    const MAX_INTERVAL: Duration = Duration::from_secs(1_000);

    /// A cap of `max_hz` ticks per second, open at once. `max_hz` is
    /// checked by the op parser ([`super::client_op::MIN_MAX_HZ`]); this
    /// conversion holds for any input anyway (NaN, zero or a negative
    /// rate mean the longest interval).
    pub fn new(max_hz: f64, now: Instant) -> Self {
        let interval = Duration::try_from_secs_f64(1.0 / max_hz)
            .map_or(Self::MAX_INTERVAL, |interval| {
                interval.min(Self::MAX_INTERVAL)
            });
        RateCap {
            interval,
            next_at: now,
            held: None,
        }
    }
}

/// A topic as one worker sees it.
#[derive(Debug)]
pub struct LocalTopic {
    pub name: Arc<str>,
    /// The newest seq this worker has seen, for heartbeats.
    pub last_seq: u64,
    pub subscribers: Vec<LocalSubscriber>,
    /// Ticks delivered since the last sweep, not yet taken by every subscriber.
    pub pending: PendingTicks,
    /// Subscribers that take each tick as it comes (see
    /// [`LocalSubscriber::each_tick`]).
    each_tick: usize,
}

impl LocalTopic {
    /// Whether the topic's ticks are handed out one by one as they come
    /// rather than held as pending ticks until the sweep: some subscriber's
    /// `max_hz` cap decides per tick, or some subscriber also subscribes
    /// to other topics here, whose ticks must keep their interleaving on
    /// its connection (a sweep hands out topic by topic).
    pub fn takes_each_tick(&self) -> bool {
        self.each_tick > 0
    }
}

/// Every topic with subscribers on this worker.
#[derive(Debug, Default)]
pub struct LocalTopics {
    topics: HashMap<TopicId, LocalTopic>,
    /// The topics each connection subscribes to here.
    topics_of: HashMap<Token, Vec<TopicId>>,
}

impl LocalTopics {
    /// Adds a subscriber; `seq` is the topic's seq at subscribe time.
    /// The subscriber owes nothing of the ticks pending now: they were
    /// delivered before it joined.
    pub fn add(&mut self, id: TopicId, name: &Arc<str>, seq: u64, mut subscriber: LocalSubscriber) {
        let connection = subscriber.connection;
        let of_connection = self.topics_of.entry(connection).or_default();
        of_connection.push(id);
        let first_other = match of_connection.as_slice() {
            [first, _] => Some(*first),
            _ => None,
        };
        let several = of_connection.len() > 1;
        let topic = self.topics.entry(id).or_insert_with(|| LocalTopic {
            name: Arc::clone(name),
            last_seq: seq,
            subscribers: Vec::new(),
            pending: PendingTicks::default(),
            each_tick: 0,
        });
        topic.last_seq = topic.last_seq.max(seq);
        subscriber.cursor = topic.pending.cursor_at_end();
        subscriber.each_tick = subscriber.rate.is_some() || several;
        topic.each_tick = topic
            .each_tick
            .saturating_add(usize::from(subscriber.each_tick));
        topic.subscribers.push(subscriber);
        if let Some(first) = first_other {
            // Its first topic now has to keep the interleaving too.
            self.set_each_tick(first, connection, true);
        }
    }

    /// Registers `connection` on a topic it just subscribed to in the table:
    /// live ticks after `seq` (its snapshot or replay ended there) reach it.
    pub fn add_subscriber(
        &mut self,
        id: TopicId,
        name: &Arc<str>,
        seq: u64,
        connection: Token,
        rate: Option<RateCap>,
    ) {
        self.add(
            id,
            name,
            seq,
            LocalSubscriber {
                connection,
                after_seq: seq,
                rate,
                cursor: Cursor::default(),
                each_tick: false,
            },
        );
    }

    /// Removes `connection`'s subscription to `id`, dropping the topic when
    /// it was the last one.
    pub fn remove(&mut self, id: TopicId, connection: Token) {
        if let Some(topic) = self.topics.get_mut(&id) {
            let mut each_tick_left = 0usize;
            topic.subscribers.retain(|s| {
                let leaves = s.connection == connection;
                each_tick_left = each_tick_left.saturating_add(usize::from(leaves && s.each_tick));
                !leaves
            });
            topic.each_tick = topic.each_tick.saturating_sub(each_tick_left);
            if topic.subscribers.is_empty() {
                self.topics.remove(&id);
            }
        }
        self.forget_topic_of(id, connection);
    }

    /// Drops `id` from `connection`'s topics; a connection left with one
    /// topic no longer needs that one's ticks one by one (unless capped).
    fn forget_topic_of(&mut self, id: TopicId, connection: Token) {
        let Some(of_connection) = self.topics_of.get_mut(&connection) else {
            return;
        };
        of_connection.retain(|topic| *topic != id);
        match of_connection.as_slice() {
            [] => {
                self.topics_of.remove(&connection);
            }
            [only] => {
                let only = *only;
                self.set_each_tick(only, connection, false);
            }
            _ => {}
        }
    }

    /// Sets whether `connection`'s subscription to `id` takes each tick as
    /// it comes; a `max_hz` cap always does.
    fn set_each_tick(&mut self, id: TopicId, connection: Token, several_topics: bool) {
        let Some(topic) = self.topics.get_mut(&id) else {
            return;
        };
        let Some(subscriber) = topic
            .subscribers
            .iter_mut()
            .find(|s| s.connection == connection)
        else {
            return;
        };
        let each_tick = several_topics || subscriber.rate.is_some();
        if each_tick != subscriber.each_tick {
            subscriber.each_tick = each_tick;
            topic.each_tick = if each_tick {
                topic.each_tick.saturating_add(1)
            } else {
                topic.each_tick.saturating_sub(1)
            };
        }
    }

    pub fn get(&self, id: TopicId) -> Option<&LocalTopic> {
        self.topics.get(&id)
    }

    pub fn get_mut(&mut self, id: TopicId) -> Option<&mut LocalTopic> {
        self.topics.get_mut(&id)
    }

    /// The subscriber entry of `connection` on `id`.
    pub fn subscriber_mut(
        &mut self,
        id: TopicId,
        connection: Token,
    ) -> Option<&mut LocalSubscriber> {
        self.topics
            .get_mut(&id)?
            .subscribers
            .iter_mut()
            .find(|s| s.connection == connection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_with_several_topics_takes_their_ticks_one_by_one() {
        let mut local = LocalTopics::default();
        let (a, b) = (TopicId(1), TopicId(2));
        let name: Arc<str> = "t".into();
        let each_tick = |local: &LocalTopics, id| local.get(id).unwrap().takes_each_tick();
        local.add_subscriber(a, &name, 0, Token(7), None);
        local.add_subscriber(a, &name, 0, Token(8), None);
        assert!(!each_tick(&local, a), "one topic per connection: pending ticks");
        local.add_subscriber(b, &name, 0, Token(7), None);
        assert!(each_tick(&local, a) && each_tick(&local, b));
        local.remove(b, Token(7));
        assert!(!each_tick(&local, a), "back to one topic");
        local.add_subscriber(b, &name, 0, Token(8), None);
        local.remove(a, Token(8));
        assert!(!each_tick(&local, a) && !each_tick(&local, b));
        local.add_subscriber(a, &name, 0, Token(9), Some(RateCap::new(5.0, Instant::now())));
        assert!(each_tick(&local, a), "a max_hz cap decides per tick");
        local.add_subscriber(b, &name, 0, Token(9), None);
        local.remove(b, Token(9));
        assert!(each_tick(&local, a), "still capped");
        local.remove(a, Token(9));
        assert!(!each_tick(&local, a));
    }

    #[test]
    fn rate_cap_interval_is_bounded_for_any_rate() {
        let now = Instant::now();
        assert_eq!(RateCap::new(10.0, now).interval, Duration::from_millis(100));
        for hz in [1e-20, 5e-324, 0.0, -1.0, f64::NAN] {
            let cap = RateCap::new(hz, now);
            assert_eq!(cap.interval, RateCap::MAX_INTERVAL, "max_hz {hz}");
            let _ = now + cap.interval; // must not overflow
        }
        assert_eq!(RateCap::new(f64::INFINITY, now).interval, Duration::ZERO);
    }
}
