//! The run's timeline, shared by every thread: when publishing starts, when
//! the measured window opens and closes, and when the fleet stops reading.
//!
//! Separate so the event loops and the publisher agree on phases from one
//! definition, and so the one value decided at run time (the start, set once
//! every subscriber is in) crosses threads through a single atomic.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Not started yet: the value of [`Plan::start_offset_ns`] before the go.
const NOT_STARTED: u64 = u64::MAX;

/// Where a moment falls in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting and subscribing; nothing published yet.
    Setup,
    /// Publishing, not measured.
    Warmup,
    /// Publishing and measured.
    Window,
    /// Publishing stopped; the fleet only reads what is still in flight.
    Drain,
    /// Past the drain: close everything and report.
    Done,
}

/// The timeline and the few counters the threads coordinate through.
#[derive(Debug)]
pub struct Plan {
    base: Instant,
    /// Nanoseconds since the UNIX epoch at `base`, to turn instants into the
    /// wall-clock send times embedded in ticks.
    base_unix_ns: u64,
    pub warmup: Duration,
    pub duration: Duration,
    pub drain: Duration,
    /// Nanoseconds after `base` at which publishing starts; `NOT_STARTED` until set.
    start_offset_ns: AtomicU64,
    /// Set when the run must end early (setup failed): every thread stops.
    pub abort: AtomicBool,
    /// Subscribers that have their `subscribed` event.
    pub ready: AtomicUsize,
    /// Subscribers that failed before being subscribed.
    pub failed: AtomicUsize,
    /// The publisher is connected and upgraded.
    pub publisher_ready: AtomicBool,
}

impl Plan {
    /// A plan whose start is not yet decided.
    pub fn new(warmup: Duration, duration: Duration, drain: Duration) -> Self {
        let base = Instant::now();
        let base_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Plan {
            base,
            base_unix_ns,
            warmup,
            duration,
            drain,
            start_offset_ns: AtomicU64::new(NOT_STARTED),
            abort: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            publisher_ready: AtomicBool::new(false),
        }
    }

    /// Fixes the start of publishing at `at`; later calls are ignored.
    pub fn start_at(&self, at: Instant) {
        let offset = at.saturating_duration_since(self.base).as_nanos() as u64;
        let _ = self.start_offset_ns.compare_exchange(
            NOT_STARTED,
            offset,
            Ordering::Release,
            Ordering::Relaxed,
        );
    }

    /// When publishing starts, once decided.
    pub fn start(&self) -> Option<Instant> {
        match self.start_offset_ns.load(Ordering::Acquire) {
            NOT_STARTED => None,
            offset => Some(self.base + Duration::from_nanos(offset)),
        }
    }

    /// When the measured window opens, once the start is decided.
    pub fn window_start(&self) -> Option<Instant> {
        self.start().map(|s| s + self.warmup)
    }

    /// When the measured window closes and publishing stops.
    pub fn window_end(&self) -> Option<Instant> {
        self.window_start().map(|s| s + self.duration)
    }

    /// The phase at `now`.
    pub fn phase(&self, now: Instant) -> Phase {
        if self.abort.load(Ordering::Relaxed) {
            return Phase::Done;
        }
        let Some(start) = self.start() else {
            return Phase::Setup;
        };
        let window_start = start + self.warmup;
        let window_end = window_start + self.duration;
        if now < start {
            Phase::Setup
        } else if now < window_start {
            Phase::Warmup
        } else if now < window_end {
            Phase::Window
        } else if now < window_end + self.drain {
            Phase::Drain
        } else {
            Phase::Done
        }
    }

    /// Nanoseconds since the UNIX epoch at `at`, on the clock ticks carry.
    pub fn unix_ns(&self, at: Instant) -> u64 {
        self.base_unix_ns + at.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// The measured window in UNIX nanoseconds, `[start, end)`, once decided.
    pub fn window_unix_ns(&self) -> Option<(u64, u64)> {
        Some((
            self.unix_ns(self.window_start()?),
            self.unix_ns(self.window_end()?),
        ))
    }
}

/// Nanoseconds since the UNIX epoch now, the clock embedded in ticks.
pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_the_start() {
        let plan = Plan::new(
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(1),
        );
        let t0 = Instant::now();
        assert_eq!(plan.phase(t0), Phase::Setup);
        plan.start_at(t0);
        plan.start_at(t0 + Duration::from_secs(100)); // ignored
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(plan.phase(at(500)), Phase::Warmup);
        assert_eq!(plan.phase(at(1000)), Phase::Window);
        assert_eq!(plan.phase(at(2999)), Phase::Window);
        assert_eq!(plan.phase(at(3000)), Phase::Drain);
        assert_eq!(plan.phase(at(4000)), Phase::Done);
        plan.abort.store(true, Ordering::Relaxed);
        assert_eq!(plan.phase(at(1500)), Phase::Done);
    }
}
