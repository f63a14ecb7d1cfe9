//! A per-connection message-rate limit: a token bucket that refills at the
//! configured rate and holds at most one second's worth, so a client may
//! burst briefly but not sustain more than `max_messages_per_sec`.

use std::time::Instant;

/// Tokens a connection has left to spend on messages.
#[derive(Debug, Clone, Copy)]
pub struct MessageBudget {
    tokens: f64,
    refilled_at: Instant,
}

impl MessageBudget {
    /// A full bucket.
    pub fn new(per_sec: u32, now: Instant) -> Self {
        MessageBudget {
            tokens: f64::from(per_sec),
            refilled_at: now,
        }
    }

    /// Spends one token for a message; false when the client is over its
    /// rate. A rate of 0 means no limit.
    pub fn spend(&mut self, per_sec: u32, now: Instant) -> bool {
        if per_sec == 0 {
            return true;
        }
        let rate = f64::from(per_sec);
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_a_second_then_holds_the_rate() {
        let start = Instant::now();
        let mut budget = MessageBudget::new(10, start);
        assert!((0..10).all(|_| budget.spend(10, start)));
        assert!(!budget.spend(10, start));
        let later = start + Duration::from_millis(500);
        assert_eq!((0..10).filter(|_| budget.spend(10, later)).count(), 5);
        assert!(MessageBudget::new(0, start).spend(0, start));
    }
}
