//! Inbound bytes that a connection could not act on yet.
//!
//! Most connections of a price feed are idle readers, so a connection owns no
//! read buffer while it has nothing pending: the worker reads into one shared
//! scratch buffer, and only the tail of an incomplete request or frame is
//! kept here, grown to the size the frame header announced.
//!
//! Its input comes from the network, so it is held to the lints that
//! rule out panics and silent wrapping (Hardening II: nothing reachable
//! from network input may panic); any `allow` says why its site is safe.

/// Bytes are stored initialised (`storage.len()` is the capacity in use) so
/// reads can go straight into the spare part without unsafe code; `start..end`
/// is the part not consumed yet, and `start <= end <= storage.len()` always
/// (every method keeps it, clamping a caller's count that would break it).
#[derive(Debug, Default)]
pub struct ReadBuf {
    storage: Vec<u8>,
    start: usize,
    end: usize,
}

/// Below this, growth is by doubling; a buffer this big or smaller is kept
/// when it empties, a bigger one is freed.
const SMALL_BYTES: usize = 4096;

impl ReadBuf {
    /// A buffer of `bytes` zeroed bytes, for the worker's scratch.
    pub fn with_capacity(bytes: usize) -> Self {
        ReadBuf {
            storage: vec![0; bytes],
            start: 0,
            end: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The unconsumed bytes.
    pub fn filled_mut(&mut self) -> &mut [u8] {
        // In range by the invariant on the fields: the fallback is never taken.
        self.storage
            .get_mut(self.start..self.end)
            .unwrap_or_default()
    }

    /// Drops `n` bytes from the front; an emptied buffer starts over at 0.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end.saturating_sub(self.start));
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room to read into, making at least `want` bytes (and at least enough
    /// for `total` unconsumed bytes in all) available.
    pub fn spare_mut(&mut self, want: usize, total: usize) -> &mut [u8] {
        // start <= end <= storage.len(): the subtractions never saturate.
        let pending = self.end.saturating_sub(self.start);
        let needed = pending.saturating_add(want).max(total);
        if self.storage.len().saturating_sub(self.start) < needed {
            if self.start > 0 {
                self.storage.copy_within(self.start..self.end, 0);
                self.end = pending;
                self.start = 0;
            }
            if self.storage.len() < needed {
                let grown = needed
                    .max(self.storage.len().saturating_mul(2))
                    .max(SMALL_BYTES);
                self.storage.resize(grown, 0);
            }
        }
        // end <= storage.len(): the fallback is never taken.
        self.storage.get_mut(self.end..).unwrap_or_default()
    }

    /// Records that `n` bytes were read into [`Self::spare_mut`].
    pub fn commit(&mut self, n: usize) {
        debug_assert!(n <= self.storage.len().saturating_sub(self.end));
        self.end = self.end.saturating_add(n).min(self.storage.len());
    }

    /// Replaces the content with `bytes`, sized to hold at least `total`.
    pub fn keep(&mut self, bytes: &[u8], total: usize) {
        self.storage.clear();
        self.storage.extend_from_slice(bytes);
        self.storage.resize(total.max(bytes.len()), 0);
        self.start = 0;
        self.end = bytes.len();
    }

    /// Frees a large buffer once it is empty, so a burst does not pin memory.
    pub fn release_if_empty(&mut self) {
        if self.is_empty() && self.storage.len() > SMALL_BYTES {
            self.storage = Vec::new();
        }
    }

    /// Bytes held, for accounting.
    pub fn capacity(&self) -> usize {
        self.storage.len()
    }
}

#[cfg(test)]
// Tests index freely: a panic there is a failed test.
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn grows_compacts_and_releases() {
        let mut buf = ReadBuf::default();
        assert_eq!(buf.capacity(), 0);
        buf.keep(b"abc", 0);
        let spare = buf.spare_mut(10, 0);
        spare[..2].copy_from_slice(b"de");
        buf.commit(2);
        assert_eq!(buf.filled_mut(), b"abcde");
        buf.consume(2);
        assert_eq!(buf.filled_mut(), b"cde");
        let spare_len = buf.spare_mut(1, 100_000).len();
        assert!(spare_len >= 100_000 - 3);
        assert_eq!(buf.filled_mut(), b"cde");
        buf.consume(3);
        assert!(buf.is_empty());
        buf.release_if_empty();
        assert_eq!(buf.capacity(), 0);
    }
}
