//! The publisher: one WebSocket connection sending `pub` ops at a paced rate
//! (or as fast as the broker reads them) from the start of the plan to the
//! end of the measured window.
//!
//! Pacing is in small batches: every millisecond it sends the ticks that are
//! due by then, each stamped with its send time in nanoseconds since the
//! UNIX epoch (`data.t`), which the sample subscribers turn into latency.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use tickfan::protocol::frame::OpCode;

use crate::plan::{now_unix_ns, Phase, Plan};
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
    pub topic: String,
    pub token: Option<String>,
    /// Ticks per second; 0 = as fast as the connection takes them.
    pub rate: u64,
    pub setup_deadline: Instant,
}

/// What the publisher did.
#[derive(Debug, Default, Clone)]
pub struct PublisherStats {
    /// Ticks fully handed to the kernel over the whole run.
    pub published_total: u64,
    /// Ticks stamped inside the measured window.
    pub published_window: u64,
    /// Ticks due by the pacing schedule but not sent (the publisher fell behind).
    pub behind_at_end: u64,
    /// `{"event":"error"}` frames the broker sent back (refused publishes).
    pub error_events: u64,
    /// The first error event, for the report.
    pub first_error: Option<String>,
    pub write_syscalls: u64,
}

/// Connects, upgrades, waits for the start and publishes until the window ends.
pub fn run(config: PublisherConfig, plan: Arc<Plan>) -> Result<PublisherStats, String> {
    let mut rng = Rng::new(now_unix_ns().rotate_left(17));
    let mut stream = connect_and_upgrade(&config, &mut rng)?;
    plan.publisher_ready.store(true, Ordering::Release);

    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(16);
    poll.registry()
        .register(
            &mut stream,
            Token(0),
            Interest::READABLE | Interest::WRITABLE,
        )
        .map_err(|e| e.to_string())?;

    let mut stats = PublisherStats::default();
    let mut out: Vec<u8> = Vec::with_capacity(MAX_PENDING_BYTES * 2);
    // Per queued tick: its end offset in `out` and whether it is in the window,
    // so a tick counts as published only once all its bytes are written.
    let mut queued: std::collections::VecDeque<(usize, bool)> = Default::default();
    let mut written_total = 0usize; // bytes of `out` already drained, cumulative
    let mut queued_total = 0usize; // bytes ever appended, cumulative
    let mut generated = 0u64;
    let mut inbuf: Vec<u8> = Vec::new();
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
        read_control(
            &mut stream,
            &mut inbuf,
            &mut scratch,
            &mut out,
            &mut queued_total,
            &mut stats,
            &mut rng,
        )?;
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
        // Generate what is due (or a batch, flat out) while there is room.
        let pending = queued_total - written_total;
        if pending < MAX_PENDING_BYTES {
            let want = if config.rate > 0 {
                due_ticks(config.rate, now - start).saturating_sub(generated)
            } else {
                FLAT_OUT_BATCH
            };
            let room_ticks = ((MAX_PENDING_BYTES - pending) / 150).max(1) as u64;
            for _ in 0..want.min(room_ticks) {
                let t = now_unix_ns();
                let payload = tick_payload(&config.topic, t);
                let mask = rng.mask();
                let before = out.len();
                ws::push_client_frame(&mut out, OpCode::Text, payload.as_bytes(), mask);
                queued_total += out.len() - before;
                queued.push_back((queued_total, t >= window.0 && t < window.1));
                generated += 1;
            }
        }
        // Write what is queued.
        let mut blocked = false;
        while !out.is_empty() {
            match stream.write(&out) {
                Ok(0) => return Err("publisher write returned 0".into()),
                Ok(n) => {
                    stats.write_syscalls += 1;
                    out.drain(..n);
                    written_total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("publisher write: {e}")),
            }
        }
        while let Some(&(end, in_window)) = queued.front() {
            if end > written_total {
                break;
            }
            queued.pop_front();
            stats.published_total += 1;
            if in_window {
                stats.published_window += 1;
            }
        }
        read_control(
            &mut stream,
            &mut inbuf,
            &mut scratch,
            &mut out,
            &mut queued_total,
            &mut stats,
            &mut rng,
        )?;
        if blocked || config.rate > 0 {
            // Paced: sleep to the next step. Blocked: wait for writable.
            let timeout = if blocked {
                Duration::from_millis(1)
            } else {
                PACE_STEP
            };
            if blocked {
                let _ = poll.poll(&mut events, Some(timeout));
            } else {
                std::thread::sleep(timeout);
            }
        }
    }
    let _ = stream.write(&ws_close(&mut rng));
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(stats)
}

/// Ticks due `elapsed` after the start at `rate` per second.
fn due_ticks(rate: u64, elapsed: Duration) -> u64 {
    (elapsed.as_nanos() * rate as u128 / 1_000_000_000) as u64
}

/// The `pub` op for one tick: ~100 bytes of quote data stamped with `t`.
pub fn tick_payload(topic: &str, t: u64) -> String {
    format!(
        "{{\"op\":\"pub\",\"topic\":\"{topic}\",\"data\":{{\"sym\":\"AAPL\",\"bid\":189.21,\"ask\":189.23,\"bsz\":300,\"asz\":200,\"t\":{t}}}}}"
    )
}

fn ws_close(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    ws::push_client_frame(&mut out, OpCode::Close, &1000u16.to_be_bytes(), rng.mask());
    out
}

/// Connects with a blocking socket (bounded by the setup deadline), upgrades,
/// then turns the socket non-blocking for the run.
fn connect_and_upgrade(config: &PublisherConfig, rng: &mut Rng) -> Result<TcpStream, String> {
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
        &config.path,
        config.token.as_deref(),
        rng,
    );
    s.write_all(&req.bytes)
        .map_err(|e| format!("publisher handshake: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
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
            // Nothing is sent to a publisher before it speaks, so no frame
            // bytes can follow the head here.
            UpgradeStatus::Accepted(_) => break,
        }
    }
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(TcpStream::from_std(s))
}

/// Reads what the broker sent the publisher: answers pings, counts errors.
fn read_control(
    stream: &mut TcpStream,
    inbuf: &mut Vec<u8>,
    scratch: &mut [u8],
    out: &mut Vec<u8>,
    queued_total: &mut usize,
    stats: &mut PublisherStats,
    rng: &mut Rng,
) -> Result<(), String> {
    loop {
        match stream.read(scratch) {
            Ok(0) => return Err("broker closed the publisher connection".into()),
            Ok(n) => inbuf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("publisher read: {e}")),
        }
    }
    let mut pos = 0;
    while let Some(frame) = ws::server_frame(&inbuf[pos..]).map_err(str::to_string)? {
        let end = pos + frame.header_len + frame.payload_len;
        if end > inbuf.len() {
            break;
        }
        let payload = &inbuf[pos + frame.header_len..end];
        match frame.opcode {
            OP_TEXT if payload.starts_with(b"{\"event\":\"error\"") => {
                stats.error_events += 1;
                if stats.first_error.is_none() {
                    stats.first_error = Some(String::from_utf8_lossy(payload).into_owned());
                }
            }
            OP_PING => {
                let before = out.len();
                ws::push_client_frame(out, OpCode::Pong, payload, rng.mask());
                *queued_total += out.len() - before;
            }
            OP_CLOSE => return Err("broker closed the publisher connection".into()),
            _ => {}
        }
        pos = end;
    }
    inbuf.drain(..pos);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_data_is_about_100_bytes_of_json() {
        let payload = tick_payload("T", 1_732_190_000_123_456_789);
        let value: serde_json::Value = serde_json::from_str(&payload).unwrap();
        let data = serde_json::to_string(&value["data"]).unwrap();
        assert!((80..=110).contains(&data.len()), "{}", data.len());
        assert_eq!(value["data"]["t"], 1_732_190_000_123_456_789u64);
    }

    #[test]
    fn pacing_is_by_elapsed_time() {
        assert_eq!(due_ticks(1000, Duration::from_millis(1500)), 1500);
        assert_eq!(due_ticks(3, Duration::from_millis(999)), 2);
    }
}
