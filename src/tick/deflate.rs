//! Compressing a tick's envelope once for every subscriber that agreed
//! permessage-deflate (RFC 7692), and counting what that costs.
//!
//! Each thread that compresses keeps its own compressors (one per level and
//! window size it has met, a few hundred KB each): in the broker those are
//! the workers, so there is one compressor per worker, never one per
//! connection. A compressor is reset before every tick, as the agreed
//! `server_no_context_takeover` requires, which is also what makes the
//! result valid for every connection at once. Compressions are counted per
//! thread too, and the worker moves the counts into its metrics with
//! [`take_deflate_counts`] — no shared cache line per compression.

use std::cell::{Cell, RefCell};
use std::sync::OnceLock;

use crate::protocol::deflate::codec::Deflater;
use crate::protocol::deflate::offer::{MAX_WINDOW_BITS, MIN_WINDOW_BITS};
use crate::protocol::frame::{write_compressed_frame, OpCode};

/// The full deflate window, as a base-2 logarithm.
pub const FULL_WINDOW_BITS: u8 = MAX_WINDOW_BITS;

/// How a connection that agreed permessage-deflate wants its ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateForm {
    /// The window the client can inflate (`server_max_window_bits`; 15
    /// unless it asked for less).
    pub window_bits: u8,
    /// zlib level, 0–9 (`websocket.deflate_level`).
    pub level: u32,
    /// Envelopes shorter than this go uncompressed (`websocket.deflate_min_bytes`).
    pub min_bytes: usize,
}

/// What this thread's compressions did since the counts were last taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeflateCounts {
    /// Envelopes compressed.
    pub compressions: u64,
    /// Envelope bytes that went in.
    pub bytes_in: u64,
    /// Compressed payload bytes that came out (kept or not).
    pub bytes_out: u64,
    /// Compressions whose result was not smaller, so the plain frame is sent.
    pub not_smaller: u64,
}

thread_local! {
    static DEFLATERS: RefCell<Vec<Deflater>> = const { RefCell::new(Vec::new()) };
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static COUNTS: Cell<DeflateCounts> = const {
        Cell::new(DeflateCounts { compressions: 0, bytes_in: 0, bytes_out: 0, not_smaller: 0 })
    };
}

/// Takes (and zeroes) this thread's compression counts.
pub fn take_deflate_counts() -> DeflateCounts {
    COUNTS.with(|counts| counts.take())
}

/// Whether an envelope of `len` bytes compressed with the full window is
/// readable with a `window_bits` window: its back-references reach no
/// further back than its own start.
pub fn fits_window(len: usize, window_bits: u8) -> bool {
    window_bits >= FULL_WINDOW_BITS
        || 1usize
            .checked_shl(u32::from(window_bits))
            .is_some_and(|window| len <= window)
}

/// The compressed forms of a tick for windows 9 to 14.
#[derive(Debug, Default)]
pub struct NarrowForms {
    forms: [OnceLock<Option<Box<[u8]>>>; 6],
}

impl NarrowForms {
    /// The slot for `window_bits` (9 to 14); `None` for any other.
    pub fn slot(&self, window_bits: u8) -> Option<&OnceLock<Option<Box<[u8]>>>> {
        let index = window_bits.checked_sub(MIN_WINDOW_BITS)?;
        self.forms.get(usize::from(index))
    }
}

/// The whole compressed text frame for `envelope`, or `None` when it would
/// not be shorter than the plain frame (`plain_len` bytes) or cannot be made.
pub fn compress_frame(
    envelope: &[u8],
    level: u32,
    window_bits: u8,
    plain_len: usize,
) -> Option<Box<[u8]>> {
    let frame = SCRATCH.with(|scratch| {
        let mut body = scratch.try_borrow_mut().ok()?;
        body.clear();
        with_deflater(level, window_bits, |deflater| deflater.compress(envelope, &mut body))??;
        count(|c| {
            c.compressions = c.compressions.saturating_add(1);
            c.bytes_in = c.bytes_in.saturating_add(envelope.len() as u64);
            c.bytes_out = c.bytes_out.saturating_add(body.len() as u64);
        });
        let mut frame = Vec::with_capacity(body.len().saturating_add(10));
        write_compressed_frame(&mut frame, OpCode::Text, &body);
        // A body of a whole tick's size is not worth keeping around.
        if body.capacity() > 64 * 1024 {
            *body = Vec::new();
        }
        Some(frame)
    })?;
    if frame.len() >= plain_len {
        count(|c| c.not_smaller = c.not_smaller.saturating_add(1));
        return None;
    }
    Some(frame.into_boxed_slice())
}

/// Compresses one whole message with this thread's compressor for `level`
/// and `window_bits` (reset first: no context is taken over), appending it
/// to `out` without the sync tail; `None` if it cannot. Not counted as a
/// tick compression: the echo route's replies use it.
pub fn compress_message(message: &[u8], level: u32, window_bits: u8, out: &mut Vec<u8>) -> Option<()> {
    with_deflater(level, window_bits, |deflater| deflater.compress(message, out))?
}

/// Runs `f` with this thread's compressor for `level` and `window_bits`,
/// making it on first use; `None` if there cannot be one.
fn with_deflater<T>(level: u32, window_bits: u8, f: impl FnOnce(&mut Deflater) -> T) -> Option<T> {
    DEFLATERS.with(|cell| {
        let mut deflaters = cell.try_borrow_mut().ok()?;
        let level = level.min(9);
        let found = deflaters
            .iter()
            .position(|d| d.level() == level && d.window_bits() == window_bits);
        let index = match found {
            Some(index) => index,
            None => {
                deflaters.push(Deflater::new(level, window_bits)?);
                deflaters.len().checked_sub(1)?
            }
        };
        deflaters.get_mut(index).map(f)
    })
}

fn count(update: impl FnOnce(&mut DeflateCounts)) {
    COUNTS.with(|cell| {
        let mut counts = cell.get();
        update(&mut counts);
        cell.set(counts);
    });
}

#[cfg(test)]
// Tests index and unwrap freely: a panic there is a failed test.
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::protocol::deflate::codec::Inflater;
    use crate::tick::{Tick, TopicId};
    use crate::topic::TopicName;

    fn tick(data: &str) -> Tick {
        Tick::encode(TopicId(1), &TopicName::new("BOOK").unwrap(), 7, 99, data.as_bytes())
    }

    fn form(window_bits: u8) -> DeflateForm {
        DeflateForm {
            window_bits,
            level: 1,
            min_bytes: 64,
        }
    }

    fn book(levels: usize) -> String {
        let rows: Vec<String> = (0..levels)
            .map(|i| format!("[{}.{:02},{}]", 100 + i, i % 100, 1000 + i * 7))
            .collect();
        format!("{{\"bids\":[{}],\"asks\":[{}]}}", rows.join(","), rows.join(","))
    }

    #[test]
    fn compressed_once_and_shared_by_clones() {
        take_deflate_counts();
        let t = tick(&book(40));
        let copy = t.clone();
        let frame = t.deflated_frame(form(15)).unwrap();
        assert_eq!(frame[0], 0xc1, "FIN, RSV1, text");
        assert!(frame.len() < t.frame().len());
        assert!(std::ptr::eq(frame, copy.deflated_frame(form(15)).unwrap()));
        // A short-enough envelope shares the full-window form with every window.
        let counts = take_deflate_counts();
        assert_eq!(counts.compressions, 1);
        assert_eq!(counts.bytes_in, t.envelope().len() as u64);

        let header = if frame[1] == 126 { 4 } else { 2 };
        let inflated = Inflater::new().inflate(&frame[header..], 1 << 20).unwrap();
        assert_eq!(inflated, t.envelope());
    }

    #[test]
    fn small_ticks_stay_plain() {
        let t = tick("1");
        assert!(t.envelope().len() < 64);
        assert_eq!(t.deflated_frame(form(15)), None);
    }

    #[test]
    fn incompressible_ticks_stay_plain() {
        take_deflate_counts();
        // A short envelope with nothing repeated: deflate's block overhead
        // outweighs what it saves.
        let t = tick("1");
        let form = |bits| DeflateForm {
            min_bytes: 0,
            ..super::tests::form(bits)
        };
        assert_eq!(t.deflated_frame(form(15)), None);
        let counts = take_deflate_counts();
        assert_eq!((counts.compressions, counts.not_smaller), (1, 1));
    }

    #[test]
    fn windows_are_honoured_for_long_ticks() {
        take_deflate_counts();
        let t = tick(&book(200));
        assert!(t.envelope().len() > 1024);
        let full = t.deflated_frame(form(15)).unwrap();
        let nine = t.deflated_frame(form(9)).unwrap();
        assert!(!std::ptr::eq(full, nine));
        assert!(std::ptr::eq(nine, t.deflated_frame(form(9)).unwrap()));
        assert_eq!(take_deflate_counts().compressions, 2);
        let short = tick(&book(8));
        assert!(short.envelope().len() <= 512);
        assert!(std::ptr::eq(
            short.deflated_frame(form(9)).unwrap(),
            short.deflated_frame(form(15)).unwrap()
        ));
        // No compressor exists for 8 bits: such a client gets plain frames.
        assert_eq!(t.deflated_frame(form(8)), None);
    }

    #[test]
    fn window_fit() {
        assert!(fits_window(512, 9));
        assert!(!fits_window(513, 9));
        assert!(fits_window(usize::MAX, 15));
    }
}
