//! The WebSocket phase of a connection (RFC 6455 §5–§7): frames decoded in
//! place, each message handed to the endpoint (echo, or the pub/sub
//! session), control frames answered, the peer's liveness kept with pings.
//!
//! The phase only queues bytes on the connection's outbound queue and says
//! what the connection must do next ([`Step`]); the connection owns the
//! socket and the transitions (failing with a close code, draining).
//!
//! With permessage-deflate agreed (RFC 7692), a compressed message is
//! inflated by the worker's one inflater, bounded by
//! `websocket.max_message_bytes` (1009 past it), and checked as UTF-8 (1007)
//! before the endpoint sees it; corrupt deflate data fails with 1002.

use std::time::Instant;

use crate::net::context::Ctx;
use crate::net::out_queue::OutQueue;
use crate::net::rate_limit::MessageBudget;
use crate::net::session::Session;
use crate::net::settings::Settings;
use crate::protocol::close::CloseCode;
use crate::protocol::decoder::{Decoder, Message};
use crate::protocol::error::ProtocolError;
use crate::protocol::frame::{write_close_frame, write_compressed_frame, write_frame, OpCode};
use crate::tick::deflate::compress_message;

/// What an open WebSocket does with the messages it receives.
#[derive(Debug)]
pub(super) enum Endpoint {
    Echo,
    PubSub(Box<Session>),
}

/// An open WebSocket: its decoder, endpoint, message budget and liveness.
#[derive(Debug)]
pub(super) struct WebSocketPhase {
    decoder: Decoder,
    /// The window agreed for permessage-deflate, when it was agreed.
    deflate_window: Option<u8>,
    pub(super) endpoint: Endpoint,
    budget: MessageBudget,
    /// When the peer last sent anything.
    last_heard: Instant,
    ping_outstanding: bool,
}

/// What acting on input led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// `n` bytes were used; there may be another message after them.
    Consumed(usize),
    /// The rest is an incomplete frame.
    NeedMore,
    /// Fail the connection: close with this code and reason (§7.1.2).
    Fail(CloseCode, &'static str),
    /// The peer closed; its close was echoed (§5.5.1) and TCP is ours to end.
    PeerClosed,
}

impl WebSocketPhase {
    /// A WebSocket just upgraded, its request heard `now`; `deflate`:
    /// permessage-deflate was agreed.
    pub(super) fn new(
        endpoint: Endpoint,
        settings: &Settings,
        now: Instant,
        deflate_window: Option<u8>,
    ) -> Self {
        WebSocketPhase {
            decoder: Decoder::with_deflate(settings.frame_limits, deflate_window.is_some()),
            deflate_window,
            endpoint,
            budget: MessageBudget::new(settings.max_messages_per_sec, now),
            last_heard: now,
            ping_outstanding: false,
        }
    }

    /// The bytes the frame at the front of `pending` needs in all, if known.
    pub(super) fn frame_len_hint(&self, pending: &[u8]) -> usize {
        self.decoder.frame_len_hint(pending).unwrap_or(0)
    }

    /// The peer sent something: it is alive.
    pub(super) fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.ping_outstanding = false;
    }

    /// Acts on the frame at the front of `bytes`.
    pub(super) fn on_bytes(
        &mut self,
        out: &mut OutQueue,
        bytes: &mut [u8],
        ctx: &mut Ctx<'_>,
    ) -> Step {
        let decoded = match self.decoder.decode(bytes) {
            Ok(decoded) => decoded,
            Err(error) => return Step::Fail(error.close_code(), error.reason()),
        };
        if decoded.needs_more() {
            return Step::NeedMore;
        }
        let consumed = decoded.consumed;
        let Some(message) = decoded.message else {
            return Step::Consumed(consumed);
        };
        if !self
            .budget
            .spend(ctx.settings.max_messages_per_sec, ctx.now)
        {
            return Step::Fail(CloseCode::POLICY_VIOLATION, "rate limit");
        }
        let outcome = match message {
            Message::CompressedText(payload) => {
                let window = self.deflate_window;
                inflate_then_act(&mut self.endpoint, out, payload, true, window, ctx)
            }
            Message::CompressedBinary(payload) => {
                let window = self.deflate_window;
                inflate_then_act(&mut self.endpoint, out, payload, false, window, ctx)
            }
            message => act(&mut self.endpoint, out, message, ctx),
        };
        match outcome {
            Outcome::Done => Step::Consumed(consumed),
            Outcome::Fail(code, reason) => Step::Fail(code, reason),
            Outcome::PeerClosed => Step::PeerClosed,
        }
    }

    /// When the peer must next be pinged or given up on.
    pub(super) fn liveness_deadline(&self, settings: &Settings) -> Instant {
        if self.ping_outstanding {
            self.last_heard + settings.idle_timeout
        } else {
            self.last_heard + settings.ping_interval.min(settings.idle_timeout)
        }
    }

    /// At a deadline: pings a quiet peer (once), or gives up on a silent one.
    pub(super) fn check_liveness(
        &mut self,
        out: &mut OutQueue,
        settings: &Settings,
        now: Instant,
    ) -> Option<(CloseCode, &'static str)> {
        if now >= self.last_heard + settings.idle_timeout {
            return Some((CloseCode::GOING_AWAY, "idle timeout"));
        }
        if !self.ping_outstanding && now >= self.last_heard + settings.ping_interval {
            self.ping_outstanding = true;
            out.append(|buf| write_frame(buf, OpCode::Ping, b""));
        }
        None
    }
}

/// What handing one message to the endpoint led to.
enum Outcome {
    Done,
    Fail(CloseCode, &'static str),
    PeerClosed,
}

/// Inflates a compressed message (RFC 7692 §7.2.2) with the worker's
/// inflater, bounded by `max_message_bytes`, checks a text message's UTF-8
/// (RFC 6455 §8.1), and acts on it as if it had come uncompressed — but the
/// echo route answers in kind, compressed with the agreed `window`.
fn inflate_then_act(
    endpoint: &mut Endpoint,
    out: &mut OutQueue,
    payload: &[u8],
    text: bool,
    window: Option<u8>,
    ctx: &mut Ctx<'_>,
) -> Outcome {
    let max = ctx.settings.frame_limits.max_message_bytes;
    let inflated = match ctx.inflater.inflate(payload, max) {
        Ok(inflated) => inflated,
        Err(error) => return Outcome::Fail(error.close_code(), error.reason()),
    };
    ctx.stats.inflated_messages += 1;
    ctx.stats.inflated_bytes += inflated.len() as u64;
    let opcode = if text { OpCode::Text } else { OpCode::Binary };
    let outcome = if text && std::str::from_utf8(&inflated).is_err() {
        let error = ProtocolError::InvalidUtf8;
        Outcome::Fail(error.close_code(), error.reason())
    } else if let (Endpoint::Echo, Some(window)) = (&endpoint, window) {
        echo_compressed(out, opcode, &inflated, window, ctx.settings.deflate_level);
        Outcome::Done
    } else if text {
        act(endpoint, out, Message::Text(&inflated), ctx)
    } else {
        act(endpoint, out, Message::Binary(&inflated), ctx)
    };
    ctx.inflater.recycle(inflated);
    outcome
}

/// Echoes a message that came compressed, compressed again (with no
/// context: a stream of its own), or plain if compressing fails.
fn echo_compressed(out: &mut OutQueue, opcode: OpCode, message: &[u8], window: u8, level: u32) {
    let mut compressed = Vec::new();
    if compress_message(message, level, window, &mut compressed).is_some() {
        out.append(|buf| write_compressed_frame(buf, opcode, &compressed));
    } else {
        out.append(|buf| write_frame(buf, opcode, message));
    }
}

/// Hands one whole (uncompressed) message or control frame to the endpoint.
fn act(
    endpoint: &mut Endpoint,
    out: &mut OutQueue,
    message: Message<'_>,
    ctx: &mut Ctx<'_>,
) -> Outcome {
    let outcome = match (message, endpoint) {
        (Message::Text(payload), Endpoint::Echo) => {
            out.append(|buf| write_frame(buf, OpCode::Text, payload));
            Ok(())
        }
        (Message::Binary(payload), Endpoint::Echo) => {
            out.append(|buf| write_frame(buf, OpCode::Binary, payload));
            Ok(())
        }
        (Message::Text(payload), Endpoint::PubSub(session)) => session.on_text(out, payload, ctx),
        (Message::Binary(_), Endpoint::PubSub(session)) => session.on_binary(out, ctx.now),
        // Inflated by the caller; never handed here still compressed.
        (Message::CompressedText(_) | Message::CompressedBinary(_), _) => {
            let error = ProtocolError::BadDeflateData;
            return Outcome::Fail(error.close_code(), error.reason());
        }
        // §5.5.2: a pong "MUST have identical Application data" to the ping.
        (Message::Ping(payload), _) => {
            out.append(|buf| write_frame(buf, OpCode::Pong, payload));
            Ok(())
        }
        // §5.5.3: an unsolicited pong needs no answer; being heard from is enough.
        (Message::Pong(_), _) => Ok(()),
        (Message::Close(close), _) => {
            // §5.5.1: echo the status code, then the server closes TCP first (§7.1.1).
            out.append(|buf| match close.code {
                Some(code) => write_close_frame(buf, code.0, ""),
                None => write_frame(buf, OpCode::Close, &[]),
            });
            if let Some(code) = close.code {
                ctx.stats.count_close(code.0);
            }
            return Outcome::PeerClosed;
        }
    };
    match outcome {
        Ok(()) => Outcome::Done,
        Err(close) => Outcome::Fail(close.code, close.reason),
    }
}
