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
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
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
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    // §5.2: "MUST be 0 unless an extension is negotiated"; we negotiate none.
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F)?;
    // §5.1: "The server MUST close the connection upon receiving a frame that is not masked."
    if b1 & 0x80 == 0 {
        return Err(ProtocolError::UnmaskedFrame);
    }
    let short_len = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        if short_len as usize > MAX_CONTROL_PAYLOAD {
            return Err(ProtocolError::ControlFrameTooLong);
        }
    }
    let (payload_len, len_bytes) = match short_len {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            let len = u16::from_be_bytes([bytes[0], bytes[1]]) as u64;
            if len < 126 {
                return Err(ProtocolError::NonMinimalLength);
            }
            (len, 2)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            let len = u64::from_be_bytes(word);
            if len >> 63 != 0 {
                return Err(ProtocolError::LengthTopBitSet);
            }
            if len <= u16::MAX as u64 {
                return Err(ProtocolError::NonMinimalLength);
            }
            (len, 8)
        }
        len => (len as u64, 0),
    };
    if payload_len > max_frame_bytes as u64 {
        return Err(ProtocolError::FrameTooLarge);
    }
    let mask_at = 2 + len_bytes;
    let Some(key) = buf.get(mask_at..mask_at + 4) else {
        return Ok(None);
    };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask: [key[0], key[1], key[2], key[3]],
        payload_len: payload_len as usize,
        header_len: mask_at + 4,
    }))
}

/// Writes an unmasked server frame header (§5.2) for a payload of `len`
/// bytes into `out`, returning how many bytes it used.
pub fn encode_header(out: &mut [u8; 10], fin: bool, opcode: OpCode, len: usize) -> usize {
    out[0] = (u8::from(fin) << 7) | opcode.bits();
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Appends a whole unfragmented server frame to `out`.
pub fn write_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let mut header = [0u8; 10];
    let header_len = encode_header(&mut header, true, opcode, payload.len());
    out.reserve(header_len + payload.len());
    out.extend_from_slice(&header[..header_len]);
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and a reason cut to fit §5.5's 125 bytes.
pub fn write_close_frame(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    let reason = truncate_utf8(reason, MAX_CONTROL_PAYLOAD - 2);
    payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
    write_frame(out, OpCode::Close, &payload[..2 + reason.len()]);
}

fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Test support: encodes a masked client frame, as a client library would.
pub fn encode_client_frame(fin: bool, opcode: OpCode, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + MAX_HEADER_BYTES);
    let mut header = [0u8; 10];
    let len = encode_header(&mut header, fin, opcode, payload.len());
    header[1] |= 0x80;
    out.extend_from_slice(&header[..len]);
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    super::mask::apply_mask(&mut out[start..], mask, 0);
    out
}

#[cfg(test)]
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
}
