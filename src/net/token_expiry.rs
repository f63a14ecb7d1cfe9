//! When a long-lived connection's token ends: a connection may not outlive
//! its token. A JWT's `exp` (a wall-clock time) becomes two deadlines on
//! the worker's monotonic clock — `token_expiring` is sent
//! `jwt.expiry_warning_secs` before the end, and the connection is closed
//! (WebSocket close 4001, [`crate::protocol::close::CloseCode::TOKEN_EXPIRED`])
//! at `exp` plus `jwt.leeway_secs`,
//! the same leeway the token was accepted with. The deadlines join the
//! connection's others on the worker's timer; a refresh replaces them.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::settings::Settings;
use crate::broker::auth::Rights;

/// What is due when a deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Send `token_expiring` (once).
    Warn { exp: u64, expires_in: Duration },
    /// Close the connection.
    Close,
}

/// A connection's token deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenExpiry {
    /// `exp`, seconds since the Unix epoch (for the warning event).
    exp: u64,
    warns_at: Instant,
    closes_at: Instant,
    warned: bool,
}

impl TokenExpiry {
    /// The deadlines of `rights`' JWT, or `None` when no JWT granted them
    /// (static tokens do not expire).
    pub fn of(rights: &Rights, settings: &Settings, now: Instant) -> Option<TokenExpiry> {
        let exp = rights.grant.as_ref()?.exp;
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let left = Duration::from_secs(exp)
            .saturating_add(settings.token_leeway)
            .saturating_sub(unix_now);
        // A deadline past what an Instant holds is as good as never.
        let closes_at = now
            .checked_add(left)
            .unwrap_or(now + Duration::from_secs(1 << 32));
        Some(TokenExpiry {
            exp,
            warns_at: closes_at
                .checked_sub(settings.token_warning)
                .unwrap_or(now)
                .max(now),
            closes_at,
            warned: false,
        })
    }

    /// After a refresh: a token that ends within the warning time too is
    /// not warned about again when the one it replaces already was (the
    /// client was told; a new warning would only ask for the same token).
    pub fn carry_warning(&mut self, previous: &TokenExpiry, now: Instant) {
        if previous.warned && self.warns_at <= now {
            self.warned = true;
        }
    }

    /// The next deadline.
    pub fn deadline(&self) -> Instant {
        if self.warned {
            self.closes_at
        } else {
            self.warns_at
        }
    }

    /// What is due at `now`, if anything; a warning is given once.
    pub fn due(&mut self, now: Instant) -> Option<Due> {
        if now >= self.closes_at {
            return Some(Due::Close);
        }
        if !self.warned && now >= self.warns_at {
            self.warned = true;
            return Some(Due::Warn {
                exp: self.exp,
                expires_in: self.closes_at.saturating_duration_since(now),
            });
        }
        None
    }
}

#[cfg(test)]
// Tests unwrap freely: a panic there is a failed test.
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::broker::jwt::Grant;
    use crate::broker::topic_pattern::PatternSet;

    fn rights(exp: u64) -> Rights {
        Rights {
            publish: false,
            subscribe: false,
            grant: Some(Arc::new(Grant {
                sub: "alice".into(),
                exp,
                subscribe: PatternSet::default(),
                publish: PatternSet::default(),
            })),
        }
    }

    #[test]
    fn warns_once_then_closes_at_exp_plus_leeway() {
        let mut settings = Settings::embedded_default();
        settings.token_leeway = Duration::from_secs(5);
        settings.token_warning = Duration::from_secs(10);
        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut expiry = TokenExpiry::of(&rights(unix + 60), &settings, now).unwrap();
        // Closes 60 + 5 s from now (less the part of the second gone by).
        let close = expiry.closes_at - now;
        assert!(
            close > Duration::from_secs(63) && close <= Duration::from_secs(65),
            "{close:?}"
        );
        assert_eq!(
            expiry.deadline(),
            expiry.closes_at - Duration::from_secs(10)
        );
        assert_eq!(expiry.due(now), None);
        let at_warning = expiry.deadline();
        assert!(matches!(expiry.due(at_warning), Some(Due::Warn { exp, .. }) if exp == unix + 60));
        assert_eq!(expiry.due(at_warning), None, "warned once");
        assert_eq!(expiry.deadline(), expiry.closes_at);
        assert_eq!(expiry.due(expiry.closes_at), Some(Due::Close));
        // Static rights never expire; a token already past is due at once.
        assert_eq!(TokenExpiry::of(&Rights::default(), &settings, now), None);
        let mut past = TokenExpiry::of(&rights(unix - 60), &settings, now).unwrap();
        assert_eq!(past.due(now), Some(Due::Close));
    }
}
