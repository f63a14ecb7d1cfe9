//! Cluster mode over real processes: three `nats-server`s clustered with
//! JetStream on loopback ports found free, and tickfan nodes joined through
//! them (README.md, "Cluster").
//!
//! What every test checks is the cluster's promise: a tick published on any
//! node reaches the subscribers of every node; every node gives each topic
//! the same order and numbering (seq = the stream sequence, `prev` = the
//! topic's previous one, so the `prev` chain of a complete feed has no
//! hole); snapshots and `since` replays are served by any node from the
//! stream; and a node that cannot reach NATS stops serving instead of
//! serving stale or partial feeds.
//!
//! The tests need `nats-server`: under CI a missing one fails them; locally
//! they are skipped with a message (see `common::nats`).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::nats::{read_stream, NatsCluster};
use common::*;
use tickfan::cluster::subject::subject_of;
use tickfan::topic::TopicName;

/// Each test runs three nats-servers and several nodes: on a 2-core machine
/// running them side by side makes elections and timeouts flaky, so they
/// run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one may still run.
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long a node may take to bind the stream and catch up.
const NODE_READY: Duration = Duration::from_secs(60);

/// How long a subscriber waits for all the ticks it expects.
const ALL_TICKS_WITHIN: Duration = Duration::from_secs(60);

/// A topic name with the characters the subject mapping escapes.
const TOPICS: [&str; 3] = ["AAPL", "fx.EUR_USD", "a..b:c-d"];

/// A tick as a cluster subscriber sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    seq: u64,
    prev: u64,
    data: String,
}

/// A tickfan node joined to the cluster through NATS server `url`.
fn node(url: &str, extra: &[&str]) -> Broker {
    node_of(&[url.to_owned()], extra)
}

/// A tickfan node that knows every server in `urls`.
fn node_of(urls: &[String], extra: &[&str]) -> Broker {
    let mut args = vec!["--set", "cluster.replicas=3"];
    for url in urls {
        args.extend(["--cluster-nats", url.as_str()]);
    }
    args.extend_from_slice(extra);
    Broker::start_within(&args, NODE_READY)
}

fn seen(tick: &OwnedTick) -> Seen {
    let json: serde_json::Value = serde_json::from_str(&tick.text).expect("tick JSON");
    Seen {
        seq: tick.seq,
        prev: json["prev"]
            .as_u64()
            .unwrap_or_else(|| panic!("cluster tick without prev: {}", tick.text)),
        data: tick.data.clone(),
    }
}

/// Reads ticks until `want` of every topic in `topics` arrived (heartbeats
/// and events other than ticks fail the test), within the deadline.
fn collect(client: &mut PsClient, topics: &[&str], want: usize) -> BTreeMap<String, Vec<Seen>> {
    let mut got: BTreeMap<String, Vec<Seen>> = topics
        .iter()
        .map(|t| ((*t).to_owned(), Vec::new()))
        .collect();
    let deadline = Instant::now() + ALL_TICKS_WITHIN;
    while got.values().any(|ticks| ticks.len() < want) {
        assert!(
            Instant::now() < deadline,
            "not every tick within {ALL_TICKS_WITHIN:?}: {:?}",
            got.iter().map(|(t, v)| (t, v.len())).collect::<Vec<_>>()
        );
        let Some(msg) = client.recv_within(Duration::from_secs(1)) else {
            continue;
        };
        let tick = msg.tick("a live tick");
        got.get_mut(&tick.topic)
            .unwrap_or_else(|| panic!("tick of a topic not subscribed: {}", tick.text))
            .push(seen(&tick));
    }
    got
}

/// Seqs strictly increase and each tick's `prev` is the seq before it
/// (the first tick's `prev` is `first_prev`).
fn assert_complete_chain(topic: &str, ticks: &[Seen], first_prev: u64) {
    let mut last = first_prev;
    for tick in ticks {
        assert_eq!(
            tick.prev, last,
            "{topic}: hole in the prev chain at {tick:?}"
        );
        assert!(tick.seq > last, "{topic}: seq not increasing at {tick:?}");
        last = tick.seq;
    }
}

#[test]
fn every_node_delivers_every_topic_in_one_order_and_any_node_recovers() {
    let _serial = one_at_a_time();
    let Some(nats) = NatsCluster::start(3) else {
        return;
    };
    let nodes: Vec<Broker> = (0..3).map(|i| node(&nats.url(i), &[])).collect();
    // A subscriber on every node, to every topic, before anything is published.
    let mut subscribers: Vec<PsClient> = nodes.iter().map(Broker::pubsub).collect();
    let mut epochs = Vec::new();
    for subscriber in &mut subscribers {
        for topic in TOPICS {
            let subscribed = subscriber.subscribe(topic);
            epochs.push(subscribed["epoch"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        epochs.iter().all(|e| e == &epochs[0]),
        "one epoch on every node, for every topic: {epochs:?}"
    );
    // A publisher on every node, racing the others on every topic.
    const PER_NODE: usize = 40;
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, node)| {
            let mut publisher = node.pubsub();
            thread::spawn(move || {
                for i in 0..PER_NODE {
                    for topic in TOPICS {
                        publisher.publish(topic, &format!(r#"{{"node":{n},"i":{i}}}"#));
                    }
                }
                publisher
            })
        })
        .collect();
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut subscriber| {
            thread::spawn(move || collect(&mut subscriber, &TOPICS, 3 * PER_NODE))
        })
        .collect();
    let _publishers = join_all(publishers);
    let feeds = join_all(readers);
    let reference = &feeds[0];
    for (n, feed) in feeds.iter().enumerate() {
        assert_eq!(feed, reference, "node {n} saw another order than node 0");
    }
    for (topic, ticks) in reference {
        assert_complete_chain(topic, ticks, 0);
        let mut data: Vec<&str> = ticks.iter().map(|t| t.data.as_str()).collect();
        data.sort_unstable();
        let mut published: Vec<String> = (0..3)
            .flat_map(|n| (0..PER_NODE).map(move |i| format!(r#"{{"node":{n},"i":{i}}}"#)))
            .collect();
        published.sort_unstable();
        assert_eq!(data, published, "{topic}: every publish exactly once");
        // The audit: what every subscriber got is what the stream holds.
        let got: Vec<(u64, String)> = ticks.iter().map(|t| (t.seq, t.data.clone())).collect();
        assert_eq!(
            got,
            stored_feed(&nats.url(1), topic),
            "{topic}: the stream's own order"
        );
    }

    // A node that saw none of it, started now, serves the snapshot and
    // `since` from the stream alone.
    let late = node(&nats.url(2), &[]);
    let topic = TOPICS[1];
    let ticks = &reference[topic];
    let mut client = late.pubsub();
    let subscribed = client.subscribe(topic);
    assert_eq!(subscribed["epoch"], epochs[0].as_str());
    assert_eq!(subscribed["seq"], ticks.last().unwrap().seq);
    let snapshot = seen(&client.expect_tick("the snapshot"));
    assert_eq!(&snapshot, ticks.last().unwrap());
    let since = ticks[9].seq;
    let mut resumed = late.pubsub();
    resumed.subscribe_with(
        topic,
        &format!(r#","since":{since},"epoch":"{}""#, epochs[0]),
    );
    let replay: Vec<Seen> = (10..ticks.len())
        .map(|_| seen(&resumed.expect_tick("the replay")))
        .collect();
    assert_eq!(replay, ticks[10..].to_vec(), "replay after since, no gap");
    assert!(resumed.recv_within(Duration::from_millis(300)).is_none());
    // Long-poll there too, with the cursor of the replay.
    let body = get_once(
        &late,
        &format!("/poll?topic={topic}&since={topic}:{since}&timeout=1"),
    );
    assert_eq!(body.status, 200, "{}", body.text());
    let answer = body.json();
    let polled: Vec<u64> = answer["ticks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        polled,
        ticks[10..].iter().map(|t| t.seq).collect::<Vec<_>>()
    );
    assert_eq!(answer["epochs"][topic], epochs[0].as_str());
}

/// `GET /readyz` on `node`: its status.
fn readyz(node: &Broker) -> u16 {
    get_once(node, "/readyz").status
}

/// Polls `/readyz` until it answers `status`, within `within`.
fn wait_readyz(node: &Broker, status: u16, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while readyz(node) != status {
        assert!(
            Instant::now() < deadline,
            "{what}: /readyz not {status} within {within:?}; stderr:\n{}",
            node.stderr_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Publishes `data` to `topic` over HTTP on `node`: the status.
fn http_publish(node: &Broker, topic: &str, data: &str) -> u16 {
    http_publish_answer(node, topic, data).status
}

/// Publishes `data` to `topic` over HTTP on `node`, waiting for the answer
/// as long as the node may hold it (the default `cluster.publish_timeout_ms`
/// and its margin): the whole response.
fn http_publish_answer(node: &Broker, topic: &str, data: &str) -> HttpResponse {
    let mut stream = node.tcp();
    stream.set_read_timeout(Some(HELD_PUBLISH)).unwrap();
    http_post(
        &mut stream,
        &format!("/publish?topic={topic}"),
        "",
        data.as_bytes(),
    )
}

/// How long a cluster node may hold a `POST /publish` before it answers.
const HELD_PUBLISH: Duration = Duration::from_secs(40);

/// The seq a 202 names: the one the stream stored the tick at.
fn stored_seq(answer: &HttpResponse) -> u64 {
    assert_eq!(answer.status, 202, "{}", answer.text());
    answer.json()["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("a 202 without the tick's seq: {}", answer.text()))
}

/// A proxy the test can pause between a node and the cluster's first server.
fn proxy_to_first_server(nats: &NatsCluster) -> common::proxy::PausableProxy {
    let upstream = format!("127.0.0.1:{}", nats.servers[0].client_port)
        .parse()
        .unwrap();
    common::proxy::PausableProxy::start(upstream)
}

/// Reads `n` ticks (events fail the test).
fn read_ticks(client: &mut PsClient, n: usize, what: &str) -> Vec<Seen> {
    (0..n).map(|_| seen(&client.expect_tick(what))).collect()
}

#[test]
fn a_node_cut_off_from_nats_stops_serving_and_catches_up_before_serving_again() {
    let _serial = one_at_a_time();
    let Some(nats) = NatsCluster::start(3) else {
        return;
    };
    let proxy = proxy_to_first_server(&nats);
    let fast_pings = ["--set", "cluster.ping_interval_ms=300"];
    let cut = node(&format!("nats://{}", proxy.addr()), &fast_pings);
    let other = node(&nats.url(1), &fast_pings);
    let topic = "cut.off";
    let mut watcher = other.pubsub();
    let epoch = watcher.subscribe(topic)["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut victim = cut.pubsub();
    victim.subscribe(topic);
    // A cluster node answers a publish once the stream stored it, with
    // the seq it got there.
    let answered: Vec<u64> = (0..5)
        .map(|i| stored_seq(&http_publish_answer(&other, topic, &i.to_string())))
        .collect();
    let before = read_ticks(&mut watcher, 5, "before the cut");
    assert_eq!(
        before.iter().map(|t| t.seq).collect::<Vec<_>>(),
        answered,
        "each 202 names the seq subscribers see"
    );
    assert_eq!(read_ticks(&mut victim, 5, "before the cut"), before);

    proxy.pause();
    // Longer than the heartbeat: the node notices, stops serving, and
    // sends its subscribers elsewhere.
    wait_readyz(&cut, 503, Duration::from_secs(20), "cut off");
    assert_eq!(
        victim.read_until_close().map(|(code, _)| code),
        Some(4000),
        "subscribers are told to reconnect elsewhere"
    );
    assert_eq!(http_publish(&cut, topic, "99"), 503);
    let refused = PsClient::upgrade(cut.tcp(), WS, &[]).expect_err("no WebSocket while cut off");
    assert_eq!(refused.status, 503);
    let polled = get_once(&cut, &format!("/poll?topic={topic}&timeout=1"));
    assert_eq!(polled.status, 503);
    // The rest of the cluster goes on meanwhile.
    for i in 5..15 {
        assert_eq!(http_publish(&other, topic, &i.to_string()), 202);
    }
    let during = read_ticks(&mut watcher, 10, "during the cut");

    proxy.resume();
    wait_readyz(&cut, 200, Duration::from_secs(30), "reconnected");
    // Serving again means caught up: the ticks of the cut are there at once.
    let mut back = cut.pubsub();
    let since = before.last().unwrap().seq;
    let subscribed = back.subscribe_with(topic, &format!(r#","since":{since},"epoch":"{epoch}""#));
    assert_eq!(subscribed["seq"], during.last().unwrap().seq);
    assert_eq!(
        read_ticks(&mut back, 10, "the replay after the cut"),
        during
    );
    assert_complete_chain(topic, &[before, during].concat(), 0);
    // And it publishes again, seen everywhere.
    assert_eq!(http_publish(&cut, topic, "15"), 202);
    let after = read_ticks(&mut watcher, 1, "after the cut");
    assert_eq!(read_ticks(&mut back, 1, "after the cut"), after);
}

/// A subscriber that follows `topic` across node deaths: on EOF it
/// reconnects to the next node in `nodes` with `since` + `epoch`, and
/// keeps every tick it got, in order.
fn follow_until(
    urls: &[std::net::SocketAddr],
    topic: &str,
    want: usize,
    epoch: &str,
) -> (Vec<Seen>, usize) {
    let mut got: Vec<Seen> = Vec::new();
    let mut reconnects = 0;
    let mut at = 0;
    let deadline = Instant::now() + ALL_TICKS_WITHIN;
    'connect: while got.len() < want {
        assert!(
            Instant::now() < deadline,
            "{} of {want} ticks within {ALL_TICKS_WITHIN:?}",
            got.len()
        );
        let Ok(stream) = std::net::TcpStream::connect(urls[at % urls.len()]) else {
            at += 1;
            reconnects += 1;
            continue;
        };
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let Ok(mut client) = PsClient::upgrade(stream, WS, &[]) else {
            at += 1;
            continue;
        };
        let extra = match got.last() {
            Some(last) => format!(r#","since":{},"epoch":"{epoch}""#, last.seq),
            None => String::new(),
        };
        client.send_text(&format!(r#"{{"op":"sub","topic":"{topic}"{extra}}}"#));
        while got.len() < want {
            // Heartbeats keep a stalled connection busy: the deadline
            // holds here too.
            assert!(
                Instant::now() < deadline,
                "{} of {want} ticks within {ALL_TICKS_WITHIN:?}",
                got.len()
            );
            let Ok(msg) = client.try_recv_any() else {
                // The node died (EOF, reset): the next one.
                at += 1;
                reconnects += 1;
                continue 'connect;
            };
            match msg {
                Msg::Tick(tick) => got.push(seen(&tick)),
                Msg::Event(event) => match event["event"].as_str() {
                    Some("subscribed") => assert_eq!(event["epoch"], epoch, "{event}"),
                    Some("heartbeat") => {}
                    _ => panic!("unexpected event after a reconnect: {event}"),
                },
            }
        }
    }
    (got, reconnects)
}

#[test]
fn subscribers_of_a_killed_node_resume_on_another_with_no_gap_and_no_duplicate() {
    let _serial = one_at_a_time();
    let Some(nats) = NatsCluster::start(3) else {
        return;
    };
    let mut nodes: Vec<Broker> = (0..3).map(|i| node(&nats.url(i), &[])).collect();
    let topic = "kill.node";
    const TICKS: usize = 400;
    let mut reference = nodes[2].pubsub();
    let epoch = reference.subscribe(topic)["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    // Followers start on node 0 (the one that dies), and go on to 1, then 2.
    let addrs: Vec<std::net::SocketAddr> = nodes.iter().map(Broker::addr).collect();
    let followers: Vec<_> = (0..3)
        .map(|_| {
            let (addrs, epoch) = (addrs.clone(), epoch.clone());
            thread::spawn(move || follow_until(&addrs, topic, TICKS, &epoch))
        })
        .collect();
    // Each follower has subscribed on node 0 before publishing starts.
    wait_for_metrics(&nodes[0], "three followers subscribed", |text| {
        metric_sum(text, "tickfan_subscriptions") >= 3.0
    });
    let publisher_node = nodes[1].addr();
    let publisher = thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(publisher_node).unwrap();
        for i in 0..TICKS {
            let response = http_post(
                &mut stream,
                &format!("/publish?topic={topic}"),
                "",
                i.to_string().as_bytes(),
            );
            assert_eq!(response.status, 202, "{}", response.text());
            // Spread the stream over a second or two, so the kill lands mid-stream.
            thread::sleep(Duration::from_millis(3));
        }
    });
    // Mid-stream: once the reference has seen a quarter of it.
    let first = read_ticks(&mut reference, TICKS / 4, "before the kill");
    nodes[0].kill_now();
    let rest = read_ticks(&mut reference, TICKS - TICKS / 4, "after the kill");
    publisher.join().unwrap();
    let all = [first, rest].concat();
    assert_complete_chain(topic, &all, 0);
    assert_eq!(
        all.iter()
            .map(|t| (t.seq, t.data.clone()))
            .collect::<Vec<_>>(),
        stored_feed(&nats.url(2), topic),
        "the audit: the feed is the stream's"
    );
    for (feed, reconnects) in join_all(followers) {
        assert!(reconnects >= 1, "the follower never lost its node");
        assert_eq!(
            feed, all,
            "a follower's feed across the kill: no gap, no duplicate"
        );
    }
}

/// The stream's messages of `topic`, as subscribers would see them.
fn stored_feed(url: &str, topic: &str) -> Vec<(u64, String)> {
    let subject = subject_of("tickfan", &TopicName::new(topic).unwrap());
    read_stream(url, "TICKFAN")
        .into_iter()
        .filter(|m| m.subject == subject)
        .map(|m| (m.seq, m.payload))
        .collect()
}

#[test]
fn killing_the_stream_leader_loses_no_accepted_tick_and_publishing_resumes() {
    let _serial = one_at_a_time();
    let Some(mut nats) = NatsCluster::start(3) else {
        return;
    };
    let urls = nats.urls();
    let fast = ["--set", "cluster.ping_interval_ms=300"];
    let nodes: Vec<Broker> = (0..3).map(|_| node_of(&urls, &fast)).collect();
    let topic = "kill.leader";
    const TICKS: usize = 300;
    let addrs: Vec<std::net::SocketAddr> = nodes.iter().map(Broker::addr).collect();
    let mut probe = nodes[0].pubsub();
    let epoch = probe.subscribe(topic)["epoch"].as_str().unwrap().to_owned();
    drop(probe);
    let followers: Vec<_> = (0..2)
        .map(|n| {
            // Start on different nodes; any may lose its server.
            let mut addrs = addrs.clone();
            addrs.rotate_left(n);
            let epoch = epoch.clone();
            thread::spawn(move || follow_until(&addrs, topic, TICKS, &epoch))
        })
        .collect();
    let (accepted_tx, accepted_rx) = std::sync::mpsc::channel::<(usize, u64, Instant)>();
    let publisher_addrs = addrs.clone();
    let publisher = thread::spawn(move || {
        // Every tick until it is accepted (202), on whichever node serves;
        // a node between servers answers 503 and is asked again.
        let deadline = Instant::now() + ALL_TICKS_WITHIN;
        let mut at = 0;
        for i in 0..TICKS {
            loop {
                assert!(Instant::now() < deadline, "tick {i} never accepted");
                let Ok(mut stream) = std::net::TcpStream::connect(publisher_addrs[at % 3]) else {
                    at += 1;
                    continue;
                };
                // Held through the election: answered once stored.
                stream.set_read_timeout(Some(HELD_PUBLISH)).unwrap();
                let body = format!(r#"{{"i":{i}}}"#);
                let response = http_post(
                    &mut stream,
                    &format!("/publish?topic={topic}"),
                    "",
                    body.as_bytes(),
                );
                if response.status == 202 {
                    accepted_tx
                        .send((i, stored_seq(&response), Instant::now()))
                        .unwrap();
                    break;
                }
                assert_eq!(response.status, 503, "{}", response.text());
                at += 1;
                thread::sleep(Duration::from_millis(20));
            }
            thread::sleep(Duration::from_millis(5));
        }
    });
    // Mid-stream: a quarter accepted, then the stream leader dies.
    for _ in 0..TICKS / 4 {
        accepted_rx
            .recv_timeout(ALL_TICKS_WITHIN)
            .expect("publishing started");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let leader = loop {
        if let Some(leader) = nats.stream_leader("TICKFAN") {
            break leader;
        }
        assert!(Instant::now() < deadline, "no stream leader reported");
        thread::sleep(Duration::from_millis(50));
    };
    let leader = nats.index_of(&leader).expect("the leader is one of ours");
    let killed_at = Instant::now();
    nats.kill(leader);
    publisher.join().unwrap();
    let accepted: Vec<(usize, u64, Instant)> = accepted_rx.try_iter().collect();
    assert!(
        accepted.iter().any(|(_, _, at)| *at > killed_at),
        "publishing resumed after the leader died"
    );
    let feeds: Vec<Vec<Seen>> = join_all(followers)
        .into_iter()
        .map(|(feed, _)| feed)
        .collect();
    let survivor = (0..3).find(|&i| i != leader).unwrap();
    let stored = stored_feed(&nats.url(survivor), topic);
    // Every accepted tick is in the stream once, in one order, and that is
    // what every subscriber got.
    let mut payloads: Vec<&str> = stored.iter().map(|(_, p)| p.as_str()).collect();
    payloads.sort_unstable();
    let mut published: Vec<String> = (0..TICKS).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
    published.sort_unstable();
    assert_eq!(
        payloads, published,
        "each accepted tick stored exactly once"
    );
    // A 202 was answered only once the tick was stored, and names where.
    for (i, seq, _) in &accepted {
        assert!(
            stored.contains(&(*seq, format!(r#"{{"i":{i}}}"#))),
            "tick {i} answered 202 with seq {seq}, which the stream does not hold"
        );
    }
    for feed in &feeds {
        assert_complete_chain(topic, feed, 0);
        let got: Vec<(u64, String)> = feed.iter().map(|t| (t.seq, t.data.clone())).collect();
        assert_eq!(got, stored, "a subscriber's feed is the stream's");
    }
}

#[test]
fn a_full_publish_window_pauses_publishers_and_retries_store_each_tick_once() {
    let _serial = one_at_a_time();
    let Some(nats) = NatsCluster::start(3) else {
        return;
    };
    let proxy = proxy_to_first_server(&nats);
    // Pings too rare to notice the stall: only the window reacts.
    let stalled = node(
        &format!("nats://{}", proxy.addr()),
        &[
            "--set",
            "cluster.publish_window=4",
            "--set",
            "cluster.ping_interval_ms=60000",
            "--set",
            "http.max_body_bytes=4096",
        ],
    );
    let other = node(&nats.url(1), &[]);
    let topic = "window";
    let mut watcher = other.pubsub();
    watcher.subscribe(topic);
    proxy.pause();
    // An HTTP publish is held while the stream cannot store it, and
    // answered once it has.
    let held_addr = stalled.addr();
    let held = thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(held_addr).unwrap();
        stream.set_read_timeout(Some(HELD_PUBLISH)).unwrap();
        // A request pipelined behind the held one is answered after it.
        let mut requests = post_request(&format!("/publish?topic={topic}"), "", b"1000");
        requests.extend_from_slice(get_request("/healthz").as_bytes());
        stream.write_all(&requests).unwrap();
        let published = read_http_response(&mut stream);
        let health = read_http_response(&mut stream);
        assert_eq!(health.status, 200, "the pipelined request, answered second");
        published
    });
    wait_for_metrics(&stalled, "the HTTP publish submitted", |text| {
        text.contains("tickfan_ticks_published_total{transport=\"http\"} 1")
    });
    // What may wait behind a held publish is bounded by one whole request
    // (head and body limits): more is refused, 431, and the connection ends.
    let mut flood = stalled.tcp();
    let mut requests = post_request(&format!("/publish?topic={topic}"), "", b"1001");
    requests.extend(std::iter::repeat_n(b'x', 16 * 1024));
    flood.write_all(&requests).unwrap();
    let refused = read_http_response(&mut flood);
    assert_eq!(refused.status, 431, "{}", refused.text());
    expect_eof(&mut flood);
    const TICKS: usize = 40;
    let mut publisher = stalled.pubsub();
    let publishing = thread::spawn(move || {
        for i in 0..TICKS {
            publisher.publish(topic, &i.to_string());
            // Separate reads, so that some come after the window filled.
            thread::sleep(Duration::from_millis(10));
        }
        publisher
    });
    wait_for_metrics(&stalled, "the publisher paused", |text| {
        metric_sum(text, "tickfan_publisher_pauses_total") > 0.0
    });
    assert!(
        watcher.recv_within(Duration::from_millis(200)).is_none(),
        "nothing reaches the stream while the link is stalled"
    );
    let _publisher = publishing.join().unwrap();
    // Past the acknowledgement timeout: publishes are sent again, with the
    // message ids of their first attempt.
    wait_for_metrics(&stalled, "retried publishes", |text| {
        text.lines()
            .find_map(|l| l.strip_prefix(r#"tickfan_cluster_publishes_total{result="retried"} "#))
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.0)
    });
    assert!(!held.is_finished(), "the HTTP publish waits for the stream");
    proxy.resume();
    // The flooding connection's publish was submitted before its refusal:
    // it is stored too, though nobody hears of it.
    let got = read_ticks(&mut watcher, TICKS + 2, "after the stall");
    assert_complete_chain(topic, &got, 0);
    let mut data: Vec<u64> = got.iter().map(|t| t.data.parse().unwrap()).collect();
    data.sort_unstable();
    let mut published: Vec<u64> = (0..TICKS as u64).collect();
    published.extend([1000, 1001]);
    assert_eq!(data, published, "each tick once, retries or not");
    let held_seq = stored_seq(&held.join().unwrap());
    assert_eq!(
        got.iter().find(|t| t.data == "1000").map(|t| t.seq),
        Some(held_seq),
        "the held publish is answered with the seq it was stored at"
    );
    let stored = stored_feed(&nats.url(1), topic);
    assert_eq!(stored.len(), TICKS + 2, "the stream holds each tick once");
    assert!(watcher.recv_within(Duration::from_millis(300)).is_none());
    wait_for_metrics(&stalled, "every publish acknowledged", |text| {
        text.lines()
            .find_map(|l| l.strip_prefix(r#"tickfan_cluster_publishes_total{result="acked"} "#))
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v == (TICKS + 2) as f64)
    });
}
