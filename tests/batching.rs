//! Batching that follows load, over the real binary (`net::pacer`, the
//! worker's sliced sweeps): under a flood a worker's writes carry many
//! ticks and every subscriber still gets every tick of every topic once,
//! in order; with per-connection batching a connection that just wrote is
//! held for the budget while a tick after a quiet spell goes out at once.
//! The schedule's own guarantees (no sweep waits beyond the budget, ticks
//! per write grow under saturation) are checked on the pacer's model in
//! its unit tests, where they do not depend on this machine's load.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

const TOPICS: [&str; 2] = ["BATCH.a", "BATCH.b"];
/// Enough subscribers that one write sweep outlasts a sweep slice
/// (~10 µs per write), so ticks are also queued between slices.
const SUBSCRIBERS: usize = 200;
const TICKS_PER_TOPIC: u64 = 5_000;

fn delivered_per_write(broker: &Broker) -> f64 {
    let text = scrape_metrics(broker);
    metric_sum(&text, "tickfan_ticks_delivered_total")
        / metric_sum(&text, "tickfan_write_syscalls_total").max(1.0)
}

#[test]
fn a_flooded_worker_batches_and_every_subscriber_gets_every_tick_in_order() {
    let broker = Broker::start(&["--workers", "1", "--max-messages-per-sec", "0"]);
    let readers: Vec<_> = (0..SUBSCRIBERS)
        .map(|i| {
            let mut subscriber = broker.pubsub();
            let topic = TOPICS[i % TOPICS.len()];
            subscriber.subscribe(topic);
            thread::spawn(move || {
                for seq in 1..=TICKS_PER_TOPIC {
                    let tick = subscriber.expect_tick("flood");
                    assert_eq!(tick.topic, topic, "subscriber {i}");
                    assert_eq!(tick.seq, seq, "subscriber {i}: a gap or a reordering");
                    assert_eq!(tick.data, format!(r#"{{"n":{seq}}}"#), "subscriber {i}");
                }
            })
        })
        .collect();
    // The whole flood in one write from a thread, the topics interleaved.
    let flood: Vec<u8> = (1..=TICKS_PER_TOPIC)
        .flat_map(|n| TOPICS.map(|topic| pub_frame(topic, &format!(r#"{{"n":{n}}}"#))))
        .flatten()
        .collect();
    let mut publisher = broker.pubsub();
    let writer = thread::spawn(move || {
        publisher.send_raw(&flood);
        publisher
    });
    join_all(readers);
    writer.join().expect("publisher thread");
    // One write per tick would be 1.0: a flood is batched (the counters
    // reach /metrics about once a second).
    let expected = (SUBSCRIBERS as u64 * TICKS_PER_TOPIC) as f64;
    wait_for_metrics(&broker, "every delivered tick", |text| {
        metric_sum(text, "tickfan_ticks_delivered_total") >= expected
    });
    let per_write = delivered_per_write(&broker);
    assert!(per_write > 2.0, "{per_write} ticks per write under a flood");
}

/// Milliseconds between now and a tick's `ts` (microseconds since the
/// epoch, stamped when the broker took the publish).
fn age_ms(tick: &OwnedTick) -> u64 {
    let ts: u64 = serde_json::from_str::<serde_json::Value>(&tick.text).unwrap()["ts"]
        .as_u64()
        .expect("a tick carries ts");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    now.saturating_sub(ts) / 1000
}

#[test]
fn per_connection_batching_holds_a_recent_writer_for_the_budget_only() {
    const BUDGET_MS: u64 = 1000;
    let broker = Broker::start(&[
        "--workers",
        "1",
        "--set",
        "broker.batching=connection",
        "--set",
        &format!("broker.max_batch_delay_ms={BUDGET_MS}"),
    ]);
    let mut subscriber = broker.pubsub();
    subscriber.subscribe("NAGLE");
    let mut publisher = broker.pubsub();

    // A connection that has not written for longer than the budget gets a
    // tick at once (well within the budget, on any machine).
    publisher.publish("NAGLE", r#"{"n":1}"#);
    let first = subscriber.expect_tick("first");
    let first_at = Instant::now();
    assert!(age_ms(&first) < BUDGET_MS * 9 / 10, "{}", first.text);

    // The next one, right after that write, waits for the rest of the
    // budget: not before it (load can only make it later), and not
    // indefinitely.
    publisher.publish("NAGLE", r#"{"n":2}"#);
    let second = subscriber.expect_tick("held");
    let held_for = first_at.elapsed();
    assert_eq!(second.seq, first.seq + 1);
    assert!(
        held_for >= Duration::from_millis(BUDGET_MS / 2),
        "written after {held_for:?}"
    );
    assert!(held_for < Duration::from_secs(10), "held for {held_for:?}");

    // After a quiet spell longer than the budget: at once again.
    thread::sleep(Duration::from_millis(BUDGET_MS * 3 / 2));
    publisher.publish("NAGLE", r#"{"n":3}"#);
    let third = subscriber.expect_tick("after a quiet spell");
    assert_eq!(third.seq, second.seq + 1);
    assert!(age_ms(&third) < BUDGET_MS * 9 / 10, "{}", third.text);

    wait_for_metrics(&broker, "a batch wait counted", |text| {
        metric_sum(text, "tickfan_batch_waits_total") >= 1.0
    });
}
