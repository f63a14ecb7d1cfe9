//! A connection's outbound queue: its own bytes (handshake answers, control
//! frames, events) and shared tick frames, in order, bounded in bytes.
//!
//! The queue is written with one `writev` of up to [`MAX_IOVECS`] slices per
//! call, so a burst of ticks costs one syscall per connection instead of one
//! per tick. Small ticks are copied into the queue's own contiguous buffer
//! rather than queued as one slice each: the fan-out benchmark measured the
//! copy 1.25–1.6× faster for ~130-byte frames (DESIGN.md's ceilings agree:
//! one big write beats many iovecs). Large ticks, replays, and every tick
//! queued past the byte bound stay shared references, so that `conflate`
//! can still find and replace them. A topic's pending ticks handed out at a
//! sweep come as one shared run of frames ([`FrameRun`]), kept by
//! reference: one iovec for the lot, and no copy per subscriber. Past its bound the connection's
//! slow-consumer policy decides what happens to a new tick; the queue
//! itself never grows without bound.
//!
//! Its input comes from the network, so it is held to the lints that
//! rule out panics and silent wrapping (Hardening II: nothing reachable
//! from network input may panic); any `allow` says why its site is safe.

use std::collections::{HashSet, VecDeque};
use std::io::IoSlice;

use super::settings::SlowConsumerPolicy;
use crate::broker::pending_ticks::FrameRun;
use crate::net::buffer_pool;
use crate::protocol::frame::{write_frame, OpCode};
use crate::tick::{DeflateForm, Tick, TopicId};

/// Slices per `writev`. Linux allows 1024; 256 already amortises the
/// syscall over ~25 KB of 100-byte ticks (DESIGN.md's measured ceilings).
pub const MAX_IOVECS: usize = 256;

/// Ticks up to this size are copied into the queue's buffer; larger ones
/// are queued by reference (a copy would cost more than the iovec).
pub const COPY_MAX_BYTES: usize = 512;

/// A new owned buffer starts this big, so a burst of copied ticks grows it
/// once or twice rather than from nothing.
const OWNED_CHUNK_START_BYTES: usize = 4096;

/// How far back a conflating queue looks for an older tick of the same
/// topic before it compacts the whole queue instead.
const CONFLATE_SCAN: usize = 64;

#[derive(Debug)]
enum Chunk {
    /// The queue's own bytes, holding `ticks` copied ticks among them.
    Owned {
        bytes: Vec<u8>,
        ticks: usize,
    },
    Tick(Tick, Wire),
    /// Part of a topic's run of frames shared with its other subscribers,
    /// holding `ticks` ticks.
    Run {
        frames: FrameRun,
        ticks: usize,
    },
}

/// How ticks are written on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wire {
    /// As the shared WebSocket text frame.
    #[default]
    WebSocket,
    /// As the shared Server-Sent Events encoding.
    Sse,
    /// As the shared permessage-deflate frame (RFC 7692) for this form,
    /// where the tick has one, else as the plain frame.
    Deflate(DeflateForm),
}

impl Wire {
    fn bytes(self, tick: &Tick) -> &[u8] {
        match self {
            Wire::WebSocket => tick.frame(),
            Wire::Sse => tick.sse_event(),
            Wire::Deflate(form) => tick.deflated_frame(form).unwrap_or_else(|| tick.frame()),
        }
    }
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned { bytes, .. } => bytes,
            Chunk::Tick(tick, wire) => wire.bytes(tick),
            Chunk::Run { frames, .. } => frames.as_bytes(),
        }
    }

    fn ticks(&self) -> usize {
        match self {
            Chunk::Owned { ticks, .. } | Chunk::Run { ticks, .. } => *ticks,
            Chunk::Tick(..) => 1,
        }
    }

    /// Hands an owned buffer back to the worker's pool for the next turn.
    fn recycle(self) {
        if let Chunk::Owned { bytes, .. } = self {
            buffer_pool::give(bytes);
        }
    }
}

/// What happened to a tick offered to a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// It replaced an older pending tick of its topic (`conflate`).
    Conflated,
    /// It was not queued (`drop`).
    Dropped,
    /// The queue passed its hard bound (`disconnect`): close the connection.
    Overflow,
}

/// The result of writing as much as the socket takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    pub bytes: usize,
    pub syscalls: usize,
    /// Ticks whose last byte went out.
    pub ticks: usize,
    /// When the queue emptied: the publish time (µs) of the oldest tick it
    /// held, for the publish-to-write latency.
    pub oldest_tick_ts: Option<u64>,
}

/// Outbound bytes of one connection.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Unsent bytes in all chunks.
    pending: usize,
    /// Bytes of the front chunk already sent.
    front_sent: usize,
    wire: Wire,
    /// Publish time of the oldest tick queued since the queue was empty.
    oldest_tick_ts: Option<u64>,
}

impl OutQueue {
    /// Makes later ticks go out in `wire`'s encoding.
    pub fn set_wire(&mut self, wire: Wire) {
        self.wire = wire;
    }

    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.pending
    }

    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Appends bytes written by `write` (a frame, an HTTP response) to the
    /// queue's own buffer, which follows every chunk queued before it.
    pub fn append(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.append_counted(0, write);
    }

    fn append_counted(&mut self, ticks_added: usize, write: impl FnOnce(&mut Vec<u8>)) {
        // Byte counts are of bytes in memory, so the sums never saturate.
        let added = match self.chunks.back_mut() {
            Some(Chunk::Owned { bytes, ticks }) => {
                let before = bytes.len();
                write(bytes);
                *ticks = ticks.saturating_add(ticks_added);
                bytes.len().saturating_sub(before)
            }
            _ => {
                let mut bytes = buffer_pool::take(OWNED_CHUNK_START_BYTES);
                write(&mut bytes);
                let added = bytes.len();
                self.chunks.push_back(Chunk::Owned {
                    bytes,
                    ticks: ticks_added,
                });
                added
            }
        };
        self.pending = self.pending.saturating_add(added);
    }

    /// Queues a JSON event (`subscribed`, `gap`, `error`, `heartbeat`): a
    /// text frame on a WebSocket, a `data:` event on an SSE stream.
    /// Events go uncompressed on a deflate connection too: they are small,
    /// made per connection, and RFC 7692 lets any message be sent plain.
    pub fn push_event(&mut self, json: &[u8]) {
        match self.wire {
            Wire::WebSocket | Wire::Deflate(_) => {
                self.append(|buf| write_frame(buf, OpCode::Text, json))
            }
            Wire::Sse => self.append(|buf| {
                buf.extend_from_slice(b"data: ");
                buf.extend_from_slice(json);
                buf.extend_from_slice(b"\n\n");
            }),
        }
    }

    /// Queues a heartbeat: an event on a WebSocket; on an SSE stream a
    /// comment line, which keeps proxies from closing an idle stream without
    /// waking the page's `onmessage`.
    pub fn push_heartbeat(&mut self, json: &[u8]) {
        match self.wire {
            Wire::WebSocket | Wire::Deflate(_) => self.push_event(json),
            Wire::Sse => self.append(|buf| {
                buf.extend_from_slice(b": ");
                buf.extend_from_slice(json);
                buf.extend_from_slice(b"\n\n");
            }),
        }
    }

    /// Queues a tick regardless of the bound (snapshot and replay, which
    /// the client asked for explicitly).
    pub fn push_tick_unbounded(&mut self, tick: Tick) {
        self.oldest_tick_ts.get_or_insert(tick.ts);
        self.pending = self.pending.saturating_add(self.wire.bytes(&tick).len());
        self.chunks.push_back(Chunk::Tick(tick, self.wire));
    }

    /// Queues live ticks whose WebSocket frames are `frames`, back to back
    /// (a topic's pending ticks, shared with its other subscribers), when
    /// this queue sends plain WebSocket frames and they fit under `bound`;
    /// `false`, queuing nothing, when not (the caller then queues them one
    /// by one, under the slow-consumer policy). The run is kept by
    /// reference, unless that would keep alive much more than it counts.
    pub fn push_frames(&mut self, frames: FrameRun, ticks: &[Tick], bound: usize) -> bool {
        let Some(oldest) = ticks.first() else {
            return true;
        };
        if self.wire != Wire::WebSocket || self.pending.saturating_add(frames.len()) > bound {
            return false;
        }
        self.oldest_tick_ts.get_or_insert(oldest.ts);
        if frames.holds_much_more() {
            self.append_counted(ticks.len(), |buf| buf.extend_from_slice(frames.as_bytes()));
        } else {
            self.pending = self.pending.saturating_add(frames.len());
            self.chunks.push_back(Chunk::Run {
                frames,
                ticks: ticks.len(),
            });
        }
        true
    }

    /// Queues a live tick, applying `policy` when that would pass `bound`.
    /// Takes a reference: a small tick is copied, and the shared frame's
    /// reference count is only touched when a reference is kept.
    pub fn push_tick(&mut self, tick: &Tick, bound: usize, policy: SlowConsumerPolicy) -> Pushed {
        let bytes = self.wire.bytes(tick);
        let size = bytes.len();
        let after = self.pending.saturating_add(size);
        if after <= bound {
            self.oldest_tick_ts.get_or_insert(tick.ts);
            if size <= COPY_MAX_BYTES {
                self.append_counted(1, |buf| buf.extend_from_slice(bytes));
            } else {
                self.push_tick_unbounded(tick.clone());
            }
            return Pushed::Queued;
        }
        match policy {
            SlowConsumerPolicy::Drop => Pushed::Dropped,
            SlowConsumerPolicy::Disconnect if after > bound.saturating_mul(2) => Pushed::Overflow,
            SlowConsumerPolicy::Disconnect => {
                self.push_tick_unbounded(tick.clone());
                Pushed::Queued
            }
            SlowConsumerPolicy::Conflate => {
                if self.replace_pending(tick, CONFLATE_SCAN) {
                    return Pushed::Conflated;
                }
                self.compact();
                if !self.replace_pending(tick, usize::MAX) {
                    // The first pending tick of its topic: kept, so the
                    // queue holds at most one tick per subscribed topic.
                    self.push_tick_unbounded(tick.clone());
                }
                Pushed::Conflated
            }
        }
    }

    /// Replaces the newest pending tick of `tick`'s topic, looking at no
    /// more than `scan` chunks from the back and never past an owned chunk
    /// or a run: its ticks (or events) may be newer than a shared tick
    /// before it, which replaced would reach the client ahead of them.
    fn replace_pending(&mut self, tick: &Tick, scan: usize) -> bool {
        let first_replaceable = usize::from(self.front_sent > 0);
        let candidates = self.chunks.iter_mut().skip(first_replaceable);
        for chunk in candidates.rev().take(scan) {
            match chunk {
                Chunk::Owned { .. } | Chunk::Run { .. } => return false,
                Chunk::Tick(old, wire) if old.topic == tick.topic => {
                    // `old` is not the partly sent front chunk, so all its
                    // bytes are in `pending`.
                    self.pending = self
                        .pending
                        .saturating_sub(wire.bytes(old).len())
                        .saturating_add(wire.bytes(tick).len());
                    *old = tick.clone();
                    return true;
                }
                Chunk::Tick(..) => {}
            }
        }
        false
    }

    /// Keeps only the newest pending tick of each topic.
    fn compact(&mut self) {
        let mut seen = HashSet::new();
        let keep_front = self.front_sent > 0;
        let mut removed_bytes: usize = 0;
        let mut kept = VecDeque::with_capacity(self.chunks.len());
        while let Some(chunk) = self.chunks.pop_back() {
            // Popped from the back: the last one out was the front.
            let is_front = self.chunks.is_empty();
            let drop_it = match &chunk {
                Chunk::Tick(tick, _) if !(keep_front && is_front) => !seen.insert(tick.topic),
                _ => false,
            };
            if drop_it {
                removed_bytes = removed_bytes.saturating_add(chunk.bytes().len());
            } else {
                kept.push_front(chunk);
            }
        }
        self.chunks = kept;
        // Only whole, unsent chunks were removed: all counted in `pending`.
        self.pending = self.pending.saturating_sub(removed_bytes);
    }

    /// Drops pending ticks of `topic` (after an unsubscribe).
    pub fn purge_topic(&mut self, topic: TopicId) {
        let keep_front = self.front_sent > 0;
        let mut removed: usize = 0;
        let mut is_front = true;
        self.chunks.retain(|chunk| {
            let was_front = std::mem::replace(&mut is_front, false);
            match chunk {
                Chunk::Tick(tick, wire) if tick.topic == topic && !(keep_front && was_front) => {
                    removed = removed.saturating_add(wire.bytes(tick).len());
                    false
                }
                _ => true,
            }
        });
        // Only whole, unsent chunks were removed: all counted in `pending`.
        self.pending = self.pending.saturating_sub(removed);
    }

    /// Forgets everything unsent (the connection is being failed).
    pub fn clear(&mut self) {
        let keep_partial = self.front_sent > 0;
        while self.chunks.len() > usize::from(keep_partial) {
            if let Some(chunk) = self.chunks.pop_back() {
                chunk.recycle();
            }
        }
        self.pending = self
            .chunks
            .front()
            .map_or(0, |c| c.bytes().len().saturating_sub(self.front_sent));
    }

    /// The unsent bytes when they are all in one chunk: the common case once
    /// small ticks are copied, written without filling an iovec array.
    pub fn only_chunk(&self) -> Option<&[u8]> {
        match (self.chunks.front(), self.chunks.len()) {
            (Some(front), 1) => Some(front.bytes().get(self.front_sent..).unwrap_or_default()),
            _ => None,
        }
    }

    /// The unsent bytes from the front, as up to [`MAX_IOVECS`] slices in
    /// `slices`; returns how many were filled (0 when the queue is empty).
    pub fn front_slices<'q>(&'q self, slices: &mut [IoSlice<'q>; MAX_IOVECS]) -> usize {
        let Some(front) = self.chunks.front() else {
            return 0;
        };
        // `front_sent` is less than the front chunk's length (`advance`
        // pops a chunk once it is all sent): the fallback is never taken.
        let front = front.bytes().get(self.front_sent..).unwrap_or_default();
        let rest = self.chunks.iter().skip(1).map(Chunk::bytes);
        let mut count = 0usize;
        for (slot, bytes) in slices.iter_mut().zip(std::iter::once(front).chain(rest)) {
            *slot = IoSlice::new(bytes);
            count = count.saturating_add(1);
        }
        count
    }

    /// The publish time (µs) of the oldest tick written since the queue
    /// last emptied, once the queue is empty (for the publish-to-write
    /// latency); taken, so it is reported once.
    pub fn take_oldest_tick_ts(&mut self) -> Option<u64> {
        if self.chunks.is_empty() {
            self.oldest_tick_ts.take()
        } else {
            None
        }
    }

    /// Drops the `n` bytes the socket took from the front of the queue,
    /// counting the ticks whose last byte went.
    pub fn advance(&mut self, mut n: usize, written: &mut Written) {
        // A socket reports at most the bytes it was given, all of them
        // counted in `pending`.
        self.pending = self.pending.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                return;
            };
            let left = front.bytes().len().saturating_sub(self.front_sent);
            if n < left {
                // Below the front chunk's length, since n < left.
                self.front_sent = self.front_sent.saturating_add(n);
                return;
            }
            n = n.saturating_sub(left);
            self.front_sent = 0;
            if let Some(chunk) = self.chunks.pop_front() {
                written.ticks = written.ticks.saturating_add(chunk.ticks());
                chunk.recycle();
            }
        }
    }
}

impl Drop for OutQueue {
    fn drop(&mut self) {
        for chunk in self.chunks.drain(..) {
            chunk.recycle();
        }
    }
}

#[cfg(test)]
// Tests index and unwrap freely: a panic there is a failed test.
#[allow(
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::indexing_slicing,
    clippy::unwrap_used
)]
mod tests;
