//! A connection's outbound queue: its own bytes (handshake answers, control
//! frames, events) and shared tick frames, in order, bounded in bytes.
//!
//! Ticks are queued by reference (no copy per subscriber) and the queue is
//! written with one `writev` of up to [`MAX_IOVECS`] slices per call, so a
//! burst of ticks costs one syscall per connection instead of one per tick.
//! Past its byte bound the connection's slow-consumer policy decides what
//! happens to a new tick; the queue itself never grows without bound.

use std::collections::{HashSet, VecDeque};
use std::io::{self, IoSlice, Write};

use crate::broker::tick::{Tick, TopicId};
use crate::config::SlowConsumerPolicy;

/// Slices per `writev`. Linux allows 1024; 256 already amortises the
/// syscall over ~25 KB of 100-byte ticks (DESIGN.md's measured ceilings).
pub const MAX_IOVECS: usize = 256;

/// How far back a conflating queue looks for an older tick of the same
/// topic before it compacts the whole queue instead.
const CONFLATE_SCAN: usize = 64;

#[derive(Debug)]
enum Chunk {
    Owned(Vec<u8>),
    Tick(Tick),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(bytes) => bytes,
            Chunk::Tick(tick) => tick.frame(),
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
}

/// Outbound bytes of one connection.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Unsent bytes in all chunks.
    pending: usize,
    /// Bytes of the front chunk already sent.
    front_sent: usize,
}

impl OutQueue {
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
        if !matches!(self.chunks.back(), Some(Chunk::Owned(_))) {
            self.chunks.push_back(Chunk::Owned(Vec::new()));
        }
        let Some(Chunk::Owned(buf)) = self.chunks.back_mut() else {
            unreachable!("an owned chunk was just ensured");
        };
        let before = buf.len();
        write(buf);
        self.pending += buf.len() - before;
    }

    /// Queues a tick regardless of the bound (snapshot and replay, which
    /// the client asked for explicitly).
    pub fn push_tick_unbounded(&mut self, tick: Tick) {
        self.pending += tick.frame().len();
        self.chunks.push_back(Chunk::Tick(tick));
    }

    /// Queues a live tick, applying `policy` when that would pass `bound`.
    pub fn push_tick(&mut self, tick: Tick, bound: usize, policy: SlowConsumerPolicy) -> Pushed {
        let size = tick.frame().len();
        if self.pending + size <= bound {
            self.push_tick_unbounded(tick);
            return Pushed::Queued;
        }
        match policy {
            SlowConsumerPolicy::Drop => Pushed::Dropped,
            SlowConsumerPolicy::Disconnect if self.pending + size > bound.saturating_mul(2) => {
                Pushed::Overflow
            }
            SlowConsumerPolicy::Disconnect => {
                self.push_tick_unbounded(tick);
                Pushed::Queued
            }
            SlowConsumerPolicy::Conflate => {
                if self.replace_pending(&tick, CONFLATE_SCAN) {
                    return Pushed::Conflated;
                }
                self.compact();
                if !self.replace_pending(&tick, usize::MAX) {
                    // The first pending tick of its topic: kept, so the
                    // queue holds at most one tick per subscribed topic.
                    self.push_tick_unbounded(tick);
                }
                Pushed::Conflated
            }
        }
    }

    /// Replaces the newest pending tick of `tick`'s topic, looking at no
    /// more than `scan` chunks from the back.
    fn replace_pending(&mut self, tick: &Tick, scan: usize) -> bool {
        let first_replaceable = usize::from(self.front_sent > 0);
        let len = self.chunks.len();
        for index in (first_replaceable..len).rev().take(scan) {
            if let Chunk::Tick(old) = &mut self.chunks[index] {
                if old.topic == tick.topic {
                    self.pending = self.pending - old.frame().len() + tick.frame().len();
                    *old = tick.clone();
                    return true;
                }
            }
        }
        false
    }

    /// Keeps only the newest pending tick of each topic.
    fn compact(&mut self) {
        let mut seen = HashSet::new();
        let keep_front = self.front_sent > 0;
        let mut index = self.chunks.len();
        let mut removed_bytes = 0;
        let mut kept = VecDeque::with_capacity(self.chunks.len());
        while index > 0 {
            index -= 1;
            let chunk = self.chunks.pop_back().expect("index < len");
            let drop_it = match &chunk {
                Chunk::Tick(tick) if !(keep_front && index == 0) => !seen.insert(tick.topic),
                _ => false,
            };
            if drop_it {
                removed_bytes += chunk.bytes().len();
            } else {
                kept.push_front(chunk);
            }
        }
        self.chunks = kept;
        self.pending -= removed_bytes;
    }

    /// Drops pending ticks of `topic` (after an unsubscribe).
    pub fn purge_topic(&mut self, topic: TopicId) {
        let keep_front = self.front_sent > 0;
        let mut removed = 0;
        let mut index = 0;
        self.chunks.retain(|chunk| {
            let is_front = index == 0;
            index += 1;
            match chunk {
                Chunk::Tick(tick) if tick.topic == topic && !(keep_front && is_front) => {
                    removed += tick.frame().len();
                    false
                }
                _ => true,
            }
        });
        self.pending -= removed;
    }

    /// Forgets everything unsent (the connection is being failed).
    pub fn clear(&mut self) {
        let keep_partial = self.front_sent > 0;
        while self.chunks.len() > usize::from(keep_partial) {
            self.chunks.pop_back();
        }
        self.pending = self
            .chunks
            .front()
            .map_or(0, |c| c.bytes().len() - self.front_sent);
    }

    /// Writes until the queue is empty or the socket would block.
    pub fn write_to(&mut self, socket: &mut impl Write) -> io::Result<Written> {
        let mut written = Written::default();
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
                let bytes = chunk.bytes();
                slices[i] = IoSlice::new(if i == 0 {
                    &bytes[self.front_sent..]
                } else {
                    bytes
                });
                count += 1;
            }
            written.syscalls += 1;
            let n = match socket.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            written.bytes += n;
            self.advance(n, &mut written);
        }
        Ok(written)
    }

    fn advance(&mut self, mut n: usize, written: &mut Written) {
        self.pending -= n;
        while n > 0 {
            let front_len = self.chunks.front().map_or(0, |c| c.bytes().len());
            let left = front_len - self.front_sent;
            if n < left {
                self.front_sent += n;
                return;
            }
            n -= left;
            self.front_sent = 0;
            if let Some(Chunk::Tick(_)) = self.chunks.pop_front() {
                written.ticks += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;
