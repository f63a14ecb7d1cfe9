//! The demo page and the client bundle served from the binary
//! (`http.demo_path`), and the synthetic market of `--demo-feed`: its
//! ticks reach subscribers through the ordinary topic table, at a bounded
//! rate, and it stops with the broker.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn demo_page_and_bundle_are_served_with_their_types() {
    let broker = Broker::start(&[]);
    let page = get_once(&broker, "/demo");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert!(
        page.text().contains("tickfan.js"),
        "the page loads the bundle"
    );
    for (path, needle) in [
        ("/demo/tickfan.js", "Tickfan"),
        ("/demo/tickfan.mjs", "export"),
        ("/demo/demo.js", "Tickfan"),
    ] {
        let asset = get_once(&broker, path);
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(
            asset.header("content-type"),
            Some("text/javascript; charset=utf-8"),
            "{path}"
        );
        assert!(asset.text().contains(needle), "{path}");
    }
    assert_eq!(
        get_once(&broker, "/demo/demo.css").header("content-type"),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(get_once(&broker, "/demo/").status, 200);
    assert_eq!(get_once(&broker, "/demo/missing.js").status, 404);
    assert_eq!(get_once(&broker, "/demox").status, 404);
    let mut stream = broker.tcp();
    stream
        .write_all(b"HEAD /demo/tickfan.js HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let head = read_head_only(&mut stream);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let (post, _) = http_exchange(
        &broker,
        "POST /demo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(post.status, 405);
}

#[test]
fn demo_path_can_be_moved_or_turned_off() {
    let broker = Broker::start(&["--set", "http.demo_path=/market"]);
    assert_eq!(get_once(&broker, "/market").status, 200);
    assert_eq!(get_once(&broker, "/market/tickfan.js").status, 200);
    assert_eq!(get_once(&broker, "/demo").status, 404);
    drop(broker);
    let broker = Broker::start(&["--set", "http.demo_path="]);
    assert_eq!(get_once(&broker, "/demo").status, 404);
    let out = run_cli(&["--set", "http.demo_path=/poll"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("http.demo_path"),
        "{out:?}"
    );
}

#[test]
fn demo_feed_publishes_a_random_walk_and_stops_with_the_broker() {
    let mut broker = Broker::start(&[
        "--demo-feed",
        "--set",
        "demo.feed_symbols=[\"AAA\",\"BBB\"]",
        "--set",
        "demo.feed_ticks_per_second=200",
    ]);
    // Long-polls follow the feed: ticks arrive on both symbols, each in
    // seq order, and each one is a quote.
    let mut poller = broker.tcp();
    let mut cursor = "AAA:0,BBB:0".to_owned();
    let mut seen = std::collections::BTreeMap::<String, u64>::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.values().sum::<u64>() < 100 {
        assert!(Instant::now() < deadline, "demo feed too slow: {seen:?}");
        let answer = poll_answer(&http_get(
            &mut poller,
            &format!("/poll?topic=AAA,BBB&since={cursor}&timeout=5"),
        ));
        for tick in &answer.ticks {
            let topic = tick["topic"].as_str().unwrap().to_owned();
            let seq = tick["seq"].as_u64().unwrap();
            let last = seen.entry(topic).or_default();
            assert_eq!(seq, *last + 1, "in order, none missed");
            *last = seq;
            let (price, bid, ask) = (
                tick["data"]["price"].as_f64().unwrap(),
                tick["data"]["bid"].as_f64().unwrap(),
                tick["data"]["ask"].as_f64().unwrap(),
            );
            assert!(bid < price && price < ask, "{tick}");
        }
        cursor = answer.cursor;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Counted as published, under their own transport label.
    let delivered: u64 = seen.values().sum();
    let metric = "tickfan_ticks_published_total{transport=\"demo\"}";
    wait_for_metrics(&broker, metric, |text| {
        metric_sum(text, metric) >= delivered as f64
    });
    broker.send_sigterm();
    let status = broker.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

#[test]
fn demo_feed_rate_is_bounded_by_the_config() {
    let out = run_cli(&["--demo-feed", "--set", "demo.feed_ticks_per_second=1000000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("demo.feed_ticks_per_second"), "{stderr}");
    let out = run_cli(&["--set", "demo.feed_symbols=[\"bad name\"]"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("demo.feed_symbols"), "{stderr}");
}
