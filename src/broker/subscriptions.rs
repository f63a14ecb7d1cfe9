//! A worker's own view of subscriptions: for each topic with subscribers on
//! this worker, which connections want it, from which seq, and at what rate.
//!
//! Kept per worker and touched only by it, so delivering a tick to local
//! subscribers takes no lock: one hash lookup per tick, then a walk of a Vec.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Token;

use crate::tick::{Tick, TopicId};

/// One connection's subscription to one topic on this worker.
#[derive(Debug)]
pub struct LocalSubscriber {
    pub connection: Token,
    /// Ticks at or below this seq reached the client in its snapshot or
    /// replay; the copies still in the mailbox are skipped.
    pub after_seq: u64,
    pub rate: Option<RateCap>,
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
}

/// Every topic with subscribers on this worker.
#[derive(Debug, Default)]
pub struct LocalTopics {
    topics: HashMap<TopicId, LocalTopic>,
}

impl LocalTopics {
    /// Adds a subscriber; `seq` is the topic's seq at subscribe time.
    pub fn add(&mut self, id: TopicId, name: &Arc<str>, seq: u64, subscriber: LocalSubscriber) {
        let topic = self.topics.entry(id).or_insert_with(|| LocalTopic {
            name: Arc::clone(name),
            last_seq: seq,
            subscribers: Vec::new(),
        });
        topic.last_seq = topic.last_seq.max(seq);
        topic.subscribers.push(subscriber);
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
            },
        );
    }

    /// Removes `connection`'s subscription to `id`, dropping the topic when
    /// it was the last one.
    pub fn remove(&mut self, id: TopicId, connection: Token) {
        if let Some(topic) = self.topics.get_mut(&id) {
            topic.subscribers.retain(|s| s.connection != connection);
            if topic.subscribers.is_empty() {
                self.topics.remove(&id);
            }
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
