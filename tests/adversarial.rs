//! Hostile and broken clients over the real binary: slow-loris handshakes,
//! silent and stalled connections, clients that vanish in the middle of a
//! message, floods, the connection limit, and heads and frames too big to
//! buffer.
//!
//! Each test checks two things: that the broker deals with the offender
//! (the right status or close code, at the right deadline), and that the
//! offender costs everyone else nothing — a normal subscriber keeps getting
//! every tick ([`Feed`]), the broker's file descriptors return to their
//! baseline, and its resident memory stays bounded because limits are
//! enforced from headers, before anything is buffered.
//!
//! Time bounds are generous ("within N seconds") because the suite must pass
//! on a loaded two-core machine; lower bounds are checked only where the
//! broker cannot possibly act earlier. The only sleeps are the pace of
//! clients that are slow on purpose and bounded polls of `/proc`.

mod common;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::{Message, WebSocket};

/// The pace of a slow-loris client: one byte per connection per interval.
const SLOW_BYTE_EVERY: Duration = Duration::from_millis(200);

/// The handshake deadline the slow-client tests configure, and the flag
/// value that sets it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(1000);
const HANDSHAKE_TIMEOUT_MS: &str = "1000";

/// A connection cut off at the handshake deadline is gone within this long
/// of connecting (the deadline plus a loaded machine's slack).
const CUT_OFF_WITHIN: Duration = Duration::from_secs(6);

/// Every tick must reach a normal subscriber this soon after its publish,
/// whatever an offender is doing meanwhile.
const TICK_LATENCY_BOUND: Duration = Duration::from_secs(2);

/// How long the flood tests flood.
const FLOOD_FOR: Duration = Duration::from_secs(2);

/// "A few MiB": what refusing oversized input may cost the broker, in KiB.
/// Buffering what the offenders announce would cost many times this.
const FEW_MIB_KIB: u64 = 8 * 1024;

/// Offenders sent at once in the oversize tests, so that buffering what
/// each announces would show in the broker's RSS.
const OFFENDERS: usize = 16;

/// How long the broker's descriptor count may take to settle back.
const FD_SETTLE: Duration = Duration::from_secs(15);

/// A read that ran into its timeout.
fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Reads everything until the broker ends the stream (EOF or reset) and
/// returns it; fails the test if the read timeout passes first.
fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    match stream.read_to_end(&mut bytes) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "expected the broker to close, got {e} after {:?}",
            String::from_utf8_lossy(&bytes)
        ),
    }
    bytes
}

/// Fails unless `answer` (all a refused handshake got) is nothing or a 408.
fn assert_nothing_or_408(answer: &[u8]) {
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408 "),
        "unexpected answer {:?}",
        String::from_utf8_lossy(answer)
    );
}

/// Leaves without a word: a FIN (`abrupt` false) or a reset (SO_LINGER 0).
fn vanish(stream: TcpStream, abrupt: bool) {
    if abrupt {
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER");
    }
    drop(stream);
}

/// Sets a flag when dropped, so a helper thread stops even when the test
/// fails before it gets to say so.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

// ---------------------------------------------------------------- the feed

/// The well-behaved clients every test checks are unaffected: one publisher
/// and some subscribers of one topic. Every tick published must reach each
/// subscriber next, with the next seq, within [`TICK_LATENCY_BOUND`].
struct Feed {
    publisher: PsClient,
    subscribers: Vec<PsClient>,
    topic: &'static str,
    seq: u64,
}

impl Feed {
    /// Connects `subscribers` subscribers of `topic` and a publisher.
    fn new(broker: &Broker, topic: &'static str, subscribers: usize) -> Feed {
        let subscribers = (0..subscribers)
            .map(|_| {
                let mut subscriber = broker.pubsub();
                subscriber.subscribe(topic);
                subscriber
            })
            .collect();
        Feed {
            publisher: broker.pubsub(),
            subscribers,
            topic,
            seq: 0,
        }
    }

    /// Publishes the next tick and waits for it at every subscriber; fails
    /// the test if it is not the next tick or was slower than the bound.
    fn round_trip(&mut self, meanwhile: &str) {
        self.seq += 1;
        let data = format!("{{\"n\":{}}}", self.seq);
        let sent = Instant::now();
        self.publisher.publish(self.topic, &data);
        for (i, subscriber) in self.subscribers.iter_mut().enumerate() {
            let tick = subscriber.expect_tick("feed tick");
            assert_eq!(
                (tick.topic.as_str(), tick.seq, tick.data.as_str()),
                (self.topic, self.seq, data.as_str()),
                "subscriber {i} while {meanwhile}: {}",
                tick.text
            );
        }
        let latency = sent.elapsed();
        assert!(
            latency < TICK_LATENCY_BOUND,
            "tick {} took {latency:?} to reach every subscriber while {meanwhile}",
            self.seq
        );
    }

    /// Waits `pause` at the first subscriber, failing if anything but a
    /// heartbeat arrives: the pace of tests that let time pass on purpose.
    fn idle(&mut self, pause: Duration) {
        if let Some(msg) = self.subscribers[0].recv_within(pause) {
            panic!("unexpected message while idle: {msg:?}");
        }
    }
}

// ---------------------------------------------------------------- slow loris

#[test]
fn slowloris_handshake_is_cut_off_at_the_handshake_deadline() {
    let broker = Broker::start(&["--handshake-timeout-ms", HANDSHAKE_TIMEOUT_MS]);
    let request = upgrade_request(WS, SAMPLE_KEY).into_bytes();
    let start = Instant::now();
    let mut stream = broker.tcp();
    // The read timeout is the pace: one byte, then a wait of one interval.
    stream.set_read_timeout(Some(SLOW_BYTE_EVERY)).unwrap();
    let mut sent = 0;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still open {:?} after connecting, {sent} bytes sent",
            start.elapsed()
        );
        if sent < request.len() {
            match stream.write(&request[sent..=sent]) {
                Ok(n) => sent += n,
                Err(_) => break, // the broker has closed the connection
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(_) => break, // reset
        }
    }
    let elapsed = start.elapsed();
    assert_nothing_or_408(&answer);
    assert!(
        sent < request.len(),
        "the whole request went out ({sent} bytes)"
    );
    assert!(
        elapsed >= HANDSHAKE_TIMEOUT - Duration::from_millis(50),
        "cut off before the deadline: {elapsed:?}"
    );
    assert!(elapsed < CUT_OFF_WITHIN, "cut off only after {elapsed:?}");
}

/// What a slow-loris horde saw.
#[derive(Debug, Default)]
struct HordeReport {
    rounds: usize,
    connects: usize,
    /// Connections the broker ended (EOF, reset, or a failed write).
    cut_off: usize,
    /// Answers that were neither nothing nor a 408 (a 101 would be one).
    bad_answers: Vec<String>,
}

/// Keeps `count` connections sending an upgrade request one byte at a time,
/// round-robin from this one thread, each getting a byte per
/// [`SLOW_BYTE_EVERY`]; replaces each connection the broker ends. Runs until
/// `stop` is set (at most a minute). Reports on `ready` after the first
/// round, when all `count` are connected.
fn slowloris_horde(
    addr: std::net::SocketAddr,
    count: usize,
    stop: &AtomicBool,
    cut_off: &AtomicUsize,
    ready: mpsc::Sender<()>,
) -> HordeReport {
    struct Slow {
        stream: TcpStream,
        sent: usize,
        answer: Vec<u8>,
    }
    let request = upgrade_request(WS, SAMPLE_KEY).into_bytes();
    let mut slots: Vec<Option<Slow>> = (0..count).map(|_| None).collect();
    let mut report = HordeReport::default();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Acquire) && started.elapsed() < Duration::from_secs(60) {
        let round_start = Instant::now();
        for slot in &mut slots {
            let slow = slot.get_or_insert_with(|| {
                let stream = TcpStream::connect(addr).expect("slow client connects");
                stream.set_nonblocking(true).unwrap();
                report.connects += 1;
                Slow {
                    stream,
                    sent: 0,
                    answer: Vec::new(),
                }
            });
            let mut closed = false;
            loop {
                match slow.stream.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => slow.answer.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if !closed && slow.sent < request.len() {
                match slow.stream.write(&request[slow.sent..=slow.sent]) {
                    Ok(n) => slow.sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => closed = true,
                }
            }
            let answered = !slow.answer.is_empty() && !slow.answer.starts_with(b"HTTP/1.1 408 ");
            if answered && report.bad_answers.len() < 5 {
                report
                    .bad_answers
                    .push(String::from_utf8_lossy(&slow.answer).into_owned());
            }
            if closed || answered {
                *slot = None;
                report.cut_off += 1;
                cut_off.fetch_add(1, Ordering::AcqRel);
            }
        }
        report.rounds += 1;
        if report.rounds == 1 {
            let _ = ready.send(());
        }
        // The pace of a slow client (this test is about slowness).
        if let Some(rest) = SLOW_BYTE_EVERY.checked_sub(round_start.elapsed()) {
            thread::sleep(rest);
        }
    }
    report
}

#[test]
fn two_hundred_slowloris_clients_do_not_stop_a_normal_subscriber() {
    const SLOW_CLIENTS: usize = 200;
    let broker = Broker::start(&["--handshake-timeout-ms", HANDSHAKE_TIMEOUT_MS]);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_horde = StopOnDrop(Arc::clone(&stop));
    let cut_off = Arc::new(AtomicUsize::new(0));
    let (ready_tx, ready_rx) = mpsc::channel();
    let horde = {
        let (addr, stop, cut_off) = (broker.addr(), Arc::clone(&stop), Arc::clone(&cut_off));
        thread::spawn(move || slowloris_horde(addr, SLOW_CLIENTS, &stop, &cut_off, ready_tx))
    };
    if ready_rx.recv_timeout(IO_TIMEOUT).is_err() {
        stop.store(true, Ordering::Release);
        join_all(vec![horde]);
        panic!("the slow clients did not connect");
    }

    // With the horde at work: connect, subscribe, and get 100 ticks, paced
    // over a few seconds so that slow clients are cut off and replaced
    // meanwhile.
    let mut feed = Feed::new(&broker, "live", 1);
    for _ in 0..100 {
        feed.round_trip("200 slow-loris clients trickle their handshakes");
        feed.idle(Duration::from_millis(20));
    }
    // Every slow client is cut off at its deadline, replacements included.
    let deadline = Instant::now() + Duration::from_secs(20);
    while cut_off.load(Ordering::Acquire) < SLOW_CLIENTS && Instant::now() < deadline {
        feed.idle(Duration::from_millis(100));
    }
    feed.round_trip("the slow clients are being cut off");
    stop.store(true, Ordering::Release);
    let report = join_all(vec![horde]).pop().unwrap();
    assert!(
        report.bad_answers.is_empty(),
        "slow clients got answers other than 408: {:?}",
        report.bad_answers
    );
    assert!(
        report.cut_off >= SLOW_CLIENTS,
        "only {} slow connections were cut off: {report:?}",
        report.cut_off
    );
}

#[test]
fn silent_connection_is_closed_at_the_handshake_deadline() {
    let broker = Broker::start(&["--handshake-timeout-ms", HANDSHAKE_TIMEOUT_MS]);
    let mut feed = Feed::new(&broker, "live", 1);
    let start = Instant::now();
    let mut silent = broker.tcp();
    let answer = read_to_eof(&mut silent);
    let elapsed = start.elapsed();
    assert_nothing_or_408(&answer);
    assert!(
        elapsed >= HANDSHAKE_TIMEOUT - Duration::from_millis(50),
        "cut off before the deadline: {elapsed:?}"
    );
    assert!(elapsed < CUT_OFF_WITHIN, "cut off only after {elapsed:?}");
    // The feed's clients passed the same deadline unharmed.
    feed.round_trip("a silent connection was cut off");
}

// ---------------------------------------------------------------- stalled and vanishing clients

#[test]
fn stalled_partial_frames_are_closed_by_the_idle_timeout_while_others_go_on() {
    const IDLE_TIMEOUT: Duration = Duration::from_millis(900);
    let broker = Broker::start(&["--ping-interval-ms", "300", "--idle-timeout-ms", "900"]);
    let mut feed = Feed::new(&broker, "live", 2);
    feed.round_trip("warming up");

    // A publish with a 16-bit length (8-byte header), cut: after its first
    // byte, inside its length, inside its mask, and inside its payload.
    let frame = pub_frame("live", &format!("\"{}\"", "x".repeat(300)));
    let stalled: Vec<_> = [1, 3, 6, 8 + 20]
        .into_iter()
        .map(|cut| {
            let mut client = broker.pubsub();
            let start = Instant::now();
            client.send_raw(&frame[..cut]);
            // Reads past the server's pings (never answering one: the
            // stalled frame is in the way) until its close.
            thread::spawn(move || {
                let close = client.read_until_close();
                (cut, close, start.elapsed())
            })
        })
        .collect();

    // The feed goes on while the stalled clients wait to be closed.
    let started = Instant::now();
    while !stalled.iter().all(|h| h.is_finished()) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "stalled clients still open after {:?}",
            started.elapsed()
        );
        feed.round_trip("clients stall in the middle of a frame");
        feed.idle(Duration::from_millis(50));
    }
    for (cut, close, elapsed) in join_all(stalled) {
        assert_eq!(
            close,
            Some((1001, "idle timeout".to_owned())),
            "client that stalled after {cut} bytes"
        );
        assert!(
            elapsed >= IDLE_TIMEOUT - Duration::from_millis(50),
            "client that stalled after {cut} bytes closed after only {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_secs(10),
            "client that stalled after {cut} bytes closed only after {elapsed:?}"
        );
    }
    feed.round_trip("the stalled clients were closed");
}

#[test]
fn clients_that_vanish_mid_message_leave_no_trace() {
    const ROUNDS: usize = 3;
    let broker = Broker::start(&[]);
    let pid = broker.pid();
    // Four subscribers, so that both workers most likely have some.
    let mut feed = Feed::new(&broker, "live", 4);
    feed.round_trip("warming up");
    let baseline = fd_count(pid);

    let request = upgrade_request(WS, SAMPLE_KEY).into_bytes();
    let sub = client_frame(true, OP_TEXT, br#"{"op":"sub","topic":"live"}"#);
    let first_fragment = client_frame(false, OP_TEXT, br#"{"op":"pub","topic":"live","#);
    let last_fragment = client_frame(true, OP_CONTINUATION, br#""data":"never"}"#);
    // Over 64 KiB, so it has a 64-bit length and spans many reads.
    let big_pub = pub_frame("live", &format!("\"{}\"", "p".repeat(100 * 1024)));

    let mut vanishing: Vec<(String, TcpStream, bool)> = Vec::new();
    for round in 0..ROUNDS {
        for abrupt in [false, true] {
            let how = |what: &str| format!("round {round}, {what}, abrupt={abrupt}");
            let mut half_handshake = broker.tcp();
            half_handshake
                .write_all(&request[..request.len() / 2])
                .unwrap();
            vanishing.push((how("mid-handshake"), half_handshake, abrupt));

            let mut mid_header = broker.raw_handshake(WS);
            mid_header.write_all(&sub[..1]).unwrap();
            vanishing.push((how("mid-frame header"), mid_header, abrupt));

            let mut mid_payload = broker.raw_handshake(WS);
            mid_payload.write_all(&sub[..sub.len() - 5]).unwrap();
            vanishing.push((how("mid-frame payload"), mid_payload, abrupt));

            let mut mid_fragments = broker.raw_handshake(WS);
            mid_fragments.write_all(&first_fragment).unwrap();
            mid_fragments
                .write_all(&last_fragment[..last_fragment.len() / 2])
                .unwrap();
            vanishing.push((how("mid-fragmented message"), mid_fragments, abrupt));

            let mut publisher = broker.raw_handshake(WS);
            publisher.write_all(&big_pub[..big_pub.len() / 2]).unwrap();
            vanishing.push((how("publisher mid-pub"), publisher, abrupt));

            // A subscriber of the feed's topic that leaves mid-frame.
            let mut subscriber = broker.raw_handshake(WS);
            subscriber.write_all(&sub).unwrap();
            let (opcode, event) = read_server_frame(&mut subscriber);
            assert_eq!(opcode, OP_TEXT);
            let event: serde_json::Value = serde_json::from_slice(&event).unwrap();
            assert_eq!(event["event"], "subscribed", "{event}");
            subscriber.write_all(&sub[..4]).unwrap();
            vanishing.push((how("subscriber mid-frame"), subscriber, abrupt));
        }
    }
    // Every one of them has been accepted before it goes.
    let wanted = baseline + vanishing.len();
    let (count, accepted) = wait_for_fd_count(pid, FD_SETTLE, |n| n >= wanted);
    assert!(
        accepted,
        "the broker holds {count} descriptors, expected {wanted}"
    );
    for (_, stream, abrupt) in vanishing {
        vanish(stream, abrupt);
    }

    // Nothing half-sent was published: the feed's seqs go on without a gap.
    for _ in 0..10 {
        feed.round_trip("clients vanished mid-message");
    }
    let (count, settled) = wait_for_fd_count(pid, FD_SETTLE, |n| n == baseline);
    assert!(
        settled,
        "the broker holds {count} descriptors {FD_SETTLE:?} after the clients left, \
         {baseline} before they came"
    );
    feed.round_trip("the broker let go of the vanished clients");
}

// ---------------------------------------------------------------- floods

/// What a flooding writer managed.
#[derive(Debug, Default)]
struct Flooded {
    bytes: usize,
    /// Writes that made no progress within their timeout: the broker
    /// stopped reading.
    blocked_writes: usize,
    /// The error that ended the flood early, if one did.
    error: Option<String>,
}

/// Writes `bytes` (whole frames) again and again, as fast as the socket
/// takes them, for `duration` or until `stop` is set or a write fails.
fn flood(mut stream: TcpStream, bytes: &[u8], duration: Duration, stop: &AtomicBool) -> Flooded {
    stream
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut flooded = Flooded::default();
    let start = Instant::now();
    let mut at = 0;
    while start.elapsed() < duration && !stop.load(Ordering::Acquire) {
        match stream.write(&bytes[at..]) {
            Ok(n) => {
                flooded.bytes += n;
                at = (at + n) % bytes.len();
            }
            Err(e) if is_timeout(&e) => flooded.blocked_writes += 1,
            Err(e) => {
                flooded.error = Some(e.to_string());
                break;
            }
        }
    }
    flooded
}

#[test]
fn ping_flood_that_never_reads_is_paused_not_buffered() {
    const RSS_BOUND_KIB: u64 = 64 * 1024;
    let broker = Broker::start(&[]);
    let pid = broker.pid();
    let mut feed = Feed::new(&broker, "live", 1);
    for _ in 0..20 {
        feed.round_trip("warming up");
    }
    let before = rss_kib(pid);

    // A flooder that reads nothing, with room for little of what it is sent,
    // so every pong it provokes piles up in the broker.
    let mut flooder = broker.tcp_small_rcvbuf(4096);
    flooder
        .write_all(upgrade_request(WS, SAMPLE_KEY).as_bytes())
        .unwrap();
    assert_switching_protocols(&read_response_head(&mut flooder));
    let pings: Vec<u8> = (0..512)
        .flat_map(|_| client_frame(true, OP_PING, &[0x55; 125]))
        .collect();
    let never = AtomicBool::new(false);
    let flooding = thread::spawn(move || flood(flooder, &pings, FLOOD_FOR, &never));

    let mut peak = before;
    let started = Instant::now();
    while !flooding.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the flood did not end"
        );
        feed.round_trip("a client floods pings without reading");
        peak = peak.max(rss_kib(pid));
    }
    let flooded = join_all(vec![flooding]).pop().unwrap();
    peak = peak.max(rss_kib(pid));
    let growth = peak.saturating_sub(before);
    assert!(
        growth < RSS_BOUND_KIB,
        "the broker's RSS grew by {growth} KiB (from {before} KiB) under a ping flood: {flooded:?}"
    );
    assert!(flooded.bytes > 0, "{flooded:?}");
    feed.round_trip("the ping flood is over");
}

#[test]
fn invalid_op_flood_is_closed_with_1008_while_others_go_on() {
    const MAX_ERRORS: usize = 20;
    let broker = Broker::start(&["--max-client-errors", &MAX_ERRORS.to_string()]);
    let mut feed = Feed::new(&broker, "live", 1);
    feed.round_trip("warming up");

    let flooder = broker.raw_handshake(WS);
    let mut reader = flooder.try_clone().unwrap();
    let invalid: Vec<u8> = (0..256)
        .flat_map(|i| {
            client_frame(
                true,
                OP_TEXT,
                format!(r#"{{"op":"nope{i}","topic":"x"}}"#).as_bytes(),
            )
        })
        .collect();
    let closed = Arc::new(AtomicBool::new(false));
    let _stop_flood = StopOnDrop(Arc::clone(&closed));
    let flooding = {
        let closed = Arc::clone(&closed);
        thread::spawn(move || flood(flooder, &invalid, FLOOD_FOR, &closed))
    };
    let reading = {
        let closed = Arc::clone(&closed);
        thread::spawn(move || {
            let mut errors = 0;
            loop {
                let (opcode, payload) = read_server_frame(&mut reader);
                match opcode {
                    OP_TEXT => {
                        let event: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                        assert_eq!(event["event"], "error", "{event}");
                        errors += 1;
                    }
                    OP_CLOSE => {
                        closed.store(true, Ordering::Release);
                        assert!(payload.len() >= 2, "close without a code");
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        let reason = String::from_utf8_lossy(&payload[2..]).into_owned();
                        // Nothing follows the close but the end of the stream.
                        let rest = read_to_eof(&mut reader);
                        assert!(rest.is_empty(), "bytes after the close: {rest:?}");
                        return (errors, code, reason);
                    }
                    other => panic!("unexpected opcode {other:#x} in the flood's answers"),
                }
            }
        })
    };

    let started = Instant::now();
    while !reading.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the flooder was not closed"
        );
        feed.round_trip("a client floods invalid operations");
    }
    let (errors, code, reason) = join_all(vec![reading]).pop().unwrap();
    let flooded = join_all(vec![flooding]).pop().unwrap();
    assert_eq!(code, 1008, "close reason {reason:?}");
    assert!(reason.contains("invalid"), "close reason {reason:?}");
    assert_eq!(errors, MAX_ERRORS, "error events before the close");
    assert!(
        flooded.bytes > invalid_len_for(MAX_ERRORS),
        "the flooder sent only {} bytes",
        flooded.bytes
    );
    feed.round_trip("the invalid-op flooder was closed");
}

/// Bytes of the first `n` invalid operations the flood test sends.
fn invalid_len_for(n: usize) -> usize {
    (0..n)
        .map(|i| {
            client_frame(
                true,
                OP_TEXT,
                format!(r#"{{"op":"nope{i}","topic":"x"}}"#).as_bytes(),
            )
            .len()
        })
        .sum()
}

/// `--max-messages-per-sec N`: a client sending more than N messages per
/// second (averaged over about a second) is closed with 1008 "rate limit";
/// one that stays under it is not.
#[test]
fn client_over_max_messages_per_sec_is_closed_with_1008() {
    const MAX_PER_SEC: u32 = 50;
    let broker = Broker::start(&["--max-messages-per-sec", &MAX_PER_SEC.to_string()]);
    // The feed's publisher is the polite client: one message per round,
    // rounds paced at about a fifth of the limit.
    let mut feed = Feed::new(&broker, "live", 1);

    // The flooder sends valid publishes (no error events) as fast as it can.
    let flooder = broker.raw_handshake(WS);
    let mut reader = flooder.try_clone().unwrap();
    let publishes: Vec<u8> = (0..256)
        .flat_map(|i| pub_frame("flood", &i.to_string()))
        .collect();
    let closed = Arc::new(AtomicBool::new(false));
    let _stop_flood = StopOnDrop(Arc::clone(&closed));
    let flooding = {
        let closed = Arc::clone(&closed);
        thread::spawn(move || flood(flooder, &publishes, Duration::from_secs(3), &closed))
    };
    let reading = {
        let closed = Arc::clone(&closed);
        thread::spawn(move || loop {
            let (opcode, payload) = read_server_frame(&mut reader);
            match opcode {
                OP_CLOSE => {
                    closed.store(true, Ordering::Release);
                    assert!(payload.len() >= 2, "close without a code");
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
                }
                OP_PING => {}
                other => panic!(
                    "unexpected opcode {other:#x} for the flooder: {:?}",
                    String::from_utf8_lossy(&payload)
                ),
            }
        })
    };

    // The polite client goes on for at least 2.5 s, under the limit.
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < 25 || !reading.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the flooder was not closed"
        );
        feed.round_trip("a client publishes over the rate limit");
        // The pace of a polite client (this test is about rates).
        feed.idle(Duration::from_millis(1000 / (u64::from(MAX_PER_SEC) / 5)));
        rounds += 1;
    }
    let (code, reason) = join_all(vec![reading]).pop().unwrap();
    let flooded = join_all(vec![flooding]).pop().unwrap();
    assert_eq!(code, 1008, "close reason {reason:?}; {flooded:?}");
    assert!(reason.contains("rate limit"), "close reason {reason:?}");
    feed.round_trip("the flooder was closed for its rate");
}

// ---------------------------------------------------------------- connection limit

/// Sends `text` to the echo route and expects it back.
fn echo_round_trip(ws: &mut WebSocket<TcpStream>, text: &str) {
    ws.send(Message::text(text)).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(text));
}

/// Sends an upgrade request and expects 503, then the end of the stream.
fn expect_503(broker: &Broker, which: &str) {
    let mut stream = broker.tcp();
    stream
        .write_all(upgrade_request(ECHO, SAMPLE_KEY).as_bytes())
        .unwrap();
    let response = read_http_response(&mut stream);
    assert_eq!(response.status, 503, "{which}: {response:?}");
    let rest = read_to_eof(&mut stream);
    assert!(rest.is_empty(), "{which}: bytes after the 503: {rest:?}");
}

#[test]
fn connection_limit_refuses_the_surplus_and_frees_slots_on_close() {
    const LIMIT: usize = 20;
    let broker = Broker::start(&["--max-connections", &LIMIT.to_string()]);
    let pid = broker.pid();
    let idle_fds = fd_count(pid);

    let mut clients: Vec<WebSocket<TcpStream>> =
        (0..LIMIT).map(|_| broker.connect_ws(ECHO)).collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        echo_round_trip(ws, &format!("client {i}"));
    }
    for n in LIMIT + 1..=LIMIT + 5 {
        expect_503(&broker, &format!("connection {n}"));
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        echo_round_trip(ws, &format!("client {i} after the refusals"));
    }

    // Five leave with a complete closing handshake.
    for mut ws in clients.drain(..5) {
        ws.close(None).unwrap();
        loop {
            match ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!("closing: {e:?}"),
            }
        }
    }
    // The refused connections linger until the broker reads our end of
    // them; its descriptors show when it has let go of all ten.
    let wanted = idle_fds + LIMIT - 5;
    let (count, settled) = wait_for_fd_count(pid, FD_SETTLE, |n| n == wanted);
    assert!(
        settled,
        "the broker holds {count} descriptors, expected {wanted}"
    );
    for i in 0..5 {
        let mut ws = broker.connect_ws(ECHO);
        echo_round_trip(&mut ws, &format!("newcomer {i}"));
        clients.push(ws);
    }
    expect_503(&broker, "connection 21 once full again");
    for (i, ws) in clients.iter_mut().enumerate() {
        echo_round_trip(ws, &format!("client {i} at the end"));
    }
}

// ---------------------------------------------------------------- oversized input

/// Runs `offend` on [`OFFENDERS`] connections at once and fails if the
/// broker's RSS grew by more than [`FEW_MIB_KIB`]: each refusal must come
/// from a header, before what it announces is buffered.
fn assert_refused_without_buffering(broker: &Broker, offend: impl Fn(usize) + Sync) {
    let pid = broker.pid();
    // Warm up: one echo round trip, so the baseline includes a used worker.
    let mut ws = broker.connect_ws(ECHO);
    echo_round_trip(&mut ws, "warm-up");
    let before = rss_kib(pid);
    thread::scope(|scope| {
        let offend = &offend;
        let handles: Vec<_> = (0..OFFENDERS)
            .map(|i| scope.spawn(move || offend(i)))
            .collect();
        // Every offender ends before the first panic is re-raised.
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        for result in results {
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
        }
    });
    let after = rss_kib(pid);
    let growth = after.saturating_sub(before);
    assert!(
        growth < FEW_MIB_KIB,
        "the broker's RSS grew by {growth} KiB (from {before} KiB) refusing {OFFENDERS} offenders"
    );
    echo_round_trip(&mut ws, "after the offenders");
}

/// Sends `frames` on a fresh echo connection, expects a close with `code`,
/// then sends `after` (which the broker must discard, not buffer) and
/// expects the end of the stream.
fn refused_frame(broker: &Broker, frames: &[u8], code: u16, after: &[u8]) {
    let mut stream = broker.raw_handshake(ECHO);
    stream.write_all(frames).unwrap();
    let (got, reason) = read_close(&mut stream);
    assert_eq!(got, code, "close reason {reason:?}");
    // The broker may end the connection while this is under way.
    let _ = stream.write_all(after);
    let _ = stream.write_all(&client_close(code, b""));
    let _ = stream.shutdown(Shutdown::Write);
    let rest = read_to_eof(&mut stream);
    assert!(rest.is_empty(), "bytes after the close: {rest:?}");
}

/// The header of a masked binary frame with a 64-bit `len`.
fn header_with_64_bit_length(len: u64) -> Vec<u8> {
    let mut header = vec![0x82, 0xFF];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0x37, 0xfa, 0x21, 0x3d]);
    header
}

#[test]
fn head_of_64_kib_is_431_without_buffering() {
    let broker = Broker::start(&[]);
    let base = upgrade_request(ECHO, SAMPLE_KEY);
    let head = format!(
        "{}X-Padding: {}\r\n\r\n",
        &base[..base.len() - 2],
        "h".repeat(64 * 1024)
    );
    assert_refused_without_buffering(&broker, |i| {
        let mut stream = broker.tcp();
        stream.write_all(head.as_bytes()).unwrap();
        let response = read_http_response(&mut stream);
        assert_eq!(response.status, 431, "offender {i}: {response:?}");
        let _ = stream.shutdown(Shutdown::Write);
        let rest = read_to_eof(&mut stream);
        assert!(
            rest.is_empty(),
            "offender {i}: bytes after the 431: {rest:?}"
        );
    });
}

#[test]
fn frame_over_max_frame_bytes_is_1009_before_its_payload() {
    const MIB: usize = 1024 * 1024;
    let broker = Broker::start(&["--max-frame-bytes", "1024"]);
    let header = header_with_64_bit_length(MIB as u64);
    let payload = vec![0x5a; MIB];
    // The close comes before any payload is sent; the payload that follows
    // anyway is read and discarded.
    assert_refused_without_buffering(&broker, |_| refused_frame(&broker, &header, 1009, &payload));
}

#[test]
fn length_with_its_top_bit_set_is_1002_without_buffering() {
    let broker = Broker::start(&[]);
    let header = header_with_64_bit_length(1 << 63);
    assert_refused_without_buffering(&broker, |_| refused_frame(&broker, &header, 1002, &[]));
}

#[test]
fn length_of_2_pow_62_is_1009_at_the_default_frame_limit() {
    let broker = Broker::start(&[]);
    let header = header_with_64_bit_length(1 << 62);
    assert_refused_without_buffering(&broker, |_| refused_frame(&broker, &header, 1009, &[]));
}

#[test]
fn fragments_past_max_fragments_per_message_are_1009() {
    const MAX_FRAGMENTS: usize = 16;
    let broker = Broker::start(&["--max-fragments-per-message", &MAX_FRAGMENTS.to_string()]);
    let chunk = vec![b'f'; 1024];
    // The 17th frame of one message is one too many (none is final).
    let mut frames = client_frame(false, OP_TEXT, &chunk);
    for _ in 1..=MAX_FRAGMENTS {
        frames.extend(client_frame(false, OP_CONTINUATION, &chunk));
    }
    assert_refused_without_buffering(&broker, |_| refused_frame(&broker, &frames, 1009, &[]));
}

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after `comm`.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// With its descriptors exhausted, the broker backs off instead of spinning
/// on a listener that stays readable, counts the failed accepts, keeps
/// serving the connections it has, and accepts again once descriptors free.
#[test]
fn running_out_of_file_descriptors_backs_off_and_keeps_serving() {
    // About 20 descriptors go to the runtime (epoll, wakers, listeners,
    // stdio), leaving room for a handful of clients.
    let broker = Broker::start_with_open_files(32, &["--workers", "1"]);
    let mut metrics = broker.tcp();
    assert_eq!(http_get(&mut metrics, "/healthz").status, 200);
    let mut subscriber = broker.pubsub();
    subscriber.subscribe("fd");
    let mut publisher = broker.pubsub();

    // Connections past the limit wait in the kernel's backlog, unaccepted.
    let surplus: Vec<TcpStream> = (0..40).map(|_| broker.tcp()).collect();
    let cpu_before = cpu_seconds(broker.pid());
    let started = Instant::now();
    for i in 1..=20u64 {
        publisher.publish("fd", &i.to_string());
        assert_eq!(
            subscriber.expect_tick("tick while out of descriptors").seq,
            i
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu = cpu_seconds(broker.pid()) - cpu_before;
    let wall = started.elapsed().as_secs_f64();
    assert!(
        cpu < wall * 0.5,
        "the broker used {cpu:.2} s of CPU in {wall:.2} s while out of descriptors: spinning?"
    );

    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let text = http_get(&mut metrics, "/metrics").text();
        let failed: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("tickfan_accept_errors_total "))
            .map_or(0.0, |v| v.trim().parse().unwrap());
        if failed > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "accept errors never counted:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    drop(surplus);
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        // Once the surplus is gone, a new client gets a slot again.
        let mut late = broker.tcp();
        late.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if late.write_all(get_request("/healthz").as_bytes()).is_ok() {
            if let Ok(head) = std::panic::catch_unwind(move || read_response_head(&mut late)) {
                if head.starts_with("HTTP/1.1 200") {
                    break;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new connection accepted after descriptors freed"
        );
    }
}
