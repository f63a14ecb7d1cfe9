//! HTTP/1.x as every route speaks it: bad `/poll` and `/sse` queries (400),
//! unknown paths (404) and wrong methods (405 with `Allow`), `HEAD`,
//! `Expect: 100-continue` (one 100 before the body, a refusal at once,
//! 417 for other expectations), HTTP/1.0 keep-alive, and absolute-form
//! request targets.
//!
//! Every client here is a plain `TcpStream` speaking HTTP/1.1 (or 1.0) by
//! hand, so keep-alive and framing are what the test sends and nothing a
//! client library adds. Reads have timeouts and time bounds are generous.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn bad_poll_and_sse_queries_are_refused_with_400() {
    let broker = Broker::start(&[]);
    let cases = [
        ("/poll", "topic"),
        ("/poll?since=A:1", "topic"),
        ("/poll?topic=a%20b", "topic"),
        ("/poll?topic=A&since=A", "cursor"),
        ("/poll?topic=A&since=A:x", "seq"),
        ("/poll?topic=A&since=B:1", "not a requested topic"),
        ("/poll?topic=A&since=A:-1", "seq"),
        ("/poll?topic=A&timeout=soon", "timeout"),
        ("/sse", "topic"),
        ("/sse?topic=A&since=B:3", "not a requested topic"),
        ("/sse?topic=bad%2Ftopic", "topic"),
    ];
    for (target, mentions) in cases {
        let response = get_once(&broker, target);
        assert_eq!(response.status, 400, "{target}: {}", response.text());
        assert!(
            response.text().contains(mentions),
            "{target}: 400 body {:?} does not mention {mentions:?}",
            response.text()
        );
    }
    // A bad Last-Event-ID is a bad cursor too.
    let (response, _) = http_exchange(
        &broker,
        "GET /sse?topic=A HTTP/1.1\r\nHost: x\r\nLast-Event-ID: nonsense\r\n\r\n",
    );
    assert_eq!(response.status, 400, "{}", response.text());
    // And the broker is still fine.
    assert_eq!(get_once(&broker, "/healthz").status, 200);
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let broker = Broker::start(&[]);
    assert_eq!(get_once(&broker, "/nope").status, 404);
    assert_eq!(get_once(&broker, "/publishx?topic=A").status, 404);

    let response = get_once(&broker, "/publish?topic=A");
    assert_eq!(response.status, 405, "{}", response.text());
    assert_eq!(response.header("allow"), Some("POST"));

    for (target, allow) in [
        ("/poll?topic=A", "GET"),
        ("/sse?topic=A", "GET"),
        ("/healthz", "GET, HEAD"),
    ] {
        let (response, _) = http_exchange_bytes(&broker, &post_request(target, "", b"1"));
        assert_eq!(response.status, 405, "POST {target}: {}", response.text());
        assert_eq!(response.header("allow"), Some(allow), "POST {target}");
    }
}

#[test]
fn head_is_answered_like_get_without_a_body() {
    let broker = Broker::start(&[]);
    let mut stream = broker.tcp();
    for target in ["/healthz", "/readyz", "/metrics"] {
        let get = http_get(&mut stream, target);
        assert_eq!(get.status, 200, "GET {target}");
        stream
            .write_all(format!("HEAD {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let head = read_head_only(&mut stream);
        assert_eq!(head.status, 200, "HEAD {target}");
        assert_eq!(head.header("content-type"), get.header("content-type"));
        let length: usize = head
            .header("content-length")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("HEAD {target}: no Content-Length: {head:?}"));
        if target == "/metrics" {
            // The exposition changes between scrapes, its length only a little.
            assert!(length > 0);
        } else {
            assert_eq!(length, get.body.len(), "HEAD {target}");
        }
    }
    // No body followed any HEAD answer: the next answer on the connection
    // starts right after the last head.
    let response = http_get(&mut stream, "/healthz");
    assert_eq!((response.status, response.text().as_str()), (200, "ok\n"));

    // The streams have no bodiless answer: 405 naming GET, and no body either.
    for target in ["/poll?topic=A", "/sse?topic=A"] {
        let mut stream = broker.tcp();
        stream
            .write_all(format!("HEAD {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let response = read_head_only(&mut stream);
        assert_eq!(response.status, 405, "HEAD {target}");
        assert_eq!(response.header("allow"), Some("GET"), "HEAD {target}");
        expect_eof(&mut stream);
    }
}

/// The head of `POST {target}` announcing `len` body bytes, with `Expect: {expect}`.
fn expecting_head(target: &str, len: usize, expect: &str, version: &str) -> String {
    format!(
        "POST {target} HTTP/{version}\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\
         Content-Length: {len}\r\nExpect: {expect}\r\n\r\n"
    )
}

#[test]
fn expect_100_continue_gets_one_100_before_the_body_or_the_refusal_at_once() {
    let broker = Broker::start(&["--publish-token", "s3cret", "--max-body-bytes", "4096"]);
    let body = format!("\"{}\"", "x".repeat(998));
    let mut stream = broker.tcp();
    // Twice on one connection: the second request gets its own 100.
    for seq in 1..=2 {
        let head = expecting_head("/publish?topic=X", body.len(), "100-continue", "1.1");
        stream.write_all(head.as_bytes()).unwrap();
        let interim = read_response_head(&mut stream);
        assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
        // Byte by byte, so the broker sees the body incomplete many times
        // over; it must not answer 100 again.
        for byte in body.as_bytes() {
            stream.write_all(&[*byte]).unwrap();
        }
        let response = read_http_response(&mut stream);
        assert_eq!(response.status, 202, "{}", response.text());
        assert_eq!(response.json(), json!({"topic": "X", "seq": seq}));
    }

    // Whatever the head alone shows is refused is refused at once, without 100.
    let prompt = Duration::from_secs(5);
    let refused = [
        (
            expecting_head("/publish?topic=X", 5000, "100-continue", "1.1"),
            413,
        ),
        (
            expecting_head("/publish?topic=X", 10, "100-continue", "1.1")
                .replace("Bearer s3cret", "Bearer wrong"),
            401,
        ),
        (
            expecting_head("/publish?topic=X", 10, "100-continue", "1.1")
                .replace("Authorization: Bearer s3cret\r\n", ""),
            401,
        ),
        (
            expecting_head("/publishx?topic=X", 10, "100-continue", "1.1"),
            404,
        ),
        (
            expecting_head("/poll?topic=X", 10, "100-continue", "1.1"),
            405,
        ),
        (
            expecting_head("/publish?topic=X", 10, "fast-please", "1.1"),
            417,
        ),
        (
            expecting_head("/publish?topic=X", 10, "fast-please", "1.0"),
            417,
        ),
    ];
    for (head, status) in refused {
        let mut stream = broker.tcp();
        stream.set_read_timeout(Some(prompt)).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        let response = read_http_response(&mut stream);
        assert_eq!(response.status, status, "{head:?}: {}", response.text());
        assert_eq!(response.header("connection"), Some("close"), "{head:?}");
    }

    // HTTP/1.0 clients get no 100 (RFC 9110 §10.1.1: the server MUST ignore it).
    let mut stream = broker.tcp();
    let head = expecting_head("/publish?topic=X", 1, "100-continue", "1.0");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(b"3").unwrap();
    let response = read_http_response(&mut stream);
    assert_eq!(response.status, 202, "{}", response.text());
    assert_eq!(response.json(), json!({"topic": "X", "seq": 3}));
}

#[test]
fn http10_keep_alive_is_announced_and_the_connection_kept() {
    let broker = Broker::start(&[]);
    let mut stream = broker.tcp();
    let keep = "Connection: keep-alive\r\n";
    let requests = [
        format!("GET /healthz HTTP/1.0\r\n{keep}\r\n"),
        format!("POST /publish?topic=OLD HTTP/1.0\r\n{keep}Content-Length: 1\r\n\r\n1"),
        // Answered at once from the history ring.
        format!("GET /poll?topic=OLD&since=OLD:0 HTTP/1.0\r\n{keep}\r\n"),
        format!("GET /poll?topic=OLD&since=OLD:1&timeout=1 HTTP/1.0\r\n{keep}\r\n"),
    ];
    let mut statuses = Vec::new();
    for request in &requests {
        stream.write_all(request.as_bytes()).unwrap();
        let response = read_http_response(&mut stream);
        assert_eq!(
            response.header("connection"),
            Some("keep-alive"),
            "{request:?}: {} {}",
            response.status,
            response.text()
        );
        statuses.push(response.status);
    }
    // The held poll (the last) timed out with 204 and kept the connection too.
    assert_eq!(statuses, [200, 202, 200, 204]);
    // Without the token, an HTTP/1.0 answer closes.
    stream.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let response = read_http_response(&mut stream);
    assert_eq!(response.header("connection"), Some("close"));
    expect_eof(&mut stream);
    // HTTP/1.1 keeps the connection without saying so.
    let mut stream = broker.tcp();
    assert_eq!(http_get(&mut stream, "/healthz").header("connection"), None);
}

#[test]
fn absolute_form_targets_are_routed_by_their_path_and_query() {
    let broker = Broker::start(&[]);
    let origin = format!("http://{}", broker.addr());
    let mut stream = broker.tcp();
    let response = http_get(&mut stream, &format!("{origin}/healthz"));
    assert_eq!((response.status, response.text().as_str()), (200, "ok\n"));
    let response = http_post(
        &mut stream,
        &format!("{origin}/publish?topic=ABS"),
        "",
        b"7",
    );
    assert_eq!(response.status, 202, "{}", response.text());
    assert_eq!(response.json(), json!({"topic": "ABS", "seq": 1}));
    let answer = poll_answer(&http_get(
        &mut stream,
        &format!("{origin}/poll?topic=ABS&since=ABS:0"),
    ));
    assert_eq!(topic_seqs(&answer.ticks), [("ABS".to_owned(), 1)]);
    assert_eq!(get_once(&broker, "HTTP://elsewhere/nope").status, 404);

    // A WebSocket upgrade in absolute form reaches the pub/sub route.
    let mut stream = broker.tcp();
    stream
        .write_all(upgrade_request(&format!("{origin}{WS}"), SAMPLE_KEY).as_bytes())
        .unwrap();
    assert_switching_protocols(&read_response_head(&mut stream));
}
