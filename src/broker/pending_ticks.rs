//! The ticks of one topic that reached a worker since its last write sweep,
//! held once for all of the worker's subscribers of that topic.
//!
//! Queuing every tick into every subscriber's outbound queue as it comes
//! out of the mailbox was the worker's largest cost after the kernel's send:
//! a `perf` profile at the `ws-vs-longpoll` maximum put 35% of the worker's
//! samples in that per-subscriber step (a slab lookup, a queue append and a
//! dirty mark per tick and subscriber, each touching another connection's
//! memory). A tick is instead appended here, once, with its frame copied
//! after the ones before it; at the sweep each subscriber takes what it is
//! owed in one step — one copy of a contiguous run of frames — so the
//! per-subscriber work is per sweep, not per tick. Under load a sweep
//! carries tens of ticks per connection, and that factor is the saving.
//!
//! The run of frames is shared, not copied, by the subscribers: the first
//! [`PendingTicks::owed`] of a batch seals the frames into one
//! reference-counted [`FrameRun`] and each subscriber's queue keeps a
//! reference to its part of it, so the per-subscriber step costs a
//! reference count, whatever the ticks' size (at the `broadcast` maximum
//! the copy into 1,000 queues was 29% of the worker's profile).
//!
//! A subscriber's [`Cursor`] says how many of the pending ticks it has
//! taken already: one that joined after some ticks were pending, or that
//! took its share early (before it acted on its own input, so that its
//! queue keeps the order in which things happened), owes nothing for them.

use std::ops::Range;
use std::sync::Arc;

use crate::tick::Tick;

/// Frames stop being copied here past this many bytes: the subscribers then
/// take the ticks one by one (a flood this large is over most queue bounds
/// anyway, where the slow-consumer policy needs each tick by itself).
const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// How far a subscriber has taken the pending ticks of its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    /// The [`PendingTicks::generation`] the count is of; an older one took
    /// nothing of the current ticks.
    generation: u64,
    taken: usize,
}

/// A topic's pending ticks on one worker, in delivery order.
#[derive(Debug, Default)]
pub struct PendingTicks {
    /// Counts the times the ticks were cleared, so cursors of an earlier
    /// batch of ticks need no resetting.
    generation: u64,
    ticks: Vec<Tick>,
    /// The ticks' WebSocket frames back to back, while `contiguous`.
    frames: Vec<u8>,
    /// Where each tick's frame ends in `frames`.
    frame_ends: Vec<usize>,
    /// Seqs increase along `ticks` and every frame is in `frames`: a
    /// subscriber's share is then one run of `frames`.
    contiguous: bool,
    /// `frames`, sealed for sharing by the first subscriber that took its
    /// share of this batch.
    sealed: Option<Arc<[u8]>>,
}

/// Part of a sealed run of WebSocket frames, shared by the queues of the
/// subscribers it was handed to.
#[derive(Debug, Clone)]
pub struct FrameRun {
    run: Arc<[u8]>,
    range: Range<usize>,
}

impl FrameRun {
    /// A run of its own (for tests and callers that have just the bytes).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        FrameRun {
            run: Arc::from(bytes),
            range: 0..bytes.len(),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.run.get(self.range.clone()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// Whether a queue keeping this part would keep more than twice its
    /// bytes alive (a late joiner's short suffix of a long run): it should
    /// copy the part instead, so what it counts against its bound is at
    /// least half of what it holds.
    pub fn holds_much_more(&self) -> bool {
        self.range.len().saturating_mul(2) < self.run.len()
    }
}

/// What one subscriber is owed of its topic's pending ticks.
#[derive(Debug, Clone)]
pub struct Owed<'a> {
    /// The ticks, oldest first (those at or below the subscriber's
    /// `after_seq` are left out when the frames are contiguous; otherwise
    /// the taker skips them one by one).
    pub ticks: &'a [Tick],
    /// The ticks' WebSocket frames as one shared run, when they are
    /// contiguous.
    pub frames: Option<FrameRun>,
}

impl PendingTicks {
    pub fn is_empty(&self) -> bool {
        self.ticks.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ticks.len()
    }

    /// Appends a tick delivered to this worker.
    pub fn push(&mut self, tick: Tick) {
        if self.ticks.is_empty() {
            self.contiguous = true;
        }
        let frame = tick.frame();
        let in_order = self.ticks.last().is_none_or(|last| last.seq < tick.seq);
        let fits = self.frames.len().saturating_add(frame.len()) <= MAX_FRAME_BYTES;
        // A sealed batch is being handed out: later ticks go one by one.
        self.contiguous &= in_order && fits && self.sealed.is_none();
        if self.contiguous {
            self.frames.extend_from_slice(frame);
            self.frame_ends.push(self.frames.len());
        }
        self.ticks.push(tick);
    }

    /// A cursor that has taken every tick pending now (a subscriber that
    /// joins now is owed none of them: they were delivered before it).
    pub fn cursor_at_end(&self) -> Cursor {
        Cursor {
            generation: self.generation,
            taken: self.ticks.len(),
        }
    }

    /// What a subscriber at `cursor`, which has seen every seq up to
    /// `after_seq` (its snapshot or replay), is owed now.
    pub fn owed(&mut self, cursor: Cursor, after_seq: u64) -> Owed<'_> {
        let taken = if cursor.generation == self.generation {
            cursor.taken.min(self.ticks.len())
        } else {
            0
        };
        let rest = self.ticks.get(taken..).unwrap_or_default();
        if !self.contiguous {
            return Owed {
                ticks: rest,
                frames: None,
            };
        }
        // Seqs increase, so the ticks already seen are a prefix.
        let first = taken.saturating_add(rest.partition_point(|tick| tick.seq <= after_seq));
        let start = match first.checked_sub(1) {
            Some(before) => self.frame_ends.get(before).copied().unwrap_or_default(),
            None => 0,
        };
        let run = self
            .sealed
            .get_or_insert_with(|| Arc::from(self.frames.as_slice()))
            .clone();
        let end = run.len();
        Owed {
            ticks: self.ticks.get(first..).unwrap_or_default(),
            frames: Some(FrameRun {
                run,
                range: start.min(end)..end,
            }),
        }
    }

    /// Forgets the pending ticks once every subscriber has taken them.
    pub fn clear(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.ticks.clear();
        self.frames.clear();
        self.frame_ends.clear();
        self.sealed = None;
        if self.frames.capacity() > MAX_FRAME_BYTES / 4 {
            // One flood does not keep its memory on every topic it touched.
            self.frames = Vec::new();
            self.frame_ends = Vec::new();
            self.ticks = Vec::new();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::tick::TopicId;
    use crate::topic::TopicName;

    fn tick(seq: u64, payload: &str) -> Tick {
        let json = format!("\"{payload}\"");
        Tick::encode(TopicId(1), &TopicName::new("t").unwrap(), seq, 1_000 + seq, json.as_bytes())
    }

    fn frames_of(ticks: &[Tick]) -> Vec<u8> {
        ticks.iter().flat_map(|t| t.frame().to_vec()).collect()
    }

    #[test]
    fn a_subscriber_takes_every_pending_frame_as_one_run() {
        let mut pending = PendingTicks::default();
        let cursor = pending.cursor_at_end();
        let ticks: Vec<Tick> = (1..=5).map(|s| tick(s, "{\"p\":1}")).collect();
        for t in &ticks {
            pending.push(t.clone());
        }
        let owed = pending.owed(cursor, 0);
        assert_eq!(owed.ticks.len(), 5);
        assert_eq!(owed.frames.unwrap().as_bytes(), frames_of(&ticks).as_slice());
    }

    #[test]
    fn a_late_joiner_and_an_early_taker_owe_nothing_for_earlier_ticks() {
        let mut pending = PendingTicks::default();
        pending.push(tick(1, "1"));
        pending.push(tick(2, "22"));
        let joined = pending.cursor_at_end();
        pending.push(tick(3, "333"));
        let owed = pending.owed(joined, 0);
        assert_eq!(owed.ticks.iter().map(|t| t.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(owed.frames.unwrap().as_bytes(), tick(3, "333").frame());
        let took = pending.cursor_at_end();
        assert!(pending.owed(took, 0).ticks.is_empty());
        assert_eq!(pending.owed(took, 0).frames.unwrap().as_bytes(), b"");
    }

    #[test]
    fn ticks_a_snapshot_already_carried_are_skipped() {
        let mut pending = PendingTicks::default();
        let cursor = pending.cursor_at_end();
        for seq in 10..=14 {
            pending.push(tick(seq, "x"));
        }
        let owed = pending.owed(cursor, 12);
        assert_eq!(owed.ticks.iter().map(|t| t.seq).collect::<Vec<_>>(), [13, 14]);
        let frames = owed.frames.clone().unwrap();
        assert_eq!(frames.as_bytes(), frames_of(owed.ticks).as_slice());
        assert!(frames.holds_much_more(), "three of its five ticks skipped");
    }

    #[test]
    fn a_cleared_batch_starts_every_cursor_afresh() {
        let mut pending = PendingTicks::default();
        pending.push(tick(1, "a"));
        let at_end = pending.cursor_at_end();
        pending.clear();
        assert!(pending.is_empty());
        pending.push(tick(2, "b"));
        let owed = pending.owed(at_end, 0);
        assert_eq!(owed.ticks.len(), 1);
        assert_eq!(owed.frames.unwrap().as_bytes(), tick(2, "b").frame());
    }

    #[test]
    fn out_of_order_seqs_are_handed_out_one_by_one() {
        let mut pending = PendingTicks::default();
        let cursor = pending.cursor_at_end();
        pending.push(tick(5, "a"));
        pending.push(tick(3, "b"));
        let owed = pending.owed(cursor, 0);
        assert!(owed.frames.is_none());
        assert_eq!(owed.ticks.iter().map(|t| t.seq).collect::<Vec<_>>(), [5, 3]);
        pending.clear();
        pending.push(tick(6, "c"));
        assert!(pending.owed(cursor, 0).frames.is_some(), "a new batch is contiguous again");
    }

    #[test]
    fn a_flood_past_the_copy_limit_is_handed_out_one_by_one() {
        let mut pending = PendingTicks::default();
        let big = "x".repeat(64 * 1024);
        let count = MAX_FRAME_BYTES / big.len() + 2;
        for seq in 1..=count as u64 {
            pending.push(tick(seq, &big));
        }
        let owed = pending.owed(Cursor::default(), 0);
        assert!(owed.frames.is_none());
        assert_eq!(owed.ticks.len(), count);
    }

    #[test]
    fn every_subscriber_shares_one_sealed_run_and_a_short_suffix_says_so() {
        let mut pending = PendingTicks::default();
        let start = pending.cursor_at_end();
        for seq in 1..=3 {
            pending.push(tick(seq, "abc"));
        }
        let late = pending.cursor_at_end();
        pending.push(tick(4, "d"));
        let whole = pending.owed(start, 0).frames.unwrap();
        let again = pending.owed(start, 0).frames.unwrap();
        assert!(Arc::ptr_eq(&whole.run, &again.run), "sealed once per batch");
        let suffix = pending.owed(late, 0).frames.unwrap();
        assert!(Arc::ptr_eq(&whole.run, &suffix.run));
        assert_eq!(suffix.as_bytes(), tick(4, "d").frame());
        assert!(suffix.holds_much_more());
        pending.push(tick(5, "e"));
        let after_seal = pending.owed(start, 0);
        assert!(after_seal.frames.is_none(), "a tick after the seal goes one by one");
        assert_eq!(after_seal.ticks.len(), 5);
        pending.clear();
        pending.push(tick(6, "f"));
        let next = pending.owed(start, 0).frames.unwrap();
        assert!(!Arc::ptr_eq(&whole.run, &next.run), "a new batch is sealed afresh");
        assert_eq!(next.as_bytes(), tick(6, "f").frame());
    }
}
