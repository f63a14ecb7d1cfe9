//! One message through raw deflate and back (RFC 7692 §7.2), with no
//! context kept between messages.
//!
//! [`Deflater`] compresses a whole message with a sync flush and removes
//! the `00 00 ff ff` that flush ends with (§7.2.1). [`Inflater`] puts those
//! four bytes back and inflates (§7.2.2) into a buffer that is never let
//! grow past the caller's bound: a few kilobytes that inflate to a gigabyte
//! fail with [`ProtocolError::MessageTooLarge`] once the bound is passed,
//! before the memory is committed. Both are reset before each message, so
//! one of each serves every connection of a worker.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::super::error::ProtocolError;
use super::offer::{MAX_WINDOW_BITS, MIN_WINDOW_BITS};

/// What a sync flush ends the compressed data with, and what the receiver
/// appends before inflating (§7.2.1, §7.2.2).
pub const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The first allocation of an output buffer, and the least it grows by.
const MIN_GROW_BYTES: usize = 1024;

/// Inflate buffers larger than this are not kept for the next message.
const RETAINED_INFLATE_BYTES: usize = 64 * 1024;

/// A raw deflate compressor for whole messages with one window size.
#[derive(Debug)]
pub struct Deflater {
    compress: Compress,
    level: u32,
    window_bits: u8,
}

impl Deflater {
    /// A compressor at zlib `level` (0–9, clamped) whose back-references
    /// reach at most `2^window_bits` bytes; `None` for a window zlib cannot
    /// make raw (outside 9 to 15).
    pub fn new(level: u32, window_bits: u8) -> Option<Deflater> {
        if !(MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&window_bits) {
            return None;
        }
        let level = level.min(9);
        Some(Deflater {
            compress: Compress::new_with_window_bits(Compression::new(level), false, window_bits),
            level,
            window_bits,
        })
    }

    /// The zlib level it compresses at.
    pub fn level(&self) -> u32 {
        self.level
    }

    /// Its window, as a base-2 logarithm.
    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// Appends the compressed form of `message` to `out`: a raw deflate
    /// stream of its own, sync-flushed, without the trailing `00 00 ff ff`.
    /// `None` (with `out` as it was) if zlib fails, which it does not on
    /// valid state; the caller then sends the message uncompressed.
    pub fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) -> Option<()> {
        let start = out.len();
        let result = self.compress_into(message, out);
        if result.is_none() {
            out.truncate(start);
        }
        result
    }

    fn compress_into(&mut self, message: &[u8], out: &mut Vec<u8>) -> Option<()> {
        self.compress.reset();
        // Deflate's worst case is a few bytes per 16 KiB stored block; the
        // sync flush adds at most ~10. Usually far less is used.
        out.reserve(message.len().saturating_add(message.len() / 64).saturating_add(16));
        let mut rest = message;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.len().max(MIN_GROW_BYTES));
            }
            let before = self.compress.total_in();
            self.compress
                .compress_vec(rest, out, FlushCompress::Sync)
                .ok()?;
            let used = usize::try_from(self.compress.total_in().saturating_sub(before)).ok()?;
            rest = rest.get(used..)?;
            // Done once all input is taken and the flush fitted: zlib
            // stopped with room to spare.
            if rest.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        let body_len = out.len().checked_sub(SYNC_TAIL.len())?;
        if out.get(body_len..) != Some(&SYNC_TAIL[..]) {
            return None;
        }
        out.truncate(body_len);
        Some(())
    }
}

/// A raw inflater for whole messages, with the full 32 KiB window (which
/// reads data compressed with any smaller one), and its output buffer.
#[derive(Debug)]
pub struct Inflater {
    decompress: Decompress,
    buffer: Vec<u8>,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

impl Inflater {
    pub fn new() -> Inflater {
        Inflater {
            decompress: Decompress::new_with_window_bits(false, MAX_WINDOW_BITS),
            buffer: Vec::new(),
        }
    }

    /// Inflates one message's compressed payload (the tail removed by the
    /// sender) into a buffer of at most `max_bytes`, which the caller gives
    /// back with [`Self::recycle`] when done with it.
    ///
    /// Fails with [`ProtocolError::MessageTooLarge`] as soon as the output
    /// would pass `max_bytes`, and with [`ProtocolError::BadDeflateData`]
    /// when the data is not a valid deflate stream.
    pub fn inflate(&mut self, payload: &[u8], max_bytes: usize) -> Result<Vec<u8>, ProtocolError> {
        let mut out = std::mem::take(&mut self.buffer);
        out.clear();
        match self.inflate_into(payload, max_bytes, &mut out) {
            Ok(()) => Ok(out),
            Err(error) => {
                self.recycle(out);
                Err(error)
            }
        }
    }

    /// Takes back a buffer [`Self::inflate`] gave out, keeping it for the
    /// next message unless it grew large.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        buffer.clear();
        if buffer.capacity() <= RETAINED_INFLATE_BYTES {
            self.buffer = buffer;
        }
    }

    fn inflate_into(
        &mut self,
        payload: &[u8],
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        // No context takeover was agreed: every message starts afresh.
        self.decompress.reset(false);
        // One byte past the bound is room enough to see the bound passed.
        let cap = max_bytes.saturating_add(1);
        for piece in [payload, &SYNC_TAIL[..]] {
            let mut rest = piece;
            loop {
                if out.len() == out.capacity() {
                    let room = cap.saturating_sub(out.len());
                    if room == 0 {
                        return Err(ProtocolError::MessageTooLarge);
                    }
                    // Doubling, but never past the bound.
                    out.reserve_exact(out.len().max(MIN_GROW_BYTES).min(room));
                }
                let (in_before, out_before) = (self.decompress.total_in(), out.len());
                let status = self
                    .decompress
                    .decompress_vec(rest, out, FlushDecompress::Sync)
                    .map_err(|_| ProtocolError::BadDeflateData)?;
                if out.len() > max_bytes {
                    return Err(ProtocolError::MessageTooLarge);
                }
                let used = usize::try_from(self.decompress.total_in().saturating_sub(in_before))
                    .map_err(|_| ProtocolError::BadDeflateData)?;
                rest = rest.get(used..).unwrap_or_default();
                if status == Status::StreamEnd {
                    // A final block (§7.2.3.3's BFINAL example): what follows
                    // it, our appended tail at least, is not part of it.
                    return Ok(());
                }
                let room_left = out.len() < out.capacity();
                let progressed = used > 0 || out.len() > out_before;
                if rest.is_empty() && room_left {
                    break;
                }
                if !progressed && room_left {
                    // Input left that zlib will not take: not deflate.
                    return Err(ProtocolError::BadDeflateData);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
// Tests index and unwrap freely: a panic there is a failed test.
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn inflate(payload: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        Inflater::new().inflate(payload, 1 << 20)
    }

    #[test]
    fn rfc_7692_examples_inflate() {
        // §7.2.3.1: "Hello" in one compressed frame.
        assert_eq!(
            inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap(),
            b"Hello"
        );
        // §7.2.3.3: a DEFLATE block with no compression.
        assert_eq!(
            inflate(&[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00]).unwrap(),
            b"Hello"
        );
        // §7.2.3.4: the block with BFINAL set.
        assert_eq!(
            inflate(&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]).unwrap(),
            b"Hello"
        );
        assert_eq!(
            inflate(&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap(),
            b"Hello"
        );
        // §7.2.3.5: two DEFLATE blocks in one message.
        assert_eq!(
            inflate(&[
                0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00
            ])
            .unwrap(),
            b"Hello"
        );
        // An empty message (§7.2.3.6 sends it as a single 0x00).
        assert_eq!(inflate(&[0x00]).unwrap(), b"");
        assert_eq!(inflate(&[]).unwrap(), b"");
    }

    #[test]
    fn rfc_7692_example_compresses() {
        let mut out = Vec::new();
        Deflater::new(1, 15).unwrap().compress(b"Hello", &mut out).unwrap();
        assert_eq!(out, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    }

    #[test]
    fn corrupt_data_is_refused() {
        // BTYPE 11 is reserved.
        assert_eq!(inflate(&[0xff, 0xff, 0xff]), Err(ProtocolError::BadDeflateData));
        // A stored block whose NLEN is not LEN's complement.
        assert_eq!(
            inflate(&[0x00, 0x05, 0x00, 0x00, 0x00, b'H']),
            Err(ProtocolError::BadDeflateData)
        );
    }

    #[test]
    fn output_is_bounded_while_inflating() {
        let bomb = vec![b'a'; 4 << 20];
        let mut compressed = Vec::new();
        Deflater::new(9, 15).unwrap().compress(&bomb, &mut compressed).unwrap();
        assert!(compressed.len() < 10_000, "{}", compressed.len());
        let mut inflater = Inflater::new();
        assert_eq!(
            inflater.inflate(&compressed, 65_536),
            Err(ProtocolError::MessageTooLarge)
        );
        // The bound is exact: a message of exactly max_bytes passes.
        let exact = vec![b'a'; 65_536];
        compressed.clear();
        Deflater::new(1, 15).unwrap().compress(&exact, &mut compressed).unwrap();
        let out = inflater.inflate(&compressed, 65_536).unwrap();
        assert_eq!(out.len(), 65_536);
        assert!(out.capacity() <= 65_537);
        inflater.recycle(out);
        assert_eq!(
            inflater.inflate(&compressed, 65_535),
            Err(ProtocolError::MessageTooLarge)
        );
    }

    #[test]
    fn one_inflater_serves_messages_from_many_senders() {
        let mut inflater = Inflater::new();
        let mut deflaters = [Deflater::new(1, 15).unwrap(), Deflater::new(6, 9).unwrap()];
        for i in 0..50 {
            let message = format!("{{\"op\":\"pub\",\"n\":{i},\"data\":\"{}\"}}", "xy".repeat(i * 40));
            let mut compressed = Vec::new();
            deflaters[i % 2].compress(message.as_bytes(), &mut compressed).unwrap();
            let out = inflater.inflate(&compressed, 1 << 20).unwrap();
            assert_eq!(out, message.as_bytes());
            inflater.recycle(out);
        }
    }

    #[test]
    fn windows_zlib_cannot_make_are_refused() {
        assert!(Deflater::new(1, 8).is_none());
        assert!(Deflater::new(1, 16).is_none());
        assert_eq!(Deflater::new(12, 9).unwrap().level(), 9);
    }

    proptest::proptest! {
        /// inflate(compress(x)) == x, for every window and level.
        #[test]
        fn round_trip(
            data in proptest::collection::vec(proptest::sample::select(b"ab{}\":,0123 ".to_vec()), 0..3000),
            bits in 9u8..=15,
            level in 0u32..=9,
        ) {
            let mut compressed = Vec::new();
            Deflater::new(level, bits).unwrap().compress(&data, &mut compressed).unwrap();
            let out = Inflater::new().inflate(&compressed, data.len()).unwrap();
            proptest::prop_assert_eq!(out, data);
        }

        #[test]
        fn inflating_garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = Inflater::new().inflate(&data, 4096);
        }
    }
}
