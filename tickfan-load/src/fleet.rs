//! One event loop of subscribers: connects its share of the fleet, upgrades,
//! subscribes, then counts ticks until the plan says stop.
//!
//! Most subscribers are sinks: they walk frame headers in one scratch buffer
//! shared by the whole loop and count text frames without parsing JSON, so
//! the fleet costs little next to the broker it measures. A few are samples
//! that parse every tick to check seq order and end-to-end latency. This is
//! the load generator's own write/read path, independent of the broker's.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Poll, Token};
use serde::Deserialize;

use crate::dial::{dial, is_sample, register, Ramp};
use crate::inflate::Inflater;
use crate::plan::{now_unix_ns, Phase, Plan};
use crate::target::{nats_item, NatsItem, Target};
use crate::tls::{Stream, TlsClient};
use crate::topics::Topics;
use crate::ws::{self, OpCode, Rng, UpgradeStatus, OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT};

/// How every tick's JSON starts (the broker writes the envelope field by
/// field, topic first). A sink looks at these bytes only.
const TICK_PREFIX: &[u8] = b"{\"topic\":";
/// Events are built as JSON objects whose keys the broker may order
/// (alphabetically today: `{"epoch":..,"event":"subscribed",..}`), so they
/// are recognised anywhere in the frame, not by prefix.
const SUBSCRIBED_MARK: &[u8] = b"\"event\":\"subscribed\"";
const ERROR_MARK: &[u8] = b"\"event\":\"error\"";

/// The scratch every read of the loop lands in. Large, so one `read` takes
/// whatever a socket holds; shared, so a subscriber costs no buffer of its own.
const SCRATCH_BYTES: usize = 1 << 20;

/// How often an idle loop wakes to look at the clock.
const POLL_TIMEOUT: Duration = Duration::from_millis(5);

/// What one loop needs to know.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub addr: SocketAddr,
    pub path: String,
    pub target: Target,
    pub topics: Arc<Topics>,
    pub token: Option<String>,
    /// Global subscriber indices this loop owns.
    pub subscribers: Range<usize>,
    /// Global index `i` is a sample when `i % sample_stride == 0` and
    /// `i / sample_stride < sample_count`.
    pub sample_stride: usize,
    pub sample_count: usize,
    /// Subscribers per source address; `None` lets the kernel pick 127.0.0.1.
    pub per_source_ip: Option<usize>,
    /// Most connections of this loop between connect and `subscribed`.
    pub connect_concurrency: usize,
    /// Setup gives up on subscribers not in by then.
    pub setup_deadline: Instant,
    /// Over TLS (wss) when set.
    pub tls: Option<TlsClient>,
    /// Offer permessage-deflate (RFC 7692); samples inflate what comes compressed.
    pub deflate: bool,
}

/// What a sample subscriber saw, merged over the loop.
#[derive(Debug)]
pub struct SampleStats {
    pub subscribers: usize,
    pub ticks: u64,
    /// Places where seq jumped forward by more than one.
    pub gaps: u64,
    /// Ticks skipped over by those jumps.
    pub missing: u64,
    /// Ticks whose seq was not above the last one seen.
    pub duplicates: u64,
    /// Ticks that were not valid JSON with `seq` and `data.t`.
    pub unparsable: u64,
    /// End-to-end latency in ns, for ticks sent inside the measured window.
    pub latency_ns: Histogram<u64>,
}

impl SampleStats {
    fn new() -> Self {
        SampleStats {
            subscribers: 0,
            ticks: 0,
            gaps: 0,
            missing: 0,
            duplicates: 0,
            unparsable: 0,
            latency_ns: Histogram::new_with_bounds(1_000, 600_000_000_000, 3)
                .expect("valid histogram bounds"),
        }
    }

    /// Adds another loop's figures to these.
    pub fn merge(&mut self, other: &SampleStats) {
        self.subscribers += other.subscribers;
        self.ticks += other.ticks;
        self.gaps += other.gaps;
        self.missing += other.missing;
        self.duplicates += other.duplicates;
        self.unparsable += other.unparsable;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency_ns.add(&other.latency_ns);
    }
}

/// What one loop counted.
#[derive(Debug)]
pub struct FleetStats {
    pub subscribed: usize,
    pub failed: usize,
    /// First few failure reasons, for the report.
    pub failures: Vec<String>,
    /// Tick frames received over the whole run.
    pub ticks_total: u64,
    /// Tick frames received while the window was open.
    pub ticks_window: u64,
    pub bytes_total: u64,
    pub bytes_window: u64,
    /// `{"event":"error"}` frames.
    pub error_events: u64,
    /// Connections the server closed (close frame or EOF) after subscribing.
    pub server_closes: u64,
    pub pongs_sent: u64,
    /// Frames that came compressed (RSV1), and subscribers that agreed deflate.
    pub compressed_frames: u64,
    pub deflate_subscribers: usize,
    pub read_syscalls: u64,
    /// Long-poll only: requests sent, answers without ticks (204/304),
    /// request bytes sent in the window, answers that reported a gap.
    pub requests: u64,
    pub empty_answers: u64,
    pub bytes_sent_window: u64,
    pub gap_events: u64,
    /// Subscribed connections per topic index (the report's expected
    /// deliveries are `Σ published[k] × subscribers[k]`).
    pub subs_per_topic: Vec<u64>,
    pub sample: SampleStats,
}

impl FleetStats {
    pub fn new(topics: usize) -> Self {
        FleetStats {
            subscribed: 0,
            failed: 0,
            failures: Vec::new(),
            ticks_total: 0,
            ticks_window: 0,
            bytes_total: 0,
            bytes_window: 0,
            error_events: 0,
            server_closes: 0,
            pongs_sent: 0,
            compressed_frames: 0,
            deflate_subscribers: 0,
            read_syscalls: 0,
            requests: 0,
            empty_answers: 0,
            bytes_sent_window: 0,
            gap_events: 0,
            subs_per_topic: vec![0; topics],
            sample: SampleStats::new(),
        }
    }

    /// Whether client `global` is a parsing sample, counting it if so.
    pub fn enlist(&mut self, global: usize, stride: usize, count: usize) -> bool {
        let sample = is_sample(global, stride, count);
        self.sample.subscribers += usize::from(sample);
        sample
    }

    /// Adds another loop's figures to these.
    pub fn merge(&mut self, other: &FleetStats) {
        self.subscribed += other.subscribed;
        self.failed += other.failed;
        for f in &other.failures {
            if self.failures.len() < 5 {
                self.failures.push(f.clone());
            }
        }
        self.ticks_total += other.ticks_total;
        self.ticks_window += other.ticks_window;
        self.bytes_total += other.bytes_total;
        self.bytes_window += other.bytes_window;
        self.error_events += other.error_events;
        self.server_closes += other.server_closes;
        self.pongs_sent += other.pongs_sent;
        self.compressed_frames += other.compressed_frames;
        self.deflate_subscribers += other.deflate_subscribers;
        self.read_syscalls += other.read_syscalls;
        self.requests += other.requests;
        self.empty_answers += other.empty_answers;
        self.bytes_sent_window += other.bytes_sent_window;
        self.gap_events += other.gap_events;
        for (a, b) in self.subs_per_topic.iter_mut().zip(&other.subs_per_topic) {
            *a += b;
        }
        self.sample.merge(&other.sample);
    }

    pub fn fail(&mut self, plan: &Plan, reason: String) {
        self.failed += 1;
        plan.failed.fetch_add(1, Ordering::Relaxed);
        if self.failures.len() < 5 {
            self.failures.push(reason);
        }
    }
}

#[derive(Debug)]
enum State {
    /// Non-blocking connect in flight.
    Connecting,
    /// Request sent (or partly); reading the response head.
    Handshaking {
        expected_accept: String,
    },
    /// `sub` sent; waiting for `{"event":"subscribed"}`.
    Subscribing,
    Open,
    Closed,
}

/// A sample's position in each of its topics: tickfan's seq, or the
/// peers' tick counter `n`.
#[derive(Debug, Default)]
struct Cursor {
    last: Vec<(u32, Option<u64>)>,
}

impl Cursor {
    /// Records `seq` on topic `topic`; counts gaps and duplicates. A
    /// cluster node's ticks carry `prev`, the topic's previous seq (seqs are
    /// the stream's and not contiguous): a gap is then `prev` not being the
    /// last seq seen, and counts as one missing tick at least.
    fn see(&mut self, topic: u32, seq: u64, prev: Option<u64>, sample: &mut SampleStats) {
        let slot = match self.last.iter_mut().find(|(t, _)| *t == topic) {
            Some(slot) => slot,
            None => {
                self.last.push((topic, None));
                self.last.last_mut().expect("just pushed")
            }
        };
        match (slot.1, prev) {
            (Some(last), _) if seq <= last => sample.duplicates += 1,
            (Some(last), Some(prev)) if prev != last => {
                sample.gaps += 1;
                sample.missing += 1;
            }
            (Some(_), Some(_)) => {}
            (Some(last), None) if seq > last + 1 => {
                sample.gaps += 1;
                sample.missing += seq - last - 1;
            }
            _ => {}
        }
        slot.1 = Some(slot.1.map_or(seq, |l| l.max(seq)));
    }
}

#[derive(Debug)]
struct Sub {
    stream: Stream,
    state: State,
    /// Bytes of a frame not yet complete (or, for a sink, not yet classified),
    /// carried into the front of the scratch before the next read.
    carry: Vec<u8>,
    /// Payload bytes still to skip of a frame a sink already counted.
    skip: usize,
    /// Bytes waiting to be written (handshake, sub, pong, close).
    out: Vec<u8>,
    sample: Option<Cursor>,
    /// Topic indices this subscriber follows.
    topics: Vec<u32>,
    /// Subscription acks still awaited before it counts as subscribed.
    acks: usize,
    /// NATS protocol bytes not yet a whole item (frames split items).
    nats: Vec<u8>,
    /// A sample's own inflater, when the server keeps its deflate window
    /// between messages (the loop's shared one cannot serve it).
    inflater: Option<Box<Inflater>>,
}

/// The tick fields a sample reads; the rest is skipped by serde.
#[derive(Deserialize)]
struct TickMsg<'a> {
    #[serde(borrow)]
    topic: &'a str,
    seq: u64,
    /// Cluster mode only: the topic's previous seq.
    #[serde(default)]
    prev: Option<u64>,
    data: TickData,
}

/// The publisher's tick JSON: the whole message on the peers.
#[derive(Deserialize)]
pub struct TickData {
    pub t: u64,
    #[serde(default)]
    pub n: u64,
}

#[derive(Deserialize)]
struct SubscribedMsg<'a> {
    #[serde(borrow)]
    topic: &'a str,
    seq: u64,
}

/// Per-frame context the frame walker needs besides the connection.
struct Ctx<'a> {
    plan: &'a Plan,
    stats: &'a mut FleetStats,
    in_window: bool,
    window_unix_ns: (u64, u64),
    rng: &'a mut Rng,
    /// The loop's one inflater, for samples' compressed messages.
    inflater: &'a mut Inflater,
}

/// Runs one loop to the end of the plan and returns what it counted.
pub fn run(config: FleetConfig, plan: Arc<Plan>) -> io::Result<FleetStats> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; SCRATCH_BYTES];
    let mut stats = FleetStats::new(config.topics.names.len());
    let mut rng = Rng::new(
        now_unix_ns() ^ (config.subscribers.start as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut inflater = Inflater::new();
    let mut subs: Vec<Sub> = Vec::with_capacity(config.subscribers.len());
    let mut ramp = Ramp::new(config.subscribers.clone(), config.connect_concurrency);
    let host = config.addr.to_string();

    loop {
        let now = Instant::now();
        let phase = plan.phase(now);
        if phase == Phase::Done {
            break;
        }

        // Open new connections while setup has room for them.
        while let Some(global) = (phase == Phase::Setup)
            .then(|| ramp.next_client())
            .flatten()
        {
            match connect(&config, global) {
                Ok(stream) => {
                    let stream = register(&poll, Token(subs.len()), stream)?;
                    let is_sample = stats.enlist(global, config.sample_stride, config.sample_count);
                    subs.push(Sub {
                        stream,
                        state: State::Connecting,
                        carry: Vec::new(),
                        skip: 0,
                        out: Vec::new(),
                        sample: is_sample.then(Cursor::default),
                        topics: config.topics.of_client(global),
                        acks: 0,
                        nats: Vec::new(),
                        inflater: None,
                    });
                    ramp.in_setup += 1;
                }
                Err(e) => stats.fail(&plan, format!("connect: {e}")),
            }
        }

        // Setup deadline: whoever is not subscribed by now has failed.
        if phase == Phase::Setup && now >= config.setup_deadline {
            for _ in 0..ramp.abandon_rest() {
                stats.fail(&plan, "not started before the setup deadline".into());
            }
            for sub in subs.iter_mut() {
                if !matches!(sub.state, State::Open | State::Closed) {
                    sub.state = State::Closed;
                    ramp.in_setup -= 1;
                    stats.fail(&plan, "not subscribed before the setup deadline".into());
                }
            }
        }

        poll.poll(&mut events, Some(POLL_TIMEOUT))?;
        let now = Instant::now();
        let in_window = plan.phase(now) == Phase::Window;
        let window_unix_ns = plan.window_unix_ns().unwrap_or((u64::MAX, u64::MAX));

        for event in events.iter() {
            let idx = event.token().0;
            let Some(sub) = subs.get_mut(idx) else {
                continue;
            };
            let mut ctx = Ctx {
                plan: &plan,
                stats: &mut stats,
                in_window,
                window_unix_ns,
                rng: &mut rng,
                inflater: &mut inflater,
            };
            let was_setup = !matches!(sub.state, State::Open | State::Closed);
            if let Err(reason) = on_event(
                sub,
                &mut scratch,
                &host,
                &config,
                event.is_writable(),
                &mut ctx,
            ) {
                if was_setup {
                    stats.fail(&plan, reason);
                } else if !matches!(sub.state, State::Closed) {
                    stats.server_closes += 1;
                }
                sub.state = State::Closed;
                let _ = poll.registry().deregister(&mut sub.stream);
            }
            let now_setup = !matches!(sub.state, State::Open | State::Closed);
            if was_setup && !now_setup {
                ramp.in_setup -= 1;
            }
        }
    }

    // Close politely: a masked close 1000 to every open connection, one try.
    for sub in subs.iter_mut() {
        if matches!(sub.state, State::Open) {
            let mask = rng.mask();
            ws::push_client_frame(&mut sub.out, OpCode::Close, &1000u16.to_be_bytes(), mask);
            let _ = flush(sub);
            let _ = sub.stream.shutdown(std::net::Shutdown::Write);
        }
    }
    Ok(stats)
}

/// Starts a non-blocking connect for global subscriber `global`, from the
/// source address its index selects when the fleet spreads over several.
fn connect(config: &FleetConfig, global: usize) -> io::Result<Stream> {
    // 127.0.0.1, 127.0.0.2, ... past `per_source_ip` clients each.
    let source = config
        .per_source_ip
        .map(|per_ip| (global / per_ip) as u32 + 1);
    Stream::new(dial(config.addr, source)?, config.tls.as_ref())
}

/// Handles one readiness event; `Err` closes the connection with a reason.
fn on_event(
    sub: &mut Sub,
    scratch: &mut [u8],
    host: &str,
    config: &FleetConfig,
    writable: bool,
    ctx: &mut Ctx<'_>,
) -> Result<(), String> {
    if matches!(sub.state, State::Closed) {
        return Ok(());
    }
    if matches!(sub.state, State::Connecting) {
        if let Ok(Some(e)) | Err(e) = sub.stream.take_error() {
            return Err(format!("connect: {e}"));
        }
        match sub.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(e) => return Err(format!("connect: {e}")),
        }
        let names: Vec<&str> = sub
            .topics
            .iter()
            .map(|&k| config.topics.names[k as usize].as_str())
            .collect();
        let path = config.target.sub_path(&config.path, &names);
        let mut req = ws::upgrade_request(
            host,
            &path,
            config.token.as_deref(),
            config.target.subprotocol(),
            ctx.rng,
        );
        if config.deflate {
            ws::offer_deflate(&mut req);
        }
        sub.out.extend_from_slice(&req.bytes);
        sub.state = State::Handshaking {
            expected_accept: req.expected_accept,
        };
    }
    if writable || !sub.out.is_empty() {
        flush(sub).map_err(|e| format!("write: {e}"))?;
    }
    read_all(sub, scratch, config, ctx)
}

/// Writes what is pending (over TLS, the records held first); WouldBlock
/// leaves the rest for the next writable edge.
fn flush(sub: &mut Sub) -> io::Result<()> {
    sub.stream.send_pending()?;
    while !sub.out.is_empty() {
        match sub.stream.write(&sub.out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                sub.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads until the socket is drained, walking frames as they arrive.
fn read_all(
    sub: &mut Sub,
    scratch: &mut [u8],
    config: &FleetConfig,
    ctx: &mut Ctx<'_>,
) -> Result<(), String> {
    loop {
        let carried = sub.carry.len();
        if carried >= scratch.len() {
            return Err("frame larger than the read scratch".into());
        }
        scratch[..carried].copy_from_slice(&sub.carry);
        sub.carry.clear();
        let room = scratch.len() - carried;
        let n = match sub.stream.read(&mut scratch[carried..]) {
            Ok(0) => return Err("server closed the connection".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sub.carry.extend_from_slice(&scratch[..carried]);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                sub.carry.extend_from_slice(&scratch[..carried]);
                continue;
            }
            Err(e) => return Err(format!("read: {e}")),
        };
        ctx.stats.read_syscalls += 1;
        ctx.stats.bytes_total += n as u64;
        if ctx.in_window {
            ctx.stats.bytes_window += n as u64;
        }
        let filled = carried + n;
        let used = consume(sub, &scratch[..filled], config, ctx)?;
        sub.carry.extend_from_slice(&scratch[used..filled]);
        if !sub.out.is_empty() {
            flush(sub).map_err(|e| format!("write: {e}"))?;
        }
        if matches!(sub.state, State::Closed) {
            return Err("server sent close".into());
        }
        // A short read drained the receive queue at that moment; data that
        // arrives later raises a new edge, so the extra read that would only
        // return WouldBlock is skipped (as tokio does on epoll). Not over
        // TLS: a short read there may come from the session's plaintext
        // while the socket still holds records.
        if n < room && sub.stream.short_read_drains() {
            return Ok(());
        }
    }
}

/// Consumes what it can of `buf` (the handshake response or frames) and
/// returns how many bytes it used; the rest is a partial frame to carry.
fn consume(
    sub: &mut Sub,
    buf: &[u8],
    config: &FleetConfig,
    ctx: &mut Ctx<'_>,
) -> Result<usize, String> {
    let mut pos = 0;
    if let State::Handshaking { expected_accept } = &sub.state {
        match ws::check_upgrade_response(buf, expected_accept) {
            UpgradeStatus::Partial => return Ok(0),
            UpgradeStatus::Refused(reason) => return Err(format!("handshake: {reason}")),
            UpgradeStatus::Accepted(head) => {
                pos = head;
                match ws::deflate_agreed(&buf[..head]) {
                    ws::Deflate::Off => {}
                    ws::Deflate::NoContext => ctx.stats.deflate_subscribers += 1,
                    ws::Deflate::Context => {
                        ctx.stats.deflate_subscribers += 1;
                        if sub.sample.is_some() {
                            sub.inflater = Some(Box::new(Inflater::new()));
                        }
                    }
                }
                let names: Vec<&str> = sub
                    .topics
                    .iter()
                    .map(|&k| config.topics.names[k as usize].as_str())
                    .collect();
                sub.acks = config.target.subscribe(&names, &mut sub.out, ctx.rng);
                sub.state = State::Subscribing;
                if sub.acks == 0 {
                    subscribed(sub, ctx);
                }
            }
        }
    }
    if sub.skip > 0 {
        let skipped = sub.skip.min(buf.len() - pos);
        sub.skip -= skipped;
        pos += skipped;
    }
    while pos < buf.len() {
        let Some(frame) = ws::server_frame(&buf[pos..]).map_err(str::to_string)? else {
            break;
        };
        let payload_at = pos + frame.header_len;
        let available = buf.len() - payload_at;
        let frame_end = payload_at + frame.payload_len;
        ctx.stats.compressed_frames += u64::from(frame.compressed);
        let peer_tick = matches!(frame.opcode, OP_TEXT | OP_BINARY)
            && matches!(config.target, Target::Nchan | Target::Uws | Target::NodeWs);
        if peer_tick && sub.sample.is_none() && matches!(sub.state, State::Open) {
            // Every message of these peers is a tick: count it unread.
            count_tick(ctx);
            pos = skip_to(sub, frame_end, buf.len());
            continue;
        }
        if frame.opcode == OP_TEXT
            && frame.compressed
            && sub.sample.is_none()
            && config.target == Target::Tickfan
        {
            // tickfan compresses ticks only, never events: counted unread.
            count_tick(ctx);
            pos = skip_to(sub, frame_end, buf.len());
            continue;
        }
        if frame.opcode == OP_TEXT && sub.sample.is_none() && config.target == Target::Tickfan {
            // A sink tells a tick from its first bytes and skips the rest;
            // anything else is a (rare, small) event, read whole below.
            let look = frame.payload_len.min(TICK_PREFIX.len());
            if available < look {
                break;
            }
            if buf[payload_at..payload_at + look] == *TICK_PREFIX {
                count_tick(ctx);
                pos = skip_to(sub, frame_end, buf.len());
                continue;
            }
        }
        if available < frame.payload_len {
            break;
        }
        let inflated;
        let payload = if frame.compressed {
            // Samples only (sinks counted it above): one copy per tick.
            let compressed = &buf[payload_at..frame_end];
            inflated = match sub.inflater.as_mut() {
                Some(own) => own.inflate(compressed, false)?.to_vec(),
                None => ctx.inflater.inflate(compressed, true)?.to_vec(),
            };
            &inflated[..]
        } else {
            &buf[payload_at..frame_end]
        };
        pos = frame_end;
        match frame.opcode {
            OP_TEXT | OP_BINARY if config.target == Target::Nats => on_nats(sub, payload, ctx)?,
            OP_TEXT | OP_BINARY if peer_tick => {
                count_tick(ctx);
                let topic = sub.topics[0];
                on_peer_tick(sub, topic, payload, ctx);
            }
            OP_TEXT => on_text(sub, payload, config, ctx)?,
            OP_PING => {
                // §5.5.2: answer with a pong carrying the same data.
                let mask = ctx.rng.mask();
                ws::push_client_frame(&mut sub.out, OpCode::Pong, payload, mask);
                ctx.stats.pongs_sent += 1;
            }
            OP_CLOSE => {
                // §5.5.1: echo the status code, then stop reading.
                let code = payload.get(..2).unwrap_or(&[]);
                let mask = ctx.rng.mask();
                ws::push_client_frame(&mut sub.out, OpCode::Close, code, mask);
                if !matches!(sub.state, State::Open) {
                    return Err(format!(
                        "closed before subscribed: {}",
                        String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]))
                    ));
                }
                sub.state = State::Closed;
                return Ok(pos);
            }
            _ => {} // pong, binary, continuation: not part of this protocol's stream
        }
    }
    Ok(pos)
}

fn count_tick(ctx: &mut Ctx<'_>) {
    ctx.stats.ticks_total += 1;
    if ctx.in_window {
        ctx.stats.ticks_window += 1;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A whole event frame (anything that is not a tick), for sinks and samples.
fn on_event_frame(
    sub: &mut Sub,
    payload: &[u8],
    config: &FleetConfig,
    ctx: &mut Ctx<'_>,
) -> Result<(), String> {
    if contains(payload, ERROR_MARK) {
        ctx.stats.error_events += 1;
        if matches!(sub.state, State::Subscribing) {
            return Err(format!(
                "sub refused: {}",
                String::from_utf8_lossy(&payload[..payload.len().min(160)])
            ));
        }
    } else if contains(payload, SUBSCRIBED_MARK) {
        if let (Ok(msg), Some(cursor)) = (
            serde_json::from_slice::<SubscribedMsg>(payload),
            sub.sample.as_mut(),
        ) {
            if let Some(k) = topic_index(config, &sub.topics, msg.topic) {
                cursor.last.retain(|(t, _)| *t != k);
                cursor.last.push((k, Some(msg.seq)));
            }
        }
        if matches!(sub.state, State::Subscribing) {
            sub.acks = sub.acks.saturating_sub(1);
            if sub.acks == 0 {
                subscribed(sub, ctx);
            }
        }
    }
    Ok(())
}

/// Which of `topics` is named `name`.
fn topic_index(config: &FleetConfig, topics: &[u32], name: &str) -> Option<u32> {
    topics
        .iter()
        .copied()
        .find(|&k| config.topics.names[k as usize] == name)
}

/// Every subscription of `sub` is in place: it joins the measured fleet.
fn subscribed(sub: &mut Sub, ctx: &mut Ctx<'_>) {
    sub.state = State::Open;
    ctx.stats.subscribed += 1;
    for &k in &sub.topics {
        ctx.stats.subs_per_topic[k as usize] += 1;
    }
    ctx.plan.ready.fetch_add(1, Ordering::Relaxed);
}

/// A peer's tick (the publisher's JSON, nothing added) seen by a sample.
fn on_peer_tick(sub: &mut Sub, topic: u32, payload: &[u8], ctx: &mut Ctx<'_>) {
    let Some(cursor) = sub.sample.as_mut() else {
        return;
    };
    let sample = &mut ctx.stats.sample;
    sample.ticks += 1;
    let Ok(tick) = serde_json::from_slice::<TickData>(payload) else {
        sample.unparsable += 1;
        return;
    };
    cursor.see(topic, tick.n, None, sample);
    record_latency(tick.t, ctx);
}

/// Records a sample's latency for a tick sent inside the window.
fn record_latency(t: u64, ctx: &mut Ctx<'_>) {
    let (from, to) = ctx.window_unix_ns;
    if t >= from && t < to {
        let latency = now_unix_ns().saturating_sub(t);
        ctx.stats
            .sample
            .latency_ns
            .saturating_record(latency.max(1_000));
    }
}

/// One NATS frame: protocol bytes appended to the subscriber's stream and
/// walked item by item (`MSG` is a tick, `PONG` the subscription ack).
fn on_nats(sub: &mut Sub, payload: &[u8], ctx: &mut Ctx<'_>) -> Result<(), String> {
    sub.nats.extend_from_slice(payload);
    let mut pos = 0;
    let mut stream = std::mem::take(&mut sub.nats);
    while let Some((item, used)) = nats_item(&stream[pos..])? {
        pos += used;
        match item {
            NatsItem::Msg(body) => {
                if matches!(sub.state, State::Open) {
                    count_tick(ctx);
                    let topic = sub.topics[0];
                    on_peer_tick(sub, topic, body, ctx);
                }
            }
            NatsItem::Ping => {
                let mask = ctx.rng.mask();
                ws::push_client_frame(&mut sub.out, OpCode::Binary, b"PONG\r\n", mask);
                ctx.stats.pongs_sent += 1;
            }
            NatsItem::Pong => {
                if matches!(sub.state, State::Subscribing) {
                    sub.acks = 0;
                    subscribed(sub, ctx);
                }
            }
            NatsItem::Err(text) => {
                ctx.stats.error_events += 1;
                if matches!(sub.state, State::Subscribing) {
                    return Err(format!("NATS: {}", String::from_utf8_lossy(text)));
                }
            }
            NatsItem::Other => {}
        }
    }
    stream.drain(..pos);
    sub.nats = stream;
    Ok(())
}

/// A whole text frame: a tick a sample parses, or an event.
fn on_text(
    sub: &mut Sub,
    payload: &[u8],
    config: &FleetConfig,
    ctx: &mut Ctx<'_>,
) -> Result<(), String> {
    if !payload.starts_with(TICK_PREFIX) {
        return on_event_frame(sub, payload, config, ctx);
    }
    count_tick(ctx);
    let sample = &mut ctx.stats.sample;
    sample.ticks += 1;
    let Ok(tick) = serde_json::from_slice::<TickMsg>(payload) else {
        sample.unparsable += 1;
        return Ok(());
    };
    if let Some(k) = topic_index(config, &sub.topics, tick.topic) {
        if let Some(cursor) = sub.sample.as_mut() {
            cursor.see(k, tick.seq, tick.prev, sample);
        }
    }
    record_latency(tick.data.t, ctx);
    Ok(())
}

/// Moves past a counted frame that ends at `frame_end`: when it runs past
/// the buffer (`buffered` bytes), the rest is skipped as it arrives.
fn skip_to(sub: &mut Sub, frame_end: usize, buffered: usize) -> usize {
    if frame_end <= buffered {
        frame_end
    } else {
        sub.skip = frame_end - buffered;
        buffered
    }
}

#[cfg(test)]
mod cursor_tests {
    use super::*;

    fn sample() -> SampleStats {
        SampleStats::new()
    }

    #[test]
    fn contiguous_seqs_without_prev_count_holes_and_repeats() {
        let (mut cursor, mut stats) = (Cursor::default(), sample());
        for seq in [1, 2, 5, 5, 6] {
            cursor.see(0, seq, None, &mut stats);
        }
        assert_eq!((stats.gaps, stats.missing, stats.duplicates), (1, 2, 1));
    }

    #[test]
    fn cluster_seqs_follow_prev_not_seq_plus_one() {
        let (mut cursor, mut stats) = (Cursor::default(), sample());
        // 10 -> 17 -> 30 is a complete chain; 41 says its predecessor was
        // 35, which was never seen.
        for (seq, prev) in [(10, 3), (17, 10), (30, 17), (41, 35), (41, 35)] {
            cursor.see(0, seq, Some(prev), &mut stats);
        }
        assert_eq!((stats.gaps, stats.missing, stats.duplicates), (1, 1, 1));
        // Topics are followed apart.
        cursor.see(1, 12, Some(0), &mut stats);
        cursor.see(1, 13, Some(12), &mut stats);
        assert_eq!(stats.gaps, 1);
    }
}
