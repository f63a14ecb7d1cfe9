//! One client connection: its socket, the phase it is in (HTTP request,
//! WebSocket, draining) and what it has to send.
//!
//! The connection turns inbound bytes into actions through the pure layers
//! (`http`, `protocol`) and owns the resulting writes. Its worker tells it
//! when the socket is readable or writable and when its deadline passes; it
//! answers whether it wants to live on.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Instant;

use mio::net::TcpStream;

use super::read_buf::ReadBuf;
use super::settings::Settings;
use crate::http::request::{parse_request, Parsed, Request};
use crate::http::response::Response;
use crate::http::router::{http_route, websocket_route, HttpRoute, RouteError, WebSocketRoute};
use crate::protocol::close::CloseCode;
use crate::protocol::decoder::{Decoder, Message};
use crate::protocol::frame::{write_close_frame, write_frame, OpCode};
use crate::protocol::handshake::{accept_key, upgrade_request, write_switching_protocols};

/// Reads per readiness event before the connection yields to the others
/// (it is then re-queued by the worker, as no new edge will come).
const READS_PER_TURN: usize = 16;

/// Whether the worker keeps the connection after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Close,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for (the rest of) an HTTP request head.
    Http,
    WebSocket {
        decoder: Decoder,
        route: WebSocketRoute,
    },
    /// Sending what is queued, then closing. With `linger`, the write side is
    /// shut first and reads are discarded until the peer closes (or the close
    /// timeout), so unread input cannot turn our last bytes into a reset.
    Draining { linger: bool },
}

/// What processing a run of input bytes led to.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    /// Some bytes were used; there may be more to process.
    Continue,
    /// The rest needs more bytes to arrive (or is to be discarded).
    NeedMore,
}

/// A client connection owned by one worker.
#[derive(Debug)]
pub struct Connection {
    socket: TcpStream,
    phase: Phase,
    /// Input kept between reads: an incomplete request head or frame.
    pending: ReadBuf,
    out: Vec<u8>,
    out_sent: usize,
    write_shut: bool,
    /// When the phase began (handshake and close deadlines count from it).
    phase_since: Instant,
    /// When the peer last sent anything.
    last_heard: Instant,
    ping_outstanding: bool,
    /// Reads stopped before `WouldBlock`; the worker must call again.
    read_unfinished: bool,
    /// Accepted over the connection limit: every request gets 503.
    over_limit: bool,
    /// The deadline this connection has filed with the worker's timers.
    pub timer_at: Option<Instant>,
}

impl Connection {
    /// A connection just accepted, waiting for its HTTP request.
    pub fn new(socket: TcpStream, now: Instant, over_limit: bool) -> Self {
        Connection {
            socket,
            phase: Phase::Http,
            pending: ReadBuf::default(),
            out: Vec::new(),
            out_sent: 0,
            write_shut: false,
            phase_since: now,
            last_heard: now,
            ping_outstanding: false,
            read_unfinished: false,
            over_limit,
            timer_at: None,
        }
    }

    /// The socket, for (de)registration with the worker's poll.
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        &mut self.socket
    }

    pub fn is_websocket(&self) -> bool {
        matches!(self.phase, Phase::WebSocket { .. })
    }

    /// Whether the worker should call [`Self::on_readable`] again without
    /// waiting for an event: reads stopped early and can go on now.
    pub fn wants_reread(&self, settings: &Settings) -> bool {
        self.read_unfinished && self.queued_bytes() < settings.out_pause_bytes()
    }

    fn queued_bytes(&self) -> usize {
        self.out.len() - self.out_sent
    }

    /// Reads what the socket has, up to a per-turn budget, and acts on it.
    pub fn on_readable(
        &mut self,
        scratch: &mut ReadBuf,
        settings: &Settings,
        now: Instant,
    ) -> Verdict {
        self.read_unfinished = false;
        for _ in 0..READS_PER_TURN {
            if self.queued_bytes() >= settings.out_pause_bytes() {
                // Backpressure: the peer is not reading what we send.
                self.read_unfinished = true;
                return Verdict::Keep;
            }
            let from_scratch = self.pending.is_empty();
            let mut input = if from_scratch {
                std::mem::take(scratch)
            } else {
                std::mem::take(&mut self.pending)
            };
            let result = self.read_into(&mut input, settings);
            let verdict = match result {
                Ok(0) => Some(Verdict::Close),
                Ok(_) => {
                    self.last_heard = now;
                    self.ping_outstanding = false;
                    let verdict = self.process(&mut input, settings, now);
                    Some(verdict).filter(|v| *v == Verdict::Close)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.restore(input, scratch, from_scratch);
                    return Verdict::Keep;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
                Err(_) => Some(Verdict::Close),
            };
            self.restore(input, scratch, from_scratch);
            if let Some(verdict) = verdict {
                return verdict;
            }
        }
        self.read_unfinished = true;
        Verdict::Keep
    }

    fn read_into(&mut self, input: &mut ReadBuf, settings: &Settings) -> io::Result<usize> {
        let frame_hint = match &self.phase {
            Phase::WebSocket { decoder, .. } => {
                decoder.frame_len_hint(input.filled_mut()).unwrap_or(0)
            }
            _ => 0,
        };
        let _ = settings;
        let spare = input.spare_mut(4096, frame_hint);
        let n = self.socket.read(spare)?;
        input.commit(n);
        Ok(n)
    }

    /// Puts the input buffer back where it came from; the unconsumed tail of
    /// the shared scratch buffer moves into this connection's own buffer.
    fn restore(&mut self, mut input: ReadBuf, scratch: &mut ReadBuf, from_scratch: bool) {
        if from_scratch {
            if !input.is_empty() {
                let hint = match &self.phase {
                    Phase::WebSocket { decoder, .. } => {
                        decoder.frame_len_hint(input.filled_mut()).unwrap_or(0)
                    }
                    _ => 0,
                };
                self.pending.keep(input.filled_mut(), hint);
                let len = input.filled_mut().len();
                input.consume(len);
            }
            *scratch = input;
        } else {
            input.release_if_empty();
            self.pending = input;
        }
    }

    /// Acts on every complete request or frame at the front of `input`.
    fn process(&mut self, input: &mut ReadBuf, settings: &Settings, now: Instant) -> Verdict {
        loop {
            let bytes = input.filled_mut();
            if bytes.is_empty() {
                return Verdict::Keep;
            }
            let (consumed, flow) = match self.phase {
                Phase::Http => self.on_http_bytes(bytes, settings, now),
                Phase::WebSocket { .. } => self.on_websocket_bytes(bytes, now),
                // Whatever arrives while draining is read only to be dropped.
                Phase::Draining { .. } => (bytes.len(), Flow::NeedMore),
            };
            input.consume(consumed);
            if flow == Flow::NeedMore {
                return Verdict::Keep;
            }
        }
    }

    fn on_http_bytes(
        &mut self,
        bytes: &mut [u8],
        settings: &Settings,
        now: Instant,
    ) -> (usize, Flow) {
        let request = match parse_request(bytes, settings.max_header_bytes) {
            Ok(Parsed::Partial) => return (0, Flow::NeedMore),
            Ok(Parsed::Complete(request)) => request,
            Err(error) => {
                self.respond_and_close(error.response(), now);
                return (bytes.len(), Flow::NeedMore);
            }
        };
        let head_len = request.head_len;
        if self.over_limit {
            let refusal = Response::error(503, "server at its connection limit");
            self.respond_and_close(refusal, now);
            return (bytes.len(), Flow::NeedMore);
        }
        match upgrade_request(&request) {
            Err(error) => {
                self.respond_and_close(error.response(), now);
                (bytes.len(), Flow::NeedMore)
            }
            Ok(Some(upgrade)) => match websocket_route(upgrade.path, settings.echo_path.as_deref())
            {
                Ok(route) => {
                    write_switching_protocols(
                        &mut self.out,
                        &accept_key(upgrade.key),
                        upgrade.subprotocol,
                    );
                    self.enter(
                        Phase::WebSocket {
                            decoder: Decoder::new(settings.frame_limits),
                            route,
                        },
                        now,
                    );
                    (head_len, Flow::Continue)
                }
                Err(error) => {
                    self.respond_and_close(route_error_response(error), now);
                    (bytes.len(), Flow::NeedMore)
                }
            },
            Ok(None) => self.on_plain_request(&request, bytes.len(), now),
        }
    }

    /// Answers a non-upgrade request; keeps the connection for the next
    /// request when HTTP keep-alive allows and no body needs skipping.
    fn on_plain_request(
        &mut self,
        request: &Request<'_>,
        available: usize,
        now: Instant,
    ) -> (usize, Flow) {
        let response = match http_route(request.method, request.path) {
            Ok(HttpRoute::Health) => Response::error(200, "ok"),
            Err(error) => route_error_response(error),
        };
        let has_body = !matches!(request.content_length(), Ok(None) | Ok(Some(0)));
        if request.keep_alive() && !has_body {
            response.write_to(&mut self.out);
            self.phase_since = now;
            (request.head_len, Flow::Continue)
        } else {
            self.respond_and_close(response, now);
            (available, Flow::NeedMore)
        }
    }

    fn on_websocket_bytes(&mut self, bytes: &mut [u8], now: Instant) -> (usize, Flow) {
        let Phase::WebSocket { decoder, route } = &mut self.phase else {
            return (0, Flow::NeedMore);
        };
        let route = *route;
        let decoded = match decoder.decode(bytes) {
            Ok(decoded) => decoded,
            Err(error) => {
                self.fail(error.close_code(), error.reason(), now);
                return (bytes.len(), Flow::NeedMore);
            }
        };
        if decoded.needs_more() {
            return (0, Flow::NeedMore);
        }
        let consumed = decoded.consumed;
        let Some(message) = decoded.message else {
            return (consumed, Flow::Continue);
        };
        match message {
            Message::Text(payload) => on_data(&mut self.out, route, OpCode::Text, payload),
            Message::Binary(payload) => on_data(&mut self.out, route, OpCode::Binary, payload),
            // §5.5.2: a pong "MUST have identical Application data" to the ping.
            Message::Ping(payload) => write_frame(&mut self.out, OpCode::Pong, payload),
            // §5.5.3: an unsolicited pong needs no answer; being heard from is enough.
            Message::Pong(_) => {}
            Message::Close(close) => {
                // §5.5.1: echo the status code, then the server closes TCP first (§7.1.1).
                match close.code {
                    Some(code) => write_close_frame(&mut self.out, code.0, ""),
                    None => write_frame(&mut self.out, OpCode::Close, &[]),
                }
                self.enter(Phase::Draining { linger: false }, now);
                return (bytes.len(), Flow::NeedMore);
            }
        }
        (consumed, Flow::Continue)
    }

    /// Starts the closing handshake from our side with `code` (§7.1.2) and
    /// stops acting on input: used for protocol errors, timeouts and shutdown.
    pub fn fail(&mut self, code: CloseCode, reason: &str, now: Instant) {
        write_close_frame(&mut self.out, code.0, reason);
        self.enter(Phase::Draining { linger: true }, now);
    }

    fn respond_and_close(&mut self, response: Response, now: Instant) {
        response.close().write_to(&mut self.out);
        self.enter(Phase::Draining { linger: true }, now);
    }

    fn enter(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.phase_since = now;
    }

    /// Writes as much of the queued output as the socket takes.
    pub fn flush(&mut self) -> Verdict {
        while self.out_sent < self.out.len() {
            match self.socket.write(&self.out[self.out_sent..]) {
                Ok(0) => return Verdict::Close,
                Ok(n) => self.out_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Verdict::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Verdict::Close,
            }
        }
        self.out.clear();
        self.out_sent = 0;
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
        match self.phase {
            Phase::Draining { linger: false } => Verdict::Close,
            Phase::Draining { linger: true } if !self.write_shut => {
                self.write_shut = true;
                match self.socket.shutdown(Shutdown::Write) {
                    Ok(()) => Verdict::Keep,
                    Err(_) => Verdict::Close,
                }
            }
            _ => Verdict::Keep,
        }
    }

    /// When this connection next needs the worker's attention without I/O.
    pub fn deadline(&self, settings: &Settings) -> Instant {
        match self.phase {
            Phase::Http => self.phase_since + settings.handshake_timeout,
            Phase::WebSocket { .. } if self.ping_outstanding => {
                self.last_heard + settings.idle_timeout
            }
            Phase::WebSocket { .. } => {
                self.last_heard + settings.ping_interval.min(settings.idle_timeout)
            }
            Phase::Draining { .. } => self.phase_since + settings.close_timeout,
        }
    }

    /// Acts on a passed deadline: pings a quiet peer, closes a silent one,
    /// and ends handshakes and closing handshakes that take too long.
    pub fn on_deadline(&mut self, settings: &Settings, now: Instant) -> Verdict {
        if now < self.deadline(settings) {
            return Verdict::Keep;
        }
        match self.phase {
            Phase::Http => {
                // Best effort: a client that stalls its request hears why.
                let mut answer = Vec::new();
                Response::error(408, "request head not received in time")
                    .close()
                    .write_to(&mut answer);
                let _ = self.socket.write(&answer);
                Verdict::Close
            }
            Phase::WebSocket { .. } if now >= self.last_heard + settings.idle_timeout => {
                self.fail(CloseCode::GOING_AWAY, "idle timeout", now);
                Verdict::Keep
            }
            Phase::WebSocket { .. } => {
                write_frame(&mut self.out, OpCode::Ping, b"");
                self.ping_outstanding = true;
                Verdict::Keep
            }
            Phase::Draining { .. } => Verdict::Close,
        }
    }

    /// The server is stopping: WebSocket peers get close 1001, idle HTTP
    /// connections end now.
    pub fn begin_shutdown(&mut self, now: Instant) -> Verdict {
        match self.phase {
            Phase::WebSocket { .. } => {
                self.fail(CloseCode::GOING_AWAY, "server shutting down", now);
                Verdict::Keep
            }
            Phase::Http if self.queued_bytes() == 0 && self.pending.is_empty() => Verdict::Close,
            Phase::Http => {
                self.enter(Phase::Draining { linger: true }, now);
                Verdict::Keep
            }
            Phase::Draining { .. } => Verdict::Keep,
        }
    }
}

/// A data message on an open WebSocket, acted on by its route.
fn on_data(out: &mut Vec<u8>, route: WebSocketRoute, opcode: OpCode, payload: &[u8]) {
    match route {
        WebSocketRoute::Echo => write_frame(out, opcode, payload),
    }
}

fn route_error_response(error: RouteError) -> Response {
    match error {
        RouteError::NotFound => Response::error(404, "no such route"),
        RouteError::MethodNotAllowed { allow } => {
            Response::error(405, "method not allowed").allow(allow)
        }
    }
}
