//! One event loop of HTTP long-poll clients: each holds a keep-alive
//! connection and asks, in a loop, for the ticks after its cursor (tickfan:
//! `GET /poll?topic=T&since=T:SEQ&timeout=25`; nchan: `GET /lp/<ch>` with
//! the last answer's `Last-Modified` / `Etag` sent back).
//!
//! Like the WebSocket fleet it counts cheaply (tickfan: occurrences of
//! `"seq":` in the body; nchan: one message per answer) and parses only in
//! the sample. Bytes on the wire per tick are request + response bytes
//! (HTTP heads included, TCP/IP headers not), so the figure can be set
//! beside a WebSocket subscriber's frame bytes. A connection the server
//! closes (nginx ends keep-alive after 1,000 requests) is reopened with the
//! same cursor and counted.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Deserialize;

use crate::dial::{dial, register, Ramp};
use crate::fleet::{FleetStats, TickData};
use crate::plan::{now_unix_ns, Phase, Plan};
use crate::target::{PollCursor, Target};
use crate::topics::Topics;

/// How often an idle loop wakes to look at the clock.
const POLL_TIMEOUT: Duration = Duration::from_millis(5);

/// Largest answer accepted (head and body), far above what a client that
/// keeps up is sent; a bigger one is a broken stream.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// What one loop needs to know.
#[derive(Debug, Clone)]
pub struct PollConfig {
    pub addr: SocketAddr,
    pub target: Target,
    pub topics: Arc<Topics>,
    /// Global long-poll client indices this loop owns.
    pub clients: Range<usize>,
    pub sample_stride: usize,
    pub sample_count: usize,
    /// Clients per source address; `None` lets the kernel pick 127.0.0.1.
    pub per_source_ip: Option<usize>,
    pub connect_concurrency: usize,
    pub setup_deadline: Instant,
}

/// Where a client's connection is.
#[derive(Debug, PartialEq, Eq)]
enum State {
    Connecting,
    /// A request is written (or being written); reading its answer.
    Waiting,
    Closed,
}

#[derive(Debug)]
struct Client {
    stream: TcpStream,
    state: State,
    topic: u32,
    cursor: PollCursor,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    sample: bool,
    /// The last seq (tickfan) or `n` (nchan) a sample saw.
    last: Option<u64>,
    /// Counted in `plan.ready` once its first request is on the wire.
    ready: bool,
    reconnects: u64,
}

/// The answer fields a tickfan sample reads.
#[derive(Deserialize)]
struct PollAnswer {
    ticks: Vec<PollTick>,
}

#[derive(Deserialize)]
struct PollTick {
    seq: u64,
    data: TickData,
}

/// Runs one loop to the end of the plan and returns what it counted.
pub fn run(config: PollConfig, plan: Arc<Plan>) -> io::Result<FleetStats> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut stats = FleetStats::new(config.topics.names.len());
    let mut clients: Vec<Client> = Vec::with_capacity(config.clients.len());
    let mut ramp = Ramp::new(config.clients.clone(), config.connect_concurrency);
    let host = config.addr.to_string();
    let mut scratch = vec![0u8; 256 * 1024];

    loop {
        let now = Instant::now();
        let phase = plan.phase(now);
        if phase == Phase::Done {
            break;
        }
        while let Some(global) = (phase == Phase::Setup)
            .then(|| ramp.next_client())
            .flatten()
        {
            match connect(&config, global) {
                Ok(stream) => {
                    let stream = register(&poll, Token(clients.len()), stream)?;
                    let sample = stats.enlist(global, config.sample_stride, config.sample_count);
                    clients.push(Client {
                        stream,
                        state: State::Connecting,
                        topic: config.topics.of_poller(global),
                        cursor: config.target.initial_cursor(),
                        out: Vec::new(),
                        inbuf: Vec::new(),
                        sample,
                        last: None,
                        ready: false,
                        reconnects: 0,
                    });
                    ramp.in_setup += 1;
                }
                Err(e) => stats.fail(&plan, format!("connect: {e}")),
            }
        }
        if phase == Phase::Setup && now >= config.setup_deadline {
            for _ in 0..ramp.abandon_rest() {
                stats.fail(&plan, "not started before the setup deadline".into());
            }
            for c in clients
                .iter_mut()
                .filter(|c| !c.ready && c.state != State::Closed)
            {
                c.state = State::Closed;
                ramp.in_setup -= 1;
                stats.fail(&plan, "no request sent before the setup deadline".into());
            }
        }

        poll.poll(&mut events, Some(POLL_TIMEOUT))?;
        let now = Instant::now();
        let in_window = plan.phase(now) == Phase::Window;
        let window = plan.window_unix_ns().unwrap_or((u64::MAX, u64::MAX));
        for event in events.iter() {
            let idx = event.token().0;
            let Some(c) = clients.get_mut(idx) else {
                continue;
            };
            if c.state == State::Closed {
                continue;
            }
            let was_ready = c.ready;
            let result = on_event(
                c,
                &config,
                &host,
                &mut scratch,
                &mut stats,
                in_window,
                window,
            );
            if c.ready && !was_ready {
                ramp.in_setup -= 1;
                stats.subscribed += 1;
                stats.subs_per_topic[c.topic as usize] += 1;
                plan.ready.fetch_add(1, Ordering::Relaxed);
            }
            match result {
                Ok(()) => {}
                Err(Reopen) if c.ready && plan.phase(now) != Phase::Done => {
                    // The server ended the connection between answers (or
                    // mid-answer): reopen with the same cursor.
                    let _ = poll.registry().deregister(&mut c.stream);
                    c.reconnects += 1;
                    stats.server_closes += 1;
                    match connect(&config, idx + config.clients.start) {
                        Ok(mut stream) => {
                            poll.registry().register(
                                &mut stream,
                                Token(idx),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            c.stream = stream;
                            c.state = State::Connecting;
                            c.out.clear();
                            c.inbuf.clear();
                        }
                        Err(e) => {
                            c.state = State::Closed;
                            stats.error_events += 1;
                            if stats.failures.len() < 5 {
                                stats.failures.push(format!("reconnect: {e}"));
                            }
                        }
                    }
                }
                Err(Reopen) => {
                    let _ = poll.registry().deregister(&mut c.stream);
                    if !c.ready {
                        ramp.in_setup -= 1;
                        stats.fail(&plan, "closed before the first request".into());
                    }
                    c.state = State::Closed;
                }
            }
        }
    }
    Ok(stats)
}

/// The connection must be reopened (or, in setup, has failed).
#[derive(Debug)]
struct Reopen;

/// Starts a non-blocking connect for client `global`.
fn connect(config: &PollConfig, global: usize) -> io::Result<TcpStream> {
    // Past the WebSocket fleet's addresses: 127.0.0.101 and up.
    let source = config
        .per_source_ip
        .map(|per_ip| (global / per_ip) as u32 + 101);
    dial(config.addr, source)
}

fn on_event(
    c: &mut Client,
    config: &PollConfig,
    host: &str,
    scratch: &mut [u8],
    stats: &mut FleetStats,
    in_window: bool,
    window: (u64, u64),
) -> Result<(), Reopen> {
    if c.state == State::Connecting {
        if let Ok(Some(_)) | Err(_) = c.stream.take_error() {
            return Err(Reopen);
        }
        match c.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(_) => return Err(Reopen),
        }
        c.state = State::Waiting;
        request(c, config, host, stats, in_window);
    }
    flush(c, stats, in_window)?;
    loop {
        let n = match c.stream.read(scratch) {
            Ok(0) => return Err(Reopen),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Reopen),
        };
        stats.read_syscalls += 1;
        stats.bytes_total += n as u64;
        if in_window {
            stats.bytes_window += n as u64;
        }
        c.inbuf.extend_from_slice(&scratch[..n]);
        // Answers are taken one at a time; the next request goes out
        // only after the answer before it.
        while let Some(close) = answer(c, config, stats, in_window, window)? {
            if close {
                return Err(Reopen);
            }
            request(c, config, host, stats, in_window);
            flush(c, stats, in_window)?;
        }
        if c.inbuf.len() > MAX_ANSWER_BYTES {
            stats.error_events += 1;
            return Err(Reopen);
        }
        if n < scratch.len() {
            return Ok(());
        }
    }
}

/// Queues the next poll for the client's cursor.
fn request(c: &mut Client, config: &PollConfig, host: &str, stats: &mut FleetStats, w: bool) {
    let topic = &config.topics.names[c.topic as usize];
    let req = config.target.longpoll_request(host, topic, &c.cursor);
    stats.requests += 1;
    if w {
        stats.bytes_sent_window += req.len() as u64;
    }
    stats.bytes_total += req.len() as u64;
    c.out.extend_from_slice(req.as_bytes());
}

fn flush(c: &mut Client, _stats: &mut FleetStats, _w: bool) -> Result<(), Reopen> {
    while !c.out.is_empty() {
        match c.stream.write(&c.out) {
            Ok(0) => return Err(Reopen),
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Reopen),
        }
    }
    c.ready = true;
    Ok(())
}

/// Takes one complete answer off the front of `c.inbuf`, if there is one;
/// returns whether the server will close the connection after it.
fn answer(
    c: &mut Client,
    config: &PollConfig,
    stats: &mut FleetStats,
    in_window: bool,
    window: (u64, u64),
) -> Result<Option<bool>, Reopen> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(&c.inbuf) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => {
            stats.error_events += 1;
            return Err(Reopen);
        }
    };
    let code = response.code.unwrap_or(0);
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let body_len = if code == 204 || code == 304 {
        0
    } else {
        match header("content-length").and_then(|v| std::str::from_utf8(v).ok()) {
            Some(v) => v.trim().parse::<usize>().map_err(|_| Reopen)?,
            None => {
                // No length and not bodyless: this client cannot frame it.
                stats.error_events += 1;
                return Err(Reopen);
            }
        }
    };
    if c.inbuf.len() < head + body_len {
        return Ok(None);
    }
    let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
    let body = &c.inbuf[head..head + body_len];
    match code {
        200 => match config.target {
            Target::Nchan => {
                let text = |v: Option<&[u8]>| v.map(|v| String::from_utf8_lossy(v).into_owned());
                c.cursor = PollCursor::Nchan {
                    modified: text(header("last-modified")),
                    etag: text(header("etag")),
                };
                count(stats, in_window, 1);
                if c.sample {
                    sample_peer(&mut c.last, body, stats, window);
                }
            }
            _ => {
                let ticks = occurrences(body, b"\"seq\":");
                count(stats, in_window, ticks);
                if !contains(body, b"\"gaps\":[]") {
                    stats.gap_events += 1;
                }
                if let Some(seq) = cursor_seq(body) {
                    c.cursor = PollCursor::Seq(seq);
                }
                if c.sample {
                    sample_tickfan(&mut c.last, body, stats, window);
                }
            }
        },
        204 | 304 | 408 => stats.empty_answers += 1,
        _ => {
            stats.error_events += 1;
            if stats.failures.len() < 5 {
                stats.failures.push(format!(
                    "long-poll answer {code}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(120)])
                ));
            }
        }
    }
    c.inbuf.drain(..head + body_len);
    Ok(Some(close))
}

fn count(stats: &mut FleetStats, in_window: bool, ticks: u64) {
    stats.ticks_total += ticks;
    if in_window {
        stats.ticks_window += ticks;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn occurrences(haystack: &[u8], needle: &[u8]) -> u64 {
    haystack
        .windows(needle.len())
        .filter(|w| w == &needle)
        .count() as u64
}

/// The seq of `"cursor":"TOPIC:SEQ"` at the end of a tickfan answer.
fn cursor_seq(body: &[u8]) -> Option<u64> {
    const MARK: &[u8] = b"\"cursor\":\"";
    let at = body.windows(MARK.len()).rposition(|w| w == MARK)? + MARK.len();
    let rest = &body[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    let value = std::str::from_utf8(&rest[..end]).ok()?;
    value.rsplit(':').next()?.parse().ok()
}

fn see(last_seen: &mut Option<u64>, seq: u64, stats: &mut FleetStats) {
    let s = &mut stats.sample;
    match *last_seen {
        Some(last) if seq <= last => s.duplicates += 1,
        Some(last) if seq > last + 1 => {
            s.gaps += 1;
            s.missing += seq - last - 1;
        }
        _ => {}
    }
    *last_seen = Some(last_seen.map_or(seq, |l| l.max(seq)));
}

fn latency(t: u64, stats: &mut FleetStats, window: (u64, u64)) {
    if t >= window.0 && t < window.1 {
        let ns = now_unix_ns().saturating_sub(t);
        stats.sample.latency_ns.saturating_record(ns.max(1_000));
    }
}

fn sample_tickfan(last: &mut Option<u64>, body: &[u8], stats: &mut FleetStats, window: (u64, u64)) {
    let Ok(answer) = serde_json::from_slice::<PollAnswer>(body) else {
        stats.sample.unparsable += 1;
        return;
    };
    for tick in answer.ticks {
        stats.sample.ticks += 1;
        see(last, tick.seq, stats);
        latency(tick.data.t, stats, window);
    }
}

fn sample_peer(last: &mut Option<u64>, body: &[u8], stats: &mut FleetStats, window: (u64, u64)) {
    stats.sample.ticks += 1;
    let Ok(tick) = serde_json::from_slice::<TickData>(body) else {
        stats.sample.unparsable += 1;
        return;
    };
    see(last, tick.n, stats);
    latency(tick.t, stats, window);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_cursor_of_a_tickfan_answer() {
        let body = br#"{"ticks":[{"topic":"a:b","seq":7,"ts":1,"data":{"t":1}},{"topic":"a:b","seq":8,"ts":1,"data":{"t":2}}],"gaps":[],"cursor":"a:b:8"}"#;
        assert_eq!(occurrences(body, b"\"seq\":"), 2);
        assert_eq!(cursor_seq(body), Some(8));
        let a: PollAnswer = serde_json::from_slice(body).unwrap();
        assert_eq!(a.ticks[1].seq, 8);
        assert_eq!(a.ticks[1].data.t, 2);
    }
}
