//! The publisher: WebSocket connections sending ticks at a paced aggregate
//! rate (or as fast as the broker reads them), round robin over the run's
//! topics, from the start of the plan to the end of the measured window.
//! tickfan and NATS take every topic on one connection; the other peers
//! publish to the topic in the path, so they get one connection per topic.
//!
//! Pacing is in small batches: every millisecond it sends the ticks that are
//! due by then, each stamped with its send time in nanoseconds since the
//! UNIX epoch (`data.t`), which the sample subscribers turn into latency.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use tickfan::protocol::frame::OpCode;

use crate::plan::{now_unix_ns, Phase, Plan};
use crate::target::Target;
use crate::ws::{self, Rng, UpgradeStatus, OP_CLOSE, OP_PING, OP_TEXT};

/// Pacing step: ticks due are sent this often.
const PACE_STEP: Duration = Duration::from_millis(1);

/// Unsent bytes the publisher keeps at most; past this it stops generating,
/// so a broker that reads slowly slows the publisher instead of growing a
/// queue here (and latency then counts from a realistic send time).
const MAX_PENDING_BYTES: usize = 64 * 1024;

/// Ticks encoded per batch when publishing flat out.
const FLAT_OUT_BATCH: u64 = 64;

/// What the publisher needs to know.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub addr: SocketAddr,
    pub path: String,
    pub target: Target,
    /// Topic names; ticks go to them in turn (round robin).
    pub topics: Vec<String>,
    pub token: Option<String>,
    /// Ticks per second over all topics; 0 = as fast as the connections take them.
    pub rate: u64,
    pub setup_deadline: Instant,
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
    /// `{"event":"error"}` frames (or NATS `-ERR`) the broker sent back.
    pub error_events: u64,
    /// The first error event, for the report.
    pub first_error: Option<String>,
    pub write_syscalls: u64,
    /// Publisher connections used (one per topic for peers that publish by path).
    pub connections: usize,
}

/// One publisher connection and what is queued on it.
struct PubConn {
    stream: TcpStream,
    out: Vec<u8>,
    /// Per queued tick: its end offset in the cumulative byte count, its
    /// topic and whether it is in the window, so a tick counts as published
    /// only once all its bytes are written.
    queued: VecDeque<(usize, u32, bool)>,
    written_total: usize,
    queued_total: usize,
    inbuf: Vec<u8>,
}

impl PubConn {
    fn pending(&self) -> usize {
        self.queued_total - self.written_total
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
                Err(e) => return Err(format!("publisher write: {e}")),
            }
        }
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
}

/// Connects, upgrades, waits for the start and publishes until the window ends.
pub fn run(config: PublisherConfig, plan: Arc<Plan>) -> Result<PublisherStats, String> {
    let mut rng = Rng::new(now_unix_ns().rotate_left(17));
    let k = config.topics.len();
    let paths: Vec<String> = if config.target.one_publisher_connection() {
        vec![config.target.pub_path(&config.path, "")]
    } else {
        config
            .topics
            .iter()
            .map(|t| config.target.pub_path(&config.path, t))
            .collect()
    };
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut conns = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let mut stream = connect_and_upgrade(&config, path, &mut rng)?;
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(MAX_PENDING_BYTES * 2);
        config.target.publisher_hello(&mut out, &mut rng);
        conns.push(PubConn {
            stream,
            queued_total: out.len(),
            out,
            queued: VecDeque::new(),
            written_total: 0,
            inbuf: Vec::new(),
        });
    }
    plan.publisher_ready.store(true, Ordering::Release);
    let mut events = Events::with_capacity(256);

    let mut stats = PublisherStats {
        published_per_topic: vec![0; k],
        connections: conns.len(),
        ..PublisherStats::default()
    };
    // Per-topic counter carried in each tick as `n` (the peers' seq).
    let mut counters = vec![0u64; k];
    let mut generated = 0u64;
    let mut scratch = vec![0u8; 64 * 1024];
    let window = loop {
        if let Some(w) = plan.window_unix_ns() {
            break w;
        }
        if plan.phase(Instant::now()) == Phase::Done {
            return Ok(stats);
        }
        // Answer pings while waiting for the fleet to subscribe.
        let _ = poll.poll(&mut events, Some(Duration::from_millis(5)));
        for conn in conns.iter_mut() {
            conn.write(&mut stats)?;
            read_control(conn, &mut scratch, &mut stats, &mut rng, config.target)?;
        }
    };
    let start = plan.start().unwrap_or_else(Instant::now);
    while Instant::now() < start {
        std::thread::sleep(Duration::from_micros(200));
    }

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
        for _ in 0..want {
            let topic = (generated % k as u64) as usize;
            let conn = &mut conns[topic % paths.len()];
            if conn.pending() >= MAX_PENDING_BYTES {
                break;
            }
            let t = now_unix_ns();
            counters[topic] += 1;
            let data = tick_data(t, counters[topic]);
            let before = conn.out.len();
            config
                .target
                .push_publish(&mut conn.out, &config.topics[topic], &data, rng.mask());
            conn.queued_total += conn.out.len() - before;
            conn.queued.push_back((
                conn.queued_total,
                topic as u32,
                t >= window.0 && t < window.1,
            ));
            generated += 1;
        }
        // Write what is queued.
        let mut blocked = false;
        for conn in conns.iter_mut() {
            blocked |= conn.write(&mut stats)?;
            read_control(conn, &mut scratch, &mut stats, &mut rng, config.target)?;
        }
        if blocked || config.rate > 0 {
            // Paced: sleep to the next step. Blocked: wait for writable.
            if blocked {
                let _ = poll.poll(&mut events, Some(Duration::from_millis(1)));
            } else {
                std::thread::sleep(PACE_STEP);
            }
        }
    }
    for conn in conns.iter_mut() {
        let _ = conn.stream.write(&ws_close(&mut rng));
        let _ = conn.stream.shutdown(std::net::Shutdown::Write);
    }
    Ok(stats)
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

/// Connects with a blocking socket (bounded by the setup deadline), upgrades,
/// then turns the socket non-blocking for the run.
fn connect_and_upgrade(
    config: &PublisherConfig,
    path: &str,
    rng: &mut Rng,
) -> Result<TcpStream, String> {
    let left = config
        .setup_deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    let std_stream = std::net::TcpStream::connect_timeout(&config.addr, left)
        .map_err(|e| format!("publisher connect: {e}"))?;
    std_stream.set_nodelay(true).map_err(|e| e.to_string())?;
    std_stream
        .set_read_timeout(Some(left))
        .map_err(|e| e.to_string())?;
    let mut s = std_stream;
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
            UpgradeStatus::Accepted(_) => break,
        }
    }
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(TcpStream::from_std(s))
}

/// Reads what the broker sent a publisher connection: answers pings,
/// counts errors, drops the echo of its own ticks (peers that publish by
/// path also subscribe the publisher).
fn read_control(
    conn: &mut PubConn,
    scratch: &mut [u8],
    stats: &mut PublisherStats,
    rng: &mut Rng,
    target: Target,
) -> Result<(), String> {
    loop {
        match conn.stream.read(scratch) {
            Ok(0) => return Err("broker closed the publisher connection".into()),
            Ok(n) => conn.inbuf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("publisher read: {e}")),
        }
    }
    let mut pos = 0;
    let mut replies = Vec::new();
    while let Some(frame) = ws::server_frame(&conn.inbuf[pos..]).map_err(str::to_string)? {
        let end = pos + frame.header_len + frame.payload_len;
        if end > conn.inbuf.len() {
            break;
        }
        let payload = &conn.inbuf[pos + frame.header_len..end];
        let error = match (target, frame.opcode) {
            (Target::Tickfan, OP_TEXT) => payload.starts_with(b"{\"event\":\"error\""),
            (Target::Nats, _) => payload.starts_with(b"-ERR"),
            _ => false,
        };
        if error {
            stats.error_events += 1;
            if stats.first_error.is_none() {
                stats.first_error = Some(String::from_utf8_lossy(payload).into_owned());
            }
        }
        match frame.opcode {
            OP_PING => ws::push_client_frame(&mut replies, OpCode::Pong, payload, rng.mask()),
            OP_CLOSE => return Err("broker closed the publisher connection".into()),
            // NATS pings in its own protocol; the publisher sees only
            // INFO, PING and errors, each in a frame of its own.
            _ if target == Target::Nats && payload.starts_with(b"PING\r\n") => {
                ws::push_client_frame(&mut replies, OpCode::Binary, b"PONG\r\n", rng.mask())
            }
            _ => {}
        }
        pos = end;
    }
    conn.inbuf.drain(..pos);
    conn.queued_total += replies.len();
    conn.out.extend_from_slice(&replies);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
