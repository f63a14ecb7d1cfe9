//! Long-polling (`GET /poll`): a poll loop on one kept-alive connection
//! that sees every tick in order; a held poll answered by the next tick, or
//! with 204 at its timeout (capped by `http.max_poll_timeout_secs`); gaps
//! past the history ring; the snapshot for a poll without a cursor; several
//! topics with a cursor each; many held polls beside WebSocket subscribers;
//! and requests pipelined behind a poll.
//!
//! Every client here is a plain `TcpStream` speaking HTTP/1.1 by hand, so
//! keep-alive and framing are what the test sends and nothing a client
//! library adds; WebSocket subscribers and publishers are tungstenite on
//! `/ws`. Reads have timeouts, waits have deadlines, and time bounds are
//! generous except where the brief of a test is promptness itself.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tungstenite::Message;

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

#[test]
fn poll_answers_carry_epochs_and_an_old_epoch_gets_a_gap_and_the_snapshot() {
    let broker = Broker::start(&[]);
    let mut publisher = broker.tcp();
    for i in 1..=3 {
        assert_eq!(publish(&mut publisher, "E", &i.to_string()), i);
    }
    assert_eq!(publish(&mut publisher, "F", "1"), 1);
    let mut poller = broker.tcp();
    let response = http_get(&mut poller, "/poll?topic=E&topic=F&since=E:1,F:0");
    let epochs = response.json()["epochs"].clone();
    let epoch_e = epochs["E"].as_str().expect("E's epoch").to_owned();
    assert!(epochs["F"].is_string(), "{epochs}");
    let answer = poll_answer(&response);
    let mut got = topic_seqs(&answer.ticks);
    got.sort();
    assert_eq!(
        got,
        [
            ("E".to_owned(), 2),
            ("E".to_owned(), 3),
            ("F".to_owned(), 1)
        ]
    );

    // The same epoch sent back: a plain resume, no gap.
    let target = format!("/poll?topic=E&since=E:2&epoch=E:{epoch_e}");
    let answer = poll_answer(&http_get(&mut poller, &target));
    assert!(answer.gaps.is_empty(), "{}", answer.raw);
    assert_eq!(topic_seqs(&answer.ticks), [("E".to_owned(), 3)]);

    // Another epoch (a restarted broker's client): never ticks of this
    // numbering after its seq, but the whole range as a gap and the
    // snapshot, and a cursor in this numbering.
    let answer = poll_answer(&http_get(
        &mut poller,
        "/poll?topic=E&since=E:2&epoch=E:0-0",
    ));
    assert_eq!(answer.gaps, [json!({"topic": "E", "from": 1, "to": 3})]);
    assert_eq!(topic_seqs(&answer.ticks), [("E".to_owned(), 3)]);
    assert_eq!(answer.cursor, "E:3");

    let response = http_get(&mut poller, "/poll?topic=E&epoch=E:bad%20epoch");
    assert_eq!(response.status, 400, "{}", response.text());
}

#[test]
fn poll_with_timeout_zero_answers_at_once_with_cursors_and_epochs() {
    let broker = Broker::start(&[]);
    let mut publisher = broker.tcp();
    assert_eq!(publish(&mut publisher, "Z1", "1"), 1);
    let mut poller = broker.tcp();
    let started = Instant::now();
    let response = http_get(&mut poller, "/poll?topic=Z1,Z2&since=Z1:1&timeout=0");
    assert!(started.elapsed() < Duration::from_secs(2));
    let epochs = response.json()["epochs"].clone();
    assert!(
        epochs["Z1"].is_string() && epochs["Z2"].is_string(),
        "{epochs}"
    );
    let answer = poll_answer(&response);
    assert!(
        answer.ticks.is_empty() && answer.gaps.is_empty(),
        "{}",
        answer.raw
    );
    assert_eq!(answer.cursor, "Z1:1,Z2:0");
}
