//! Health, readiness and metrics routes: `/healthz`, `/readyz` and
//! `/metrics` answering, `/readyz` turning 503 once shutdown begins (seen
//! on a connection kept open through it), and the drain delay, which turns
//! readiness off while everything else is still served until a second
//! signal.
//!
//! Every client here is a plain `TcpStream` speaking HTTP/1.1 by hand, so
//! keep-alive and framing are what the test sends and nothing a client
//! library adds; WebSocket subscribers and publishers are tungstenite on
//! `/ws`. Reads have timeouts, waits have deadlines, and time bounds are
//! generous except where the brief of a test is promptness itself.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn health_ready_and_metrics_answer() {
    let broker = Broker::start(&[]);
    let mut stream = broker.tcp();
    let response = http_get(&mut stream, "/healthz");
    assert_eq!(response.status, 200);
    let response = http_get(&mut stream, "/readyz");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "ready\n");

    publish(&mut stream, "m", "1");
    let response = http_get(&mut stream, "/metrics");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        response.header("content-type")
    );
    assert!(response.text().contains("tickfan_ticks_published_total"));
    wait_for_metrics(&broker, "the HTTP publish counted", |text| {
        text.contains(r#"tickfan_ticks_published_total{transport="http"} 1"#)
    });
}

/// Shutdown stops accepting, so `/readyz` answering 503 can only be seen on
/// a connection opened before. Idle keep-alive connections are closed at
/// once when shutdown begins (asserted here), but a held long-poll lives on
/// through the grace period: after its 204, the same connection asks
/// `/readyz` and gets 503.
#[test]
fn readyz_is_503_during_shutdown_on_a_kept_connection() {
    let mut broker = Broker::start(&["--workers", "1", "--shutdown-grace-ms", "15000"]);
    let mut idle = broker.tcp();
    assert_eq!(http_get(&mut idle, "/readyz").status, 200);

    let mut poller = broker.tcp();
    assert_eq!(http_get(&mut poller, "/readyz").status, 200);
    let sent = Instant::now();
    poller
        .write_all(get_request("/poll?topic=bye&timeout=8").as_bytes())
        .unwrap();
    wait_for_held_polls(&broker, 1);

    broker.send_sigterm();
    // The idle keep-alive connection is closed as shutdown begins (one
    // worker, so this also shows the poll's worker is stopping).
    expect_eof(&mut idle);
    assert!(
        sent.elapsed() < Duration::from_secs(8),
        "shutdown began only after the poll's timeout; the test cannot tell"
    );

    let response = read_http_response(&mut poller);
    assert_eq!(response.status, 204, "{}", response.text());
    let response = http_get(&mut poller, "/readyz");
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(response.text(), "shutting down\n");

    // Once we hang up, nothing is left and the broker exits.
    poller.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    match poller.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{rest:?}"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{e}"),
    }
    drop(poller);
    let status = broker.wait_exit(PROMPTLY);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// With a drain delay, a signal first only turns readiness off: new
/// connections are accepted, health and publishing work, subscribers get
/// ticks. A second signal cuts the (minute-long) delay short: subscribers
/// get 1001 and the broker exits 0.
#[test]
fn drain_delay_turns_readiness_off_and_keeps_serving_until_a_second_signal() {
    let mut broker = Broker::start(&["--workers", "1", "--drain-delay-ms", "60000"]);
    let mut subscriber = broker.pubsub();
    subscriber.subscribe("drain");
    subscriber.set_read_timeout(PROMPTLY);
    assert_eq!(http_get(&mut broker.tcp(), "/readyz").status, 200);

    broker.send_sigterm();
    // The signal is handled on another thread: ask again (on new
    // connections, which are still accepted) until readiness turns off.
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let response = http_get(&mut broker.tcp(), "/readyz");
        if response.status == 503 {
            assert_eq!(response.text(), "shutting down\n");
            break;
        }
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(Instant::now() < deadline, "/readyz never answered 503");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(http_get(&mut broker.tcp(), "/healthz").status, 200);
    assert_eq!(publish(&mut broker.tcp(), "drain", "41"), 1);
    let tick = subscriber.expect_tick("tick published while draining");
    assert_eq!((tick.seq, tick.data.as_str()), (1, "41"));

    broker.send_sigterm();
    assert_eq!(
        subscriber.read_until_close(),
        Some((1001, "server shutting down".to_owned())),
        "close after the second signal"
    );
    drop(subscriber);
    let status = broker.wait_exit(PROMPTLY);
    assert_eq!(status.code(), Some(0), "{status:?}");
}
