//! A published tick as every transport sends it, built once per publish.
//!
//! The bytes are a complete server WebSocket text frame whose payload is the
//! JSON envelope; long-polling and SSE use the envelope without the frame
//! header. One allocation, shared by reference count with every worker and
//! every subscriber: fan-out never copies or re-serialises a tick.

use bytes::Bytes;

use crate::protocol::frame::{encode_header, OpCode};

/// Identifies one incarnation of a topic: a reclaimed and recreated topic
/// gets a new id, so stale deliveries for the old one cannot match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub u64);

/// One tick of one topic, ready to write.
#[derive(Debug, Clone)]
pub struct Tick {
    pub topic: TopicId,
    pub seq: u64,
    /// WebSocket frame header followed by the JSON envelope.
    frame: Bytes,
    /// Where the envelope starts in `frame` (the header's length).
    envelope_at: u8,
}

impl Tick {
    /// Builds the frame for `{"topic":..,"seq":..,"ts":..,"data":..}`.
    ///
    /// `topic` must be a validated topic name (no JSON escaping needed) and
    /// `data` valid JSON, which is embedded byte for byte.
    pub fn encode(topic_id: TopicId, topic: &str, seq: u64, ts_micros: u64, data: &[u8]) -> Tick {
        let mut seq_digits = itoa::Buffer::new();
        let seq_text = seq_digits.format(seq);
        let mut ts_digits = itoa::Buffer::new();
        let ts_text = ts_digits.format(ts_micros);
        let parts: [&[u8]; 9] = [
            b"{\"topic\":\"",
            topic.as_bytes(),
            b"\",\"seq\":",
            seq_text.as_bytes(),
            b",\"ts\":",
            ts_text.as_bytes(),
            b",\"data\":",
            data,
            b"}",
        ];
        let envelope_len: usize = parts.iter().map(|p| p.len()).sum();
        let mut header = [0u8; 10];
        let header_len = encode_header(&mut header, true, OpCode::Text, envelope_len);
        let mut frame = Vec::with_capacity(header_len + envelope_len);
        frame.extend_from_slice(&header[..header_len]);
        for part in parts {
            frame.extend_from_slice(part);
        }
        Tick {
            topic: topic_id,
            seq,
            frame: Bytes::from(frame),
            envelope_at: header_len as u8,
        }
    }

    /// The whole WebSocket frame.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The JSON envelope alone, for HTTP transports.
    pub fn envelope(&self) -> &[u8] {
        &self.frame[self.envelope_at as usize..]
    }
}

/// Microseconds since the Unix epoch: the `ts` of a tick.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_and_frame() {
        let tick = Tick::encode(
            TopicId(7),
            "AAPL",
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
    }

    #[test]
    fn long_payload_gets_extended_length() {
        let data = format!("\"{}\"", "x".repeat(300));
        let tick = Tick::encode(TopicId(1), "T", 1, 0, data.as_bytes());
        assert_eq!(tick.frame()[1], 126);
        assert_eq!(tick.frame().len(), 4 + tick.envelope().len());
    }
}
