//! What a hostile client must not be able to do (issue "Hardening II"):
//! kill a worker with one message, leave a half-alive broker behind when a
//! worker dies anyway, use up the shared topic budget without rights, or
//! get half of a refused batch published.
//!
//! The memory bound for clients that send and never read is its own file,
//! `tests/unread_answers.rs`.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "pubtoken";

#[test]
fn a_tiny_max_hz_is_refused_and_the_only_worker_lives_on() {
    let broker = Broker::start(&["--workers", "1"]);
    let mut client = broker.pubsub();
    for tiny in ["1e-20", "5e-324", "0.0001", "0", "-3"] {
        client.send_text(&format!(r#"{{"op":"sub","topic":"A","max_hz":{tiny}}}"#));
        let error = client.expect_event("error");
        assert_eq!(error["code"], "bad_field", "max_hz {tiny}: {error}");
    }
    // The same connection, and the one worker, still serve.
    client.subscribe_with("A", r#","max_hz":0.001"#);
    let (health, _) = http_exchange(&broker, &get_request("/healthz"));
    assert_eq!(health.status, 200);
}

// Fault injection exists in debug builds only (see net::connection::fault_injection).
#[cfg(debug_assertions)]
#[test]
fn a_dead_worker_turns_health_503_and_the_broker_exits_non_zero() {
    use std::io::{ErrorKind, Read};
    let mut broker = Broker::start_with_env(
        &[("TICKFAN_FAULT_INJECTION", "1")],
        &["--workers", "2", "--drain-delay-ms", "3000"],
    );
    // Keep-alive connections spread over both workers by the kernel.
    let mut kept: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut stream = broker.tcp();
            assert_eq!(http_get(&mut stream, "/healthz").status, 200);
            stream
        })
        .collect();
    let mut victim = broker.tcp();
    victim
        .write_all(get_request("/__fault/panic").as_bytes())
        .unwrap();
    let mut rest = Vec::new();
    // The worker died under this request: no answer, the socket is dropped.
    let _ = victim.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    // Those on the surviving worker hear that the broker is unhealthy; those
    // on the dead one are gone. Nobody hears 200 any more.
    let mut unhealthy = 0;
    for stream in &mut kept {
        if stream
            .write_all(get_request("/healthz").as_bytes())
            .is_err()
        {
            continue;
        }
        let mut head = [0u8; 12];
        match stream.read_exact(&mut head) {
            Ok(()) => {
                let status = String::from_utf8_lossy(&head[9..12]).into_owned();
                assert_eq!(status, "503", "a live worker must not say healthy");
                unhealthy += 1;
            }
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                ),
                "{e}"
            ),
        }
    }
    assert!(
        unhealthy > 0,
        "no connection reached the surviving worker; stderr:\n{}",
        broker.stderr_text()
    );
    let status = broker.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(70), "{}", broker.stderr_text());
    let log = broker.stderr_text();
    assert!(log.contains("worker died"), "{log}");
    assert!(log.contains("fault injection"), "{log}");
}

// Fault injection exists in debug builds only (see net::connection::fault_injection).
#[cfg(debug_assertions)]
#[test]
fn a_dead_only_worker_ends_the_process_at_once() {
    let mut broker =
        Broker::start_with_env(&[("TICKFAN_FAULT_INJECTION", "1")], &["--workers", "1"]);
    let mut victim = broker.tcp();
    victim
        .write_all(get_request("/__fault/panic").as_bytes())
        .unwrap();
    let status = broker.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(70), "{}", broker.stderr_text());
}

#[test]
fn without_fault_injection_the_panic_path_is_just_unknown() {
    let broker = Broker::start(&[]);
    let (response, _) = http_exchange(&broker, &get_request("/__fault/panic"));
    assert_eq!(response.status, 404);
}

/// An NDJSON batch body publishing one tick to each of `topics`.
fn batch(topics: &[String]) -> Vec<u8> {
    topics
        .iter()
        .map(|t| format!("{{\"topic\":\"{t}\",\"data\":1}}\n"))
        .collect::<String>()
        .into_bytes()
}

fn publish_batch(broker: &Broker, topics: &[String]) -> HttpResponse {
    let mut stream = broker.tcp();
    http_post(
        &mut stream,
        "/publish",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
        &batch(topics),
    )
}

#[test]
fn anonymous_subscribers_cannot_use_up_the_topic_budget() {
    let broker = Broker::start(&["--publish-token", TOKEN, "--set", "broker.max_topics=50"]);
    // One token-less WebSocket client inventing names, far past the limit.
    let mut client = broker.pubsub();
    for i in 0..300 {
        let topic = format!("ws-invented-{i}");
        client.subscribe(&topic);
        client.send_text(&format!(r#"{{"op":"unsub","topic":"{topic}"}}"#));
        client.expect_event("unsubscribed");
    }
    // Subscriptions it keeps are free too, while they last.
    for i in 0..40 {
        client.subscribe(&format!("ws-held-{i}"));
    }
    // The same with long-polls, answered at once (timeout=0: no ticks,
    // the cursors and epochs).
    let mut poll = broker.tcp();
    for round in 0..20 {
        let topics: Vec<String> = (0..32).map(|i| format!("lp-{round}-{i}")).collect();
        let target = format!("/poll?topic={}&timeout=0", topics.join(","));
        let answer = poll_answer(&http_get(&mut poll, &target));
        assert!(answer.ticks.is_empty(), "{}", answer.raw);
    }
    let metrics = scrape_metrics(&broker);
    assert_eq!(metric_sum(&metrics, "tickfan_topics"), 0.0, "{metrics}");

    // A publisher with rights still creates topics up to the limit ...
    let fifty: Vec<String> = (0..50).map(|i| format!("real-{i}")).collect();
    let answer = publish_batch(&broker, &fifty);
    assert_eq!(answer.status, 202, "{}", answer.text());
    // ... and publishing to a held subscription's topic reaches it, once
    // there is room.
    let answer = publish_batch(&broker, &["ws-held-0".to_owned()]);
    assert_eq!(answer.status, 503, "the limit is full: {}", answer.text());
    let metrics = scrape_metrics(&broker);
    assert_eq!(metric_sum(&metrics, "tickfan_topics"), 50.0, "{metrics}");
}

#[test]
fn a_refused_batch_publishes_nothing_and_its_retry_delivers_once() {
    let broker = Broker::start(&["--publish-token", TOKEN, "--set", "broker.max_topics=3"]);
    let mut subscriber = broker.pubsub();
    subscriber.subscribe("A");
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Four new topics do not fit in three: nothing of the batch goes out,
    // not even the lines before the one over the limit.
    let refused = publish_batch(&broker, &names(&["A", "B", "C", "D"]));
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        subscriber.recv_within(Duration::from_millis(300)).is_none(),
        "a refused batch delivered a tick"
    );
    // The client retries without the line that did not fit: A arrives once.
    let accepted = publish_batch(&broker, &names(&["A", "B", "C"]));
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    assert_eq!(accepted.json()["published"], 3);
    let tick = subscriber.expect_tick("the retried batch");
    assert_eq!(tick.seq, 1);
    assert!(subscriber.recv_within(Duration::from_millis(300)).is_none());
}

#[test]
fn subscribe_and_poll_on_unpublished_topics_leave_nothing_behind() {
    let broker = Broker::start(&["--set", "broker.max_topics=5"]);
    let started = Instant::now();
    let mut poll = broker.tcp();
    // Held polls on invented topics, then answered by their timeout.
    let topics: Vec<String> = (0..8).map(|i| format!("nothing-{i}")).collect();
    let target = format!("/poll?topic={}&timeout=1", topics.join(","));
    assert_eq!(http_get(&mut poll, &target).status, 204);
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Open publishing can still make all five topics.
    let five: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
    let mut stream = broker.tcp();
    let answer = http_post(&mut stream, "/publish", "", &batch(&five));
    assert_eq!(answer.status, 202, "{}", answer.text());
}

/// A keep-alive connection to `broker` from the loopback address `source`.
fn connect_from(broker: &Broker, source: [u8; 4]) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&std::net::SocketAddr::from((source, 0)).into())
        .expect("bind a loopback source address");
    socket.connect(&broker.addr().into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

#[test]
fn one_address_cannot_take_every_connection() {
    let broker = Broker::start(&["--set", "server.max_connections_per_ip=3"]);
    let mut mine: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = connect_from(&broker, [127, 0, 0, 1]);
            assert_eq!(http_get(&mut stream, "/healthz").status, 200);
            stream
        })
        .collect();
    let mut fourth = connect_from(&broker, [127, 0, 0, 1]);
    let refused = http_get(&mut fourth, "/healthz");
    assert_eq!(refused.status, 503);
    assert!(
        refused.text().contains("this address"),
        "{}",
        refused.text()
    );
    // Everyone else still gets in.
    let mut other = connect_from(&broker, [127, 0, 0, 2]);
    assert_eq!(http_get(&mut other, "/healthz").status, 200);
    // A place given back is free again once the broker saw the close.
    drop(mine.pop());
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let mut again = connect_from(&broker, [127, 0, 0, 1]);
        if http_get(&mut again, "/healthz").status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's place never came back"
        );
        // Waiting for the worker to see a close; bounded by the deadline.
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn announced_sizes_cost_nothing_until_the_bytes_come() {
    let broker = Broker::start(&["--workers", "1"]);
    let before = rss_kib(broker.pid());
    // Each client announces a 1 MiB frame (or a 1 MiB body) and stalls.
    let mut stalled = Vec::new();
    for i in 0..150 {
        if i % 2 == 0 {
            let mut stream = broker.raw_handshake(ECHO);
            let mut frame = client_frame(true, OP_BINARY, &vec![0u8; 1 << 20]);
            frame.truncate(64 * 1024);
            stream.write_all(&frame).unwrap();
            stalled.push(stream);
        } else {
            let mut stream = broker.tcp();
            let mut request = post_request("/publish?topic=A", "", &vec![b'1'; 1 << 20]);
            request.truncate(64 * 1024);
            stream.write_all(&request).unwrap();
            stalled.push(stream);
        }
    }
    // Wait until the broker has read everything that was sent.
    let (health, _) = http_exchange(&broker, &get_request("/healthz"));
    assert_eq!(health.status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let growth = rss_kib(broker.pid()).saturating_sub(before);
    eprintln!("RSS growth for 150 stalled announcements: {growth} KiB");
    // 150 x 64 KiB arrived (9.4 MiB of buffers at most, doubled ahead);
    // sized by what they announced it would be 150 MiB.
    assert!(
        growth < 40 * 1024,
        "broker RSS grew by {growth} KiB for 150 stalled announcements"
    );
}
