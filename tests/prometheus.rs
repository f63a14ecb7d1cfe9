//! tickfan's metrics end to end, as a real Prometheus server scrapes them:
//! traffic of known size goes through the broker, and Prometheus' query API
//! must then report exactly that traffic.
//!
//! Needs the Debian package `prometheus` (see `common::prometheus` for what a
//! missing binary means). Counters reach `/metrics` about once a second and
//! Prometheus scrapes every second, so the queries are retried until they
//! match or a deadline passes.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::prometheus::{broker_metrics, prometheus_bin, Prometheus};
use common::*;
use tungstenite::{Message, WebSocket};

/// Subscribers on the one topic.
const SUBSCRIBERS: usize = 3;
/// Ticks published to it.
const TICKS: usize = 100;
const TOPIC: &str = "T";

/// How long the scraped values may take to match: counter flush (~1 s) plus
/// scrape interval (1 s), with a wide margin for a loaded machine.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(30);

/// Subscribes `ws` to [`TOPIC`] and waits for the broker's `subscribed`.
fn subscribe(ws: &mut WebSocket<TcpStream>) {
    ws.send(Message::text(format!(
        r#"{{"op":"sub","topic":"{TOPIC}"}}"#
    )))
    .unwrap();
    loop {
        let json = read_json(ws);
        if json["event"] == "subscribed" {
            assert_eq!(json["topic"], TOPIC, "{json}");
            return;
        }
        assert!(json["event"].is_string(), "tick before subscribed: {json}");
        assert_ne!(json["event"], "error", "{json}");
    }
}

/// The next text message of `ws`, parsed.
fn read_json(ws: &mut WebSocket<TcpStream>) -> serde_json::Value {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                return serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(other) => panic!("unexpected message: {other:?}"),
            Err(e) => panic!("reading a subscriber failed: {e:?}"),
        }
    }
}

/// Reads `TICKS` ticks of [`TOPIC`] and checks they are `0..TICKS` in order;
/// events in between (heartbeats) are skipped.
fn read_all_ticks(ws: &mut WebSocket<TcpStream>) {
    let mut next = 0;
    while next < TICKS {
        let json = read_json(ws);
        if json.get("event").is_some() {
            assert_ne!(json["event"], "error", "{json}");
            assert_ne!(json["event"], "gap", "{json}");
            continue;
        }
        assert_eq!(json["topic"], TOPIC, "{json}");
        assert_eq!(json["data"]["i"], next, "{json}");
        next += 1;
    }
}

#[test]
fn prometheus_scrapes_exactly_the_delivered_ticks_and_open_connections() {
    let Some(bin) = prometheus_bin() else { return };
    let mut broker = Broker::start(&["--workers", "2"]);
    // Fails at once, saying why, if the endpoint is missing, rather than
    // after the whole scrape deadline.
    broker_metrics(&broker);
    let prometheus = Prometheus::start(&bin, &[broker.addr()], Duration::from_secs(1));

    let mut subscribers: Vec<_> = (0..SUBSCRIBERS).map(|_| broker.connect_ws("/ws")).collect();
    for ws in &mut subscribers {
        subscribe(ws);
    }
    let mut publisher = broker.connect_ws("/ws");
    for i in 0..TICKS {
        publisher
            .send(Message::text(format!(
                r#"{{"op":"pub","topic":"{TOPIC}","data":{{"i":{i}}}}}"#
            )))
            .unwrap();
    }
    for ws in &mut subscribers {
        read_all_ticks(ws);
    }

    let delivered_query = r#"sum(tickfan_ticks_delivered_total{transport="websocket"})"#;
    let connections_query = r#"sum(tickfan_connections{transport="websocket"})"#;
    let want_delivered = (SUBSCRIBERS * TICKS) as f64;
    let want_connections = (SUBSCRIBERS + 1) as f64;
    let deadline = Instant::now() + SCRAPE_DEADLINE;
    let (delivered, connections) = loop {
        let delivered = prometheus.query_value(delivered_query);
        let connections = prometheus.query_value(connections_query);
        if delivered == Some(want_delivered) && connections == Some(want_connections) {
            break (delivered, connections);
        }
        if Instant::now() >= deadline {
            break (delivered, connections);
        }
        // Polling another process's scrape loop: bounded by the deadline above.
        std::thread::sleep(Duration::from_millis(250));
    };
    let context = || {
        format!(
            "prometheus pid {} at {}; targets:\n{}\ntickfan stderr:\n{}",
            prometheus.pid(),
            prometheus.addr(),
            prometheus.targets_summary(),
            broker.stderr_text()
        )
    };
    assert_eq!(
        delivered,
        Some(want_delivered),
        "{delivered_query} after {SCRAPE_DEADLINE:?}; {}",
        context()
    );
    assert_eq!(
        connections,
        Some(want_connections),
        "{connections_query} after {SCRAPE_DEADLINE:?}; {}",
        context()
    );
    assert_eq!(
        prometheus.query_value(r#"up{job="tickfan"}"#),
        Some(1.0),
        "{}",
        context()
    );

    prometheus.stop();
    // Hang up first, so the broker's shutdown has no close handshakes to wait for.
    drop(subscribers);
    drop(publisher);
    broker.send_sigterm();
    let status = broker.wait_exit(IO_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{status:?}");
}
