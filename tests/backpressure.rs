//! Publisher backpressure over the real binary: a publisher that sends
//! faster than the worker fans out is not read while the worker's mailbox
//! holds more than `broker.max_mailbox_ticks`, so the broker slows it
//! through TCP instead of queueing without bound, and every tick it sent is
//! still published, in order, once the backlog drains.

mod common;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const TOPIC: &str = "BP.flood";
/// Ticks the publisher sends in one go.
const TICKS: u64 = 50_000;
/// Subscribers that make each tick's fan-out cost hundreds of queue
/// operations while publishing one costs a parse: the publisher outruns
/// the worker many times over.
const SUBSCRIBERS: usize = 300;
const MAILBOX_TICKS: &str = "64";

fn get(broker: &Broker, target: &str) -> HttpResponse {
    let mut stream = broker.tcp();
    write!(stream, "GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    read_http_response(&mut stream)
}

/// The topic's latest tick as `(seq, data)`, from a long-poll without a
/// cursor; `None` while it has none.
fn latest_tick(broker: &Broker) -> Option<(u64, String)> {
    let response = get(broker, &format!("/poll?topic={TOPIC}&timeout=1"));
    if response.status == 204 {
        return None;
    }
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    let tick = body["ticks"].as_array()?.last()?.clone();
    Some((tick["seq"].as_u64()?, tick["data"].to_string()))
}

#[test]
fn a_publisher_faster_than_fan_out_is_paused_and_loses_nothing() {
    let broker = Broker::start(&[
        "--workers",
        "1",
        "--max-messages-per-sec",
        "0",
        "--set",
        &format!("broker.max_mailbox_ticks={MAILBOX_TICKS}"),
        // The subscribers never read: their queues stay small and drop.
        "--max-queue-bytes",
        "4096",
        "--slow-consumer",
        "drop",
    ]);
    let subscribers: Vec<PsClient> = (0..SUBSCRIBERS)
        .map(|_| {
            let mut subscriber = broker.pubsub();
            subscriber.subscribe(TOPIC);
            subscriber
        })
        .collect();

    // The whole flood as one buffer, written by a thread: while the broker
    // does not read, the write blocks in the kernel.
    let flood: Vec<u8> = (1..=TICKS)
        .flat_map(|n| pub_frame(TOPIC, &format!(r#"{{"n":{n}}}"#)))
        .collect();
    let mut publisher = broker.pubsub();
    let writer = thread::spawn(move || {
        publisher.send_raw(&flood);
        publisher
    });

    // Every tick is eventually taken, in order: the topic's latest tick
    // becomes the last one sent, with the last seq (bounded wait: the
    // flood drains in seconds even in a debug build).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let latest = latest_tick(&broker);
        if let Some((seq, data)) = &latest {
            if *seq == TICKS {
                assert_eq!(*data, format!(r#"{{"n":{TICKS}}}"#));
                break;
            }
            // Seq n carries publish n: nothing was lost or reordered so far.
            assert_eq!(*data, format!(r#"{{"n":{seq}}}"#));
        }
        assert!(
            Instant::now() < deadline,
            "latest tick {latest:?}, {TICKS} sent"
        );
        // Polling the broker's progress; bounded by the deadline.
        thread::sleep(Duration::from_millis(100));
    }
    writer.join().expect("publisher thread");

    // The flood was throttled, not buffered: the broker put off reading
    // the publisher (metrics are flushed about once a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pauses = metric_sum(&scrape_metrics(&broker), "tickfan_publisher_pauses_total");
        if pauses > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no publisher pause counted");
        thread::sleep(Duration::from_millis(100));
    }
    drop(subscribers);
}
