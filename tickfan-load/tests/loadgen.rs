//! The `tickfan-load` binary end to end against a real broker: a short
//! broadcast run must subscribe everyone, deliver every tick in seq order,
//! answer the broker's pings, read the broker's /proc figures, and exit 0;
//! bad settings must be refused before anything is dialled.
//!
//! Both binaries are real processes. These tests live in the load
//! generator's crate, so Cargo hands them `CARGO_BIN_EXE_tickfan-load`; the
//! broker, a binary of the workspace's root package, is found beside it in
//! the same `target/<profile>/` (see `common/mod.rs`), which
//! `cargo test --workspace` (as `scripts/test.sh` runs it) has built before
//! any test starts.
//!
//! Small and short (40 subscribers, 200 ticks/s, 1 s), so it passes on a
//! loaded two-core machine; throughput is measured by
//! `scripts/e2e-broadcast.sh`, not here.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn broadcast_run_delivers_every_tick_and_exits_by_itself() {
    let broker = Broker::start(&[
        "--workers",
        "1",
        // Pings every 200 ms and an idle limit of 1 s: a fleet that did not
        // answer pings would be closed within the run.
        "--ping-interval-ms",
        "200",
        "--idle-timeout-ms",
        "1000",
    ]);
    let json = std::env::temp_dir().join(format!("tickfan-load-{}.json", std::process::id()));
    let started = Instant::now();
    let output = Command::new(LOAD_BIN)
        .args(["--addr", &broker.addr().to_string()])
        .args(["--subscribers", "40", "--sample", "5", "--threads", "2"])
        .args(["--rate", "200", "--warmup", "0.5", "--duration", "1.5"])
        .args(["--drain", "0.5", "--no-perf"])
        .args(["--broker-pid", &broker.pid().to_string()])
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .expect("run tickfan-load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tickfan-load failed: {stderr}\n{stdout}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "ran too long");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json report")).expect("valid json");
    let _ = std::fs::remove_file(&json);

    assert_eq!(report["run"]["subscribers"], 40, "{stdout}");
    let published = report["published"]["total"].as_u64().unwrap();
    assert!(published >= 300, "published {published}: {stdout}");
    assert_eq!(
        report["delivered"]["total"].as_u64().unwrap(),
        published * 40,
        "{stdout}"
    );
    assert_eq!(report["delivered"]["server_closes"], 0, "{stdout}");
    assert!(
        report["delivered"]["pongs_sent"].as_u64().unwrap() > 0,
        "{stdout}"
    );
    assert_eq!(report["sample"]["gaps"], 0, "{stdout}");
    assert_eq!(report["sample"]["duplicates"], 0, "{stdout}");
    assert_eq!(report["sample"]["unparsable"], 0, "{stdout}");
    assert!(report["sample"]["latency_us"]["count"].as_u64().unwrap() > 0);
    assert!(report["broker"]["cpu_s"].as_f64().unwrap() >= 0.0);
    assert!(report["broker"]["rss_mib"].as_f64().unwrap() > 0.0);
}

/// Long-poll clients and multi-topic (Zipf) subscribers over several topics:
/// every tick the subscriptions call for arrives, in seq order per topic.
#[test]
fn longpoll_and_multi_topic_run_delivers_every_tick() {
    let broker = Broker::start(&["--workers", "1"]);
    let json = std::env::temp_dir().join(format!("tickfan-load-lp-{}.json", std::process::id()));
    let output = Command::new(LOAD_BIN)
        .args(["--addr", &broker.addr().to_string()])
        .args(["--subscribers", "30", "--longpoll", "30", "--topics", "6"])
        .args(["--zipf-per-client", "3", "--sample", "5"])
        .args(["--rate", "120", "--warmup", "0.5", "--duration", "1.5"])
        .args(["--drain", "0.5", "--no-perf"])
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .expect("run tickfan-load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tickfan-load failed: {stderr}\n{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json report")).expect("valid json");
    let _ = std::fs::remove_file(&json);

    assert_eq!(report["websocket"]["clients"], 30, "{stdout}");
    assert_eq!(report["longpoll"]["clients"], 30, "{stdout}");
    assert!(
        report["published"]["total"].as_u64().unwrap() >= 200,
        "{stdout}"
    );
    assert_eq!(report["delivered"]["ratio"], 1.0, "{stdout}");
    assert!(
        report["longpoll"]["requests"].as_u64().unwrap() > 30,
        "{stdout}"
    );
    assert!(report["longpoll"]["bytes_sent_window"].as_u64().unwrap() > 0);
    assert_eq!(report["sample"]["gaps"], 0, "{stdout}");
    assert_eq!(report["sample"]["duplicates"], 0, "{stdout}");
    assert_eq!(report["sample"]["unparsable"], 0, "{stdout}");
}

#[test]
fn refuses_more_subscribers_than_the_process_can_hold() {
    let output = Command::new(LOAD_BIN)
        .args(["--subscribers", "100000000", "--addr", "127.0.0.1:9"])
        .output()
        .expect("run tickfan-load");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cap"), "{stderr}");
}

#[test]
fn refuses_a_non_loopback_address() {
    let output = Command::new(LOAD_BIN)
        .args(["--addr", "192.0.2.1:9001"])
        .output()
        .expect("run tickfan-load");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}

/// Runs `tickfan-load` against `broker` with `args`, asserts it exits 0, and
/// returns its JSON report and stdout; `tag` keeps the report file apart
/// from other tests'.
fn run_load(broker: &Broker, tag: &str, args: &[&str]) -> (serde_json::Value, String) {
    run_load_at(broker.addr(), tag, args)
}

/// [`run_load`] against the broker listener at `addr`.
fn run_load_at(addr: SocketAddr, tag: &str, args: &[&str]) -> (serde_json::Value, String) {
    let json = std::env::temp_dir().join(format!("tickfan-load-{tag}-{}.json", std::process::id()));
    let output = Command::new(LOAD_BIN)
        .args(["--addr", &addr.to_string(), "--no-perf"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .expect("run tickfan-load");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tickfan-load failed: {stderr}\n{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json report")).expect("valid json");
    let _ = std::fs::remove_file(&json);
    (report, stdout)
}

/// Every tick delivered once, in seq order per topic, and no publish refused.
fn assert_complete_delivery(report: &serde_json::Value, stdout: &str) {
    assert!(
        report["published"]["total"].as_u64().unwrap() >= 400,
        "{stdout}"
    );
    assert_eq!(report["published"]["error_events"], 0, "{stdout}");
    assert_eq!(report["delivered"]["ratio"], 1.0, "{stdout}");
    assert_eq!(report["sample"]["gaps"], 0, "{stdout}");
    assert_eq!(report["sample"]["duplicates"], 0, "{stdout}");
    assert_eq!(report["sample"]["unparsable"], 0, "{stdout}");
}

/// Three HTTP publishers (pipelined `POST /publish`, with a token) share six
/// topics: each topic stays on one connection, so its ticks arrive in order.
#[test]
fn http_publishers_deliver_every_tick_in_order() {
    let broker = Broker::start(&["--workers", "1", "--publish-token", "s3cret"]);
    let (report, stdout) = run_load(
        &broker,
        "http",
        &[
            "--publishers",
            "3",
            "--publish-over",
            "http",
            "--publish-token",
            "s3cret",
            "--topics",
            "6",
            "--subscribers",
            "20",
            "--sample",
            "6",
            "--rate",
            "300",
            "--warmup",
            "0.5",
            "--duration",
            "2",
            "--drain",
            "0.5",
        ],
    );
    assert_eq!(report["run"]["publisher_connections"], 3, "{stdout}");
    assert_eq!(report["run"]["publish_over"], "http", "{stdout}");
    assert!(stdout.contains("3 over HTTP"), "{stdout}");
    assert_complete_delivery(&report, &stdout);
}

/// Two WebSocket publishers over four topics, 20 subscribers at 300 ticks/s.
const TWO_PUBLISHERS_FOUR_TOPICS: &[&str] = &[
    "--publishers",
    "2",
    "--topics",
    "4",
    "--subscribers",
    "20",
    "--sample",
    "4",
    "--rate",
    "300",
    "--warmup",
    "0.5",
    "--duration",
    "2",
    "--drain",
    "0.5",
];

/// Two WebSocket publishers over four topics.
#[test]
fn websocket_publishers_deliver_every_tick_in_order() {
    let broker = Broker::start(&["--workers", "1"]);
    let (report, stdout) = run_load(&broker, "ws2", TWO_PUBLISHERS_FOUR_TOPICS);
    assert_eq!(report["run"]["publisher_connections"], 2, "{stdout}");
    assert_eq!(report["run"]["publish_over"], "ws", "{stdout}");
    assert_complete_delivery(&report, &stdout);
}

/// With `--deflate` every subscriber agrees permessage-deflate, ~300-byte
/// quotes come compressed, the samples inflate them and still see every
/// tick once and in order.
#[test]
fn deflate_subscribers_inflate_compressed_ticks() {
    let broker = Broker::start(&["--workers", "1"]);
    let (report, stdout) = run_load(
        &broker,
        "deflate",
        &[
            "--deflate",
            "--tick-shape",
            "quote",
            "--subscribers",
            "20",
            "--sample",
            "4",
            "--rate",
            "300",
            "--warmup",
            "0.5",
            "--duration",
            "2",
            "--drain",
            "0.5",
        ],
    );
    assert_complete_delivery(&report, &stdout);
    assert_eq!(report["delivered"]["deflate_subscribers"], 20, "{stdout}");
    let compressed = report["delivered"]["compressed_frames"].as_u64().unwrap();
    let delivered = report["delivered"]["total"].as_u64().unwrap();
    // Every tick is a compressed quote; events (subscribed) go plain.
    assert_eq!(compressed, delivered, "{stdout}");
}

/// A broker that refuses the HTTP publisher's token fails the run, and the
/// error says what the broker answered.
#[test]
fn refused_http_publishing_fails_the_run_with_the_answer() {
    let broker = Broker::start(&["--workers", "1", "--publish-token", "s3cret"]);
    let output = Command::new(LOAD_BIN)
        .args(["--addr", &broker.addr().to_string(), "--no-perf"])
        .args(["--publish-over", "http", "--publish-token", "wrong"])
        .args(["--subscribers", "2", "--rate", "100", "--warmup", "0.2"])
        .args(["--duration", "0.5", "--drain", "0.2"])
        .stdin(Stdio::null())
        .output()
        .expect("run tickfan-load");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HTTP 401"), "{stderr}");
}

#[test]
fn refuses_publisher_settings_the_target_cannot_honour() {
    let cases: [(&[&str], &str); 4] = [
        (&["--target", "nats", "--publish-over", "http"], "tickfan"),
        (
            &["--target", "uws", "--publishers", "2", "--topics", "4"],
            "per topic",
        ),
        (
            &["--publishers", "3", "--topics", "2"],
            "more than --topics",
        ),
        (&["--publishers", "0"], "at least 1"),
    ];
    for (args, expected) in cases {
        let output = Command::new(LOAD_BIN)
            .args(["--addr", "127.0.0.1:9"])
            .args(args)
            .output()
            .expect("run tickfan-load");
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// Subscribers and WebSocket publishers over wss (`--tls-ca`): a broker
/// with a TLS listener and a self-signed certificate the run trusts gets
/// every tick through (`--addr` is the TLS port: nothing plain gets in).
#[test]
fn a_wss_run_delivers_every_tick_in_order() {
    let dir = std::env::temp_dir().join(format!("tickfan-load-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let broker = Broker::start(&[
        "--workers",
        "1",
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert_file.to_str().unwrap(),
        "--tls-key",
        key_file.to_str().unwrap(),
    ]);
    let ca = cert_file.to_str().unwrap();
    let (report, stdout) = run_load_at(
        broker.tls_addr(),
        "wss",
        &[&["--tls-ca", ca], TWO_PUBLISHERS_FOUR_TOPICS].concat(),
    );
    assert_complete_delivery(&report, &stdout);

    // The same run against a CA that did not sign the broker's certificate
    // fails at once, naming the certificate problem.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other_file =
        std::env::temp_dir().join(format!("tickfan-load-ca-{}.pem", std::process::id()));
    std::fs::write(&other_file, other.cert.pem()).unwrap();
    let output = Command::new(LOAD_BIN)
        .args(["--addr", &broker.tls_addr().to_string(), "--no-perf"])
        .arg("--tls-ca")
        .arg(&other_file)
        .args(["--subscribers", "2", "--rate", "10", "--warmup", "0.2"])
        .args([
            "--duration",
            "0.5",
            "--drain",
            "0.2",
            "--setup-timeout",
            "5",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run tickfan-load");
    let _ = std::fs::remove_file(&other_file);
    let _ = std::fs::remove_dir_all(&dir);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{all}");
    assert!(all.to_lowercase().contains("certificate"), "{all}");
}
