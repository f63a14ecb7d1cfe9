//! A published tick as every transport sends it, built once per publish.
//!
//! The bytes are a complete server WebSocket text frame whose payload is the
//! JSON envelope; long-polling uses the envelope without the frame header,
//! and Server-Sent Events get their own encoding, made at most once, by the
//! first SSE subscriber that needs it. One allocation, shared by reference
//! count with every worker and every subscriber: fan-out never re-serialises
//! a tick per subscriber.
//!
//! Its permessage-deflate form (RFC 7692) is made the same way: at most
//! once per tick and window size, by the first subscriber that negotiated
//! the extension, and then shared like the plain frame — through the
//! mailboxes, the history ring and the last value. Compression happens on
//! the worker thread that first needs it, with that thread's compressor
//! ([`deflate`]); no connection owns one.
//!
//! A leaf the network reaches, held to the panic-class lints (tests exempt).

pub mod deflate;

use std::sync::{Arc, OnceLock};

use crate::protocol::frame::{header_bytes, OpCode};
use crate::topic::TopicName;
pub use deflate::{take_deflate_counts, DeflateCounts, DeflateForm};

/// Identifies one incarnation of a topic: a reclaimed and recreated topic
/// gets a new id, so stale deliveries for the old one cannot match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub u64);

/// One tick of one topic, ready to write; cloning it shares the bytes.
#[derive(Debug, Clone)]
pub struct Tick {
    pub topic: TopicId,
    pub seq: u64,
    /// The broker's receive time, µs since the Unix epoch.
    pub ts: u64,
    encoded: Arc<Encoded>,
}

#[derive(Debug)]
struct Encoded {
    /// WebSocket frame header followed by the JSON envelope.
    frame: Vec<u8>,
    /// Where the envelope starts in `frame` (the header's length, so never
    /// past its end).
    envelope_at: usize,
    /// `id: <topic>:<seq>\ndata: <envelope>\n\n`, made on first use.
    sse: OnceLock<Vec<u8>>,
    /// The topic name, for the SSE id.
    topic_name: Box<str>,
    /// The seq of the topic's previous tick (`seq - 1` in single-node
    /// mode; in cluster mode the stream sequence before it, 0 for none).
    prev: u64,
    /// The compressed frame with the full window, made on first use;
    /// `None` inside when compressing did not make it smaller.
    deflated: OnceLock<Option<Box<[u8]>>>,
    /// Compressed frames for clients that asked for a smaller window, only
    /// for ticks longer than that window (see [`Tick::deflated_frame`]).
    narrow: OnceLock<Box<deflate::NarrowForms>>,
}

impl Tick {
    /// Builds the frame for `{"topic":..,"seq":..,"ts":..,"data":..}`.
    ///
    /// `topic` is a [`TopicName`], so it needs no JSON escaping; `data` must
    /// be valid JSON, which is embedded byte for byte.
    pub fn encode(
        topic_id: TopicId,
        topic: &TopicName<'_>,
        seq: u64,
        ts_micros: u64,
        data: &[u8],
    ) -> Tick {
        Tick::build(topic_id, topic, seq, None, ts_micros, data)
    }

    /// Builds the frame of a cluster tick, which names its predecessor:
    /// `{"topic":..,"seq":..,"prev":..,"ts":..,"data":..}`. Cluster seqs
    /// are stream sequences, not contiguous, so a client tells a gap by
    /// `prev` differing from the last seq it saw.
    pub fn encode_with_prev(
        topic_id: TopicId,
        topic: &TopicName<'_>,
        seq: u64,
        prev: u64,
        ts_micros: u64,
        data: &[u8],
    ) -> Tick {
        Tick::build(topic_id, topic, seq, Some(prev), ts_micros, data)
    }

    fn build(
        topic_id: TopicId,
        topic: &TopicName<'_>,
        seq: u64,
        prev: Option<u64>,
        ts_micros: u64,
        data: &[u8],
    ) -> Tick {
        let mut prev_digits = itoa::Buffer::new();
        let prev_text: &[u8] = match prev {
            Some(prev) => prev_digits.format(prev).as_bytes(),
            None => b"",
        };
        let prev_key: &[u8] = if prev.is_some() { b",\"prev\":" } else { b"" };
        let mut seq_digits = itoa::Buffer::new();
        let seq_text = seq_digits.format(seq);
        let mut ts_digits = itoa::Buffer::new();
        let ts_text = ts_digits.format(ts_micros);
        let parts: [&[u8]; 11] = [
            b"{\"topic\":\"",
            topic.as_bytes(),
            b"\",\"seq\":",
            seq_text.as_bytes(),
            prev_key,
            prev_text,
            b",\"ts\":",
            ts_text.as_bytes(),
            b",\"data\":",
            data,
            b"}",
        ];
        // Slices already in memory: the sum never saturates (and, unlike
        // `sum()`, has no overflow panic in debug builds).
        let envelope_len = parts
            .iter()
            .fold(0usize, |sum, p| sum.saturating_add(p.len()));
        let mut header = [0u8; 10];
        let header = header_bytes(&mut header, true, OpCode::Text, envelope_len);
        let header_len = header.len();
        // The envelope is in memory already, so 10 more bytes never saturate.
        let mut frame = Vec::with_capacity(header_len.saturating_add(envelope_len));
        frame.extend_from_slice(header);
        for part in parts {
            frame.extend_from_slice(part);
        }
        Tick {
            topic: topic_id,
            seq,
            ts: ts_micros,
            encoded: Arc::new(Encoded {
                frame,
                envelope_at: header_len,
                sse: OnceLock::new(),
                topic_name: topic.as_str().into(),
                prev: prev.unwrap_or(seq.saturating_sub(1)),
                deflated: OnceLock::new(),
                narrow: OnceLock::new(),
            }),
        }
    }

    /// The whole WebSocket frame.
    pub fn frame(&self) -> &[u8] {
        &self.encoded.frame
    }

    /// The JSON envelope alone, for HTTP transports.
    pub fn envelope(&self) -> &[u8] {
        // `envelope_at` is within the frame (see the field): the empty
        // fallback is never taken.
        self.encoded
            .frame
            .get(self.encoded.envelope_at..)
            .unwrap_or_default()
    }

    /// The compressed WebSocket frame (RSV1 set, one unfragmented frame)
    /// for a connection that agreed permessage-deflate with `form`'s window,
    /// made once and shared; `None` when the plain [`Self::frame`] is to be
    /// sent instead: the envelope is under `form.min_bytes`, or compressing
    /// it did not make it smaller.
    ///
    /// An envelope no longer than the window is compressed once for every
    /// window: its back-references cannot reach further than its own
    /// length. Only longer ones get a compression per window size asked for.
    /// The first call for a tick fixes the level: a broker has one.
    pub fn deflated_frame(&self, form: DeflateForm) -> Option<&[u8]> {
        let envelope = self.envelope();
        if envelope.len() < form.min_bytes {
            return None;
        }
        let (slot, bits) = if deflate::fits_window(envelope.len(), form.window_bits) {
            (&self.encoded.deflated, deflate::FULL_WINDOW_BITS)
        } else {
            let narrow = self.encoded.narrow.get_or_init(Box::default);
            (narrow.slot(form.window_bits)?, form.window_bits)
        };
        slot.get_or_init(|| deflate::compress_frame(envelope, form.level, bits, self.frame().len()))
            .as_deref()
    }

    /// The seq of the topic's previous tick (see [`Tick::encode_with_prev`]).
    pub fn prev(&self) -> u64 {
        self.encoded.prev
    }

    /// The topic's name.
    pub fn topic_name(&self) -> &str {
        &self.encoded.topic_name
    }

    /// The Server-Sent Events form (`id: AAPL:42`, `data: <envelope>`),
    /// encoded once for all SSE subscribers.
    pub fn sse_event(&self) -> &[u8] {
        self.encoded.sse.get_or_init(|| {
            let envelope = self.envelope();
            let mut seq = itoa::Buffer::new();
            let capacity = envelope
                .len()
                .saturating_add(self.encoded.topic_name.len())
                .saturating_add(40);
            let mut event = Vec::with_capacity(capacity);
            event.extend_from_slice(b"id: ");
            event.extend_from_slice(self.encoded.topic_name.as_bytes());
            event.push(b':');
            event.extend_from_slice(seq.format(self.seq).as_bytes());
            event.push(b'\n');
            // A line break ends an SSE field, and JSON may hold them as
            // whitespace (pretty-printed data): each line gets its own
            // `data:`, which a client joins back with "\n".
            for line in envelope.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                for part in line.split(|b| *b == b'\r') {
                    event.extend_from_slice(b"data: ");
                    event.extend_from_slice(part);
                    event.push(b'\n');
                }
            }
            event.push(b'\n');
            event
        })
    }
}

/// Microseconds since the Unix epoch: the `ts` of a tick.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        // u64 µs last until the year 586,000; past that, stay at the maximum.
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
// Tests index and unwrap freely: a panic there is a failed test.
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::topic::TopicName;

    #[test]
    fn envelope_and_frame() {
        let tick = Tick::encode(
            TopicId(7),
            &TopicName::new("AAPL").unwrap(),
            42,
            1_732_190_000_123_456,
            br#"{"bid":1.5}"#,
        );
        let expected = r#"{"topic":"AAPL","seq":42,"ts":1732190000123456,"data":{"bid":1.5}}"#;
        assert_eq!(tick.envelope(), expected.as_bytes());
        assert_eq!(tick.frame()[0], 0x81);
        assert_eq!(tick.frame()[1] as usize, expected.len());
        let parsed: serde_json::Value = serde_json::from_slice(tick.envelope()).unwrap();
        assert_eq!(parsed["seq"], 42);
        let sse = std::str::from_utf8(tick.sse_event()).unwrap();
        assert_eq!(sse, format!("id: AAPL:42\ndata: {expected}\n\n"));
        // Shared by clones: encoded once.
        assert!(std::ptr::eq(tick.clone().sse_event(), tick.sse_event()));
    }

    #[test]
    fn sse_splits_line_breaks_into_data_lines() {
        let tick = Tick::encode(
            TopicId(7),
            &TopicName::new("P").unwrap(),
            1,
            5,
            b"{\n  \"b\": 1,\r\n  \"c\": 2\r}",
        );
        let sse = std::str::from_utf8(tick.sse_event()).unwrap();
        assert_eq!(
            sse,
            "id: P:1\ndata: {\"topic\":\"P\",\"seq\":1,\"ts\":5,\"data\":{\ndata:   \"b\": 1,\ndata:   \"c\": 2\ndata: }}\n\n"
        );
    }

    #[test]
    fn cluster_ticks_name_their_predecessor() {
        let topic = TopicName::new("A.b").unwrap();
        let tick = Tick::encode_with_prev(TopicId(1), &topic, 90, 41, 5, b"[1]");
        assert_eq!(
            tick.envelope(),
            br#"{"topic":"A.b","seq":90,"prev":41,"ts":5,"data":[1]}"#
        );
        assert_eq!(tick.prev(), 41);
        assert_eq!(Tick::encode(TopicId(1), &topic, 7, 5, b"1").prev(), 6);
    }

    #[test]
    fn long_payload_gets_extended_length() {
        let data = format!("\"{}\"", "x".repeat(300));
        let tick = Tick::encode(
            TopicId(1),
            &TopicName::new("T").unwrap(),
            1,
            0,
            data.as_bytes(),
        );
        assert_eq!(tick.frame()[1], 126);
        assert_eq!(tick.frame().len(), 4 + tick.envelope().len());
    }
}
