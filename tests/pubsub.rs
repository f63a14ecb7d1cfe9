//! The pub/sub protocol at `/ws` over the real binary: fan-out across
//! workers, ordering under concurrent publishers, snapshots, `since` replay,
//! gaps and epochs, unsubscribe, error events, publish and subscribe rights,
//! heartbeats and `max_hz` (DESIGN.md, "Client protocol").
//!
//! Every test starts its own broker with two workers. Ticks are read with
//! [`PsClient`], which parses frames in place, so that the big fan-out tests
//! measure the broker rather than a debug-built client.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A queue bound no test here reaches, so no slow-consumer policy can hide
/// or reorder ticks.
const BIG_QUEUE: &str = "67108864";

/// The `data` of a tick, which must be a tick of `topic` with `seq`.
fn tick_data<'a>(payload: &'a [u8], topic: &str, seq: u64) -> &'a [u8] {
    let tick = parse_tick(payload).unwrap_or_else(|| {
        panic!(
            "expected tick {topic}#{seq}, got {:?}",
            String::from_utf8_lossy(payload)
        )
    });
    assert_eq!(
        (tick.topic, tick.seq),
        (topic, seq),
        "{:?}",
        String::from_utf8_lossy(payload)
    );
    tick.data
}

/// A publisher that is subscribed to `topic` itself, so it can wait until
/// the broker has taken its publishes.
fn publisher_on(broker: &Broker, topic: &str) -> PsClient {
    let mut publisher = broker.pubsub();
    publisher.subscribe(topic);
    publisher
}

/// Publishes `data` with `publisher` (subscribed to `topic` and up to date)
/// and waits for its own tick, which must carry `seq`.
fn publish_and_confirm(publisher: &mut PsClient, topic: &str, data: &str, seq: u64) {
    publisher.publish(topic, data);
    let tick = publisher.expect_tick("own publish");
    assert_eq!(
        (tick.topic.as_str(), tick.seq),
        (topic, seq),
        "{}",
        tick.text
    );
    assert_eq!(tick.data, data);
}

#[test]
fn every_subscriber_on_every_worker_gets_every_tick_in_order() {
    // Twenty connections: SO_REUSEPORT spreads them over both workers
    // (all on one worker has probability 2^-19).
    const SUBSCRIBERS: usize = 20;
    const TICKS: u64 = 2_000;
    let broker = Broker::start(&["--workers", "2"]);
    let topic = "FAN.OUT";
    let subscribers: Vec<PsClient> = (0..SUBSCRIBERS)
        .map(|_| {
            let mut client = broker.pubsub();
            let subscribed = client.subscribe(topic);
            assert_eq!(subscribed["seq"], 0, "{subscribed}");
            client
        })
        .collect();
    let data: Arc<Vec<String>> = Arc::new(
        (1..=TICKS)
            .map(|i| format!(r#"{{"i":{i},"s":"tick {i}","v":[{i}.5, -{i}]}}"#))
            .collect(),
    );
    let readers = subscribers
        .into_iter()
        .map(|mut client| {
            let data = Arc::clone(&data);
            thread::spawn(move || {
                for seq in 1..=TICKS {
                    let got = tick_data(client.next_text(), topic, seq);
                    assert_eq!(got, data[seq as usize - 1].as_bytes(), "seq {seq}");
                }
            })
        })
        .collect();
    let mut publisher = broker.pubsub();
    let frames: Vec<u8> = data.iter().flat_map(|d| pub_frame(topic, d)).collect();
    publisher.send_raw(&frames);
    join_all(readers);
}

#[test]
fn eight_publishers_fifty_subscribers_see_every_tick_once_in_publisher_order() {
    const PUBLISHERS: u64 = 8;
    const PER_PUBLISHER: u64 = 10_000;
    const SUBSCRIBERS: usize = 50;
    const TOTAL: u64 = PUBLISHERS * PER_PUBLISHER;
    let started = Instant::now();
    let broker = Broker::start(&["--max-queue-bytes", BIG_QUEUE]);
    let topic = "HOT";
    let subscribers: Vec<PsClient> = (0..SUBSCRIBERS)
        .map(|_| {
            let mut client = broker.pubsub();
            client.subscribe(topic);
            client
        })
        .collect();
    let readers: Vec<_> = subscribers
        .into_iter()
        .enumerate()
        .map(|(index, mut client)| {
            thread::spawn(move || {
                let mut last = [0u64; PUBLISHERS as usize];
                for seq in 1..=TOTAL {
                    let data = tick_data(client.next_text(), topic, seq);
                    let (publisher, n) = publisher_and_counter(data);
                    assert_eq!(
                        n,
                        last[publisher] + 1,
                        "subscriber {index}, seq {seq}: publisher {publisher} out of order"
                    );
                    last[publisher] = n;
                }
                assert_eq!(last, [PER_PUBLISHER; PUBLISHERS as usize]);
            })
        })
        .collect();

    let publishers: Vec<PsClient> = (0..PUBLISHERS).map(|_| broker.pubsub()).collect();
    let start = Arc::new(Barrier::new(PUBLISHERS as usize));
    let writers: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(p, mut client)| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let frames: Vec<u8> = (1..=PER_PUBLISHER)
                    .flat_map(|n| pub_frame(topic, &format!(r#"{{"p":{p},"n":{n}}}"#)))
                    .collect();
                start.wait();
                // Flat out, in writes of many frames each.
                for chunk in frames.chunks(16 * 1024) {
                    client.send_raw(chunk);
                }
                client
            })
        })
        .collect();
    let _publishers = join_all(writers);
    join_all(readers);
    eprintln!("8x10000 ticks to 50 subscribers in {:?}", started.elapsed());
}

/// `{"p":P,"n":N}` → (P, N).
fn publisher_and_counter(data: &[u8]) -> (usize, u64) {
    let parsed = data
        .strip_prefix(b"{\"p\":")
        .and_then(leading_u64)
        .and_then(|(p, rest)| {
            let (n, rest) = leading_u64(rest.strip_prefix(b",\"n\":")?)?;
            (rest == b"}").then_some((p as usize, n))
        });
    parsed.unwrap_or_else(|| panic!("unexpected data {:?}", String::from_utf8_lossy(data)))
}

#[test]
fn subscribe_sends_the_last_value_byte_for_byte() {
    let broker = Broker::start(&[]);
    let topic = "SNAP";

    // A topic without ticks: `subscribed` at seq 0, no snapshot; the first
    // live tick is the next message.
    let mut early = broker.pubsub();
    let subscribed = early.subscribe(topic);
    assert_eq!(subscribed["seq"], 0, "{subscribed}");
    let epoch = subscribed["epoch"].as_str().expect("epoch is a string");
    assert!(!epoch.is_empty());

    let mut publisher = publisher_on(&broker, topic);
    let odd = r#"{"b": 1.50,"x":[1, 2]}"#;
    publish_and_confirm(&mut publisher, topic, odd, 1);
    let first = early.expect_tick("first live tick");
    assert_eq!((first.seq, first.data.as_str()), (1, odd), "{}", first.text);

    let mut late = broker.pubsub();
    let subscribed = late.subscribe(topic);
    assert_eq!(subscribed["seq"], 1, "{subscribed}");
    assert_eq!(subscribed["epoch"], epoch, "{subscribed}");
    let snapshot = late.expect_tick("snapshot");
    assert_eq!(snapshot.seq, 1, "{}", snapshot.text);
    assert!(
        snapshot.text.contains(r#""data":{"b": 1.50,"x":[1, 2]}"#),
        "data not preserved byte for byte: {}",
        snapshot.text
    );
    let ts: serde_json::Value = serde_json::from_str(&snapshot.text).unwrap();
    assert!(ts["ts"]
        .as_u64()
        .is_some_and(|ts| ts > 1_600_000_000_000_000));

    // Any JSON value travels byte for byte, live and as a snapshot.
    let values = [
        "null",
        "true",
        r#""caf\u00e9 \"q\" \\ /""#,
        "-0.0e+10",
        "123456789012345678901234567890",
        "[ ]",
        "{ \"nested\" : { \"a\" : [true,false,null] , \"e\":{}} }",
        "\"ünïcødé €\"",
    ];
    for (i, value) in values.iter().enumerate() {
        let seq = i as u64 + 2;
        publish_and_confirm(&mut publisher, topic, value, seq);
        for client in [&mut early, &mut late] {
            let tick = client.expect_tick("live tick");
            assert_eq!(
                (tick.seq, tick.data.as_str()),
                (seq, *value),
                "{}",
                tick.text
            );
        }
        let mut fresh = broker.pubsub();
        assert_eq!(fresh.subscribe(topic)["seq"], seq);
        let snapshot = fresh.expect_tick("snapshot");
        assert_eq!(
            (snapshot.seq, snapshot.data.as_str()),
            (seq, *value),
            "{}",
            snapshot.text
        );
    }

    // The snapshot is the last value only, and live ticks follow it
    // directly: no older tick comes in between.
    let last = values.len() as u64 + 1;
    let mut newest = broker.pubsub();
    assert_eq!(newest.subscribe(topic)["seq"], last);
    assert_eq!(newest.expect_tick("snapshot").seq, last);
    publish_and_confirm(&mut publisher, topic, "{\"after\":1}", last + 1);
    assert_eq!(newest.expect_tick("live after snapshot").seq, last + 1);
}

#[test]
fn since_replay_meets_live_ticks_without_gap_or_duplicate() {
    // Deep enough that nothing this test publishes leaves the history.
    const CAP: u64 = 90_000;
    const TAIL: u64 = 200;
    const JOINERS: u64 = 4;
    let broker = Broker::start(&["--history-depth", "100000", "--max-queue-bytes", BIG_QUEUE]);
    let topic = "REPLAY";
    let mut watcher = broker.pubsub();
    let epoch = watcher.subscribe(topic)["epoch"]
        .as_str()
        .unwrap()
        .to_owned();

    // The publisher runs flat out (keeping at most one batch unconfirmed)
    // until told to stop, then publishes TAIL more; `last` is the final
    // seq, set before the final tick is published.
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (stop, last) = (Arc::clone(&stop), Arc::clone(&last));
        let mut client = publisher_on(&broker, topic);
        thread::spawn(move || {
            let mut published = 0u64;
            let mut end = None;
            while end.is_none_or(|end| published < end) {
                if end.is_none() && (stop.load(Ordering::Acquire) || published >= CAP) {
                    end = Some(published + TAIL);
                    last.store(published + TAIL, Ordering::Release);
                }
                let batch: Vec<u8> = (published + 1..=published + 20)
                    .flat_map(|k| pub_frame(topic, &format!(r#"{{"k":{k}}}"#)))
                    .collect();
                client.send_raw(&batch);
                for seq in published + 1..=published + 20 {
                    tick_data(client.next_text(), topic, seq);
                }
                published += 20;
            }
            published
        })
    };

    // Reads `client` from `first` on until the final seq, each tick
    // exactly once and in order.
    let follow = |mut client: PsClient, first: u64, last: Arc<AtomicU64>| {
        thread::spawn(move || {
            let mut seq = first;
            loop {
                let data = tick_data(client.next_text(), topic, seq);
                assert_eq!(data, format!(r#"{{"k":{seq}}}"#).as_bytes());
                let end = last.load(Ordering::Acquire);
                if end != 0 && seq == end {
                    return seq;
                }
                seq += 1;
            }
        })
    };

    // Joiners subscribe with `since` just behind the watcher while the
    // publisher keeps going, so the replay ends where live ticks begin.
    let mut seen = 0;
    let mut followers = Vec::new();
    for j in 1..=JOINERS {
        while seen < j * 500 {
            seen += 1;
            tick_data(watcher.next_text(), topic, seen);
        }
        let since = seen - 10;
        let mut joiner = broker.pubsub();
        joiner.send_text(&format!(
            r#"{{"op":"sub","topic":"{topic}","since":{since},"epoch":"{epoch}"}}"#
        ));
        let subscribed = joiner.expect_event("subscribed");
        assert_eq!(subscribed["epoch"], epoch.as_str(), "{subscribed}");
        let at = subscribed["seq"].as_u64().unwrap();
        assert!(at >= seen, "{subscribed} after the watcher saw {seen}");
        followers.push((since, at, follow(joiner, since + 1, Arc::clone(&last))));
    }
    stop.store(true, Ordering::Release);
    let watched = follow(watcher, seen + 1, Arc::clone(&last));
    let published = join_all(vec![publisher])[0];
    assert_eq!(join_all(vec![watched])[0], published);
    for (since, at, follower) in followers {
        let end = join_all(vec![follower])[0];
        assert_eq!(end, published, "joiner since {since} (subscribed at {at})");
        assert!(at < published, "the joiner at {at} saw no live tick");
    }
}

#[test]
fn gap_when_the_history_ring_was_overrun() {
    let broker = Broker::start(&["--history-depth", "8"]);
    let topic = "RING";
    let mut publisher = publisher_on(&broker, topic);
    for seq in 1..=20 {
        publish_and_confirm(&mut publisher, topic, &seq.to_string(), seq);
    }
    // The ring holds 13..=20.
    let cases: [(u64, Option<(u64, u64)>); 5] = [
        (0, Some((1, 12))),
        (2, Some((3, 12))),
        (11, Some((12, 12))),
        (12, None),
        (19, None),
    ];
    let mut clients = Vec::new();
    for (since, gap) in cases {
        let mut client = broker.pubsub();
        let subscribed = client.subscribe_with(topic, &format!(r#","since":{since}"#));
        assert_eq!(subscribed["seq"], 20, "{subscribed}");
        if let Some((from, to)) = gap {
            let event = client.expect_event("gap");
            assert_eq!(event["topic"], topic, "since {since}: {event}");
            assert_eq!(event["from"], from, "since {since}: {event}");
            assert_eq!(event["to"], to, "since {since}: {event}");
        }
        let first = since.max(12) + 1;
        for seq in first..=20 {
            let tick = client.expect_tick("replay");
            assert_eq!(
                (tick.seq, tick.data),
                (seq, seq.to_string()),
                "since {since}"
            );
        }
        clients.push((since, client));
    }
    // Caught up: `since` equal to the current seq replays nothing.
    let mut current = broker.pubsub();
    assert_eq!(current.subscribe_with(topic, r#","since":20"#)["seq"], 20);
    clients.push((20, current));
    // Live ticks follow the replay directly, on every connection.
    publish_and_confirm(&mut publisher, topic, "21", 21);
    for (since, client) in &mut clients {
        let tick = client.expect_tick("live");
        assert_eq!(tick.seq, 21, "since {since}: {}", tick.text);
    }
}

#[test]
fn no_history_gives_a_gap_then_the_snapshot() {
    let broker = Broker::start(&["--history-depth", "0"]);
    let topic = "NOHIST";
    let mut publisher = publisher_on(&broker, topic);
    for seq in 1..=5 {
        publish_and_confirm(&mut publisher, topic, &format!("[{seq}]"), seq);
    }
    let mut client = broker.pubsub();
    assert_eq!(client.subscribe_with(topic, r#","since":2"#)["seq"], 5);
    let gap = client.expect_event("gap");
    assert_eq!(
        (gap["from"].as_u64(), gap["to"].as_u64()),
        (Some(3), Some(5)),
        "{gap}"
    );
    let snapshot = client.expect_tick("snapshot");
    assert_eq!((snapshot.seq, snapshot.data.as_str()), (5, "[5]"));
    publish_and_confirm(&mut publisher, topic, "[6]", 6);
    assert_eq!(client.expect_tick("live").seq, 6);
}

#[test]
fn epoch_mismatch_gives_gap_and_snapshot_and_the_right_epoch_replays() {
    let broker = Broker::start(&[]);
    let topic = "EPOCH";
    let mut publisher = publisher_on(&broker, topic);
    for seq in 1..=5 {
        publish_and_confirm(&mut publisher, topic, &format!(r#"{{"v":{seq}}}"#), seq);
    }
    let mut plain = broker.pubsub();
    let subscribed = plain.subscribe(topic);
    let epoch = subscribed["epoch"].as_str().unwrap().to_owned();
    assert_eq!(plain.expect_tick("snapshot").seq, 5);

    let mut clients = vec![plain];
    // Another numbering (or a seq this one never reached): gap over the
    // whole current range, then the snapshot — never ticks of another epoch.
    for extra in [
        r#","since":2,"epoch":"not-this-epoch""#.to_owned(),
        format!(r#","since":9,"epoch":"{epoch}""#),
        r#","since":9"#.to_owned(),
    ] {
        let mut client = broker.pubsub();
        let subscribed = client.subscribe_with(topic, &extra);
        assert_eq!(subscribed["seq"], 5, "{extra}: {subscribed}");
        assert_eq!(subscribed["epoch"], epoch.as_str(), "{extra}: {subscribed}");
        let gap = client.expect_event("gap");
        assert_eq!(gap["topic"], topic, "{extra}: {gap}");
        assert_eq!(
            (gap["from"].as_u64(), gap["to"].as_u64()),
            (Some(1), Some(5)),
            "{extra}: {gap}"
        );
        let snapshot = client.expect_tick("snapshot");
        assert_eq!((snapshot.seq, snapshot.data.as_str()), (5, r#"{"v":5}"#));
        clients.push(client);
    }
    // The right epoch (or none) replays what was missed, without a gap.
    for extra in [
        format!(r#","since":2,"epoch":"{epoch}""#),
        r#","since":2"#.to_owned(),
    ] {
        let mut client = broker.pubsub();
        assert_eq!(client.subscribe_with(topic, &extra)["seq"], 5);
        for seq in 3..=5 {
            let tick = client.expect_tick("replay");
            assert_eq!(
                (tick.seq, tick.data),
                (seq, format!(r#"{{"v":{seq}}}"#)),
                "{extra}"
            );
        }
        clients.push(client);
    }
    publish_and_confirm(&mut publisher, topic, r#"{"v":6}"#, 6);
    for client in &mut clients {
        assert_eq!(client.expect_tick("live").seq, 6);
    }
}

#[test]
fn unsubscribe_stops_delivery_while_the_publisher_goes_on() {
    let broker = Broker::start(&["--max-queue-bytes", BIG_QUEUE]);
    let (gone, marker) = ("UNSUB.GONE", "UNSUB.MARK");
    let mut client = broker.pubsub();
    client.subscribe(gone);
    client.subscribe(marker);

    // Publishes `gone` then `marker`, in rounds, until told to stop; the
    // marker tick of a round reaches a subscriber after the round's `gone`
    // tick would have, as both come through the same worker in order.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = Arc::clone(&stop);
        let mut publisher = publisher_on(&broker, marker);
        thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(Ordering::Acquire) {
                let batch: Vec<u8> = (round + 1..=round + 10)
                    .flat_map(|r| {
                        let data = format!(r#"{{"r":{r}}}"#);
                        let mut frames = pub_frame(gone, &data);
                        frames.extend(pub_frame(marker, &data));
                        frames
                    })
                    .collect();
                publisher.send_raw(&batch);
                for seq in round + 1..=round + 10 {
                    tick_data(publisher.next_text(), marker, seq);
                }
                round += 10;
            }
            round
        })
    };

    let mut seen: HashMap<String, u64> = HashMap::new();
    while seen.get(gone).copied().unwrap_or(0) < 50 {
        take(&mut client, &mut seen);
    }
    client.send_text(&format!(r#"{{"op":"unsub","topic":"{gone}"}}"#));
    loop {
        if let Msg::Event(event) = take(&mut client, &mut seen) {
            assert_eq!(event["event"], "unsubscribed", "{event}");
            assert_eq!(event["topic"], gone, "{event}");
            break;
        }
    }
    let gone_at_unsub = seen[gone];
    let marker_at_unsub = seen[marker];
    while seen[marker] < marker_at_unsub + 300 {
        match take(&mut client, &mut seen) {
            Msg::Tick(tick) => assert_eq!(
                tick.topic, marker,
                "a tick of an unsubscribed topic arrived: {}",
                tick.text
            ),
            Msg::Event(event) => panic!("unexpected event {event}"),
        }
    }
    assert_eq!(seen[gone], gone_at_unsub);

    // Unsubscribing again is an error; subscribing again works.
    client.send_text(&format!(r#"{{"op":"unsub","topic":"{gone}"}}"#));
    loop {
        match take(&mut client, &mut seen) {
            Msg::Tick(tick) => assert_eq!(tick.topic, marker, "{}", tick.text),
            Msg::Event(event) => {
                assert_eq!(event["event"], "error", "{event}");
                assert_eq!(event["code"], "not_subscribed", "{event}");
                assert_eq!(event["topic"], gone, "{event}");
                break;
            }
        }
    }
    client.send_text(&format!(r#"{{"op":"sub","topic":"{gone}"}}"#));
    let resubscribed_at = loop {
        match client.recv() {
            Msg::Tick(tick) => assert_eq!(tick.topic, marker, "{}", tick.text),
            Msg::Event(event) => {
                assert_eq!(event["event"], "subscribed", "{event}");
                break event["seq"].as_u64().unwrap();
            }
        }
    };
    let mut next_gone = resubscribed_at;
    while next_gone < resubscribed_at + 20 {
        if let Msg::Tick(tick) = client.recv() {
            if tick.topic == gone {
                // The snapshot (seq at subscribe time), then live ticks.
                assert_eq!(tick.seq, next_gone, "{}", tick.text);
                next_gone += 1;
            }
        }
    }
    stop.store(true, Ordering::Release);
    join_all(vec![publisher]);
}

/// The next message; a tick must follow the last one `seen` of its topic.
fn take(client: &mut PsClient, seen: &mut HashMap<String, u64>) -> Msg {
    let msg = client.recv();
    if let Msg::Tick(tick) = &msg {
        let last = seen.entry(tick.topic.clone()).or_insert(0);
        assert_eq!(tick.seq, *last + 1, "{}", tick.text);
        *last = tick.seq;
    }
    msg
}

/// Sends `frame` and expects an error event with `code` (and `topic`).
fn expect_error(client: &mut PsClient, frame: &[u8], code: &str, topic: Option<&str>) {
    client.send_raw(frame);
    let event = client.expect_event("error");
    assert_eq!(event["code"], code, "{event}");
    assert!(
        event["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{event}"
    );
    if let Some(topic) = topic {
        assert_eq!(event["topic"], topic, "{event}");
    }
}

fn text(op: &str) -> Vec<u8> {
    client_frame(true, OP_TEXT, op.as_bytes())
}

#[test]
fn bad_operations_get_error_events_and_the_connection_stays_open() {
    let broker = Broker::start(&[]);
    let mut client = broker.pubsub();
    let long = "L".repeat(129);
    let cases: Vec<(Vec<u8>, &str, Option<&str>)> = vec![
        (text("not json"), "bad_json", None),
        (text("[1,2]"), "bad_json", None),
        (
            text(r#"{"op":"pub","topic":"A","data":{"x":}}"#),
            "bad_json",
            None,
        ),
        (
            text(r#"{"op":"frobnicate","topic":"A"}"#),
            "unknown_op",
            None,
        ),
        (text(r#"{"op":"sub"}"#), "missing_field", None),
        (text(r#"{"op":"pub","topic":"A"}"#), "missing_field", None),
        (
            text(r#"{"op":"sub","topic":"has space"}"#),
            "bad_topic",
            None,
        ),
        (text(r#"{"op":"sub","topic":""}"#), "bad_topic", None),
        (text(r#"{"op":"sub","topic":"a/b"}"#), "bad_topic", None),
        (
            text(&format!(r#"{{"op":"sub","topic":"{long}"}}"#)),
            "bad_topic",
            None,
        ),
        (
            text(r#"{"op":"sub","topic":"A","max_hz":0}"#),
            "bad_field",
            None,
        ),
        (
            text(r#"{"op":"sub","topic":"A","max_hz":-5}"#),
            "bad_field",
            None,
        ),
        (
            text(r#"{"op":"unsub","topic":"A"}"#),
            "not_subscribed",
            Some("A"),
        ),
        (
            client_frame(true, OP_BINARY, b"\x01\x02"),
            "binary_not_supported",
            None,
        ),
    ];
    for (frame, code, topic) in &cases {
        expect_error(&mut client, frame, code, *topic);
    }
    // Names of 1 and 128 bytes from the whole alphabet are fine.
    let longest = "a.B_c:d-9Z".repeat(13)[..128].to_owned();
    for topic in ["A", "a.B_c:d-9", longest.as_str()] {
        client.subscribe(topic);
    }
    expect_error(
        &mut client,
        &text(r#"{"op":"sub","topic":"A"}"#),
        "already_subscribed",
        Some("A"),
    );
    // Still a working connection: it publishes and receives its own tick.
    client.publish("A", r#"{"still":"open"}"#);
    let tick = client.expect_tick("own tick");
    assert_eq!((tick.topic.as_str(), tick.seq), ("A", 1), "{}", tick.text);
    assert_eq!(tick.data, r#"{"still":"open"}"#);
}

#[test]
fn topic_limits_give_too_many_topics() {
    let broker = Broker::start(&["--max-topics-per-connection", "2", "--max-topics", "3"]);
    let mut subscriber = broker.pubsub();
    subscriber.subscribe("T1");
    subscriber.subscribe("T2");
    let sub = |topic: &str| text(&format!(r#"{{"op":"sub","topic":"{topic}"}}"#));
    expect_error(&mut subscriber, &sub("T3"), "too_many_topics", Some("T3"));
    // After an unsubscribe there is room again on this connection.
    subscriber.send_text(r#"{"op":"unsub","topic":"T2"}"#);
    subscriber.expect_event("unsubscribed");
    subscriber.subscribe("T3");

    // Only published topics count broker-wide: T1, T2, T3 fill the limit
    // and a fourth is refused.
    let mut publisher = broker.pubsub();
    publisher.publish("T1", "1");
    assert_eq!(subscriber.expect_tick("T1 tick").seq, 1);
    publisher.publish("T2", "2");
    publisher.publish("T3", "3");
    let tick = subscriber.expect_tick("T3 tick");
    assert_eq!((tick.topic.as_str(), tick.seq), ("T3", 1));
    expect_error(
        &mut publisher,
        &pub_frame("T4", "1"),
        "too_many_topics",
        Some("T4"),
    );
    // Subscribing to a topic nobody published to takes no place in it.
    publisher.subscribe("T4");
    // Existing topics still work.
    publisher.publish("T3", "4");
    let tick = subscriber.expect_tick("T3 tick");
    assert_eq!((tick.topic.as_str(), tick.seq), ("T3", 2));
}

#[test]
fn too_many_errors_close_the_connection_with_1008() {
    let broker = Broker::start(&["--max-client-errors", "5"]);
    let mut client = broker.pubsub();
    for op in ["nope", r#"{"op":"x","topic":"A"}"#, r#"{"op":"sub"}"#, "{}"] {
        client.send_text(op);
        client.expect_event("error");
    }
    // Four errors: still open and serving.
    client.subscribe("OK");
    client.publish("OK", "1");
    assert_eq!(client.expect_tick("own tick").seq, 1);
    // The fifth error event is sent, then the close.
    client.send_text(r#"{"op":"unsub","topic":"NOT.SUBSCRIBED"}"#);
    let event = client.expect_event("error");
    assert_eq!(event["code"], "not_subscribed", "{event}");
    let (code, reason) = client
        .read_until_close()
        .expect("a close frame after the fifth error");
    assert_eq!(code, 1008, "{reason:?}");
    client.finish_close(1008);
}

#[test]
fn publishing_needs_a_token_when_tokens_are_configured() {
    let broker = Broker::start(&["--publish-token", "secret", "--publish-token", "other"]);
    let topic = "AUTH";
    // Subscribing stays open to everyone.
    let mut subscriber = broker.pubsub();
    subscriber.subscribe(topic);

    let forbidden = |client: &mut PsClient| {
        expect_error(client, &pub_frame(topic, "0"), "forbidden", Some(topic));
    };
    forbidden(&mut broker.pubsub());
    forbidden(&mut broker.pubsub_with("/ws?token=wrong", &[]));
    forbidden(&mut broker.pubsub_with("/ws?token=secre", &[]));
    forbidden(&mut broker.pubsub_with(WS, &[("Authorization", "Bearer wrong")]));
    forbidden(&mut broker.pubsub_with(WS, &[("Authorization", "Basic c2VjcmV0")]));

    let mut by_query = broker.pubsub_with("/ws?token=secret", &[]);
    let mut by_header = broker.pubsub_with(WS, &[("Authorization", "Bearer secret")]);
    let mut other = broker.pubsub_with("/ws?x=1&token=other", &[]);
    let publishers = [&mut by_query, &mut by_header, &mut other];
    for (i, publisher) in publishers.into_iter().enumerate() {
        let data = format!(r#"{{"from":{i}}}"#);
        publisher.publish(topic, &data);
        // Refused publishes assigned no seq: the first accepted one is 1.
        let tick = subscriber.expect_tick("authorised publish");
        assert_eq!((tick.seq, tick.data), (i as u64 + 1, data));
    }
}

#[test]
fn subscribe_requires_token_refuses_the_upgrade_without_one() {
    let broker = Broker::start(&[
        "--set",
        "auth.subscribe_requires_token=true",
        "--subscribe-token",
        "reader",
        "--publish-token",
        "writer",
    ]);
    let refused = |target: &str, headers: &[(&str, &str)]| match PsClient::upgrade(
        broker.tcp(),
        target,
        headers,
    ) {
        Ok(_) => panic!("upgrade at {target} {headers:?} was accepted"),
        Err(response) => assert_eq!(response.status, 401, "{target} {headers:?}"),
    };
    refused(WS, &[]);
    refused("/ws?token=wrong", &[]);
    refused(WS, &[("Authorization", "Bearer wrong")]);

    let topic = "PRIVATE";
    let mut reader = broker.pubsub_with("/ws?token=reader", &[]);
    reader.subscribe(topic);
    // A subscribe token does not grant publishing.
    expect_error(
        &mut reader,
        &pub_frame(topic, "1"),
        "forbidden",
        Some(topic),
    );
    let mut writer = broker.pubsub_with(WS, &[("Authorization", "Bearer writer")]);
    writer.subscribe(topic);
    writer.publish(topic, "2");
    for client in [&mut writer, &mut reader] {
        let tick = client.expect_tick("published by the writer");
        assert_eq!((tick.seq, tick.data.as_str()), (1, "2"));
    }
}

#[test]
fn subscribe_requires_token_refuses_the_tokenless_upgrade_while_publishing_is_open() {
    // No publish tokens: publishing is open, yet subscribing needs a token.
    let broker = Broker::start(&[
        "--set",
        "auth.subscribe_requires_token=true",
        "--subscribe-token",
        "reader",
    ]);
    for target in [WS, "/ws?token=wrong"] {
        match PsClient::upgrade(broker.tcp(), target, &[]) {
            Ok(_) => panic!("token-less upgrade at {target} was accepted"),
            Err(response) => assert_eq!(response.status, 401, "{target}"),
        }
    }
    for target in ["/poll?topic=OPEN&timeout=1", "/sse?topic=OPEN"] {
        let (response, _) = http_exchange(&broker, &get_request(target));
        assert_eq!(response.status, 401, "{target}: {}", response.text());
    }
    let mut reader = broker.pubsub_with("/ws?token=reader", &[]);
    reader.subscribe("OPEN");
    // Open publishing still works without a token over HTTP, and with one over the socket.
    let (response, _) = http_exchange(
        &broker,
        &String::from_utf8(post_request("/publish?topic=OPEN", "", b"1")).unwrap(),
    );
    assert_eq!(response.status, 202, "{}", response.text());
    assert_eq!(reader.expect_tick("HTTP publish").seq, 1);
    reader.publish("OPEN", "2");
    assert_eq!(reader.expect_tick("own publish").seq, 2);
}

#[test]
fn heartbeats_carry_the_latest_seqs_to_a_quiet_subscriber() {
    let broker = Broker::start(&["--heartbeat-interval-ms", "300"]);
    let mut publisher = broker.pubsub();
    publisher.subscribe("HB.1");
    publisher.subscribe("HB.2");
    for seq in 1..=4 {
        publish_and_confirm(&mut publisher, "HB.1", "1", seq);
    }
    for seq in 1..=2 {
        publish_and_confirm(&mut publisher, "HB.2", "2", seq);
    }

    let mut client = broker.pubsub();
    client.subscribe("HB.1");
    assert_eq!(client.expect_tick("snapshot").seq, 4);
    let subscribing = Instant::now();
    client.subscribe("HB.2");
    assert_eq!(client.expect_tick("snapshot").seq, 2);

    let expect_heartbeat = |client: &mut PsClient, one: u64, two: u64| {
        let event = client.recv_any().event("heartbeat");
        assert_eq!(
            event["seqs"],
            serde_json::json!({"HB.1": one, "HB.2": two}),
            "{event}"
        );
    };
    expect_heartbeat(&mut client, 4, 2);
    // Sent no earlier than the interval after the last message.
    let waited = subscribing.elapsed();
    assert!(waited >= Duration::from_millis(290), "after {waited:?}");
    // And again while the topics stay quiet.
    expect_heartbeat(&mut client, 4, 2);

    for seq in 5..=7 {
        publish_and_confirm(&mut publisher, "HB.1", "1", seq);
    }
    // Ticks 5..=7 (a heartbeat may come between them on a slow machine,
    // never with a seq behind a tick already sent), then heartbeats say 7.
    let mut next = 5;
    while next <= 7 {
        match client.recv_any() {
            Msg::Tick(tick) => {
                assert_eq!((tick.topic.as_str(), tick.seq), ("HB.1", next));
                next += 1;
            }
            Msg::Event(event) => {
                assert_eq!(event["event"], "heartbeat", "{event}");
                let one = event["seqs"]["HB.1"].as_u64().unwrap();
                assert!((next - 1..=7).contains(&one), "{event} before tick {next}");
            }
        }
    }
    expect_heartbeat(&mut client, 7, 2);
}

#[test]
fn max_hz_caps_the_rate_keeps_the_newest_and_delivers_the_last_tick() {
    const TICKS: u64 = 2_000;
    let broker = Broker::start(&[]);
    let topic = "HZ";
    let mut capped = broker.pubsub();
    let subscribed_at = Instant::now();
    capped.subscribe_with(topic, r#","max_hz":10"#);
    // A subscriber without a cap on the same topic gets every tick.
    let mut full = broker.pubsub();
    full.subscribe(topic);
    let full_reader = thread::spawn(move || {
        for seq in 1..=TICKS {
            tick_data(full.next_text(), topic, seq);
        }
    });

    // About 1 kHz for about 2 s: pacing, not synchronisation.
    let mut publisher = broker.pubsub();
    let paced = thread::spawn(move || {
        let start = Instant::now();
        for i in 1..=TICKS {
            publisher.publish(topic, &i.to_string());
            let due = start + Duration::from_millis(i);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        publisher
    });

    let mut seqs = Vec::new();
    loop {
        let tick = capped.expect_tick("capped tick");
        assert_eq!(tick.data, tick.seq.to_string(), "{}", tick.text);
        seqs.push(tick.seq);
        if tick.seq == TICKS {
            break;
        }
    }
    let elapsed = subscribed_at.elapsed().as_secs_f64();
    join_all(vec![paced]);
    join_all(vec![full_reader]);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs not strictly increasing: {seqs:?}"
    );
    // One tick per 100 ms at most: no more than 10 per second of the time
    // from subscribing to the last tick, plus the first and rounding.
    let most = (elapsed * 10.0 * 1.2) as usize + 4;
    assert!(
        (8..=most).contains(&seqs.len()),
        "{} ticks in {elapsed:.2} s at max_hz 10: {seqs:?}",
        seqs.len()
    );
}

#[test]
fn flush_interval_sends_a_tick_after_a_quiet_spell_at_once_and_holds_the_next_ones() {
    const INTERVAL: Duration = Duration::from_millis(1000);
    let broker = Broker::start(&["--workers", "1", "--flush-interval-ms", "1000"]);
    let mut subscriber = broker.pubsub();
    subscriber.subscribe("paced");
    subscriber.set_read_timeout(Duration::from_secs(10));
    let mut publisher = broker.pubsub();

    let published_first = Instant::now();
    publisher.publish("paced", "1");
    assert_eq!(subscriber.expect_tick("first").seq, 1);
    let got_first = Instant::now();

    for n in 2..=5 {
        publisher.publish("paced", &n.to_string());
    }
    let mut got_second = None;
    for seq in 2..=5 {
        let tick = subscriber.expect_tick("held");
        assert_eq!((tick.seq, tick.data), (seq, seq.to_string()));
        got_second.get_or_insert_with(Instant::now);
    }
    let got_second = got_second.expect("ticks 2..=5 read");
    // The sweep that wrote tick 1 began after it was published, and the
    // next may not begin sooner than the interval after that: on any
    // machine, however slow, tick 2 cannot arrive earlier.
    assert!(
        got_second - published_first >= INTERVAL,
        "tick 2 came {:?} after tick 1 was published",
        got_second - published_first
    );
    // Tick 1 came alone, not held back with the burst behind it.
    assert!(
        got_second - got_first >= INTERVAL / 2,
        "tick 1 at {:?}, tick 2 at {:?} after publishing",
        got_first - published_first,
        got_second - published_first
    );
}
