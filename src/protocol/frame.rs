//! The WebSocket base framing (RFC 6455 §5.2): parsing client frame headers
//! from a read buffer and encoding server frames.
//!
//! Parsing looks only at the header and never copies: the payload stays in
//! the caller's buffer, where [`super::decoder`] unmasks it in place. The
//! rules that can be checked from the header alone are checked here, before
//! any payload is buffered, so an oversized or malformed frame is refused
//! from its first bytes.

use super::error::ProtocolError;

/// The longest header a frame can have: 2 + 8 (length) + 4 (mask key).
pub const MAX_HEADER_BYTES: usize = 14;

/// The longest payload a control frame may carry (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The RSV1 bit of the first header byte: "Per-Message Compressed" once
/// permessage-deflate is agreed (RFC 7692 §6).
pub const RSV1: u8 = 0x40;

/// A frame's opcode (§5.2); reserved values never get this far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    /// The 4-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    fn from_bits(bits: u8) -> Result<Self, ProtocolError> {
        Ok(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(ProtocolError::ReservedOpCode(other)),
        })
    }

    /// Close, ping and pong: the frames that may interleave with fragments.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// The decoded header of one client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1: the message this frame starts is compressed (RFC 7692 §6);
    /// only ever set when the caller allowed it.
    pub compressed: bool,
    pub opcode: OpCode,
    /// Every client frame has one (§5.3); unmasked frames are refused.
    pub mask: [u8; 4],
    /// Checked against `max_frame_bytes`, so it fits in memory.
    pub payload_len: usize,
    /// Bytes of header before the payload (2 to 14).
    pub header_len: usize,
}

impl FrameHeader {
    /// Header plus payload: the bytes the whole frame occupies.
    ///
    /// Saturates rather than wraps: on a 32-bit target a `max_frame_bytes`
    /// near `usize::MAX` could otherwise make a huge frame look short. A
    /// saturated length is never reached by a buffer, so such a frame only
    /// ever needs more bytes.
    pub fn frame_len(&self) -> usize {
        self.header_len.saturating_add(self.payload_len)
    }
}

/// Parses a client frame header from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of the header. Fails on a
/// header that breaks a server-side rule of §5, or whose payload is longer
/// than `max_frame_bytes`.
pub fn parse_header(
    buf: &[u8],
    max_frame_bytes: usize,
) -> Result<Option<FrameHeader>, ProtocolError> {
    parse_header_with(buf, max_frame_bytes, false)
}

/// [`parse_header`] on a connection that may (`deflate`) have agreed
/// permessage-deflate, which gives RSV1 a meaning on the first frame of a
/// data message (RFC 7692 §6).
pub fn parse_header_with(
    buf: &[u8],
    max_frame_bytes: usize,
    deflate: bool,
) -> Result<Option<FrameHeader>, ProtocolError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let compressed = b0 & RSV1 != 0;
    // §5.2: "MUST be 0 unless an extension is negotiated that defines
    // meanings for non-zero values"; RSV2 and RSV3 never have one here.
    if b0 & 0x30 != 0 || (compressed && !deflate) {
        return Err(ProtocolError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F)?;
    if compressed {
        // RFC 7692 §6.1: "An endpoint MUST NOT set the "Per-Message
        // Compressed" bit of control frames and non-first fragments of a
        // data message."
        if opcode.is_control() {
            return Err(ProtocolError::CompressedControlFrame);
        }
        if opcode == OpCode::Continuation {
            return Err(ProtocolError::CompressedContinuation);
        }
    }
    // §5.1: "The server MUST close the connection upon receiving a frame that is not masked."
    if b1 & 0x80 == 0 {
        return Err(ProtocolError::UnmaskedFrame);
    }
    let short_len = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        if usize::from(short_len) > MAX_CONTROL_PAYLOAD {
            return Err(ProtocolError::ControlFrameTooLong);
        }
    }
    // The announced length, where the mask key starts, and where the
    // payload starts (the header's length), for each length form.
    let (payload_len, mask_at, header_len) = match short_len {
        126 => {
            let Some(&[hi, lo]) = buf.get(2..4) else {
                return Ok(None);
            };
            let len = u64::from(u16::from_be_bytes([hi, lo]));
            if len < 126 {
                return Err(ProtocolError::NonMinimalLength);
            }
            (len, 4, 8)
        }
        127 => {
            let Some(Ok(word)) = buf.get(2..10).map(<[u8; 8]>::try_from) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(word);
            if len >> 63 != 0 {
                return Err(ProtocolError::LengthTopBitSet);
            }
            if len <= u64::from(u16::MAX) {
                return Err(ProtocolError::NonMinimalLength);
            }
            (len, 10, 14)
        }
        len => (u64::from(len), 2, 6),
    };
    // A length that does not fit a usize (32-bit targets) is over any
    // `max_frame_bytes` too.
    let payload_len = match usize::try_from(payload_len) {
        Ok(len) if len <= max_frame_bytes => len,
        _ => return Err(ProtocolError::FrameTooLarge),
    };
    let Some(&[k0, k1, k2, k3]) = buf.get(mask_at..header_len) else {
        return Ok(None);
    };
    Ok(Some(FrameHeader {
        fin,
        compressed,
        opcode,
        mask: [k0, k1, k2, k3],
        payload_len,
        header_len,
    }))
}

/// Writes an unmasked server frame header (§5.2) for a payload of `len`
/// bytes into `out`, returning how many bytes it used.
pub fn encode_header(out: &mut [u8; 10], fin: bool, opcode: OpCode, len: usize) -> usize {
    header_bytes(out, fin, opcode, len).len()
}

/// [`encode_header`], returning the header itself: the first 2, 4 or 10
/// bytes of `out`, so callers need not slice `out` by the returned length.
pub fn header_bytes(out: &mut [u8; 10], fin: bool, opcode: OpCode, len: usize) -> &[u8] {
    out[0] = (u8::from(fin) << 7) | opcode.bits();
    if let Ok(short @ 0..=125) = u8::try_from(len) {
        out[1] = short;
        &out[..2]
    } else if let Ok(medium) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&medium.to_be_bytes());
        &out[..4]
    } else {
        out[1] = 127;
        // A usize is at most 64 bits on every target Rust supports, so the
        // fallback is never taken; it keeps the conversion panic-free.
        let long = u64::try_from(len).unwrap_or(u64::MAX);
        out[2..10].copy_from_slice(&long.to_be_bytes());
        &out[..]
    }
}

/// Appends a whole unfragmented server frame whose payload is compressed
/// (RSV1 set, RFC 7692 §6) to `out`.
pub fn write_compressed_frame(out: &mut Vec<u8>, opcode: OpCode, compressed: &[u8]) {
    let start = out.len();
    write_frame(out, opcode, compressed);
    if let Some(b0) = out.get_mut(start) {
        *b0 |= RSV1;
    }
}

/// Appends a whole unfragmented server frame to `out`.
pub fn write_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let mut header = [0u8; 10];
    let header = header_bytes(&mut header, true, opcode, payload.len());
    // A slice is at most isize::MAX bytes, so 10 more never saturates.
    out.reserve(header.len().saturating_add(payload.len()));
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and a reason cut to fit §5.5's 125 bytes.
pub fn write_close_frame(out: &mut Vec<u8>, code: u16, reason: &str) {
    let code = code.to_be_bytes();
    let reason = truncate_utf8(reason, MAX_CONTROL_PAYLOAD - 2);
    let mut header = [0u8; 10];
    // At most 2 + 123 bytes: the reason was just cut to fit.
    let payload_len = code.len().saturating_add(reason.len());
    out.extend_from_slice(header_bytes(&mut header, true, OpCode::Close, payload_len));
    out.extend_from_slice(&code);
    out.extend_from_slice(reason.as_bytes());
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    // 0 is always a boundary, so the search always finds one.
    let end = (0..=max)
        .rev()
        .find(|&end| text.is_char_boundary(end))
        .unwrap_or(0);
    text.get(..end).unwrap_or_default()
}

/// Test support: encodes a masked client frame, as a client library would.
pub fn encode_client_frame(fin: bool, opcode: OpCode, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len().saturating_add(MAX_HEADER_BYTES));
    let mut header = [0u8; 10];
    out.extend_from_slice(header_bytes(&mut header, fin, opcode, payload.len()));
    // The MASK bit, in the second header byte.
    if let Some(b1) = out.get_mut(1) {
        *b1 |= 0x80;
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    // `start` was the length before the payload was appended.
    let (_, masked) = out.split_at_mut(start);
    super::mask::apply_mask(masked, mask, 0);
    out
}

#[cfg(test)]
// Tests index and unwrap freely: a panic there is a failed test.
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn rfc_masked_hello() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let header = parse_header(&bytes, MAX).unwrap().unwrap();
        assert!(header.fin);
        assert_eq!(header.opcode, OpCode::Text);
        assert_eq!(header.payload_len, 5);
        assert_eq!(header.header_len, 6);
        assert_eq!(header.mask, [0x37, 0xfa, 0x21, 0x3d]);
    }

    #[test]
    fn partial_headers_need_more() {
        let frame = encode_client_frame(true, OpCode::Binary, [1, 2, 3, 4], &[0u8; 70_000]);
        for cut in 0..14 {
            assert_eq!(parse_header(&frame[..cut], MAX), Ok(None), "cut {cut}");
        }
        assert!(parse_header(&frame[..14], MAX).unwrap().is_some());
    }

    #[test]
    fn server_side_rules() {
        let masked = |b0: u8, b1: u8| [b0, b1 | 0x80, 0, 0, 0, 0];
        assert_eq!(
            parse_header(&[0x81, 0x05], MAX),
            Err(ProtocolError::UnmaskedFrame)
        );
        assert_eq!(
            parse_header(&masked(0xC1, 0), MAX),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            parse_header(&masked(0x91, 0), MAX),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            parse_header(&masked(0x83, 0), MAX),
            Err(ProtocolError::ReservedOpCode(3))
        );
        assert_eq!(
            parse_header(&masked(0x8B, 0), MAX),
            Err(ProtocolError::ReservedOpCode(0xB))
        );
        assert_eq!(
            parse_header(&masked(0x09, 0), MAX),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            parse_header(&masked(0x89, 126), MAX),
            Err(ProtocolError::ControlFrameTooLong)
        );
    }

    #[test]
    fn rsv1_only_where_deflate_gives_it_a_meaning() {
        let masked = |b0: u8| [b0, 0x80, 0, 0, 0, 0];
        // RFC 7692 §7.2.3.1's frame header, masked: 0xc1.
        let header = parse_header_with(&masked(0xC1), MAX, true).unwrap().unwrap();
        assert!(header.compressed && header.fin);
        assert_eq!(header.opcode, OpCode::Text);
        assert!(!parse_header_with(&masked(0x81), MAX, true).unwrap().unwrap().compressed);
        assert!(parse_header_with(&masked(0x42), MAX, true).unwrap().unwrap().compressed);
        assert_eq!(
            parse_header_with(&masked(0xC1), MAX, false),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            parse_header_with(&masked(0xC9), MAX, true),
            Err(ProtocolError::CompressedControlFrame)
        );
        assert_eq!(
            parse_header_with(&masked(0xC8), MAX, true),
            Err(ProtocolError::CompressedControlFrame)
        );
        assert_eq!(
            parse_header_with(&masked(0xC0), MAX, true),
            Err(ProtocolError::CompressedContinuation)
        );
        for rsv in [0xA1, 0x91, 0xE1] {
            assert_eq!(
                parse_header_with(&masked(rsv), MAX, true),
                Err(ProtocolError::ReservedBits),
                "{rsv:#x}"
            );
        }
        let mut out = Vec::new();
        write_compressed_frame(&mut out, OpCode::Text, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        // RFC 7692 §7.2.3.1, as a server (unmasked) frame.
        assert_eq!(out, [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    }

    #[test]
    fn lengths() {
        let top_bit = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(
            parse_header(&top_bit, usize::MAX),
            Err(ProtocolError::LengthTopBitSet)
        );
        let non_minimal16 = [0x82, 0xFE, 0x00, 0x7D, 1, 2, 3, 4];
        assert_eq!(
            parse_header(&non_minimal16, MAX),
            Err(ProtocolError::NonMinimalLength)
        );
        let non_minimal64 = [0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 1, 2, 3, 4];
        assert_eq!(
            parse_header(&non_minimal64, MAX),
            Err(ProtocolError::NonMinimalLength)
        );
        let big = encode_client_frame(true, OpCode::Binary, [0; 4], &[0u8; 2000]);
        assert_eq!(parse_header(&big, 1999), Err(ProtocolError::FrameTooLarge));
        assert_eq!(parse_header(&big, 2000).unwrap().unwrap().payload_len, 2000);
    }

    #[test]
    fn encode_lengths() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = Vec::new();
            write_frame(&mut out, OpCode::Binary, &vec![7u8; len]);
            assert_eq!(out.len(), header_len + len);
            assert_eq!(out[0], 0x82);
        }
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let mut out = Vec::new();
        write_close_frame(&mut out, 1000, &"é".repeat(100));
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    #[test]
    fn close_frame_layout() {
        let mut out = Vec::new();
        write_close_frame(&mut out, 1000, "bye");
        assert_eq!(out, [0x88, 0x05, 0x03, 0xe8, b'b', b'y', b'e']);
        out.clear();
        write_close_frame(&mut out, 1001, "");
        assert_eq!(out, [0x88, 0x02, 0x03, 0xe9]);
    }

    #[test]
    fn truncation_edges() {
        assert_eq!(truncate_utf8("abc", 0), "");
        assert_eq!(truncate_utf8("é", 1), "");
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("aé", 3), "aé");
    }

    #[test]
    fn header_bytes_agrees_with_encode_header() {
        for len in [0, 1, 125, 126, 255, 256, 65_535, 65_536, usize::MAX] {
            let (mut a, mut b) = ([0u8; 10], [0u8; 10]);
            let used = encode_header(&mut a, false, OpCode::Ping, len);
            let header = header_bytes(&mut b, false, OpCode::Ping, len);
            assert_eq!(header, &a[..used], "len {len}");
        }
    }

    /// The largest lengths a header can announce, under the loosest limit:
    /// nothing wraps, and the frame only ever needs more bytes.
    #[test]
    fn largest_lengths_do_not_overflow() {
        let mut largest = vec![0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        largest.extend_from_slice(&[1, 2, 3, 4]);
        match usize::try_from(u64::MAX >> 1) {
            Ok(len) => {
                let header = parse_header(&largest, usize::MAX).unwrap().unwrap();
                assert_eq!(header.payload_len, len);
                assert_eq!(header.frame_len(), len.saturating_add(14));
            }
            Err(_) => assert_eq!(
                parse_header(&largest, usize::MAX),
                Err(ProtocolError::FrameTooLarge)
            ),
        }
        let saturated = FrameHeader {
            fin: true,
            compressed: false,
            opcode: OpCode::Binary,
            mask: [0; 4],
            payload_len: usize::MAX,
            header_len: MAX_HEADER_BYTES,
        };
        assert_eq!(saturated.frame_len(), usize::MAX);
    }
}
