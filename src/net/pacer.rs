//! When a worker's next write sweep may start: batching that follows load.
//!
//! A write costs a loopback subscriber about 10 µs of the broker's core for
//! one tick or for fifty (the send plus the receiver's TCP work, which the
//! kernel runs on the sender's core), while queueing one more tick into a
//! write costs ~0.15 µs; DESIGN.md's ceilings put one write per tick at
//! ≈150–200k ticks/s and 64 ticks per write at ≈9.5M. How many ticks each
//! write carries is therefore the lever on CPU per delivered tick, and it
//! should be chosen by load:
//!
//! - A worker that is keeping up writes every tick at the end of the loop
//!   turn it arrived in, as before: a quiet feed keeps its latency.
//! - A worker that is saturated — ticks arrived while its last sweep ran,
//!   so its sweeps take longer than the ticks' spacing — already batches
//!   by itself (each sweep carries what came during the one before), but
//!   runs its core flat out. [`Batching::Sweep`] then lets the next sweep
//!   wait as long as the last one took, capped by
//!   `broker.max_batch_delay_ms`: writes carry about twice the ticks, and a
//!   tick never waits more than the budget beyond the sweep itself. Once
//!   writes carry [`FULL_BATCH_TICKS`] on average nothing more is gained by
//!   waiting, so the sweep runs at once (a publisher at the broker's
//!   maximum rate is not slowed by idle time).
//! - [`Batching::Connection`] is the per-connection alternative measured
//!   against it (Nagle-like: a connection that wrote less than the budget
//!   ago and has less than [`FULL_BATCH_BYTES`] queued waits for the
//!   budget); `benches/results/batching.md` has the comparison.
//! - `broker.flush_interval_ms` stays an explicit override: a fixed least
//!   time between two sweeps' starts, load or not ([`Batching::Fixed`]).
//!
//! The pacer is pure bookkeeping over instants the worker hands it, so the
//! schedule's guarantees are tested here without sockets or clocks.

use std::time::{Duration, Instant};

/// Average ticks per write past which a saturated worker no longer waits:
/// DESIGN.md's batched-write ceiling is measured at 64 ticks per write,
/// where the write's fixed cost is below the per-tick cost already.
pub const FULL_BATCH_TICKS: u64 = 64;

/// Queued bytes past which [`Batching::Connection`] writes a connection at
/// once: about 32 small ticks, a full batch for one connection.
pub const FULL_BATCH_BYTES: usize = 4096;

/// How a worker schedules its write sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// Every sweep at the end of its loop turn: `max_batch_delay_ms = 0`.
    Immediate,
    /// `broker.flush_interval_ms`: sweeps start at least this far apart.
    Fixed(Duration),
    /// `broker.batching = "sweep"` (the default): a saturated worker's next
    /// sweep waits as long as its last one took, up to `budget`.
    Sweep { budget: Duration },
    /// `broker.batching = "connection"`: a connection that wrote within
    /// `budget` waits out the budget unless a full batch is queued.
    Connection { budget: Duration },
}

/// What the worker measured over one sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    pub started: Instant,
    pub ended: Instant,
    /// Write syscalls the sweep made.
    pub writes: u64,
    /// Ticks those writes carried.
    pub ticks: u64,
}

impl Sweep {
    fn cost(&self) -> Duration {
        self.ended.saturating_duration_since(self.started)
    }

    fn ticks_per_write(&self) -> u64 {
        self.ticks / self.writes.max(1)
    }
}

/// The schedule of one worker's sweeps.
#[derive(Debug)]
pub struct Pacer {
    batching: Batching,
    /// The last sweep, once there was one.
    last: Option<Sweep>,
    /// When work for the next sweep was first seen after the last one.
    first_dirty: Option<Instant>,
    /// The least instant the next sweep may start.
    not_before: Instant,
    /// Waits for batching (for the metrics).
    waits: u64,
}

impl Pacer {
    pub fn new(batching: Batching, now: Instant) -> Self {
        Pacer {
            batching,
            last: None,
            first_dirty: None,
            not_before: now,
            waits: 0,
        }
    }

    /// The least instant the next sweep may start; a sweep is due when
    /// something is dirty and this has passed.
    pub fn not_before(&self) -> Instant {
        self.not_before
    }

    /// Some connection has ticks to write (called every loop turn while
    /// one has): the first call after a sweep decides when the next one
    /// may start. Work first seen within the last sweep's cost of its end
    /// arrived while it ran, or as good as — the sweeps take longer than
    /// the ticks' spacing, the worker is saturated.
    pub fn note_dirty(&mut self, now: Instant) {
        if self.first_dirty.is_some() {
            return;
        }
        self.first_dirty = Some(now);
        let (Batching::Sweep { budget }, Some(last)) = (self.batching, self.last) else {
            return;
        };
        let cost = last.cost();
        let saturated = now.saturating_duration_since(last.ended) < cost;
        if saturated && last.ticks_per_write() < FULL_BATCH_TICKS {
            self.not_before = last.ended + cost.min(budget);
            self.waits += 1;
        }
    }

    /// A sweep is starting now (with [`Batching::Fixed`] the interval
    /// counts from starts, as `flush_interval_ms` always did).
    pub fn sweep_started(&mut self, now: Instant) {
        if let Batching::Fixed(interval) = self.batching {
            self.not_before = now + interval;
        }
    }

    /// The sweep that started earlier ended: the next one is decided when
    /// work for it appears ([`Self::note_dirty`]).
    pub fn sweep_ended(&mut self, sweep: Sweep) {
        self.last = Some(sweep);
        self.first_dirty = None;
    }

    /// With [`Batching::Connection`], the instant until which a dirty
    /// connection that last wrote at `last_write` and has `queued_bytes`
    /// waiting is held back; `None` when it is written in this sweep.
    pub fn hold_connection(
        &self,
        last_write: Option<Instant>,
        queued_bytes: usize,
        now: Instant,
    ) -> Option<Instant> {
        let Batching::Connection { budget } = self.batching else {
            return None;
        };
        let release = last_write? + budget;
        (release > now && queued_bytes < FULL_BATCH_BYTES).then_some(release)
    }

    /// Waits for batching since the last call: sweeps deferred
    /// ([`Batching::Sweep`]) or connections held ([`Batching::Connection`]).
    pub fn take_waits(&mut self) -> u64 {
        std::mem::take(&mut self.waits)
    }

    /// Counts one connection held back by [`Self::hold_connection`].
    pub fn count_held(&mut self) {
        self.waits += 1;
    }
}

#[cfg(test)]
mod tests;
