//! Per-worker timers, in one heap: connection deadlines (handshake, ping,
//! idle and close timeouts, heartbeats, a slow consumer's grace, a token's
//! expiry warning and end) and the
//! moments `max_hz` subscriptions may send the tick they hold back.
//!
//! A connection's deadline moves on every frame it sends, so updating a heap
//! entry each time would cost more than the frame. Instead each connection
//! remembers the one entry it has in the heap; when that entry fires, the
//! worker asks the connection for its real deadline and either acts or files
//! a new entry. Entries for a later deadline are only added when they fire
//! early, so a busy connection costs one heap push per timeout period.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use mio::Token;

use crate::tick::TopicId;

/// What a timer entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// The connection's deadline (see the module doc on stale entries).
    Deadline(Token),
    /// A `max_hz` subscription of the connection to the topic may send
    /// the tick it holds back.
    HeldTick(TopicId, Token),
}

/// A min-heap of (time, timer) entries, some of them stale.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    /// Files an entry that fires at `at` for `token`'s deadline.
    pub fn schedule(&mut self, at: Instant, token: Token) {
        self.heap.push(Reverse((at, Timer::Deadline(token))));
    }

    /// Files an entry that fires at `at` for a held tick.
    pub fn schedule_held(&mut self, at: Instant, topic: TopicId, token: Token) {
        self.heap.push(Reverse((at, Timer::HeldTick(topic, token))));
    }

    /// The earliest entry's time, for the poll timeout.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the next entry due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => {
                let Reverse(entry) = self.heap.pop()?;
                Some(entry)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_order_and_only_when_due() {
        let now = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(now + Duration::from_millis(20), Token(2));
        timers.schedule(now + Duration::from_millis(10), Token(1));
        assert_eq!(timers.next_at(), Some(now + Duration::from_millis(10)));
        assert_eq!(timers.pop_due(now), None);
        let later = now + Duration::from_millis(30);
        timers.schedule_held(now + Duration::from_millis(15), TopicId(7), Token(3));
        let due = |timers: &mut Timers| timers.pop_due(later).map(|(_, t)| t);
        assert_eq!(due(&mut timers), Some(Timer::Deadline(Token(1))));
        assert_eq!(
            due(&mut timers),
            Some(Timer::HeldTick(TopicId(7), Token(3)))
        );
        assert_eq!(due(&mut timers), Some(Timer::Deadline(Token(2))));
        assert_eq!(timers.pop_due(later), None);
    }
}
