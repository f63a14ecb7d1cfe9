//! Slow consumers over the real binary: subscribers that stop reading must
//! neither slow the others nor make the broker's memory grow without bound,
//! and each `slow_consumer` policy (conflate, drop, disconnect) must do what
//! it says once their queue passes `max_queue_bytes`.
//!
//! A stalled subscriber here is a connection whose receive buffer was made
//! small before it connected and which then reads nothing: the broker's
//! writes back up into its per-connection queue almost at once, instead of
//! into megabytes of kernel buffers. The normal subscribers read every tick;
//! the publisher keeps at most [`WINDOW`] ticks ahead of the slowest of them,
//! so their own queues stay far below the bound whatever the machine's load,
//! while the stalled ones are offered every tick.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const TOPICS: [&str; 2] = ["SC.A", "SC.B"];
/// Ticks published to each topic (alternating between them).
const PER_TOPIC: u64 = 10_000;
const TOTAL: u64 = PER_TOPIC * TOPICS.len() as u64;
const NORMAL: usize = 5;
/// Enough stalled subscribers that unbounded queues would hold more than
/// the memory bound below (STALLED x TOTAL x ~1 KiB = ~120 MiB).
const STALLED: usize = 6;
const QUEUE_BYTES: &str = "262144";
/// How far (in ticks) the publisher may run ahead of the slowest normal
/// subscriber: with [`BATCH`], ~160 KiB, below the queue bound.
const WINDOW: u64 = 100;
const BATCH: u64 = 50;
/// Most the broker's resident memory may grow during the flood.
const RSS_GROWTH_LIMIT_KIB: u64 = 48 * 1024;

/// The `data` of the tick with `seq` on a topic: ~1 KiB, starting with its seq.
fn tick_data(seq: u64) -> String {
    format!(r#"{{"n":{seq},"pad":"{}"}}"#, "x".repeat(1000))
}

/// The index in [`TOPICS`] of a tick's topic.
fn topic_index(tick: &TickView<'_>) -> usize {
    TOPICS
        .iter()
        .position(|t| *t == tick.topic)
        .unwrap_or_else(|| panic!("tick of an unexpected topic {:?}", tick.topic))
}

/// Checks that `data` is the data published with `seq` (probes, published
/// after the flood, carry `{"probe":..}`).
fn check_data(data: &[u8], seq: u64) {
    if seq > PER_TOPIC {
        assert!(data.starts_with(b"{\"probe\":"), "seq {seq}");
        return;
    }
    let n = data
        .strip_prefix(b"{\"n\":")
        .and_then(leading_u64)
        .map(|(n, _)| n);
    assert_eq!(n, Some(seq), "{:?}", String::from_utf8_lossy(data));
}

/// Per-topic seqs seen by one subscriber: each tick must be newer than the
/// last of its topic.
#[derive(Debug, Default)]
struct Seen {
    last: [u64; TOPICS.len()],
    ticks: u64,
    jumps: u64,
}

impl Seen {
    fn take(&mut self, payload: &[u8], who: &str) -> Option<(usize, u64)> {
        let tick = parse_tick(payload)?;
        let topic = topic_index(&tick);
        assert!(
            tick.seq > self.last[topic],
            "{who}: {} seq {} after {}",
            tick.topic,
            tick.seq,
            self.last[topic]
        );
        check_data(tick.data, tick.seq);
        if tick.seq != self.last[topic] + 1 {
            self.jumps += 1;
        }
        self.last[topic] = tick.seq;
        self.ticks += 1;
        Some((topic, tick.seq))
    }
}

/// Whether `payload` is a heartbeat event, which any connection quiet for
/// the heartbeat interval may get between ticks.
fn is_heartbeat(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(payload)
        .is_ok_and(|event| event["event"] == "heartbeat")
}

/// What a flood leaves for the policy-specific checks.
struct Flooded {
    broker: Broker,
    stalled: Vec<PsClient>,
    publisher: PsClient,
}

/// Starts a broker with `policy` and a [`QUEUE_BYTES`] bound per
/// connection, then [`flood_with`].
fn flood(policy: &str) -> Flooded {
    flood_with(
        policy,
        &[
            "--max-queue-bytes",
            QUEUE_BYTES,
            "--slow-consumer",
            policy,
            "--slow-consumer-grace-ms",
            "500",
        ],
    )
}

/// Starts a broker with `args`, subscribes the stalled and the normal
/// clients, publishes [`TOTAL`] ticks, and checks that every normal
/// subscriber got every tick in order and that memory stayed bounded.
fn flood_with(label: &str, args: &[&str]) -> Flooded {
    let broker = Broker::start(args);
    let subscribe_all = |mut client: PsClient| {
        for topic in TOPICS {
            let subscribed = client.subscribe(topic);
            assert_eq!(subscribed["seq"], 0, "{subscribed}");
        }
        client
    };
    let stalled: Vec<PsClient> = (0..STALLED)
        .map(|_| {
            let stream = broker.tcp_small_rcvbuf(4096);
            subscribe_all(PsClient::upgrade(stream, WS, &[]).expect("upgrade"))
        })
        .collect();

    // progress[k]: ticks normal subscriber k has read.
    let progress = Arc::new((Mutex::new(vec![0u64; NORMAL]), Condvar::new()));
    let started = Instant::now();
    let readers: Vec<_> = (0..NORMAL)
        .map(|k| {
            let mut client = subscribe_all(broker.pubsub());
            let progress = Arc::clone(&progress);
            thread::spawn(move || {
                let mut seen = Seen::default();
                while seen.ticks < TOTAL {
                    let payload = client.next_text();
                    let Some((topic, seq)) = seen.take(payload, &format!("normal subscriber {k}"))
                    else {
                        assert!(is_heartbeat(payload), "not a tick: {payload:?}");
                        continue;
                    };
                    // The publisher alternates: seq n of topic t is tick 2(n-1)+t+1.
                    assert_eq!(
                        (seq - 1) * TOPICS.len() as u64 + topic as u64 + 1,
                        seen.ticks,
                        "normal subscriber {k} missed a tick"
                    );
                    if seen.ticks % 25 == 0 {
                        progress.0.lock().unwrap()[k] = seen.ticks;
                        progress.1.notify_all();
                    }
                }
                assert_eq!(seen.jumps, 0);
                started.elapsed()
            })
        })
        .collect();

    let pid = broker.pid();
    let rss_before = rss_kib(pid);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        thread::spawn(move || {
            let mut peak = rss_kib(pid);
            while sampling.load(Ordering::Acquire) {
                peak = peak.max(rss_kib(pid));
                // Sampling interval, not synchronisation.
                thread::sleep(Duration::from_millis(20));
            }
            peak.max(rss_kib(pid))
        })
    };

    let mut publisher = broker.pubsub();
    let mut sent = 0u64;
    'publish: while sent < TOTAL {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut done = progress.0.lock().unwrap();
        while done.iter().min().copied().unwrap_or(0) + WINDOW < sent {
            if readers.iter().any(|r| r.is_finished()) {
                break 'publish; // a reader failed: join it below
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "normal subscribers stuck at {done:?} of {sent}"
            );
            done = progress.1.wait_timeout(done, deadline - now).unwrap().0;
        }
        drop(done);
        let frames: Vec<u8> = (sent + 1..=sent + BATCH)
            .flat_map(|i| {
                let topic = ((i - 1) % TOPICS.len() as u64) as usize;
                let seq = (i - 1) / TOPICS.len() as u64 + 1;
                pub_frame(TOPICS[topic], &tick_data(seq))
            })
            .collect();
        publisher.send_raw(&frames);
        sent += BATCH;
    }
    let took = join_all(readers);
    sampling.store(false, Ordering::Release);
    let peak = join_all(vec![sampler])[0];
    eprintln!(
        "{label}: {NORMAL} normal subscribers got {TOTAL} ticks in {took:?}; \
         RSS {rss_before} KiB before, peak {peak} KiB"
    );
    assert!(
        peak.saturating_sub(rss_before) < RSS_GROWTH_LIMIT_KIB,
        "broker RSS grew from {rss_before} KiB to {peak} KiB"
    );
    Flooded {
        broker,
        stalled,
        publisher,
    }
}

/// `broker.max_total_queue_bytes` bounds the queues together where the
/// per-connection bound does not: each stalled subscriber's queue would
/// reach ~20 MiB, under its 64 MiB bound, so nothing would be dropped (the
/// test fails so with a 1 GiB total). With a 4 MiB total the worker shrinks
/// their bounds to a fair share and drops for them, while the normal
/// subscribers still get every tick and memory stays bounded (both checked
/// by the flood).
#[test]
fn the_total_queue_bound_holds_where_per_connection_bounds_do_not() {
    let Flooded { broker, .. } = flood_with(
        "drop under a 4 MiB total",
        &[
            "--workers",
            "1",
            "--max-queue-bytes",
            "67108864",
            "--set",
            "broker.max_total_queue_bytes=4194304",
            "--slow-consumer",
            "drop",
        ],
    );
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let dropped = metric_sum(
            &scrape_metrics(&broker),
            r#"tickfan_slow_consumer_actions_total{policy="drop""#,
        );
        if dropped > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no drop counted");
        // Metrics are flushed once a second; bounded by the deadline.
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn conflate_keeps_the_newest_tick_per_topic_for_a_stalled_subscriber() {
    let flooded = flood("conflate");
    for (k, mut client) in flooded.stalled.into_iter().enumerate() {
        let who = format!("stalled subscriber {k}");
        let mut seen = Seen::default();
        // Conflation never loses a topic's newest tick: both finals arrive.
        while seen.last != [PER_TOPIC; TOPICS.len()] {
            let payload = client.next_text();
            if seen.take(payload, &who).is_none() && !is_heartbeat(payload) {
                panic!("{who}: unexpected {:?}", String::from_utf8_lossy(payload));
            }
        }
        eprintln!("{who}: {seen:?}");
        assert!(
            seen.jumps > 0 && seen.ticks < TOTAL,
            "{who} got {} of {TOTAL} ticks with {} jumps: nothing was conflated",
            seen.ticks,
            seen.jumps
        );
    }
    drop(flooded.broker);
}

#[test]
fn drop_discards_new_ticks_for_a_stalled_subscriber() {
    let Flooded {
        broker,
        stalled,
        mut publisher,
    } = flood("drop");
    for (k, mut client) in stalled.into_iter().enumerate() {
        let who = format!("stalled subscriber {k}");
        let mut seen = Seen::default();
        let mut probes = 0;
        // Read what was kept; the newest ticks may have been dropped, so
        // probes (published when nothing arrives for a while) show when
        // this subscriber is caught up and gets new ticks again.
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.last[0] <= PER_TOPIC {
            assert!(Instant::now() < deadline, "{who} never caught up: {seen:?}");
            match client.recv_within(Duration::from_millis(200)) {
                Some(Msg::Tick(tick)) => {
                    seen.take(tick.text.as_bytes(), &who);
                    probes += u64::from(tick.seq > PER_TOPIC);
                }
                Some(Msg::Event(event)) => panic!("{who}: unexpected {event}"),
                None => publisher.publish(TOPICS[0], r#"{"probe":true}"#),
            }
        }
        let flood_ticks = seen.ticks - probes;
        eprintln!("{who}: {seen:?}, {probes} probes");
        assert!(
            seen.jumps > 0 && flood_ticks < TOTAL,
            "{who} got {flood_ticks} of {TOTAL} ticks with {} jumps: nothing was dropped",
            seen.jumps
        );
    }
    drop(broker);
}

#[test]
fn disconnect_closes_a_stalled_subscriber_with_1008() {
    let flooded = flood("disconnect");
    for (k, mut client) in flooded.stalled.into_iter().enumerate() {
        let who = format!("stalled subscriber {k}");
        let mut seen = Seen::default();
        // What the kernel still held comes first; then the close, or the
        // end of the stream if the broker gave up waiting for us to read
        // it (close_timeout_ms).
        let close = loop {
            match client.try_frame() {
                Ok((OP_TEXT, payload)) => {
                    if seen.take(payload, &who).is_none() {
                        assert!(is_heartbeat(payload), "{who}: {payload:?}");
                    }
                }
                Ok((OP_CLOSE, payload)) => {
                    assert!(payload.len() >= 2, "{who}: close without a code");
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    break Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
                }
                Ok((opcode, payload)) => panic!("{who}: opcode {opcode:#x} {payload:?}"),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    break None
                }
                Err(e) => panic!("{who}: neither closed nor ended ({e}) after {seen:?}"),
            }
        };
        eprintln!("{who}: {seen:?}, then {close:?}");
        if let Some((code, reason)) = close {
            assert_eq!((code, reason.as_str()), (1008, "slow consumer"), "{who}");
        }
        assert!(
            seen.ticks < TOTAL / 2,
            "{who} read {} of {TOTAL} ticks before being disconnected",
            seen.ticks
        );
    }
    drop(flooded.broker);
}
