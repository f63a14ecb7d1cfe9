//! One client connection: its socket, the phase it is in (HTTP request,
//! WebSocket, SSE stream, held long-poll, draining) and what it has to send.
//!
//! The connection turns inbound bytes into actions through the pure layers
//! (`http`, `protocol`) and owns the resulting writes. Its worker tells it
//! when the socket is readable or writable and when its deadline passes; it
//! answers whether it wants to live on.
//!
//! A connection acts on bytes a client sent, so this module and its phases
//! are held to the lints that keep a panic from being reachable from the
//! network (tests are exempt). Its arithmetic is on monotonic `Instant`s
//! plus configured `Duration`s (at most `u64::MAX` ms, which an `Instant`'s
//! 64-bit seconds hold) and on `u64` counters (which a broker cannot wrap in
//! centuries), so `arithmetic_side_effects` is left out; lengths use
//! saturating operations.
#![cfg_attr(
    not(test),
    deny(
        clippy::cast_possible_truncation,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used
    )
)]

mod awaited_publish;
mod fault_injection;
mod held_poll;
mod http_routes;
mod websocket;

use std::borrow::Cow;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use prometheus::local::LocalHistogram;

use self::awaited_publish::AwaitedPublish;
use self::held_poll::HeldPoll;
use self::websocket::{Endpoint, Step, WebSocketPhase};
use super::conn_io::ConnIo;
use super::context::{Ctx, Transport, WorkerStats};
use super::fanout::SlowConsumer;
use super::out_queue::{Wire, Written};
use super::read_buf::ReadBuf;
use super::session::{Session, TokenDue};
use super::settings::Settings;
use super::settings::SlowConsumerPolicy;
use super::tls_outcome;
use crate::broker::auth::{Access, Rights};
use crate::broker::events;
use crate::broker::pending_ticks::Owed;
use crate::http::refusal::Refusal;
use crate::http::request::{parse_request, Parsed, Request};
use crate::http::response::Response;
use crate::http::router::{websocket_route, WebSocketRoute};
use crate::http::upgrade::{subprotocol_token, upgrade_request, Upgrade};
use crate::protocol::close::CloseCode;
use crate::protocol::frame::write_close_frame;
use crate::protocol::handshake::{accept_key, write_switching_protocols};
use crate::tick::{now_micros, Tick, TopicId};

/// Reads per readiness event before the connection yields to the others
/// (it is then re-queued by the worker, as no new edge will come).
const READS_PER_TURN: usize = 16;

/// How far a read buffer may grow ahead of the bytes in it (see
/// [`Connection::size_hint`]).
const GROW_AHEAD_BYTES: usize = 64 * 1024;

/// How long a paused publisher waits before the backlog is looked at again.
const PUBLISH_PAUSE: Duration = Duration::from_millis(2);

/// Which connection limit an accepted connection is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// `server.max_connections`.
    Broker,
    /// `server.max_connections_per_ip`.
    PeerAddress,
}

impl OverLimit {
    /// What the connection's first request is answered with.
    fn refusal(self) -> Refusal {
        match self {
            OverLimit::Broker => Refusal::ConnectionLimit,
            OverLimit::PeerAddress => Refusal::PeerConnectionLimit,
        }
    }
}

/// Whether the worker keeps the connection after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Close,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for (the rest of) an HTTP request head, or its body.
    Http(AwaitedBody),
    WebSocket(WebSocketPhase),
    /// A Server-Sent Events stream: subscriptions like a WebSocket's, ticks
    /// in the SSE encoding, and nothing read from the client but its EOF.
    Sse(Box<Session>),
    /// A long-poll held until a tick arrives or its deadline passes.
    Polling(Box<HeldPoll>),
    /// Cluster mode: a `POST /publish` held until the stream has stored
    /// its ticks (or given them up), or its deadline passes.
    AwaitingStored(Box<AwaitedPublish>),
    /// Sending what is queued, then closing. With `linger`, the write side is
    /// shut first and reads are discarded until the peer closes (or the close
    /// timeout), so unread input cannot turn our last bytes into a reset.
    Draining {
        linger: bool,
    },
}

/// What the HTTP phase keeps about a request whose body is still coming.
#[derive(Debug, Default)]
struct AwaitedBody {
    /// Bytes the request needs in all (head + body), so the read buffer
    /// grows toward it.
    wanted: usize,
    /// `100 Continue` was sent: the head is parsed again on every read
    /// until the body is in, and must get one `100` in all.
    continue_sent: bool,
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
    /// The socket, pending input and outbound queue: all I/O goes through it.
    io: ConnIo,
    phase: Phase,
    /// When the phase began (handshake and close deadlines count from it).
    phase_since: Instant,
    /// Reads stopped before `WouldBlock`; the worker must call again.
    read_unfinished: bool,
    /// Accepted over a connection limit: every request gets 503.
    over_limit: Option<OverLimit>,
    /// The client's address, when `server.max_connections_per_ip` counts
    /// it (released when the connection closes).
    counted_peer: Option<IpAddr>,
    /// What the connection is used for, for metrics (kept while draining).
    transport: Transport,
    /// Reading is paused until then: mailboxes are backed up and this
    /// connection may publish.
    read_paused_until: Option<Instant>,
    /// `pending` holds input that arrived while a long-poll was held and
    /// must be acted on before reading more (no readiness edge will come).
    pending_unprocessed: bool,
}

impl Connection {
    /// A connection just accepted, waiting for its HTTP request.
    pub fn new(
        io: ConnIo,
        now: Instant,
        over_limit: Option<OverLimit>,
        counted_peer: Option<IpAddr>,
    ) -> Self {
        let transport = if io.is_tls() {
            Transport::Tls
        } else {
            Transport::Http
        };
        Connection {
            io,
            phase: Phase::Http(AwaitedBody::default()),
            phase_since: now,
            read_unfinished: false,
            over_limit,
            counted_peer,
            transport,
            pending_unprocessed: false,
            read_paused_until: None,
        }
    }

    /// The client address counted against `server.max_connections_per_ip`.
    pub fn counted_peer(&self) -> Option<IpAddr> {
        self.counted_peer
    }

    /// Records what the connection is used for now (over TLS, as such);
    /// returns the label it is counted under.
    fn set_transport(&mut self, transport: Transport) -> Transport {
        self.transport = self.counted_as(transport);
        self.transport
    }

    /// The label `transport` is counted under on this connection.
    fn counted_as(&self, transport: Transport) -> Transport {
        if self.io.is_tls() {
            transport.over_tls()
        } else {
            transport
        }
    }

    /// What the connection is used for now.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The socket, for (de)registration with the worker's poll.
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        self.io.socket_mut()
    }

    pub fn is_websocket(&self) -> bool {
        matches!(self.phase, Phase::WebSocket(_))
    }

    /// The pub/sub session, if this is an open pub/sub WebSocket or an SSE stream.
    pub fn session_mut(&mut self) -> Option<&mut Session> {
        match &mut self.phase {
            Phase::WebSocket(WebSocketPhase {
                endpoint: Endpoint::PubSub(session),
                ..
            })
            | Phase::Sse(session) => Some(session),
            _ => None,
        }
    }

    /// Takes every topic subscription this connection holds (it is closing).
    pub fn take_topics(&mut self) -> Vec<(std::sync::Arc<str>, TopicId)> {
        match &mut self.phase {
            Phase::Polling(poll) => poll.take_topics(),
            _ => self
                .session_mut()
                .map(Session::take_topics)
                .unwrap_or_default(),
        }
    }

    /// Appends the ids of the topics subscribed to `ids`.
    pub fn topic_ids(&mut self, ids: &mut Vec<TopicId>) {
        match &mut self.phase {
            Phase::Polling(poll) => ids.extend(poll.topic_ids()),
            _ => {
                if let Some(session) = self.session_mut() {
                    ids.extend(session.topics().map(|(_, id)| *id));
                }
            }
        }
    }

    /// The number of topics subscribed, for the subscriptions gauge.
    pub fn topic_count(&mut self) -> usize {
        match &mut self.phase {
            Phase::Polling(poll) => poll.topic_count(),
            _ => self.session_mut().map_or(0, |s| s.topics().count()),
        }
    }

    /// Whether this is a long-poll being held.
    pub fn is_held_poll(&self) -> bool {
        matches!(self.phase, Phase::Polling(_))
    }

    /// Whether the worker should call [`Self::on_readable`] again without
    /// waiting for an event: reads stopped early and can go on now.
    pub fn wants_reread(&self, settings: &Settings) -> bool {
        self.read_unfinished && self.queued_bytes() < settings.out_pause_bytes()
    }

    /// Whether input on this connection may turn into publishes: an HTTP
    /// request (`POST /publish`) or a WebSocket session with publish rights.
    fn may_publish(&self) -> bool {
        match &self.phase {
            Phase::Http(_) => true,
            Phase::WebSocket(WebSocketPhase {
                endpoint: Endpoint::PubSub(session),
                ..
            }) => session.can_publish(),
            _ => false,
        }
    }

    /// Whether the queue is over the bound past which no more input is
    /// acted on (in a phase whose input turns into answers).
    fn answers_pile_up(&self, settings: &Settings) -> bool {
        matches!(self.phase, Phase::Http(_) | Phase::WebSocket(_))
            && self.queued_bytes() >= settings.out_pause_bytes()
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.io.out.len()
    }

    /// Reads what the socket has, up to a per-turn budget, and acts on it.
    pub fn on_readable(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        self.read_unfinished = false;
        let now = ctx.now;
        if self.read_paused_until.is_some() {
            return Verdict::Keep; // resumed by its deadline
        }
        // Backpressure that reaches a publisher faster than fan-out through
        // TCP, instead of growing the mailboxes without bound.
        // In cluster mode a full publish window pauses WebSocket publishers
        // too; HTTP connections are answered instead (see
        // `TopicTable::publish_window_full`).
        if self.may_publish()
            && (ctx.table.mailbox_backlog() > ctx.settings.max_mailbox_ticks
                || (self.is_websocket() && ctx.table.publish_window_full()))
        {
            self.read_paused_until = Some(now + PUBLISH_PAUSE);
            ctx.stats.publisher_pauses += 1;
            return Verdict::Keep;
        }
        // A TLS handshake costs real CPU: only so many per loop turn, the
        // rest resumed by the worker in the next one.
        if self.io.is_handshaking() {
            if *ctx.tls_handshakes_left == 0 {
                self.read_unfinished = true;
                return Verdict::Keep;
            }
            *ctx.tls_handshakes_left -= 1;
        }
        if std::mem::take(&mut self.pending_unprocessed) {
            let mut input = std::mem::take(&mut self.io.pending);
            let verdict = self.process(&mut input, ctx);
            self.restore(input, ctx.scratch, false);
            if verdict == Verdict::Close {
                return verdict;
            }
        }
        for _ in 0..READS_PER_TURN {
            if self.queued_bytes() >= ctx.settings.out_pause_bytes() {
                // Backpressure: the peer is not reading what we send.
                self.read_unfinished = true;
                return Verdict::Keep;
            }
            let from_scratch = self.io.pending.is_empty();
            let mut input = if from_scratch {
                std::mem::take(ctx.scratch)
            } else {
                std::mem::take(&mut self.io.pending)
            };
            let tls_handshaking = self.io.is_handshaking();
            let result = self.read_into(&mut input);
            if tls_handshaking {
                tls_outcome::count_read(&self.io, &result, ctx.stats);
            }
            let verdict = match result {
                Ok(0) => {
                    // The peer half-closed: what it asked for before that
                    // (a response, a close echo) still goes out, best effort.
                    let _ = self.io.flush();
                    Some(Verdict::Close)
                }
                Ok(n) => {
                    ctx.stats.bytes_in += n as u64;
                    if let Phase::WebSocket(websocket) = &mut self.phase {
                        websocket.heard(now);
                    }
                    let verdict = self.process(&mut input, ctx);
                    Some(verdict).filter(|v| *v == Verdict::Close)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.restore(input, ctx.scratch, from_scratch);
                    return Verdict::Keep;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
                Err(_) => Some(Verdict::Close),
            };
            self.restore(input, ctx.scratch, from_scratch);
            if let Some(verdict) = verdict {
                return verdict;
            }
        }
        self.read_unfinished = true;
        Verdict::Keep
    }

    /// The size to give the buffer holding `pending`: what the request or
    /// frame at its front needs in all, when known, so a buffer is sized
    /// once — but never more than [`GROW_AHEAD_BYTES`] or twice what has
    /// arrived. A header is a promise, not bytes: ten bytes announcing a
    /// 1 MiB frame (or a head announcing a 1 MiB body) must not cost 1 MiB
    /// of memory until the bytes come, or a few thousand stalled clients
    /// would cost gigabytes. Doubling keeps the copies linear.
    fn size_hint(&self, pending: &[u8]) -> usize {
        let announced = match &self.phase {
            Phase::WebSocket(websocket) => websocket.frame_len_hint(pending),
            Phase::Http(body) => body.wanted,
            _ => 0,
        };
        announced.min(pending.len().saturating_mul(2).max(GROW_AHEAD_BYTES))
    }

    fn read_into(&mut self, input: &mut ReadBuf) -> io::Result<usize> {
        let hint = self.size_hint(input.filled_mut());
        self.io.receive(input, hint)
    }

    /// Puts the input buffer back where it came from; the unconsumed tail of
    /// the shared scratch buffer moves into this connection's own buffer.
    fn restore(&mut self, mut input: ReadBuf, scratch: &mut ReadBuf, from_scratch: bool) {
        if from_scratch {
            if !input.is_empty() {
                let hint = self.size_hint(input.filled_mut());
                self.io.pending.keep(input.filled_mut(), hint);
                let len = input.filled_mut().len();
                input.consume(len);
            }
            *scratch = input;
        } else {
            input.release_if_empty();
            self.io.pending = input;
        }
    }

    /// Acts on every complete request or frame at the front of `input`.
    ///
    /// Stops early, leaving the rest pending, once the answers queued so far
    /// reach the pause bound: a client that pipelines requests (or sends
    /// WebSocket messages) without reading gets at most one more answer
    /// than the bound queued, however much it sent in one read, and the
    /// rest is acted on when its queue drains.
    fn process(&mut self, input: &mut ReadBuf, ctx: &mut Ctx<'_>) -> Verdict {
        loop {
            let bytes = input.filled_mut();
            if bytes.is_empty() {
                return Verdict::Keep;
            }
            if self.answers_pile_up(ctx.settings) {
                self.pending_unprocessed = true;
                self.read_unfinished = true;
                return Verdict::Keep;
            }
            let (consumed, flow) = match self.phase {
                Phase::Http(_) => self.on_http_bytes(bytes, ctx),
                Phase::WebSocket(_) => self.on_websocket_bytes(bytes, ctx),
                // A request pipelined behind a held poll waits for its turn,
                // but no more than one request head's worth of it.
                Phase::Polling(_) if bytes.len() > ctx.settings.max_header_bytes => {
                    self.refuse(&Refusal::PipelinedPastHeldRequest, ctx);
                    (bytes.len(), Flow::NeedMore)
                }
                Phase::Polling(_) => (0, Flow::NeedMore),
                // The same behind a held publish, up to one whole request.
                Phase::AwaitingStored(_)
                    if bytes.len()
                        > ctx
                            .settings
                            .max_header_bytes
                            .saturating_add(ctx.settings.max_body_bytes) =>
                {
                    self.refuse(&Refusal::PipelinedPastHeldRequest, ctx);
                    (bytes.len(), Flow::NeedMore)
                }
                Phase::AwaitingStored(_) => (0, Flow::NeedMore),
                // An SSE client has nothing more to say, and whatever
                // arrives while draining is read only to be dropped.
                Phase::Sse(_) | Phase::Draining { .. } => (bytes.len(), Flow::NeedMore),
            };
            input.consume(consumed);
            if flow == Flow::NeedMore {
                return Verdict::Keep;
            }
        }
    }

    fn on_http_bytes(&mut self, bytes: &mut [u8], ctx: &mut Ctx<'_>) -> (usize, Flow) {
        let settings = ctx.settings;
        let request = match parse_request(bytes, settings.max_header_bytes) {
            Ok(Parsed::Partial) => return (0, Flow::NeedMore),
            Ok(Parsed::Complete(request)) => request,
            Err(error) => {
                self.refuse(&Refusal::Head(error), ctx);
                return (bytes.len(), Flow::NeedMore);
            }
        };
        let head_len = request.head_len;
        if let Some(limit) = self.over_limit {
            self.refuse(&limit.refusal(), ctx);
            return (bytes.len(), Flow::NeedMore);
        }
        match upgrade_request(&request) {
            Err(error) => {
                self.refuse(&Refusal::Upgrade(error), ctx);
                (bytes.len(), Flow::NeedMore)
            }
            Ok(Some(upgrade)) => match self.open_websocket(&request, &upgrade, ctx) {
                Ok(()) => (head_len, Flow::Continue),
                Err(refusal) => {
                    self.refuse(&refusal, ctx);
                    (bytes.len(), Flow::NeedMore)
                }
            },
            Ok(None) => self.on_plain_request(&request, bytes, ctx),
        }
    }

    /// Completes the upgrade to the route the path names, with the rights
    /// the presented token grants.
    fn open_websocket(
        &mut self,
        request: &Request<'_>,
        upgrade: &Upgrade<'_>,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Refusal> {
        let settings = ctx.settings;
        let route = websocket_route(
            upgrade.path,
            &settings.ws_path,
            settings.echo_path.as_deref(),
        )
        .map_err(Refusal::Route)?;
        let endpoint = match route {
            WebSocketRoute::Echo => Endpoint::Echo,
            WebSocketRoute::PubSub => {
                if !ctx.table.serving() {
                    return Err(Refusal::NotServing);
                }
                let session =
                    match presented_rights(request, Access::Subscribe, "websocket", true, ctx) {
                        Ok(rights) => Session::new(rights, settings.max_client_errors, ctx.now)
                            .expire_with(settings, ctx.now),
                        // With JWTs on, a client that presents no token may
                        // send one in-band ({"op":"auth"}) before the
                        // handshake timeout; until then it may do nothing else.
                        Err(_) if settings.jwt && presented_token(request).is_none() => {
                            Session::new(Rights::default(), settings.max_client_errors, ctx.now)
                                .await_auth(ctx.now + settings.handshake_timeout)
                        }
                        Err(refusal) => return Err(refusal),
                    };
                Endpoint::PubSub(Box::new(session))
            }
        };
        // permessage-deflate: the offer upgrade_request accepted, unless
        // the configuration declines them all.
        let deflate = upgrade.deflate.filter(|_| settings.deflate);
        self.io.out.append(|buf| {
            write_switching_protocols(
                buf,
                &accept_key(upgrade.key),
                upgrade.subprotocol,
                deflate.as_ref(),
            )
        });
        if let (Some(agreement), Endpoint::PubSub(_)) = (&deflate, &endpoint) {
            let form = settings.deflate_form(agreement.window_bits());
            self.io.out.set_wire(Wire::Deflate(form));
        }
        let transport = self.set_transport(Transport::WebSocket);
        ctx.stats.count_handshake(transport);
        let window = deflate.as_ref().map(|agreement| agreement.window_bits());
        let websocket = WebSocketPhase::new(endpoint, settings, ctx.now, window);
        self.enter(Phase::WebSocket(websocket), ctx.now);
        Ok(())
    }

    fn on_websocket_bytes(&mut self, bytes: &mut [u8], ctx: &mut Ctx<'_>) -> (usize, Flow) {
        let Phase::WebSocket(websocket) = &mut self.phase else {
            return (0, Flow::NeedMore);
        };
        match websocket.on_bytes(&mut self.io.out, bytes, ctx) {
            Step::Consumed(n) => (n, Flow::Continue),
            Step::NeedMore => (0, Flow::NeedMore),
            Step::Fail(code, reason) => {
                self.fail(code, reason, ctx.stats, ctx.now);
                (bytes.len(), Flow::NeedMore)
            }
            Step::PeerClosed => {
                self.enter(Phase::Draining { linger: false }, ctx.now);
                (bytes.len(), Flow::NeedMore)
            }
        }
    }

    /// Queues a live tick under the slow-consumer policy, which applies
    /// past `bound` (the worker's [`Ctx::tick_bound`]; a `disconnect` past
    /// twice the bound starts closing the connection with 1008).
    pub fn enqueue_tick(
        &mut self,
        tick: &Tick,
        bound: usize,
        policy: SlowConsumerPolicy,
        stats: &mut WorkerStats,
        now: Instant,
    ) {
        if let Phase::Polling(poll) = &mut self.phase {
            poll.add(tick);
            return;
        }
        let Some(session) = self.session_mut() else {
            return; // draining: ticks are no longer wanted
        };
        session.last_sent = now;
        let pushed = self.io.out.push_tick(tick, bound, policy);
        match SlowConsumer::after_push(pushed, self.io.out.len(), bound, stats) {
            SlowConsumer::Disconnect => self.disconnect_slow_consumer(stats, now),
            SlowConsumer::OverBound => {
                if let Some(session) = self.session_mut() {
                    session.over_bound_since.get_or_insert(now);
                }
            }
            SlowConsumer::Keep | SlowConsumer::Recovered => {}
        }
    }

    /// Queues the live ticks this connection is owed of a topic's pending
    /// ticks, all of them at or below `after_seq` left out: as one shared
    /// run of their frames when they are contiguous, fit under `bound` and
    /// go out as plain WebSocket frames; else tick by tick, as
    /// [`Self::enqueue_tick`] does.
    pub fn enqueue_ticks(
        &mut self,
        owed: Owed<'_>,
        after_seq: u64,
        bound: usize,
        policy: SlowConsumerPolicy,
        stats: &mut WorkerStats,
        now: Instant,
    ) {
        let queued = match owed.frames {
            Some(frames) if self.session_mut().is_some() => {
                self.io.out.push_frames(frames, owed.ticks, bound)
            }
            _ => false,
        };
        if queued {
            if let Some(session) = self.session_mut() {
                session.last_sent = now;
            }
            return;
        }
        for tick in owed.ticks.iter().filter(|tick| tick.seq > after_seq) {
            self.enqueue_tick(tick, bound, policy, stats, now);
        }
    }

    /// Closes a slow consumer with 1008, discarding what it did not read.
    fn disconnect_slow_consumer(&mut self, stats: &mut WorkerStats, now: Instant) {
        stats.slow_disconnects += 1;
        tracing::info!(
            queued_bytes = self.io.out.len(),
            "closing slow consumer (1008)"
        );
        self.io.out.clear();
        self.fail(CloseCode::POLICY_VIOLATION, "slow consumer", stats, now);
    }

    /// Starts the closing handshake from our side with `code` (§7.1.2) and
    /// stops acting on input: used for protocol errors, timeouts and shutdown.
    /// An SSE stream is ended by closing TCP instead, as it has no close frame.
    pub fn fail(&mut self, code: CloseCode, reason: &str, stats: &mut WorkerStats, now: Instant) {
        if self.is_websocket() {
            self.io
                .out
                .append(|buf| write_close_frame(buf, code.0, reason));
            stats.count_close(code.0);
        }
        self.enter(Phase::Draining { linger: true }, now);
    }

    /// Answers with a refusal and closes, counting it under its label.
    fn refuse(&mut self, refusal: &Refusal, ctx: &mut Ctx<'_>) {
        self.refuse_with(refusal, refusal.response(), ctx);
    }

    /// [`Self::refuse`] with the refusal's answer adapted (to a `HEAD`).
    fn refuse_with(&mut self, refusal: &Refusal, response: Response, ctx: &mut Ctx<'_>) {
        ctx.stats.count_refusal(refusal.label());
        self.respond_and_close(response, ctx.now);
    }

    fn respond_and_close(&mut self, response: Response, now: Instant) {
        self.io.out.append(|buf| response.close().write_to(buf));
        self.enter(Phase::Draining { linger: true }, now);
    }

    /// Answers a request that was held (a long-poll, a cluster publish):
    /// closes after it unless `keep_alive`, else goes back to reading
    /// requests, starting with any that were pipelined behind it.
    fn answer_held(
        &mut self,
        response: Response,
        keep_alive: bool,
        announce_keep_alive: bool,
        now: Instant,
    ) {
        if !keep_alive {
            self.respond_and_close(response, now);
            return;
        }
        let response = if announce_keep_alive {
            response.keep_alive()
        } else {
            response
        };
        self.io.out.append(|buf| response.write_to(buf));
        self.enter(Phase::Http(AwaitedBody::default()), now);
        if !self.io.pending.is_empty() {
            // Requests that arrived while this one was held.
            self.pending_unprocessed = true;
            self.read_unfinished = true;
        }
    }

    fn enter(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.phase_since = now;
    }

    /// Writes as much of the queued output as the socket takes.
    /// Records the publish-to-write latency when the queue empties.
    pub fn flush(&mut self, stats: &mut WorkerStats, latency: &LocalHistogram) -> Verdict {
        let written = match self.io.flush() {
            Ok(written) => written,
            Err(_) => return Verdict::Close,
        };
        count_written(stats, self.transport, written);
        if let Some(ts) = written.oldest_tick_ts {
            latency.observe(now_micros().saturating_sub(ts) as f64 / 1e6);
        }
        if !self.io.is_drained() {
            return Verdict::Keep;
        }
        match self.phase {
            Phase::Draining { linger: false } => Verdict::Close,
            Phase::Draining { linger: true } => match self.io.shut_write() {
                Ok(_) => Verdict::Keep,
                Err(_) => Verdict::Close,
            },
            _ => Verdict::Keep,
        }
    }

    /// When this connection next needs the worker's attention without I/O.
    pub fn deadline(&self, settings: &Settings) -> Instant {
        let phase = self.phase_deadline(settings);
        self.read_paused_until
            .map_or(phase, |until| until.min(phase))
    }

    fn phase_deadline(&self, settings: &Settings) -> Instant {
        match &self.phase {
            Phase::Http(_) => self.phase_since + settings.handshake_timeout,
            Phase::WebSocket(websocket) => {
                let liveness = websocket.liveness_deadline(settings);
                let Endpoint::PubSub(session) = &websocket.endpoint else {
                    return liveness;
                };
                session_deadline(session, settings).map_or(liveness, |d| d.min(liveness))
            }
            // SSE clients never send, so they have no idle timeout: a dead
            // one shows as a failed write or a full queue.
            Phase::Sse(session) => session_deadline(session, settings)
                .unwrap_or(self.phase_since + settings.heartbeat_interval),
            Phase::Polling(poll) => poll.expires,
            Phase::AwaitingStored(awaited) => awaited.expires,
            Phase::Draining { .. } => self.phase_since + settings.close_timeout,
        }
    }

    /// Acts on a passed deadline: pings a quiet peer, closes a silent one,
    /// and ends handshakes and closing handshakes that take too long.
    pub fn on_deadline(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        if self.read_paused_until.is_some_and(|until| ctx.now >= until) {
            // Look at the backlog again (the worker re-reads us).
            self.read_paused_until = None;
            self.read_unfinished = true;
        }
        if ctx.now < self.phase_deadline(ctx.settings) {
            return Verdict::Keep;
        }
        match self.phase {
            Phase::Http(_) if self.io.is_handshaking() => {
                // No HTTP answer can reach a client before its TLS
                // handshake is done; the close is the answer.
                ctx.stats.count_tls_failure("timeout");
                Verdict::Close
            }
            Phase::Http(_) => {
                // Best effort: a client that stalls its request hears why.
                self.refuse(&Refusal::HeadTimeout, ctx);
                let _ = self.io.flush();
                Verdict::Close
            }
            Phase::WebSocket(_) => {
                self.on_websocket_deadline(ctx);
                Verdict::Keep
            }
            Phase::Sse(_) => {
                self.on_session_deadline(ctx);
                Verdict::Keep
            }
            Phase::Polling(_) => self.finish_poll(ctx),
            Phase::AwaitingStored(_) => self.answer_stored(ctx),
            Phase::Draining { .. } => Verdict::Close,
        }
    }

    fn on_websocket_deadline(&mut self, ctx: &mut Ctx<'_>) {
        let Phase::WebSocket(websocket) = &mut self.phase else {
            return;
        };
        if let Some((code, reason)) =
            websocket.check_liveness(&mut self.io.out, ctx.settings, ctx.now)
        {
            self.fail(code, reason, ctx.stats, ctx.now);
            return;
        }
        self.on_session_deadline(ctx);
    }

    /// Slow-consumer grace and heartbeats of a pub/sub WebSocket or SSE stream.
    fn on_session_deadline(&mut self, ctx: &mut Ctx<'_>) {
        let (settings, now) = (ctx.settings, ctx.now);
        if self.on_token_deadline(ctx) {
            return;
        }
        let queued = self.io.out.len();
        let Some(session) = self.session_mut() else {
            return;
        };
        let grace = settings.slow_consumer_grace;
        match SlowConsumer::after_grace(
            session.over_bound_since,
            queued,
            ctx.tick_bound,
            grace,
            now,
        ) {
            SlowConsumer::Disconnect => return self.disconnect_slow_consumer(ctx.stats, now),
            SlowConsumer::Recovered => session.over_bound_since = None,
            SlowConsumer::Keep | SlowConsumer::OverBound => {}
        }
        if session.has_topics() && now >= session.last_sent + settings.heartbeat_interval {
            let heartbeat = events::heartbeat(session.topics().map(|(name, id)| {
                (
                    &**name,
                    ctx.local.get(*id).map_or(0, |topic| topic.last_seq),
                )
            }));
            session.last_sent = now;
            self.io.out.push_heartbeat(&heartbeat);
        }
    }

    /// Acts on a passed token deadline of a pub/sub WebSocket or SSE
    /// stream: the expiry warning, or the close (4001 at expiry; 4003 when
    /// in-band `auth` never came). An SSE stream, which has no close frame,
    /// gets an `error` event `token_expired` before it ends. Returns whether
    /// the connection is closing.
    fn on_token_deadline(&mut self, ctx: &mut Ctx<'_>) -> bool {
        // Matched on the field (not `session_mut`) so `self.io` stays free.
        let session = match &mut self.phase {
            Phase::WebSocket(WebSocketPhase {
                endpoint: Endpoint::PubSub(session),
                ..
            })
            | Phase::Sse(session) => session,
            _ => return false,
        };
        if session
            .token_deadline()
            .is_none_or(|deadline| ctx.now < deadline)
        {
            return false;
        }
        let due = session.on_token_deadline(&mut self.io.out, ctx.now);
        let user = session.user().map(str::to_owned);
        let Some(TokenDue::Close(close)) = due else {
            return false;
        };
        tracing::info!(
            user = user.as_deref().unwrap_or("-"),
            code = close.code.0,
            "closing: {}",
            close.reason
        );
        if close.code == CloseCode::TOKEN_EXPIRED {
            ctx.metrics.auth.count_expiry_close();
        }
        if matches!(self.phase, Phase::Sse(_)) {
            let event = events::error("token_expired", close.reason, None);
            self.io.out.push_event(&event);
        }
        self.fail(close.code, close.reason, ctx.stats, ctx.now);
        true
    }

    /// Cluster mode, the node lost its stream: WebSocket and SSE clients
    /// get close 4000 ("reconnect elsewhere"), a held poll is answered now;
    /// HTTP requests are refused by their routes while the node does not serve.
    pub fn send_away(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        match self.phase {
            Phase::WebSocket(_) | Phase::Sse(_) => {
                self.fail(
                    CloseCode::RECONNECT_ELSEWHERE,
                    "reconnect elsewhere: node lost the cluster",
                    ctx.stats,
                    ctx.now,
                );
                Verdict::Keep
            }
            Phase::Polling(_) => self.finish_poll(ctx),
            // The engine still tells what became of its ticks.
            Phase::Http(_) | Phase::AwaitingStored(_) | Phase::Draining { .. } => Verdict::Keep,
        }
    }

    /// The server is stopping: WebSocket peers get close 1001, idle HTTP
    /// connections end now.
    pub fn begin_shutdown(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        let now = ctx.now;
        match self.phase {
            Phase::WebSocket(_) | Phase::Sse(_) => {
                self.fail(
                    CloseCode::GOING_AWAY,
                    "server shutting down",
                    ctx.stats,
                    now,
                );
                Verdict::Keep
            }
            // A held poll is answered now (204, or what it collected); a
            // keep-alive client may still ask, and hear /readyz say 503,
            // until it hangs up or the grace period ends.
            Phase::Polling(_) => self.finish_poll(ctx),
            // Answered when the stream's outcome comes, within the grace.
            Phase::AwaitingStored(_) => Verdict::Keep,
            Phase::Http(_) if self.queued_bytes() == 0 && self.io.pending.is_empty() => {
                Verdict::Close
            }
            Phase::Http(_) => {
                self.enter(Phase::Draining { linger: true }, now);
                Verdict::Keep
            }
            Phase::Draining { .. } => Verdict::Keep,
        }
    }
}

fn count_written(stats: &mut WorkerStats, transport: Transport, written: Written) {
    stats.write_syscalls += written.syscalls as u64;
    stats.bytes_out += written.bytes as u64;
    stats.count_delivered(transport, written.ticks);
}

/// The token a request presents: `Authorization: Bearer`, a
/// `tickfan.token.<token>` entry of `Sec-WebSocket-Protocol`, or `?token=`
/// (for EventSource and long-poll, which cannot set headers).
fn presented_token<'r>(request: &Request<'r>) -> Option<Cow<'r, str>> {
    request
        .bearer_token()
        .or_else(|| subprotocol_token(request))
        .map(Cow::Borrowed)
        .or_else(|| {
            request
                .query_params()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v)
        })
}

/// The rights of the token a request presents ([`presented_token`]),
/// counted in `tickfan_authentications_total` under `transport` and
/// logged with the user, never the token; a request whose rights do not
/// admit `access` is refused with 401 (the one place that answer is built).
///
/// `counted` is false on a pass over a request whose body is still coming
/// (its head is read again when more arrives): such a pass counts only a refusal.
fn presented_rights(
    request: &Request<'_>,
    access: Access,
    transport: &'static str,
    counted: bool,
    ctx: &Ctx<'_>,
) -> Result<Rights, Refusal> {
    let token = presented_token(request);
    let authentication = ctx.auth.authenticate(token.as_deref());
    let counted = counted || !authentication.rights.admit(access);
    if let Some(result) = authentication.result.label().filter(|_| counted) {
        ctx.metrics.auth.count(transport, result);
        tracing::debug!(
            transport,
            result,
            user = authentication.rights.user().unwrap_or("-"),
            "token presented"
        );
    }
    let rights = authentication.rights;
    if !rights.admit(access) {
        let message = match access {
            Access::Publish => "publishing needs a publisher token",
            Access::Subscribe => "subscribing needs a token",
        };
        return Err(Refusal::Unauthorized(message));
    }
    Ok(rights)
}

/// When a session next needs attention: a heartbeat, the end of a slow
/// consumer's grace, or a token deadline.
fn session_deadline(session: &Session, settings: &Settings) -> Option<Instant> {
    let heartbeat = session
        .has_topics()
        .then(|| session.last_sent + settings.heartbeat_interval);
    let slow = SlowConsumer::grace_deadline(session.over_bound_since, settings.slow_consumer_grace);
    heartbeat
        .into_iter()
        .chain(slow)
        .chain(session.token_deadline())
        .min()
}
