//! Turning a connection's inbound bytes into WebSocket messages (RFC 6455
//! §5.4–§5.6): frames are parsed and unmasked in place in the caller's read
//! buffer, and only a message that really spans frames is copied into a
//! reassembly buffer.
//!
//! The decoder keeps the state that outlives one frame — a fragmented message
//! in progress, and how far the frame at the front of the buffer has already
//! been unmasked and validated — so that an invalid UTF-8 byte fails the
//! connection as soon as it arrives, even in the middle of a frame. It does
//! no I/O: it says what arrived, and the connection decides what to send
//! (pong, close echo), as fastwebsockets and tungstenite do.

use super::close::ClosePayload;
use super::error::ProtocolError;
use super::frame::{parse_header_with, FrameHeader, OpCode};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// Reassembly buffers larger than this are freed, not kept, once their
/// message is delivered: most connections never see a big message again.
const RETAINED_ASSEMBLY_BYTES: usize = 64 * 1024;

/// The configured bounds on what a peer may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    pub max_fragments_per_message: usize,
}

/// One complete thing the peer sent: a data message or a control frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A whole text message, already validated as UTF-8.
    Text(&'a [u8]),
    Binary(&'a [u8]),
    /// A whole text message compressed with permessage-deflate (RFC 7692):
    /// UTF-8 is checked once it is inflated.
    CompressedText(&'a [u8]),
    /// A whole binary message compressed with permessage-deflate.
    CompressedBinary(&'a [u8]),
    /// The peer expects a pong with the same payload (§5.5.2).
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// The peer started or answered the closing handshake (§5.5.1).
    Close(ClosePayload<'a>),
}

/// What one call to [`Decoder::decode`] found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Bytes at the front of the buffer that are done with; the caller drops them.
    pub consumed: usize,
    /// A complete message, or `None` when more bytes are needed (`consumed`
    /// is then 0) or a non-final fragment was absorbed (`consumed` > 0).
    pub message: Option<Message<'a>>,
}

impl Decoded<'_> {
    /// True when the buffer holds no complete frame: read more, then call again.
    pub fn needs_more(&self) -> bool {
        self.consumed == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataKind {
    Text,
    Binary,
}

/// A message whose first frame has arrived without FIN.
#[derive(Debug, Default)]
struct Assembly {
    kind: Option<DataKind>,
    /// Its first frame had RSV1 (RFC 7692 §6.1).
    compressed: bool,
    frames: usize,
    payload: Vec<u8>,
    /// The last call handed out `payload`; clear it before the next frame.
    delivered: bool,
}

/// Per-connection WebSocket message decoder (server side).
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    /// permessage-deflate was agreed: RSV1 marks a compressed message.
    deflate: bool,
    assembly: Assembly,
    /// Text validation state of the message in progress.
    utf8: Utf8Validator,
    /// Payload bytes of the incomplete frame at the front of the buffer that
    /// are already unmasked (and validated, for text); `None` when that frame
    /// has not been seen yet.
    front_progress: Option<usize>,
}

impl Decoder {
    /// A decoder for a freshly opened connection.
    pub fn new(limits: Limits) -> Self {
        Decoder::with_deflate(limits, false)
    }

    /// A decoder for a connection that agreed permessage-deflate
    /// (`deflate`), whose compressed messages it hands out whole, still
    /// compressed ([`Message::CompressedText`], [`Message::CompressedBinary`]).
    pub fn with_deflate(limits: Limits, deflate: bool) -> Self {
        Decoder {
            limits,
            deflate,
            assembly: Assembly::default(),
            utf8: Utf8Validator::new(),
            front_progress: None,
        }
    }

    /// The bytes the frame at the front of `buf` needs in all, once its header
    /// is known: the connection grows its read buffer to this at once instead
    /// of doubling towards it.
    pub fn frame_len_hint(&self, buf: &[u8]) -> Option<usize> {
        parse_header_with(buf, self.limits.max_frame_bytes, self.deflate)
            .ok()
            .flatten()
            .map(|h| h.frame_len())
    }

    /// Decodes the frame at the front of `buf`, unmasking it in place.
    ///
    /// `buf` must start where the previous call's `consumed` bytes ended. An
    /// error fails the connection with [`ProtocolError::close_code`].
    pub fn decode<'a>(&'a mut self, buf: &'a mut [u8]) -> Result<Decoded<'a>, ProtocolError> {
        if self.assembly.delivered {
            self.finish_assembly();
        }
        let Some(header) = parse_header_with(buf, self.limits.max_frame_bytes, self.deflate)?
        else {
            return Ok(NEED_MORE);
        };
        let kind = self.check_sequence(&header)?;
        // A compressed text message is validated once inflated, not here.
        let compressed = header.compressed
            || (header.opcode == OpCode::Continuation && self.assembly.compressed);
        let validates_utf8 = kind == Some(DataKind::Text) && !compressed;
        let first_sight = self.front_progress.is_none();
        if first_sight && header.opcode == OpCode::Text {
            self.utf8.reset();
        }
        // parse_header returns a header only when all of it is in `buf`, so
        // this split never fails.
        let Some((_, after_header)) = buf.split_at_mut_checked(header.header_len) else {
            return Ok(NEED_MORE);
        };
        if after_header.len() < header.payload_len {
            self.advance_partial_frame(&header, kind, validates_utf8, after_header)?;
            return Ok(NEED_MORE);
        }

        let done = self.front_progress.take().unwrap_or(0);
        let frame_len = header.frame_len();
        // The whole payload has arrived: checked just above.
        let (payload, _) = after_header.split_at_mut(header.payload_len);
        // `done` counts payload bytes that had arrived (fewer than all) when
        // an earlier call saw this frame, so it is within the payload.
        let fresh = payload.get_mut(done..).unwrap_or_default();
        apply_mask(fresh, header.mask, done);
        if validates_utf8 {
            self.utf8
                .feed(fresh)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
            if header.fin {
                self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        }
        let payload: &'a [u8] = payload;
        let message = match header.opcode {
            OpCode::Ping => Some(Message::Ping(payload)),
            OpCode::Pong => Some(Message::Pong(payload)),
            OpCode::Close => Some(Message::Close(ClosePayload::parse(payload)?)),
            OpCode::Text | OpCode::Binary if header.fin => {
                Some(data_message(kind, compressed, payload))
            }
            OpCode::Text | OpCode::Binary => {
                self.assembly.kind = kind;
                self.assembly.compressed = compressed;
                self.assembly.frames = 1;
                self.assembly.payload.extend_from_slice(payload);
                None
            }
            OpCode::Continuation => {
                // check_sequence keeps `frames` below max_fragments_per_message.
                self.assembly.frames = self.assembly.frames.saturating_add(1);
                self.assembly.payload.extend_from_slice(payload);
                if header.fin {
                    self.assembly.delivered = true;
                    Some(data_message(kind, compressed, &self.assembly.payload))
                } else {
                    None
                }
            }
        };
        Ok(Decoded {
            consumed: frame_len,
            message,
        })
    }

    /// Applies §5.4's ordering rules and the size limits to a new frame, and
    /// says which kind of data message it belongs to (`None` for control).
    fn check_sequence(&self, header: &FrameHeader) -> Result<Option<DataKind>, ProtocolError> {
        let in_progress = self.assembly.kind;
        let kind = match (header.opcode, in_progress) {
            (op, _) if op.is_control() => return Ok(None),
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(kind)) => kind,
            (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
            (OpCode::Text, None) => DataKind::Text,
            (_, None) => DataKind::Binary,
        };
        let assembled = self.assembly.payload.len();
        // Checked: on a 32-bit target a large `max_frame_bytes` could make
        // the sum wrap and pass the limit.
        match assembled.checked_add(header.payload_len) {
            Some(total) if total <= self.limits.max_message_bytes => {}
            _ => return Err(ProtocolError::MessageTooLarge),
        }
        if in_progress.is_some() && self.assembly.frames >= self.limits.max_fragments_per_message {
            return Err(ProtocolError::TooManyFragments);
        }
        Ok(Some(kind))
    }

    /// Unmasks (and for text, validates) the part of an incomplete data frame
    /// that has arrived, so bad UTF-8 fails the connection without waiting
    /// for the rest of the frame.
    fn advance_partial_frame(
        &mut self,
        header: &FrameHeader,
        kind: Option<DataKind>,
        validates_utf8: bool,
        arrived: &mut [u8],
    ) -> Result<(), ProtocolError> {
        let done = self.front_progress.unwrap_or(0);
        if kind.is_none() {
            // Control payloads are at most 125 bytes: handled whole.
            self.front_progress = Some(0);
            return Ok(());
        }
        let arrived_len = arrived.len();
        // The buffer only grows between calls for the same frame, so the
        // bytes unmasked last time are still all there.
        let fresh = arrived.get_mut(done..).unwrap_or_default();
        apply_mask(fresh, header.mask, done);
        if validates_utf8 {
            self.utf8
                .feed(fresh)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        self.front_progress = Some(arrived_len);
        Ok(())
    }

    fn finish_assembly(&mut self) {
        let mut payload = std::mem::take(&mut self.assembly.payload);
        payload.clear();
        if payload.capacity() > RETAINED_ASSEMBLY_BYTES {
            payload = Vec::new();
        }
        self.assembly = Assembly {
            payload,
            ..Assembly::default()
        };
    }
}

const NEED_MORE: Decoded<'static> = Decoded {
    consumed: 0,
    message: None,
};

fn data_message(kind: Option<DataKind>, compressed: bool, payload: &[u8]) -> Message<'_> {
    match (kind, compressed) {
        (Some(DataKind::Text), false) => Message::Text(payload),
        (Some(DataKind::Text), true) => Message::CompressedText(payload),
        (_, false) => Message::Binary(payload),
        (_, true) => Message::CompressedBinary(payload),
    }
}

#[cfg(test)]
// Tests index and count freely: a panic there is a failed test.
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod tests;
