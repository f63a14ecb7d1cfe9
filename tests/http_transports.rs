//! The HTTP transports that share the broker's port: long-polling
//! (`GET /poll`), Server-Sent Events (`GET /sse`), `POST /publish` (single
//! and NDJSON batch), the health, readiness and metrics routes, and the
//! statuses each refuses with.
//!
//! Every client here is a plain `TcpStream` speaking HTTP/1.1 by hand, so
//! keep-alive and framing are what the test sends and nothing a client
//! library adds; WebSocket subscribers and publishers are tungstenite on
//! `/ws`. Reads have timeouts, waits have deadlines, and time bounds are
//! generous except where the brief of a test is promptness itself.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// The pub/sub WebSocket route (the default `websocket.path`).
const WS: &str = "/ws";

/// Generous bound for anything that should happen "soon".
const PROMPTLY: Duration = Duration::from_secs(10);

// ------------------------------------------------------------ helpers

/// Publishes `data` to `topic` with `POST /publish?topic=` on a kept-alive
/// connection; returns the seq the broker gave it.
fn publish(stream: &mut TcpStream, topic: &str, data: &str) -> u64 {
    let response = http_post(
        stream,
        &format!("/publish?topic={topic}"),
        "",
        data.as_bytes(),
    );
    assert_eq!(response.status, 202, "publish: {}", response.text());
    let body = response.json();
    assert_eq!(body["topic"], topic, "{body}");
    body["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq: {body}"))
}

/// One `GET` on a fresh connection.
fn get_once(broker: &Broker, target: &str) -> HttpResponse {
    http_exchange(broker, &get_request(target)).0
}

/// A 200 long-poll answer.
#[derive(Debug)]
struct PollAnswer {
    ticks: Vec<Value>,
    gaps: Vec<Value>,
    cursor: String,
    /// The body as sent, for byte-for-byte checks of `data`.
    raw: String,
}

fn poll_answer(response: &HttpResponse) -> PollAnswer {
    assert_eq!(response.status, 200, "poll: {}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    PollAnswer {
        ticks: body["ticks"].as_array().expect("ticks array").clone(),
        gaps: body["gaps"].as_array().expect("gaps array").clone(),
        cursor: body["cursor"].as_str().expect("cursor string").to_owned(),
        raw: response.text(),
    }
}

/// (topic, seq) of each tick of a poll answer.
fn topic_seqs(ticks: &[Value]) -> Vec<(String, u64)> {
    ticks
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().expect("topic").to_owned(),
                t["seq"].as_u64().expect("seq"),
            )
        })
        .collect()
}

/// Scrapes `/metrics` until `ok` holds for the text (metrics are flushed
/// about once a second); fails after [`PROMPTLY`] with the last scrape.
fn wait_for_metrics(broker: &Broker, what: &str, ok: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + PROMPTLY;
    let mut stream = broker.tcp();
    loop {
        let response = http_get(&mut stream, "/metrics");
        assert_eq!(response.status, 200);
        let text = response.text();
        if ok(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {what}:\n{text}"
        );
        // Polling a value that changes once a second; bounded by the deadline.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until at least `n` long-polls are held across the workers.
fn wait_for_held_polls(broker: &Broker, n: usize) {
    wait_for_metrics(broker, &format!("{n} held polls"), |text| {
        metric_sum(text, "tickfan_longpolls_held") >= n as f64
    });
}

/// A tungstenite client on `/ws` subscribed to `topics` (each answered with
/// `subscribed` before the next is sent).
fn ws_subscriber(broker: &Broker, topics: &[&str]) -> WebSocket<TcpStream> {
    let mut ws = broker.connect_ws(WS);
    for topic in topics {
        ws.send(Message::text(
            json!({"op": "sub", "topic": topic}).to_string(),
        ))
        .unwrap();
        let event: Value = serde_json::from_str(&next_ws_text(&mut ws)).unwrap();
        assert_eq!(event["event"], "subscribed", "{event}");
        assert_eq!(event["topic"], *topic, "{event}");
    }
    ws
}

/// The next text message that is not a heartbeat; pings are answered by
/// tungstenite and skipped.
fn next_ws_text(ws: &mut WebSocket<TcpStream>) -> String {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) if text.starts_with(r#"{"event":"heartbeat""#) => {}
            Ok(Message::Text(text)) => return text,
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(other) => panic!("unexpected WebSocket message {other:?}"),
            Err(e) => panic!("reading the WebSocket subscriber failed: {e:?}"),
        }
    }
}

/// `{"topic":"T","seq":N,"ts":..,"data":DATA}` with DATA exactly `data`.
fn assert_envelope(envelope: &str, topic: &str, seq: u64, data: &str) {
    let prefix = format!(r#"{{"topic":"{topic}","seq":{seq},"ts":"#);
    let suffix = format!(r#","data":{data}}}"#);
    assert!(
        envelope.starts_with(&prefix) && envelope.ends_with(&suffix),
        "expected {prefix}..{suffix}, got {envelope}"
    );
}

/// One Server-Sent Event: its fields as the EventSource algorithm of the
/// HTML standard assembles them (`data` lines joined with '\n').
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct SseEvent {
    /// Comment lines (after ':'); heartbeats arrive as comments.
    comments: Vec<String>,
    id: Option<String>,
    data: Option<String>,
    retry: Option<String>,
}

/// An open `GET /sse` stream, read event by event.
struct SseStream {
    reader: BufReader<TcpStream>,
}

impl SseStream {
    /// Opens `/sse{query}` with `extra_headers`; checks the 200 head.
    fn open(broker: &Broker, query: &str, extra_headers: &str) -> SseStream {
        let mut stream = broker.tcp();
        let request = format!("GET /sse{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra_headers}\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let head = read_head_only(&mut stream);
        assert_eq!(head.status, 200, "{head:?}");
        assert_eq!(head.header("content-type"), Some("text/event-stream"));
        assert_eq!(
            head.header("content-length"),
            None,
            "SSE is close-delimited"
        );
        SseStream {
            reader: BufReader::new(stream),
        }
    }

    /// The next event (a blank line ends it); fails on EOF or timeout.
    fn next(&mut self) -> SseEvent {
        let mut event = SseEvent::default();
        let mut any_field = false;
        loop {
            let mut line = Vec::new();
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => panic!("SSE stream ended inside/before an event: {event:?}"),
                Ok(_) => {}
                Err(e) => panic!("reading the SSE stream failed ({e}); so far {event:?}"),
            }
            assert_eq!(line.pop(), Some(b'\n'), "SSE line not ended: {line:?}");
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line).expect("SSE is UTF-8");
            if line.is_empty() {
                if any_field {
                    return event;
                }
                continue;
            }
            any_field = true;
            if let Some(comment) = line.strip_prefix(':') {
                event.comments.push(comment.trim_start().to_owned());
                continue;
            }
            let (name, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match name {
                "id" => event.id = Some(value),
                "retry" => event.retry = Some(value),
                "data" => {
                    event.data = Some(match event.data.take() {
                        Some(data) => data + "\n" + &value,
                        None => value,
                    })
                }
                // Unknown field names are ignored, as the standard says.
                _ => {}
            }
        }
    }

    /// The next event's `data` as JSON, and its id.
    fn next_json(&mut self) -> (Option<String>, Value) {
        let event = self.next();
        let data = event
            .data
            .unwrap_or_else(|| panic!("SSE event without data: {:?}", event.id));
        let value = serde_json::from_str(&data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {data}"));
        (event.id, value)
    }

    /// Reads the `retry` preamble and one `subscribed` event per topic; a
    /// snapshot or replay would come right after its topic's `subscribed`.
    fn expect_preamble(&mut self, topics: &[(&str, u64)]) {
        assert_eq!(self.next().retry.as_deref(), Some("2000"));
        for (topic, seq) in topics {
            let (id, event) = self.next_json();
            assert_eq!(id, None, "{event}");
            assert_eq!(event["event"], "subscribed", "{event}");
            assert_eq!(event["topic"], *topic, "{event}");
            assert_eq!(event["seq"], *seq, "{event}");
        }
    }

    /// The next tick event: checks that its id names the same topic and seq
    /// as its envelope; returns (topic, seq, raw data).
    fn next_tick(&mut self) -> (String, u64, String) {
        let event = self.next();
        let data = event.data.expect("tick event has data");
        let tick: Value = serde_json::from_str(&data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {data}"));
        let topic = tick["topic"]
            .as_str()
            .unwrap_or_else(|| panic!("not a tick: {data}"))
            .to_owned();
        let seq = tick["seq"].as_u64().expect("seq");
        assert_eq!(event.id, Some(format!("{topic}:{seq}")), "{data}");
        (topic, seq, data)
    }
}

// ------------------------------------------------------------ long-poll

#[test]
fn long_poll_loop_on_one_connection_sees_every_tick_in_order() {
    const N: u64 = 500;
    let broker = Broker::start(&[]);
    let mut publisher = broker.connect_ws(WS);
    let publishing = std::thread::spawn(move || {
        for i in 1..=N {
            let op = format!(r#"{{"op":"pub","topic":"loop","data":{{"i":{i}}}}}"#);
            publisher.send(Message::text(op)).unwrap();
        }
        publisher
    });

    let mut poller = broker.tcp();
    let mut cursor = "loop:0".to_owned();
    let mut next = 1;
    let mut polls = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next <= N {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} ticks after {polls} polls",
            next - 1
        );
        let response = http_get(
            &mut poller,
            &format!("/poll?topic=loop&since={cursor}&timeout=5"),
        );
        polls += 1;
        if response.status == 204 {
            continue;
        }
        let answer = poll_answer(&response);
        assert!(answer.gaps.is_empty(), "gap at {next}: {}", answer.raw);
        assert!(
            !answer.ticks.is_empty(),
            "200 without ticks: {}",
            answer.raw
        );
        for tick in &answer.ticks {
            assert_eq!(tick["topic"], "loop");
            assert_eq!(tick["seq"], next, "out of order or duplicate");
            assert_eq!(tick["data"], json!({ "i": next }));
            next += 1;
        }
        assert_eq!(answer.cursor, format!("loop:{}", next - 1));
        cursor = answer.cursor;
    }
    let publisher = publishing.join().expect("publisher thread");
    drop(publisher);
    // Nothing after the last: the next poll on the same connection times out.
    let response = http_get(
        &mut poller,
        &format!("/poll?topic=loop&since={cursor}&timeout=1"),
    );
    assert_eq!(response.status, 204, "{}", response.text());
    eprintln!("{N} ticks in {polls} polls");
}

#[test]
fn held_poll_is_answered_promptly_when_a_tick_arrives() {
    let broker = Broker::start(&[]);
    let mut publisher = broker.tcp();
    assert_eq!(publish(&mut publisher, "held", "1"), 1);

    let mut poller = broker.tcp();
    poller
        .write_all(get_request("/poll?topic=held&since=held:1&timeout=30").as_bytes())
        .unwrap();
    wait_for_held_polls(&broker, 1);

    let published_at = Instant::now();
    assert_eq!(publish(&mut publisher, "held", r#"{"px": 2.50}"#), 2);
    let answer = poll_answer(&read_http_response(&mut poller));
    let waited = published_at.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "held poll answered {waited:?} after the publish"
    );
    assert_eq!(topic_seqs(&answer.ticks), [("held".to_owned(), 2)]);
    assert!(answer.gaps.is_empty());
    assert_eq!(answer.cursor, "held:2");
    assert!(
        answer.raw.contains(r#""data":{"px": 2.50}}"#),
        "data not byte for byte: {}",
        answer.raw
    );
    wait_for_metrics(&broker, "no held polls", |text| {
        metric_sum(text, "tickfan_longpolls_held") == 0.0
    });
}

#[test]
fn poll_times_out_with_204_and_the_connection_stays_usable() {
    let broker = Broker::start(&[
        "--max-poll-timeout-secs",
        "2",
        "--set",
        "http.poll_timeout_secs=1",
    ]);
    let mut poller = broker.tcp();

    let sent = Instant::now();
    let response = http_get(&mut poller, "/poll?topic=quiet&timeout=1");
    let waited = sent.elapsed();
    assert_eq!(response.status, 204, "{}", response.text());
    assert!(response.body.is_empty());
    assert_eq!(response.header("content-length"), None);
    assert!(waited >= Duration::from_millis(950), "204 after {waited:?}");
    assert!(waited < PROMPTLY, "204 after {waited:?}");

    // A larger timeout is capped by --max-poll-timeout-secs 2.
    let sent = Instant::now();
    let response = http_get(&mut poller, "/poll?topic=quiet&timeout=3600");
    let waited = sent.elapsed();
    assert_eq!(response.status, 204, "{}", response.text());
    assert!(
        waited >= Duration::from_millis(1950),
        "204 after {waited:?}"
    );
    assert!(
        waited < PROMPTLY,
        "204 after {waited:?} despite the 2 s cap"
    );

    // Same connection, next poll: answered by a tick.
    let mut publisher = broker.tcp();
    assert_eq!(publish(&mut publisher, "quiet", "true"), 1);
    let answer = poll_answer(&http_get(&mut poller, "/poll?topic=quiet&since=quiet:0"));
    assert_eq!(topic_seqs(&answer.ticks), [("quiet".to_owned(), 1)]);
}

#[test]
fn poll_reports_gaps_beyond_the_history_depth() {
    let broker = Broker::start(&["--history-depth", "4"]);
    let mut publisher = broker.tcp();
    for i in 1..=10 {
        assert_eq!(publish(&mut publisher, "g", &i.to_string()), i);
    }
    let mut poller = broker.tcp();

    // Ticks 3..=6 have left the ring (it holds 7..=10).
    let answer = poll_answer(&http_get(&mut poller, "/poll?topic=g&since=g:2"));
    assert_eq!(answer.gaps, [json!({"topic": "g", "from": 3, "to": 6})]);
    let seqs: Vec<u64> = topic_seqs(&answer.ticks).iter().map(|t| t.1).collect();
    assert_eq!(seqs, [7, 8, 9, 10]);
    for tick in &answer.ticks {
        assert_eq!(tick["data"], tick["seq"]);
    }
    assert_eq!(answer.cursor, "g:10");

    // Just inside the window: no gap.
    let answer = poll_answer(&http_get(&mut poller, "/poll?topic=g&since=g:6"));
    assert!(answer.gaps.is_empty(), "{}", answer.raw);
    let seqs: Vec<u64> = topic_seqs(&answer.ticks).iter().map(|t| t.1).collect();
    assert_eq!(seqs, [7, 8, 9, 10]);

    // One before the window: a gap of exactly one tick.
    let answer = poll_answer(&http_get(&mut poller, "/poll?topic=g&since=g:5"));
    assert_eq!(answer.gaps, [json!({"topic": "g", "from": 6, "to": 6})]);

    // A cursor ahead of the topic is another numbering: all of it is a gap,
    // then the snapshot.
    let answer = poll_answer(&http_get(&mut poller, "/poll?topic=g&since=g:99"));
    assert_eq!(answer.gaps, [json!({"topic": "g", "from": 1, "to": 10})]);
    assert_eq!(topic_seqs(&answer.ticks), [("g".to_owned(), 10)]);
    assert_eq!(answer.cursor, "g:10");
}

#[test]
fn poll_without_cursor_gets_the_snapshot() {
    let broker = Broker::start(&[]);
    let mut publisher = broker.tcp();
    for i in 1..=3 {
        publish(&mut publisher, "snap", &format!(r#"{{"v": {i}}}"#));
    }
    let mut poller = broker.tcp();
    let answer = poll_answer(&http_get(&mut poller, "/poll?topic=snap"));
    assert_eq!(topic_seqs(&answer.ticks), [("snap".to_owned(), 3)]);
    assert!(answer.raw.contains(r#""data":{"v": 3}}"#), "{}", answer.raw);
    assert!(answer.gaps.is_empty());
    assert_eq!(answer.cursor, "snap:3");

    // A topic with nothing published has no snapshot: the poll is held,
    // and still included in the cursor when another topic answers.
    let answer = poll_answer(&http_get(&mut poller, "/poll?topic=snap&topic=empty"));
    assert_eq!(topic_seqs(&answer.ticks), [("snap".to_owned(), 3)]);
    assert_eq!(answer.cursor, "snap:3,empty:0");
    let response = http_get(&mut poller, "/poll?topic=empty&timeout=1");
    assert_eq!(response.status, 204, "{}", response.text());
}

#[test]
fn multi_topic_poll_follows_each_cursor() {
    let broker = Broker::start(&[]);
    let mut publisher = broker.tcp();
    for i in 1..=3 {
        assert_eq!(publish(&mut publisher, "A", &i.to_string()), i);
    }
    for i in 1..=2 {
        assert_eq!(publish(&mut publisher, "B", &i.to_string()), i);
    }
    let mut poller = broker.tcp();

    let answer = poll_answer(&http_get(
        &mut poller,
        "/poll?topic=A&topic=B&since=A:1,B:2",
    ));
    assert_eq!(
        topic_seqs(&answer.ticks),
        [("A".to_owned(), 2), ("A".to_owned(), 3)]
    );
    assert_eq!(answer.cursor, "A:3,B:2");

    // The comma form of `topic`, and separate `since` parameters.
    let answer = poll_answer(&http_get(
        &mut poller,
        "/poll?topic=A,B&since=A:2&since=B:0",
    ));
    let mut got = topic_seqs(&answer.ticks);
    got.sort();
    assert_eq!(
        got,
        [
            ("A".to_owned(), 3),
            ("B".to_owned(), 1),
            ("B".to_owned(), 2)
        ]
    );
    assert_eq!(answer.cursor, "A:3,B:2");

    // Up to date on both: held until B moves; the cursor moves B only.
    let cursor = answer.cursor;
    poller
        .write_all(
            get_request(&format!("/poll?topic=A&topic=B&since={cursor}&timeout=30")).as_bytes(),
        )
        .unwrap();
    wait_for_held_polls(&broker, 1);
    assert_eq!(publish(&mut publisher, "B", r#""b3""#), 3);
    let answer = poll_answer(&read_http_response(&mut poller));
    assert_eq!(topic_seqs(&answer.ticks), [("B".to_owned(), 3)]);
    assert_eq!(answer.ticks[0]["data"], "b3");
    assert_eq!(answer.cursor, "A:3,B:3");
}

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
fn held_polls_do_not_hold_up_websocket_subscribers_and_all_time_out() {
    const POLLS: usize = 200;
    let broker = Broker::start(&[]);
    let mut polls: Vec<(TcpStream, Instant)> = (0..POLLS)
        .map(|i| {
            let mut stream = broker.tcp();
            let topic = format!("idle{}", i % 7);
            // Taken before the write: the server cannot start the hold earlier.
            let sent = Instant::now();
            stream
                .write_all(get_request(&format!("/poll?topic={topic}&timeout=2")).as_bytes())
                .unwrap();
            (stream, sent)
        })
        .collect();

    let mut subscriber = ws_subscriber(&broker, &["live"]);
    let mut publisher = broker.tcp();
    for i in 1..=20u64 {
        assert_eq!(publish(&mut publisher, "live", &format!("[{i}]")), i);
    }
    for i in 1..=20u64 {
        assert_envelope(&next_ws_text(&mut subscriber), "live", i, &format!("[{i}]"));
    }

    for (i, (stream, sent)) in polls.iter_mut().enumerate() {
        let response = read_http_response(stream);
        let waited = sent.elapsed();
        assert_eq!(response.status, 204, "poll {i}: {}", response.text());
        assert!(
            waited >= Duration::from_millis(1950),
            "poll {i} answered after {waited:?}"
        );
    }
    let (_, last_sent) = polls.last().unwrap();
    assert!(
        last_sent.elapsed() < Duration::from_secs(30),
        "the held polls took {:?} to be answered",
        last_sent.elapsed()
    );
}

/// HTTP/1.1 lets a client send its next request before the answer to the
/// previous one (RFC 9112 §9.3.2). A request pipelined behind a long-poll
/// stays unparsed in the connection's buffer after the poll is answered
/// (`start_poll` returns `Flow::NeedMore`, and nothing re-runs the parser
/// when `finish_poll` goes back to `Phase::Http`); it is never served, and
/// when `websocket.handshake_timeout_ms` passes the connection is answered
/// 408 "request head not received in time" instead.
#[test]
fn request_pipelined_behind_a_held_poll_is_answered() {
    let broker = Broker::start(&[]);
    let mut stream = broker.tcp();
    let mut requests = get_request("/poll?topic=pipe&timeout=1");
    requests.push_str(&get_request("/healthz"));
    stream.write_all(requests.as_bytes()).unwrap();
    let first = read_http_response(&mut stream);
    assert_eq!(first.status, 204, "{}", first.text());
    let second = read_http_response(&mut stream);
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.text(), "ok\n");
}

/// Bytes that arrive while a poll is held are consumed unread
/// (`Connection::process` drops all input in `Phase::Polling`), so a
/// request sent then is lost: after the poll's 204 the next answer is the
/// 408 an idle connection gets when `websocket.handshake_timeout_ms` passes.
#[test]
fn request_sent_while_a_poll_is_held_is_answered() {
    let broker = Broker::start(&[]);
    let mut stream = broker.tcp();
    stream
        .write_all(get_request("/poll?topic=pipe&timeout=2").as_bytes())
        .unwrap();
    wait_for_held_polls(&broker, 1);
    stream
        .write_all(get_request("/healthz").as_bytes())
        .unwrap();
    let first = read_http_response(&mut stream);
    assert_eq!(first.status, 204, "{}", first.text());
    let second = read_http_response(&mut stream);
    assert_eq!(second.status, 200, "{}", second.text());
}

/// The same with a poll answered at once (from the snapshot): the
/// pipelined request after it waits for more input that never comes.
#[test]
fn request_pipelined_behind_an_immediate_poll_is_answered() {
    let broker = Broker::start(&[]);
    let mut publisher = broker.tcp();
    publish(&mut publisher, "pipe", "1");
    let mut stream = broker.tcp();
    let mut requests = get_request("/poll?topic=pipe");
    requests.push_str(&get_request("/healthz"));
    stream.write_all(requests.as_bytes()).unwrap();
    let answer = poll_answer(&read_http_response(&mut stream));
    assert_eq!(topic_seqs(&answer.ticks), [("pipe".to_owned(), 1)]);
    let second = read_http_response(&mut stream);
    assert_eq!(second.status, 200, "{}", second.text());
}

// ------------------------------------------------------------ SSE

#[test]
fn sse_streams_live_ticks_in_order_with_ids() {
    let broker = Broker::start(&[]);
    let mut sse = SseStream::open(&broker, "?topic=S1&topic=S2", "");
    sse.expect_preamble(&[("S1", 0), ("S2", 0)]);

    let mut publisher = broker.tcp();
    let mut expected: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for i in 0..40u64 {
        let topic = if i % 3 == 0 { "S2" } else { "S1" };
        let data = format!(r#"{{"i": {i}, "tag":"x"}}"#);
        let seq = publish(&mut publisher, topic, &data);
        expected
            .entry(topic.to_owned())
            .or_default()
            .push((seq, data));
    }
    let mut got: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for _ in 0..40 {
        let (topic, seq, data) = sse.next_tick();
        got.entry(topic).or_default().push((seq, data));
    }
    for (topic, ticks) in &expected {
        let received = &got[topic];
        assert_eq!(
            received.iter().map(|t| t.0).collect::<Vec<_>>(),
            (1..=ticks.len() as u64).collect::<Vec<_>>(),
            "{topic}: seqs in order, none missing or repeated"
        );
        for ((seq, data), (_, envelope)) in ticks.iter().zip(received) {
            assert_envelope(envelope, topic, *seq, data);
        }
    }
}

#[test]
fn sse_resume_with_last_event_id_replays_exactly_the_missed_ticks() {
    let broker = Broker::start(&[]);
    let mut publisher = broker.tcp();
    let mut sse = SseStream::open(&broker, "?topic=R", "");
    sse.expect_preamble(&[("R", 0)]);
    for i in 1..=3 {
        publish(&mut publisher, "R", &format!("{{\"n\":{i}}}"));
    }
    let mut last_id = String::new();
    for i in 1..=3 {
        let (topic, seq, data) = sse.next_tick();
        assert_eq!((topic.as_str(), seq), ("R", i));
        assert_envelope(&data, "R", i, &format!("{{\"n\":{i}}}"));
        last_id = format!("{topic}:{seq}");
    }
    drop(sse);

    // Missed while away.
    for i in 4..=7 {
        assert_eq!(publish(&mut publisher, "R", &format!("{{\"n\":{i}}}")), i);
    }
    let mut sse = SseStream::open(
        &broker,
        "?topic=R",
        &format!("Last-Event-ID: {last_id}\r\n"),
    );
    sse.expect_preamble(&[("R", 7)]);
    for i in 4..=7 {
        let (_, seq, data) = sse.next_tick();
        assert_eq!(seq, i, "replay");
        assert_envelope(&data, "R", i, &format!("{{\"n\":{i}}}"));
    }
    // Then live, with no duplicate of the replay.
    assert_eq!(publish(&mut publisher, "R", "{\"n\":8}"), 8);
    let (_, seq, _) = sse.next_tick();
    assert_eq!(seq, 8);

    // `since` in the query wins over Last-Event-ID.
    let mut sse = SseStream::open(&broker, "?topic=R&since=R:6", "Last-Event-ID: R:1\r\n");
    sse.expect_preamble(&[("R", 8)]);
    assert_eq!(sse.next_tick().1, 7);
    assert_eq!(sse.next_tick().1, 8);
}

#[test]
fn sse_sends_heartbeats_with_the_latest_seqs() {
    let broker = Broker::start(&["--heartbeat-interval-ms", "200"]);
    let mut publisher = broker.tcp();
    publish(&mut publisher, "hb", "1");
    publish(&mut publisher, "hb", "2");

    let mut sse = SseStream::open(&broker, "?topic=hb&topic=hb2", "");
    // Per topic: `subscribed`, then its snapshot (none for hb2).
    sse.expect_preamble(&[("hb", 2)]);
    let (_, seq, _) = sse.next_tick();
    assert_eq!(seq, 2, "the snapshot");
    let (_, event) = sse.next_json();
    assert_eq!(event["event"], "subscribed", "{event}");
    assert_eq!(event["topic"], "hb2", "{event}");
    let started = Instant::now();
    // Heartbeats are comments: they keep proxies from closing the stream
    // without firing the page's `onmessage`.
    for _ in 0..2 {
        let event = sse.next();
        assert_eq!(
            (event.id.as_deref(), event.data.as_deref()),
            (None, None),
            "{event:?}"
        );
        let heartbeat: Value = serde_json::from_str(&event.comments[0]).expect("JSON comment");
        assert_eq!(
            heartbeat,
            json!({"event": "heartbeat", "seqs": {"hb": 2, "hb2": 0}})
        );
    }
    assert!(started.elapsed() < PROMPTLY);
}

/// JSON may contain line breaks between tokens, and a published body is
/// forwarded byte for byte; an SSE `data:` field ends at a line break, so
/// the event must be split into several `data:` lines (which the client
/// joins with '\n', restoring the bytes). The broker writes the envelope on
/// one `data:` line, so the client sees truncated JSON and an unknown field.
#[test]
fn sse_carries_json_with_line_breaks_intact() {
    let broker = Broker::start(&[]);
    let mut sse = SseStream::open(&broker, "?topic=pretty", "");
    sse.expect_preamble(&[("pretty", 0)]);
    let mut publisher = broker.tcp();
    let pretty = "{\n  \"bid\": 1.5,\n  \"ask\": 1.6\n}";
    assert_eq!(publish(&mut publisher, "pretty", pretty), 1);
    let event = sse.next();
    assert_eq!(event.id.as_deref(), Some("pretty:1"));
    let data = event.data.expect("data");
    assert_envelope(&data, "pretty", 1, pretty);
}

// ------------------------------------------------------------ publish

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

/// `http_exchange` for a request that is not UTF-8 text.
fn http_exchange_bytes(broker: &Broker, request: &[u8]) -> (HttpResponse, TcpStream) {
    let mut stream = broker.tcp();
    stream.write_all(request).unwrap();
    let response = read_http_response(&mut stream);
    (response, stream)
}

// ------------------------------------------------------------ health, readiness, metrics

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
