//! Server-Sent Events (`GET /sse`): live ticks in order with `id: TOPIC:SEQ`,
//! resuming with `Last-Event-ID` (or `since`) from the history ring,
//! heartbeats as comments, and JSON with line breaks split over `data:`
//! lines. [`SseStream`] reads the stream as the EventSource algorithm of the
//! HTML standard assembles it.
//!
//! Every client here is a plain `TcpStream` speaking HTTP/1.1 by hand;
//! ticks are published with `POST /publish`. Reads have timeouts, waits
//! have deadlines, and time bounds are generous.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Instant;

use common::*;
use serde_json::{json, Value};

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

#[test]
fn sse_serves_several_topics_with_a_cursor_and_an_epoch_each() {
    let broker = Broker::start(&[]);
    let mut publisher = broker.tcp();
    for i in 1..=3 {
        assert_eq!(publish(&mut publisher, "SA", &i.to_string()), i);
    }
    for i in 1..=2 {
        assert_eq!(publish(&mut publisher, "SB", &i.to_string()), i);
    }
    // Learn SA's epoch from a first stream.
    let mut first = SseStream::open(&broker, "?topic=SA", "");
    assert_eq!(first.next().retry.as_deref(), Some("2000"));
    let (_, subscribed) = first.next_json();
    let epoch = subscribed["epoch"].as_str().expect("epoch").to_owned();
    drop(first);

    // SA resumes after 1 in its epoch: 2, 3, no gap. SB carries an epoch
    // of another numbering: a gap over all of it, then its snapshot.
    let query = format!("?topic=SA,SB&since=SA:1,SB:1&epoch=SA:{epoch},SB:0-0");
    let mut stream = SseStream::open(&broker, &query, "");
    assert_eq!(stream.next().retry.as_deref(), Some("2000"));
    let (_, event) = stream.next_json();
    assert_eq!(
        (event["event"].clone(), event["topic"].clone()),
        (json!("subscribed"), json!("SA"))
    );
    assert_eq!(event["epoch"], epoch.as_str());
    assert_eq!(stream.next_tick().1, 2);
    assert_eq!(stream.next_tick().1, 3);
    let (_, event) = stream.next_json();
    assert_eq!(
        (event["event"].clone(), event["topic"].clone()),
        (json!("subscribed"), json!("SB"))
    );
    let (_, gap) = stream.next_json();
    assert_eq!(
        gap,
        json!({"event": "gap", "topic": "SB", "from": 1, "to": 2})
    );
    let (topic, seq, _) = stream.next_tick();
    assert_eq!((topic.as_str(), seq), ("SB", 2), "the snapshot");
    // Live, both topics on the one stream, each in its own order.
    assert_eq!(publish(&mut publisher, "SB", "3"), 3);
    assert_eq!(publish(&mut publisher, "SA", "4"), 4);
    let (topic, seq, _) = stream.next_tick();
    assert_eq!((topic.as_str(), seq), ("SB", 3));
    let (topic, seq, _) = stream.next_tick();
    assert_eq!((topic.as_str(), seq), ("SA", 4));
}

#[test]
fn sse_max_hz_caps_the_rate_and_the_newest_tick_wins() {
    let broker = Broker::start(&[]);
    let mut publisher = broker.tcp();
    assert_eq!(publish(&mut publisher, "HZ", "0"), 1);
    let mut stream = SseStream::open(&broker, "?topic=HZ&max_hz=2", "");
    stream.expect_preamble(&[("HZ", 1)]);
    assert_eq!(stream.next_tick().1, 1, "the snapshot");
    for i in 1..=30 {
        publish(&mut publisher, "HZ", &i.to_string());
    }
    // At 2 per second the burst cannot all come; the last of it must.
    let mut seqs = Vec::new();
    while seqs.last() != Some(&31) {
        seqs.push(stream.next_tick().1);
    }
    assert!(seqs.len() < 10, "capped: {seqs:?}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    let (head, _) = http_exchange(
        &broker,
        "GET /sse?topic=HZ&max_hz=0 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(head.status, 400);
}
