//! Why a WebSocket connection is failed, and the close code each reason
//! maps to (RFC 6455 §7.4.1). The mapping lives here and nowhere else.

use std::fmt;

use super::close::CloseCode;

/// A violation of RFC 6455 by the peer, or of one of our configured limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// §5.1: "a server MUST close the connection upon receiving a frame that is not masked".
    UnmaskedFrame,
    /// §5.2: RSV bits set while no extension that defines them was negotiated.
    ReservedBits,
    /// §5.2: opcodes 0x3–0x7 and 0xB–0xF are reserved.
    ReservedOpCode(u8),
    /// §5.5: "All control frames MUST have a payload length of 125 bytes or less".
    ControlFrameTooLong,
    /// §5.5: "Control frames themselves MUST NOT be fragmented".
    FragmentedControlFrame,
    /// §5.4: a continuation frame with no message in progress.
    UnexpectedContinuation,
    /// §5.4: a new text or binary frame while a fragmented message is in progress.
    ExpectedContinuation,
    /// §5.2: "the most significant bit MUST be 0" in a 64-bit length.
    LengthTopBitSet,
    /// §5.2: "the minimal number of bytes MUST be used to encode the length".
    NonMinimalLength,
    /// §5.5.1: a close payload of exactly one byte cannot hold a status code.
    CloseFrameTooShort,
    /// §7.4: a close code that may not be sent on the wire.
    InvalidCloseCode(u16),
    /// §8.1: a text message (or close reason) that is not UTF-8.
    InvalidUtf8,
    /// A frame's payload is longer than `max_frame_bytes`.
    FrameTooLarge,
    /// A message is longer than `max_message_bytes`.
    MessageTooLarge,
    /// A message spans more frames than `max_fragments_per_message`.
    TooManyFragments,
    /// RFC 7692 §6.1: RSV1 marks a compressed message, so it may be set
    /// on the first frame of a data message only — not on a control frame.
    CompressedControlFrame,
    /// RFC 7692 §6.1: RSV1 on a continuation frame.
    CompressedContinuation,
    /// RFC 7692 §7.2.2: a compressed payload that is not valid deflate data.
    BadDeflateData,
}

impl ProtocolError {
    /// The close code that fails the connection for this reason.
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            ProtocolError::FrameTooLarge
            | ProtocolError::MessageTooLarge
            | ProtocolError::TooManyFragments => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short reason for the close frame (≤ 123 bytes, as §5.5 requires).
    pub fn reason(self) -> &'static str {
        match self {
            ProtocolError::UnmaskedFrame => "client frames must be masked",
            ProtocolError::ReservedBits => "reserved bits set without an extension",
            ProtocolError::ReservedOpCode(_) => "reserved opcode",
            ProtocolError::ControlFrameTooLong => "control frame payload over 125 bytes",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::UnexpectedContinuation => "continuation frame without a message",
            ProtocolError::ExpectedContinuation => "new message inside a fragmented message",
            ProtocolError::LengthTopBitSet => "64-bit payload length with its top bit set",
            ProtocolError::NonMinimalLength => "payload length not minimally encoded",
            ProtocolError::CloseFrameTooShort => "close payload of one byte",
            ProtocolError::InvalidCloseCode(_) => "invalid close code",
            ProtocolError::InvalidUtf8 => "invalid UTF-8 in text",
            ProtocolError::FrameTooLarge => "frame too large",
            ProtocolError::MessageTooLarge => "message too large",
            ProtocolError::TooManyFragments => "too many fragments in one message",
            ProtocolError::CompressedControlFrame => "RSV1 set on a control frame",
            ProtocolError::CompressedContinuation => "RSV1 set on a continuation frame",
            ProtocolError::BadDeflateData => "invalid deflate data",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedOpCode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for ProtocolError {}
