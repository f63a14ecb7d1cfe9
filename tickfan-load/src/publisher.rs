//! The publisher: P connections sending ticks at a paced aggregate rate (or
//! as fast as the broker reads them), round robin over the run's topics,
//! from the start of the plan to the end of the measured window.
//!
//! tickfan and NATS take every topic on one connection, so `--publishers P`
//! opens P of them and topic index t always goes on connection t % P: each
//! topic keeps one sender, so its ticks arrive in the order sent, which the
//! sample subscribers' gap check relies on. The other peers publish to the
//! topic in the path, so they get one connection per topic. A connection is
//! a WebSocket, or for tickfan (`--publish-over http`) a keep-alive HTTP/1.1
//! connection with pipelined `POST /publish` requests (`http_publish.rs`).
//!
//! Pacing is in small batches: every millisecond it sends the ticks that are
//! due by then, each stamped with its send time in nanoseconds since the
//! UNIX epoch (`data.t`), which the sample subscribers turn into latency.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::http_publish::HttpPipeline;
use crate::plan::{now_unix_ns, Phase, Plan};
use crate::target::Target;
use crate::tls::{Stream, TlsClient};
use crate::ws::{self, OpCode, Rng, UpgradeStatus, OP_CLOSE, OP_PING, OP_TEXT};

/// Pacing step: ticks due are sent this often.
const PACE_STEP: Duration = Duration::from_millis(1);

/// Unsent bytes a connection keeps at most; past this the publisher stops
/// generating for it, so a broker that reads slowly slows the publisher
/// instead of growing a queue here (and latency then counts from a
/// realistic send time).
const MAX_PENDING_BYTES: usize = 64 * 1024;

/// Ticks encoded per batch when publishing flat out.
const FLAT_OUT_BATCH: u64 = 64;

/// How long HTTP connections may take, once publishing stops, to finish the
/// request they are writing and read the answers owed, so errors in the
/// last answers are still counted; bounded so a stuck broker cannot hold
/// the run past its drain.
const HTTP_FINISH_TIMEOUT: Duration = Duration::from_secs(1);

/// How the publisher's connections carry ticks (`--publish-over`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PublishOver {
    /// WebSocket: the target's publish frames.
    #[default]
    Ws,
    /// HTTP/1.1 keep-alive, one pipelined `POST /publish` per tick (tickfan).
    Http,
}

impl FromStr for PublishOver {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ws" => Ok(PublishOver::Ws),
            "http" => Ok(PublishOver::Http),
            _ => Err(format!("unknown transport {s:?}: ws or http")),
        }
    }
}

impl fmt::Display for PublishOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublishOver::Ws => "ws",
            PublishOver::Http => "http",
        })
    }
}

/// What the publisher needs to know.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub addr: SocketAddr,
    pub path: String,
    pub target: Target,
    /// Topic names; ticks go to them in turn (round robin).
    pub topics: Vec<String>,
    pub token: Option<String>,
    /// Ticks per second over all topics and connections; 0 = as fast as the
    /// connections take them.
    pub rate: u64,
    /// Connections for targets that take every topic on one (at least 1);
    /// ignored by the others, which open one per topic.
    pub publishers: usize,
    /// WebSocket, or HTTP (tickfan only).
    pub over: PublishOver,
    pub setup_deadline: Instant,
    /// Over TLS (wss) when set; WebSocket publishing only.
    pub tls: Option<TlsClient>,
    /// What each tick's JSON looks like.
    pub shape: TickShape,
}

/// The JSON a tick carries (`--tick-shape`): every shape has the `t` and
/// `n` fields samples read, and varies with `n`, so compression is measured
/// on data that changes from tick to tick rather than on one string repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickShape {
    /// ~100 bytes: a bare quote (the default).
    Small,
    /// ~300 bytes: a wide quote with venue, sizes, flags.
    Quote,
    /// ~2 KB: an order-book snapshot, 25 levels a side.
    Book,
}

impl std::str::FromStr for TickShape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "small" => Ok(TickShape::Small),
            "quote" => Ok(TickShape::Quote),
            "book" => Ok(TickShape::Book),
            _ => Err(format!("unknown tick shape {s:?}: small, quote or book")),
        }
    }
}

/// One tick's JSON of `shape`, stamped with send time `t` and counter `n`.
pub fn shaped_tick_data(shape: TickShape, t: u64, n: u64) -> String {
    let cents = |k: u64| 18_900 + (n * 7 + k * 13) % 400;
    let price = |k: u64| format!("{}.{:02}", cents(k) / 100, cents(k) % 100);
    match shape {
        TickShape::Small => tick_data(t, n),
        TickShape::Quote => format!(
            "{{\"sym\":\"AAPL\",\"venue\":\"XNAS\",\"bid\":{},\"ask\":{},\"bsz\":{},\"asz\":{},\
             \"last\":{},\"lsz\":{},\"vwap\":{},\"vol\":{},\"open\":187.5,\"high\":{},\"low\":186.02,\
             \"cond\":[\"regular\",\"odd_lot\"],\"halted\":false,\"quote_id\":\"q-{n}-{}\",\
             \"seq_venue\":{},\"t\":{t},\"n\":{n}}}",
            price(0),
            price(1),
            100 + n % 900,
            200 + (n * 3) % 700,
            price(2),
            n % 500,
            price(3),
            1_000_000 + n * 37,
            price(4),
            n % 97,
            9_000_000 + n,
        ),
        TickShape::Book => {
            let side = |base: u64| {
                (0..25)
                    .map(|level| {
                        format!(
                            "{{\"px\":{},\"sz\":{},\"orders\":{}}}",
                            price(base + level),
                            100 + (n * (level + 1) * 31) % 5000,
                            1 + (n + level) % 17
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            format!(
                "{{\"sym\":\"AAPL\",\"venue\":\"XNAS\",\"bids\":[{}],\"asks\":[{}],\"depth\":25,\
                 \"t\":{t},\"n\":{n}}}",
                side(0),
                side(50)
            )
        }
    }
}

/// What the publisher did.
#[derive(Debug, Default, Clone)]
pub struct PublisherStats {
    /// Ticks fully handed to the kernel over the whole run.
    pub published_total: u64,
    /// The same, per topic index.
    pub published_per_topic: Vec<u64>,
    /// Ticks stamped inside the measured window.
    pub published_window: u64,
    /// Ticks due by the pacing schedule but not sent (the publisher fell behind).
    pub behind_at_end: u64,
    /// `{"event":"error"}` frames (or NATS `-ERR`, or HTTP answers other
    /// than `202`) the broker sent back.
    pub error_events: u64,
    /// The first error event, for the report.
    pub first_error: Option<String>,
    pub write_syscalls: u64,
    /// Publisher connections used (one per topic for peers that publish by path).
    pub connections: usize,
    /// What they carried ticks over; `None` when nothing was published.
    pub transport: Option<PublishOver>,
}

impl PublisherStats {
    /// Counts one error the broker sent back, keeping the first's text.
    pub fn count_error(&mut self, text: String) {
        self.error_events += 1;
        if self.first_error.is_none() {
            self.first_error = Some(text);
        }
    }
}

/// One tick to publish.
struct Tick<'a> {
    /// The topic's index in the run's topics.
    topic: usize,
    name: &'a str,
    /// The tick JSON, with its send time `t` and counter `n`.
    data: &'a str,
    /// Stamped inside the measured window.
    in_window: bool,
}

/// One publisher connection and what is queued on it.
struct PubConn {
    stream: Stream,
    out: Vec<u8>,
    /// Per queued tick: its end offset in the cumulative byte count, its
    /// topic and whether it is in the window, so a tick counts as published
    /// only once all its bytes are written.
    queued: VecDeque<(usize, u32, bool)>,
    written_total: usize,
    /// Every byte ever appended to `out`; `out` holds the last
    /// `queued_total - written_total` of them.
    queued_total: usize,
    inbuf: Vec<u8>,
    /// `Some` on an HTTP connection: the answers it is owed.
    http: Option<HttpPipeline>,
}

impl PubConn {
    fn new(stream: Stream, http: Option<HttpPipeline>) -> Self {
        PubConn {
            stream,
            out: Vec::with_capacity(MAX_PENDING_BYTES * 2),
            queued: VecDeque::new(),
            written_total: 0,
            queued_total: 0,
            inbuf: Vec::new(),
            http,
        }
    }

    fn pending(&self) -> usize {
        self.queued_total - self.written_total
    }

    /// Appends bytes that carry no tick (a hello, a pong, a keep-alive).
    fn push_control(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        self.queued_total += bytes.len();
    }

    /// Appends one tick, remembering where it ends so it counts as
    /// published once written.
    fn push_tick(&mut self, target: Target, tick: &Tick<'_>, rng: &mut Rng, now: Instant) {
        let before = self.out.len();
        match &mut self.http {
            Some(http) => {
                http.push_publish(&mut self.out, self.queued_total, tick.name, tick.data, now)
            }
            None => target.push_publish(&mut self.out, tick.name, tick.data, rng.mask()),
        }
        self.queued_total += self.out.len() - before;
        self.queued
            .push_back((self.queued_total, tick.topic as u32, tick.in_window));
    }

    /// On a quiet HTTP connection, queues a request that keeps it open.
    fn keep_alive(&mut self, now: Instant) {
        let Some(http) = &mut self.http else {
            return;
        };
        let before = self.out.len();
        if http.push_keepalive_if_idle(&mut self.out, self.queued_total, now) {
            self.queued_total += self.out.len() - before;
        }
    }

    /// Writes what is queued; `true` if the socket would block.
    fn write(&mut self, stats: &mut PublisherStats) -> Result<bool, String> {
        let mut blocked = false;
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err("publisher write returned 0".into()),
                Ok(n) => {
                    stats.write_syscalls += 1;
                    self.out.drain(..n);
                    self.written_total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(with_first_error(&format!("publisher write: {e}"), stats)),
            }
        }
        // TLS records the socket did not take yet.
        self.stream
            .send_pending()
            .map_err(|e| with_first_error(&format!("publisher write: {e}"), stats))?;
        blocked |= self.stream.has_pending();
        while let Some(&(end, topic, in_window)) = self.queued.front() {
            if end > self.written_total {
                break;
            }
            self.queued.pop_front();
            stats.published_total += 1;
            stats.published_per_topic[topic as usize] += 1;
            if in_window {
                stats.published_window += 1;
            }
        }
        Ok(blocked)
    }

    /// Reads what the socket has into `inbuf`; `true` once the broker has
    /// closed its side.
    fn read_available(&mut self, scratch: &mut [u8]) -> Result<bool, String> {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Ok(true),
                Ok(n) => self.inbuf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("publisher read: {e}")),
            }
        }
    }

    /// Whether an HTTP connection still owes answers (or has requests to send).
    fn owes_answers(&self) -> bool {
        self.http.as_ref().is_some_and(|h| h.in_flight() > 0)
    }

    /// Publishing is over: drops the HTTP requests not yet started and the
    /// ticks in them (never sent, so never counted), keeping the one partly
    /// written so the request stream stays whole.
    fn drop_unstarted(&mut self) {
        let Some(http) = &mut self.http else {
            return;
        };
        let end = http.drop_unstarted(self.written_total, self.queued_total);
        self.out.truncate(end.saturating_sub(self.written_total));
        self.queued_total = end;
        self.queued.retain(|&(tick_end, ..)| tick_end <= end);
    }
}

/// Connects, upgrades, waits for the start and publishes until the window ends.
pub fn run(config: PublisherConfig, plan: Arc<Plan>) -> Result<PublisherStats, String> {
    if config.over == PublishOver::Http && config.target != Target::Tickfan {
        return Err(format!(
            "publishing over HTTP is for tickfan, not {}",
            config.target
        ));
    }
    let mut rng = Rng::new(now_unix_ns().rotate_left(17));
    let k = config.topics.len();
    let poll = Poll::new().map_err(|e| e.to_string())?;
    let conns = open_connections(&config, &poll, &mut rng)?;
    plan.publisher_ready.store(true, Ordering::Release);
    let mut stats = PublisherStats {
        published_per_topic: vec![0; k],
        connections: conns.len(),
        transport: Some(config.over),
        ..PublisherStats::default()
    };
    let mut links = Links {
        conns,
        poll,
        events: Events::with_capacity(256),
        scratch: vec![0u8; 64 * 1024],
        rng,
        target: config.target,
    };
    // Per-topic counter carried in each tick as `n` (the peers' seq).
    let mut counters = vec![0u64; k];
    let mut generated = 0u64;
    let window = loop {
        if let Some(w) = plan.window_unix_ns() {
            break w;
        }
        if plan.phase(Instant::now()) == Phase::Done {
            return Ok(stats);
        }
        // Answer pings (or keep HTTP connections open) while the fleet subscribes.
        links.wait(Duration::from_millis(5));
        links.service_all(&mut stats, Instant::now())?;
    };
    let start = plan.start().unwrap_or_else(Instant::now);
    links.serve_until(start, &mut stats)?;

    loop {
        let now = Instant::now();
        let phase = plan.phase(now);
        if !matches!(phase, Phase::Warmup | Phase::Window) {
            if config.rate > 0 {
                let due = due_ticks(
                    config.rate,
                    now.min(plan.window_end().unwrap_or(now)) - start,
                );
                // The last pacing step before the end is never sent; only
                // a shortfall beyond two steps means the publisher fell behind.
                let slack = 2 * config.rate / 1000 + 1;
                stats.behind_at_end = due.saturating_sub(generated + slack);
            }
            break;
        }
        // Generate what is due (or a batch, flat out) while the next
        // topic's connection has room.
        let want = if config.rate > 0 {
            due_ticks(config.rate, now - start).saturating_sub(generated)
        } else {
            FLAT_OUT_BATCH
        };
        let p = links.conns.len();
        for _ in 0..want {
            let topic = (generated % k as u64) as usize;
            // Always the same connection for a topic: its order holds.
            let conn = &mut links.conns[topic % p];
            if conn.pending() >= MAX_PENDING_BYTES {
                break;
            }
            let t = now_unix_ns();
            counters[topic] += 1;
            let data = shaped_tick_data(config.shape, t, counters[topic]);
            let tick = Tick {
                topic,
                name: &config.topics[topic],
                data: &data,
                in_window: t >= window.0 && t < window.1,
            };
            conn.push_tick(config.target, &tick, &mut links.rng, now);
            generated += 1;
        }
        // Write what is queued. Blocked: wait for writable; paced: sleep
        // to the next step.
        if links.service_all(&mut stats, now)? {
            links.wait(Duration::from_millis(1));
        } else if config.rate > 0 {
            std::thread::sleep(PACE_STEP);
        }
    }
    links.finish(&mut stats)?;
    Ok(stats)
}

/// The publisher's connections and what a turn of its event loop needs.
struct Links {
    conns: Vec<PubConn>,
    poll: Poll,
    events: Events,
    scratch: Vec<u8>,
    rng: Rng,
    target: Target,
}

impl Links {
    /// Waits at most `timeout` for a connection to become ready.
    fn wait(&mut self, timeout: Duration) {
        let _ = self.poll.poll(&mut self.events, Some(timeout));
    }

    /// One turn on every connection: act on what the broker sent (first, so
    /// an error answer is counted before a write into a closed connection
    /// fails), a keep-alive if one is quiet, then write what is queued.
    /// `true` if a socket would block.
    fn service_all(&mut self, stats: &mut PublisherStats, now: Instant) -> Result<bool, String> {
        let mut blocked = false;
        for conn in self.conns.iter_mut() {
            read_incoming(conn, &mut self.scratch, stats, &mut self.rng, self.target)?;
            conn.keep_alive(now);
            blocked |= conn.write(stats)?;
        }
        Ok(blocked)
    }

    /// Keeps serving the connections until `at`, returning within a fraction
    /// of a millisecond of it: the settle time before the first tick may
    /// outlast the broker's patience with a quiet HTTP connection.
    fn serve_until(&mut self, at: Instant, stats: &mut PublisherStats) -> Result<(), String> {
        const PRECISE: Duration = Duration::from_millis(2);
        loop {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            if left > PRECISE {
                self.wait((left - PRECISE / 2).min(Duration::from_millis(5)));
                self.service_all(stats, Instant::now())?;
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Ends every connection once publishing stops. HTTP connections first
    /// finish the request in progress and read the answers owed (for at
    /// most [`HTTP_FINISH_TIMEOUT`]); WebSockets get a close frame, best
    /// effort.
    fn finish(&mut self, stats: &mut PublisherStats) -> Result<(), String> {
        self.conns.iter_mut().for_each(PubConn::drop_unstarted);
        let deadline = Instant::now() + HTTP_FINISH_TIMEOUT;
        while self.conns.iter().any(PubConn::owes_answers) && Instant::now() < deadline {
            for conn in self.conns.iter_mut() {
                conn.write(stats)?;
                read_incoming(conn, &mut self.scratch, stats, &mut self.rng, self.target)?;
            }
            self.wait(Duration::from_millis(1));
        }
        for conn in self.conns.iter_mut() {
            if conn.http.is_none() {
                let _ = conn.stream.write(&ws_close(&mut self.rng));
            }
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }
}

/// Opens the publisher's connections, each registered with `poll` under its
/// index: P for targets that take every topic on one, else one per topic.
fn open_connections(
    config: &PublisherConfig,
    poll: &Poll,
    rng: &mut Rng,
) -> Result<Vec<PubConn>, String> {
    let paths: Vec<String> = if config.target.one_publisher_connection() {
        vec![config.target.pub_path(&config.path, ""); config.publishers.max(1)]
    } else {
        config
            .topics
            .iter()
            .map(|t| config.target.pub_path(&config.path, t))
            .collect()
    };
    let mut conns = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let mut conn = match config.over {
            PublishOver::Ws => open_websocket(config, path, rng)?,
            PublishOver::Http => open_http(config)?,
        };
        poll.registry()
            .register(
                &mut conn.stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| e.to_string())?;
        conns.push(conn);
    }
    Ok(conns)
}

/// A WebSocket publisher connection, upgraded, with the target's hello queued.
fn open_websocket(config: &PublisherConfig, path: &str, rng: &mut Rng) -> Result<PubConn, String> {
    let mut conn = PubConn::new(connect_and_upgrade(config, path, rng)?, None);
    let mut hello = Vec::new();
    config.target.publisher_hello(&mut hello, rng);
    conn.push_control(&hello);
    Ok(conn)
}

/// An HTTP publisher connection: connected, nothing sent until the first
/// tick (or keep-alive).
fn open_http(config: &PublisherConfig) -> Result<PubConn, String> {
    if config.tls.is_some() {
        return Err("publishing over HTTP is not offered over TLS (--tls-ca): use ws".into());
    }
    let stream = connect(config)?;
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let http = HttpPipeline::new(
        config.addr.to_string(),
        config.token.as_deref(),
        Instant::now(),
    );
    Ok(PubConn::new(
        Stream::Plain(TcpStream::from_std(stream)),
        Some(http),
    ))
}

/// Ticks due `elapsed` after the start at `rate` per second.
fn due_ticks(rate: u64, elapsed: Duration) -> u64 {
    (elapsed.as_nanos() * rate as u128 / 1_000_000_000) as u64
}

/// One tick's JSON: ~100 bytes of quote data stamped with its send time `t`
/// (ns since the UNIX epoch) and its topic's counter `n`.
pub fn tick_data(t: u64, n: u64) -> String {
    format!(
        "{{\"sym\":\"AAPL\",\"bid\":189.21,\"ask\":189.23,\"bsz\":300,\"asz\":200,\"t\":{t},\"n\":{n}}}"
    )
}

fn ws_close(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    ws::push_client_frame(&mut out, OpCode::Close, &1000u16.to_be_bytes(), rng.mask());
    out
}

/// Connects with a blocking socket, bounded by the setup deadline.
fn connect(config: &PublisherConfig) -> Result<std::net::TcpStream, String> {
    let left = config
        .setup_deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    let stream = std::net::TcpStream::connect_timeout(&config.addr, left)
        .map_err(|e| format!("publisher connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(left))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Connects, upgrades (still blocking; over TLS, the TLS handshake first),
/// then turns the socket non-blocking for the run.
fn connect_and_upgrade(
    config: &PublisherConfig,
    path: &str,
    rng: &mut Rng,
) -> Result<Stream, String> {
    let socket = connect(config)?;
    let Some(tls) = &config.tls else {
        let mut socket = socket;
        upgrade(&mut socket, config, path, rng)?;
        socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        return Ok(Stream::Plain(TcpStream::from_std(socket)));
    };
    let session = tls.session().map_err(|e| e.to_string())?;
    let mut blocking = rustls::StreamOwned::new(session, socket);
    upgrade(&mut blocking, config, path, rng)?;
    let rustls::StreamOwned { conn, sock } = blocking;
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(Stream::Tls {
        socket: TcpStream::from_std(sock),
        session: Box::new(conn),
    })
}

/// The WebSocket upgrade on a blocking stream, read up to the end of the
/// response head.
fn upgrade(
    s: &mut (impl Read + Write),
    config: &PublisherConfig,
    path: &str,
    rng: &mut Rng,
) -> Result<(), String> {
    let req = ws::upgrade_request(
        &config.addr.to_string(),
        path,
        config.token.as_deref(),
        config.target.subprotocol(),
        rng,
    );
    s.write_all(&req.bytes)
        .map_err(|e| format!("publisher handshake: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1];
    // Byte by byte up to the end of the head: a peer may send frames right
    // behind it (NATS sends INFO), and those belong to the run's reader.
    loop {
        let n = s
            .read(&mut chunk)
            .map_err(|e| format!("publisher handshake: {e}"))?;
        if n == 0 {
            return Err("publisher handshake: connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        match ws::check_upgrade_response(&buf, &req.expected_accept) {
            UpgradeStatus::Partial => continue,
            UpgradeStatus::Refused(r) => return Err(format!("publisher handshake: {r}")),
            UpgradeStatus::Accepted(_) => return Ok(()),
        }
    }
}

/// Reads what the broker sent a publisher connection and acts on it: HTTP
/// answers are matched to their requests, WebSocket frames go through
/// [`ws_control`]. A connection the broker closed is an error, reported
/// with the first error it sent, which usually says why.
fn read_incoming(
    conn: &mut PubConn,
    scratch: &mut [u8],
    stats: &mut PublisherStats,
    rng: &mut Rng,
    target: Target,
) -> Result<(), String> {
    let closed = conn.read_available(scratch)?;
    let mut replies = Vec::new();
    let used = match &mut conn.http {
        Some(http) => http.take_answers(&conn.inbuf, stats)?,
        None => ws_control(&conn.inbuf, &mut replies, stats, rng, target)?,
    };
    conn.inbuf.drain(..used);
    conn.push_control(&replies);
    if closed {
        return Err(with_first_error(CLOSED, stats));
    }
    Ok(())
}

/// Walks the complete frames at the front of `inbuf`: answers pings into
/// `replies`, counts errors, drops the echo of the publisher's own ticks
/// (peers that publish by path also subscribe the publisher). Returns the
/// bytes used.
fn ws_control(
    inbuf: &[u8],
    replies: &mut Vec<u8>,
    stats: &mut PublisherStats,
    rng: &mut Rng,
    target: Target,
) -> Result<usize, String> {
    let mut pos = 0;
    while let Some(frame) = ws::server_frame(&inbuf[pos..]).map_err(str::to_string)? {
        let end = pos + frame.header_len + frame.payload_len;
        if end > inbuf.len() {
            break;
        }
        let payload = &inbuf[pos + frame.header_len..end];
        let error = match (target, frame.opcode) {
            (Target::Tickfan, OP_TEXT) => payload.starts_with(b"{\"event\":\"error\""),
            (Target::Nats, _) => payload.starts_with(b"-ERR"),
            _ => false,
        };
        if error {
            stats.count_error(String::from_utf8_lossy(payload).into_owned());
        }
        match frame.opcode {
            OP_PING => ws::push_client_frame(replies, OpCode::Pong, payload, rng.mask()),
            OP_CLOSE => return Err(with_first_error(&close_message(payload), stats)),
            // NATS pings in its own protocol; the publisher sees only
            // INFO, PING and errors, each in a frame of its own.
            _ if target == Target::Nats && payload.starts_with(b"PING\r\n") => {
                ws::push_client_frame(replies, OpCode::Binary, b"PONG\r\n", rng.mask())
            }
            _ => {}
        }
        pos = end;
    }
    Ok(pos)
}

/// Why the run's publisher failed, for a connection the broker closed.
const CLOSED: &str = "broker closed the publisher connection";

/// [`CLOSED`], with the code and reason of the broker's close frame
/// (RFC 6455 §5.5.1), which say why (a message-rate limit, shutdown).
fn close_message(payload: &[u8]) -> String {
    match payload {
        [hi, lo, reason @ ..] => format!(
            "{CLOSED} with {} {}",
            u16::from_be_bytes([*hi, *lo]),
            String::from_utf8_lossy(reason)
        ),
        _ => CLOSED.to_string(),
    }
}

/// `message`, with the first error the broker sent, which usually says why.
fn with_first_error(message: &str, stats: &PublisherStats) -> String {
    match &stats.first_error {
        Some(e) => format!("{message} (first error: {e})"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaped_ticks_are_json_of_their_size() {
        for (shape, low, high) in [
            (TickShape::Small, 80, 120),
            (TickShape::Quote, 250, 400),
            (TickShape::Book, 1700, 2600),
        ] {
            let data = shaped_tick_data(shape, 1_732_190_000_123_456_789, 4321);
            assert!(
                (low..=high).contains(&data.len()),
                "{shape:?}: {}",
                data.len()
            );
            let parsed: serde_json::Value = serde_json::from_str(&data).unwrap();
            assert_eq!(parsed["n"], 4321);
        }
    }

    #[test]
    fn tick_data_is_about_100_bytes_of_json() {
        let data = tick_data(1_732_190_000_123_456_789, 123_456);
        let value: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert!((80..=110).contains(&data.len()), "{}", data.len());
        assert_eq!(value["t"], 1_732_190_000_123_456_789u64);
        assert_eq!(value["n"], 123_456);
    }

    #[test]
    fn pacing_is_by_elapsed_time() {
        assert_eq!(due_ticks(1000, Duration::from_millis(1500)), 1500);
        assert_eq!(due_ticks(3, Duration::from_millis(999)), 2);
    }
}
