//! A client that sends requests and never reads the answers: for every
//! route, the broker's memory for it stays under a small fixed bound,
//! however much it sends (issue "Hardening II", finding 2). Before the fix,
//! every request pipelined in one read was answered in the same turn, so
//! 64 KiB of `GET /poll?since=A:0` cost the broker ~700 MiB.
//!
//! Each case starts its own broker, fills topic `A`'s history ring with
//! 1,024 ticks of ~200 bytes (so a replay is ~250 KB), measures the
//! broker's RSS, then lets one client write the same request over and over
//! for a bounded time without reading, and measures again.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// How much the broker's RSS may grow for the one client that does not
/// read: its queue stops at the 1 MiB pause bound plus one answer (a
/// 250 KB replay here), and its pending input is one read's worth; the rest
/// is the allocator's slack. Measured: at most 2.3 MiB on any route, where
/// the code before the fix grew by 8 MiB for `/metrics` and 274 MiB for
/// `/poll` with the same client.
const GROWTH_BOUND_KIB: u64 = 6 * 1024;

/// The longest the client keeps writing.
const SEND_FOR: Duration = Duration::from_secs(4);

/// Bytes of requests the client gives up after (the broker stops reading
/// long before this when the fix works).
const SEND_AT_MOST: usize = 32 << 20;

/// A broker whose topic `A` has a full history ring.
fn broker_with_history() -> Broker {
    let broker = Broker::start(&["--workers", "1"]);
    let data = format!("{{\"pad\":\"{}\"}}", "x".repeat(180));
    let body: String = (0..1024)
        .map(|_| format!("{{\"topic\":\"A\",\"data\":{data}}}\n"))
        .collect();
    let mut stream = broker.tcp();
    let answer = http_post(&mut stream, "/publish", "", body.as_bytes());
    assert_eq!(answer.status, 202, "{}", answer.text());
    broker
}

/// Writes `unit` over and over on `stream` (which never reads) until the
/// broker stops taking bytes for a while, [`SEND_FOR`] passes or
/// [`SEND_AT_MOST`] bytes went; returns the bytes sent.
fn send_without_reading(stream: &mut TcpStream, unit: &[u8]) -> usize {
    let chunk: Vec<u8> = unit
        .iter()
        .copied()
        .cycle()
        .take(unit.len() * (64 * 1024 / unit.len()).max(1))
        .collect();
    stream.set_nonblocking(true).unwrap();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let (mut sent, mut at) = (0usize, 0usize);
    while started.elapsed() < SEND_FOR && sent < SEND_AT_MOST {
        match stream.write(&chunk[at..]) {
            Ok(n) => {
                sent += n;
                at = (at + n) % chunk.len();
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if last_progress.elapsed() > Duration::from_secs(1) {
                    break; // the broker stopped reading: it is holding back
                }
                // Bounded by the loop's deadline: wait for buffer space.
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("writing requests failed after {sent} bytes: {e}"),
        }
    }
    sent
}

/// Runs one case: `open` makes the client's connection (and sends whatever
/// opens its phase), `unit` is the request repeated without reading.
fn assert_bounded(what: &str, open: impl FnOnce(&Broker) -> TcpStream, unit: &[u8]) {
    let broker = broker_with_history();
    let mut stream = open(&broker);
    let before = rss_kib(broker.pid());
    let sent = send_without_reading(&mut stream, unit);
    // Let the worker act on what it read.
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(broker.pid());
    let growth = after.saturating_sub(before);
    eprintln!("{what}: sent {sent} bytes, broker RSS {before} -> {after} KiB");
    assert!(
        growth < GROWTH_BOUND_KIB,
        "{what}: broker RSS grew by {growth} KiB (from {before} KiB) for one client that sent {sent} bytes and read nothing"
    );
    // The broker still answers everybody else.
    let (health, _) = http_exchange(&broker, &get_request("/healthz"));
    assert_eq!(health.status, 200, "{what}");
    drop(stream);
}

fn plain(broker: &Broker) -> TcpStream {
    broker.tcp_small_rcvbuf(4096)
}

fn websocket(path: &str) -> impl FnOnce(&Broker) -> TcpStream + '_ {
    move |broker| raw_upgrade(broker.tcp_small_rcvbuf(4096), path)
}

#[test]
fn pipelined_history_polls() {
    assert_bounded(
        "GET /poll?since=A:0",
        plain,
        get_request("/poll?topic=A&since=A:0").as_bytes(),
    );
}

#[test]
fn pipelined_metrics_scrapes() {
    assert_bounded("GET /metrics", plain, get_request("/metrics").as_bytes());
}

#[test]
fn pipelined_health_checks() {
    assert_bounded("GET /healthz", plain, get_request("/healthz").as_bytes());
    assert_bounded("GET /readyz", plain, get_request("/readyz").as_bytes());
}

#[test]
fn pipelined_publishes() {
    assert_bounded(
        "POST /publish",
        plain,
        &post_request("/publish?topic=B", "", b"{\"p\":1}"),
    );
}

#[test]
fn pipelined_stream_requests() {
    // Requests behind an SSE stream are discarded; behind a held poll at
    // most one head's worth waits.
    assert_bounded(
        "GET /sse",
        plain,
        get_request("/sse?topic=A&since=A:0").as_bytes(),
    );
    assert_bounded(
        "GET /poll (held)",
        plain,
        get_request("/poll?topic=B").as_bytes(),
    );
}

#[test]
fn websocket_replays_pings_and_errors() {
    let mut pair = Vec::new();
    pair.extend(client_frame(
        true,
        OP_TEXT,
        br#"{"op":"sub","topic":"A","since":0}"#,
    ));
    pair.extend(client_frame(
        true,
        OP_TEXT,
        br#"{"op":"unsub","topic":"A"}"#,
    ));
    assert_bounded("sub since 0 / unsub", websocket(WS), &pair);
    assert_bounded(
        "ping",
        websocket(WS),
        &client_frame(true, OP_PING, &[7u8; 125]),
    );
    assert_bounded(
        "echo",
        websocket(ECHO),
        &client_frame(true, OP_BINARY, &[1u8; 16 * 1024]),
    );
}
