//! Publishing over HTTP (`POST /publish`): one tick per request and NDJSON
//! batches, reaching WebSocket subscribers byte for byte; keep-alive and
//! pipelined publishes; bad bodies refused with 400 and nothing published;
//! publish tokens (401); and bodies over `http.max_body_bytes` (413, on the
//! head alone).
//!
//! Every client here is a plain `TcpStream` speaking HTTP/1.1 by hand, so
//! keep-alive and framing are what the test sends and nothing a client
//! library adds; WebSocket subscribers and publishers are tungstenite on
//! `/ws`. Reads have timeouts, waits have deadlines, and time bounds are
//! generous except where the brief of a test is promptness itself.

mod common;

use std::io::Write;

use common::*;
use serde_json::json;

#[test]
fn http_publish_single_and_batch_reach_websocket_subscribers_byte_for_byte() {
    let broker = Broker::start(&[]);
    let mut subscriber = ws_subscriber(&broker, &["P", "Q"]);
    let mut publisher = broker.tcp();

    let single = r#"{"bid": 189.210, "x":[1, 2 ], "s":"\u00e9"}"#;
    let response = http_post(&mut publisher, "/publish?topic=P", "", single.as_bytes());
    assert_eq!(response.status, 202, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.json(), json!({"topic": "P", "seq": 1}));
    assert_envelope(&next_ws_text(&mut subscriber), "P", 1, single);

    let lines = [
        ("P", r#"{"a":  1}"#),
        ("Q", r#"[true, null ,"q"]"#),
        ("P", r#"1.000"#),
    ];
    let mut batch = String::new();
    for (topic, data) in lines {
        batch.push_str(&format!(r#"{{"topic":"{topic}","data":{data}}}"#));
        batch.push('\n');
    }
    batch.push('\n'); // blank lines are allowed
    let response = http_post(&mut publisher, "/publish", "", batch.as_bytes());
    assert_eq!(response.status, 202, "{}", response.text());
    assert_eq!(
        response.json(),
        json!({"published": 3, "ticks": [
            {"topic": "P", "seq": 2},
            {"topic": "Q", "seq": 1},
            {"topic": "P", "seq": 3},
        ]})
    );
    let mut got: Vec<String> = (0..3).map(|_| next_ws_text(&mut subscriber)).collect();
    got.sort(); // order is promised per topic only
    assert_envelope(&got[0], "P", 2, lines[0].1);
    assert_envelope(&got[1], "P", 3, lines[2].1);
    assert_envelope(&got[2], "Q", 1, lines[1].1);
}

#[test]
fn keep_alive_publish_loop_on_one_connection() {
    let broker = Broker::start(&[]);
    let mut publisher = broker.tcp();
    for i in 1..=25u64 {
        let response = http_post(
            &mut publisher,
            "/publish?topic=ka",
            "Content-Type: application/json\r\n",
            format!(r#"{{"i":{i}}}"#).as_bytes(),
        );
        assert_eq!(response.status, 202, "request {i}: {}", response.text());
        assert_eq!(response.header("connection"), None, "request {i}");
        assert_eq!(response.json(), json!({"topic": "ka", "seq": i}));
    }
    let answer = poll_answer(&http_get(&mut publisher, "/poll?topic=ka&since=ka:0"));
    let seqs: Vec<u64> = topic_seqs(&answer.ticks).iter().map(|t| t.1).collect();
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());
    for tick in &answer.ticks {
        assert_eq!(tick["data"]["i"], tick["seq"]);
    }
}

#[test]
fn pipelined_publishes_are_answered_in_order() {
    let broker = Broker::start(&[]);
    let mut publisher = broker.tcp();
    let mut requests = Vec::new();
    for i in 1..=10 {
        requests.extend(post_request(
            "/publish?topic=pp",
            "",
            format!("{i}").as_bytes(),
        ));
    }
    publisher.write_all(&requests).unwrap();
    for i in 1..=10u64 {
        let response = read_http_response(&mut publisher);
        assert_eq!(response.status, 202, "request {i}: {}", response.text());
        assert_eq!(response.json(), json!({"topic": "pp", "seq": i}));
    }
}

#[test]
fn publish_refuses_bad_bodies_with_400_and_publishes_nothing() {
    let broker = Broker::start(&[]);
    let cases: [(&str, &[u8], &str); 6] = [
        ("/publish?topic=E", b"{\"bid\":", "not JSON"),
        ("/publish?topic=E", b"", "not JSON"),
        ("/publish?topic=E", b"\xff\xfe", "UTF-8"),
        ("/publish?topic=a%20b", b"1", "topic"),
        ("/publish", b"", "no ticks"),
        (
            "/publish",
            b"{\"topic\":\"E\",\"data\":1}\n{\"topic\":\"E\",\"data\":2}\n{\"topic\":\"E\"}\n",
            "line 3:",
        ),
    ];
    for (target, body, mentions) in cases {
        let (response, _) = http_exchange_bytes(&broker, &post_request(target, "", body));
        assert_eq!(response.status, 400, "{target}: {}", response.text());
        assert!(
            response.text().contains(mentions),
            "{target}: 400 body {:?} does not mention {mentions:?}",
            response.text()
        );
    }
    let batches: [&[u8]; 2] = [
        b"{\"topic\":\"E\",\"data\":1}\nnot json\n",
        b"\n{\"topic\":\"bad topic\",\"data\":1}\n",
    ];
    for batch in batches {
        let (response, _) = http_exchange_bytes(&broker, &post_request("/publish", "", batch));
        assert_eq!(response.status, 400);
        assert!(
            response.text().starts_with("line 2:"),
            "{}",
            response.text()
        );
    }

    // None of the refused batches published anything: E starts at seq 1.
    let mut publisher = broker.tcp();
    assert_eq!(publish(&mut publisher, "E", "0"), 1);
}

#[test]
fn publish_with_tokens_configured_needs_one() {
    let broker = Broker::start(&["--publish-token", "s3cret"]);
    for (target, headers) in [
        ("/publish?topic=T", ""),
        ("/publish?topic=T", "Authorization: Bearer wrong\r\n"),
        ("/publish?topic=T&token=wrong", ""),
        ("/publish?topic=T", "Authorization: Basic czNjcmV0\r\n"),
    ] {
        let (response, _) = http_exchange_bytes(&broker, &post_request(target, headers, b"1"));
        assert_eq!(
            response.status,
            401,
            "{target} {headers:?}: {}",
            response.text()
        );
    }
    let mut publisher = broker.tcp();
    let response = http_post(
        &mut publisher,
        "/publish?topic=T",
        "Authorization: Bearer s3cret\r\n",
        b"1",
    );
    assert_eq!(response.status, 202, "{}", response.text());
    assert_eq!(response.json(), json!({"topic": "T", "seq": 1}));
    let response = http_post(&mut publisher, "/publish?topic=T&token=s3cret", "", b"2");
    assert_eq!(response.status, 202, "{}", response.text());
    assert_eq!(response.json(), json!({"topic": "T", "seq": 2}));
    let batch = b"{\"topic\":\"T\",\"data\":3}\n";
    let response = http_post(&mut publisher, "/publish?token=s3cret", "", batch);
    assert_eq!(response.status, 202, "{}", response.text());

    // Refused publishes published nothing; subscribing needs no token.
    let answer = poll_answer(&get_once(&broker, "/poll?topic=T&since=T:0"));
    let seqs: Vec<u64> = topic_seqs(&answer.ticks).iter().map(|t| t.1).collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[test]
fn publish_body_over_the_limit_is_413() {
    let broker = Broker::start(&["--max-body-bytes", "64"]);
    let at_limit = format!("\"{}\"", "x".repeat(62));
    assert_eq!(at_limit.len(), 64);
    let mut publisher = broker.tcp();
    assert_eq!(publish(&mut publisher, "big", &at_limit), 1);

    let over = format!("\"{}\"", "x".repeat(63));
    let (response, mut stream) = http_exchange_bytes(
        &broker,
        &post_request("/publish?topic=big", "", over.as_bytes()),
    );
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(response.header("connection"), Some("close"));
    expect_eof(&mut stream);

    // Refused on the head alone: no need to send the 10 MB.
    let mut stream = broker.tcp();
    stream
        .write_all(
            b"POST /publish?topic=big HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n",
        )
        .unwrap();
    let response = read_http_response(&mut stream);
    assert_eq!(response.status, 413, "{}", response.text());

    // Nothing of the refused bodies was published.
    assert_eq!(publish(&mut publisher, "big", "2"), 2);
}
