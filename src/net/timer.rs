//! Per-worker deadlines: handshake, ping, idle and close timeouts.
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

/// A min-heap of (deadline, connection) entries, some of them stale.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Timers {
    /// Files an entry that fires at `at` for `token`.
    pub fn schedule(&mut self, at: Instant, token: Token) {
        self.heap.push(Reverse((at, token.0)));
    }

    /// The earliest entry's time, for the poll timeout.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the next entry due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Token)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => {
                let Reverse((at, token)) = self.heap.pop()?;
                Some((at, Token(token)))
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
        assert_eq!(timers.pop_due(later).map(|(_, t)| t), Some(Token(1)));
        assert_eq!(timers.pop_due(later).map(|(_, t)| t), Some(Token(2)));
        assert_eq!(timers.pop_due(later), None);
    }
}
