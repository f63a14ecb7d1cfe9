//! The TLS listener against clients that do not finish, or never start, a
//! TLS handshake: a ClientHello sent a byte at a time, handshakes that stall
//! or vanish halfway, plain HTTP and garbage on the TLS port, and a peer
//! that ends TCP without close_notify. Each is cut off cleanly, counted in
//! `tickfan_tls_handshake_failures_total{reason}`, and leaves the broker's
//! descriptors back at their baseline and its memory bounded.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use common::pki::Pki;
use common::*;

/// Resident memory the broker may gain per half-open TLS connection it
/// holds: about 3 KiB measured (rustls's handshake state, the records
/// received so far, the connection's own state); the rest is slack for the
/// allocator and a loaded machine.
const RSS_PER_HALF_OPEN_KIB: u64 = 16;

/// A socket that writes what it is given one byte per `write` call (with
/// Nagle off, one segment each): the slowest a client can send.
struct OneByteWrites(TcpStream);

impl Read for OneByteWrites {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for OneByteWrites {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match buf.first() {
            Some(byte) => self.0.write(std::slice::from_ref(byte)),
            None => Ok(0),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The first flight of a real rustls client: its ClientHello records.
fn client_hello(pki: &Pki) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(pki.client_config(), name).unwrap();
    let mut hello = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut hello).unwrap();
    }
    assert!(hello.len() > 100, "a ClientHello of {} bytes", hello.len());
    hello
}

/// The broker's count of TLS handshakes failed for `reason`.
fn tls_failures(broker: &Broker, reason: &str) -> f64 {
    metric_sum(
        &scrape_metrics(broker),
        &format!("tickfan_tls_handshake_failures_total{{reason=\"{reason}\"}}"),
    )
}

/// Waits (at most [`PROMPTLY`]) until the broker counts `want` TLS
/// handshakes failed for `reason` in all; fails the test with the count seen.
fn wait_for_tls_failures(broker: &Broker, reason: &str, want: f64) {
    let metric = format!("tickfan_tls_handshake_failures_total{{reason=\"{reason}\"}}");
    wait_for_metrics(broker, &metric, |text| metric_sum(text, &metric) >= want);
    assert_eq!(tls_failures(broker, reason), want, "{reason}");
}

/// One full TLS handshake and request, so the broker's one-time allocations
/// (rustls's first session, the workers' buffers) are made before a
/// baseline; returns the broker's descriptor count once that connection is
/// gone again.
fn warm_up(pki: &Pki, broker: &Broker) -> usize {
    let fds_before = fd_count(broker.pid());
    let mut stream = pki.connect(broker);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    drop(stream);
    let (fds, back) = wait_for_fd_count(broker.pid(), IO_TIMEOUT, |n| n <= fds_before);
    assert!(
        back,
        "{fds} descriptors open after the warm-up, {fds_before} before"
    );
    fds
}

#[test]
fn a_client_hello_sent_a_byte_at_a_time_still_completes() {
    let pki = Pki::new("dribble");
    let broker = pki.broker();
    let tcp = TcpStream::connect(broker.tls_addr()).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let connection = ClientConnection::new(pki.client_config(), name).unwrap();
    let mut stream = StreamOwned::new(connection, OneByteWrites(tcp));
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    wait_for_metrics(&broker, "tickfan_tls_handshakes_total", |text| {
        metric_sum(text, "tickfan_tls_handshakes_total") >= 1.0
    });
}

#[test]
fn stalled_and_vanishing_handshakes_are_cut_off_and_hold_no_memory() {
    const CLIENTS_PER_ROUND: usize = 200;
    const ROUNDS: usize = 3;
    let pki = Pki::new("stalled");
    let broker = pki.broker_with(&["--set", "websocket.handshake_timeout_ms=5000"]);
    let fds_before = warm_up(&pki, &broker);
    let pid = broker.pid();
    let rss_before = rss_kib(pid);
    let hello = client_hello(&pki);
    // Part of the ClientHello: the broker must keep it and wait for more.
    let part = &hello[..64];
    let mut rss_after_rounds = Vec::new();
    for round in 1..=ROUNDS {
        let clients: Vec<TcpStream> = (0..CLIENTS_PER_ROUND)
            .map(|_| {
                let tcp = TcpStream::connect(broker.tls_addr()).unwrap();
                tcp.set_nodelay(true).unwrap();
                tcp
            })
            .collect();
        // A byte to each client in turn: every connection's bytes arrive
        // one at a time, interleaved with all the others'.
        for byte in part {
            for mut client in &clients {
                client.write_all(std::slice::from_ref(byte)).unwrap();
            }
        }
        let (fds, all_open) =
            wait_for_fd_count(pid, IO_TIMEOUT, |n| n >= fds_before + CLIENTS_PER_ROUND);
        assert!(
            all_open,
            "{fds} descriptors, {fds_before} before round {round}\n{}\n{}",
            scrape_metrics(&broker),
            broker.stderr_text()
        );
        let held = rss_kib(pid).saturating_sub(rss_before);
        eprintln!("round {round}: {held} KiB for {CLIENTS_PER_ROUND} half-open handshakes");
        assert!(
            held <= RSS_PER_HALF_OPEN_KIB * CLIENTS_PER_ROUND as u64,
            "round {round}: {held} KiB more for {CLIENTS_PER_ROUND} half-open handshakes"
        );
        // Half vanish (a reset, no FIN); the other half stall until the
        // handshake timeout ends them.
        let mut stalled = clients;
        let vanishing: Vec<TcpStream> = stalled.drain(..CLIENTS_PER_ROUND / 2).collect();
        for client in &vanishing {
            socket2::SockRef::from(client)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
        drop(vanishing);
        let started = Instant::now();
        for mut client in &stalled {
            client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut rest = Vec::new();
            // The broker's close ends the read (EOF, or a reset).
            let _ = client.read_to_end(&mut rest);
            assert!(
                started.elapsed() < IO_TIMEOUT,
                "a stalled handshake was held"
            );
        }
        drop(stalled);
        let (fds, back) = wait_for_fd_count(pid, IO_TIMEOUT, |n| n <= fds_before);
        assert!(
            back,
            "round {round}: {fds} descriptors open, {fds_before} before"
        );
        let half = (CLIENTS_PER_ROUND / 2 * round) as f64;
        wait_for_tls_failures(&broker, "closed", half);
        wait_for_tls_failures(&broker, "timeout", half);
        rss_after_rounds.push(rss_kib(pid));
    }
    // What the first round took is reused, not added to, by the next ones.
    let (first, last) = (rss_after_rounds[0], rss_after_rounds[ROUNDS - 1]);
    assert!(
        last <= first + 4 * 1024,
        "RSS after each round: {rss_after_rounds:?} KiB (from {rss_before})"
    );
    let (health, _) = http_exchange(&broker, &get_request("/healthz"));
    assert_eq!(health.status, 200);
}

#[test]
fn plain_http_and_garbage_on_the_tls_port_are_refused_at_once() {
    const CLIENTS_PER_KIND: usize = 40;
    let pki = Pki::new("garbage");
    // A long handshake timeout: what ends these connections is the refusal.
    let broker = pki.broker_with(&["--set", "websocket.handshake_timeout_ms=60000"]);
    let fds_before = warm_up(&pki, &broker);
    let pid = broker.pid();
    let rss_before = rss_kib(pid);
    let mut noise = Vec::with_capacity(4096);
    let mut state = 0x2545_f491_u32;
    noise.push(0xde); // not a TLS content type
    while noise.len() < 4096 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        noise.push(state as u8);
    }
    let kinds: [(&str, Vec<u8>); 4] = [
        (
            "plain HTTP",
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        ("garbage", noise),
        // An SSLv2-style hello, which rustls does not speak.
        (
            "SSLv2 hello",
            vec![0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15],
        ),
        // A handshake record announcing more than TLS allows in one record.
        ("oversized record", vec![22, 3, 1, 0xff, 0xff, 1, 0, 0xff]),
    ];
    let started = Instant::now();
    let mut clients = Vec::new();
    for (kind, bytes) in &kinds {
        for _ in 0..CLIENTS_PER_KIND {
            let mut tcp = TcpStream::connect(broker.tls_addr()).unwrap();
            tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            // The broker may close before it has read everything.
            let _ = tcp.write_all(bytes);
            clients.push((*kind, tcp));
        }
    }
    for (kind, mut tcp) in clients {
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        // Nothing, or a TLS alert record (content type 21); never HTTP.
        assert!(answer.is_empty() || answer[0] == 21, "{kind}: {answer:?}");
        assert!(started.elapsed() < IO_TIMEOUT, "{kind} was held open");
    }
    let (fds, back) = wait_for_fd_count(pid, IO_TIMEOUT, |n| n <= fds_before);
    assert!(back, "{fds} descriptors open, {fds_before} before");
    let held = rss_kib(pid).saturating_sub(rss_before);
    eprintln!("{held} KiB more after the refused clients");
    assert!(
        held <= RSS_PER_HALF_OPEN_KIB * (CLIENTS_PER_KIND * kinds.len()) as u64,
        "{held} KiB more after the refused clients"
    );
    wait_for_tls_failures(&broker, "not_tls", (CLIENTS_PER_KIND * kinds.len()) as f64);
}

#[test]
fn a_wss_peer_that_ends_tcp_without_close_notify_is_an_ordinary_close() {
    let pki = Pki::new("no-notify");
    let broker = pki.broker();
    let fds_before = warm_up(&pki, &broker);
    let (mut wss, _) = tungstenite::client("wss://localhost/ws", pki.connect(&broker)).unwrap();
    wss.send(tungstenite::Message::text(r#"{"op":"sub","topic":"N"}"#))
        .unwrap();
    wss.read().unwrap();
    // TCP's FIN with no TLS close_notify and no WebSocket close before it.
    wss.get_ref().sock.shutdown(Shutdown::Both).unwrap();
    let (fds, back) = wait_for_fd_count(broker.pid(), IO_TIMEOUT, |n| n <= fds_before);
    assert!(back, "{fds} descriptors open, {fds_before} before");
    // The connection was counted as a handshake, never as a failure, and
    // the broker logged no error about it.
    wait_for_metrics(&broker, "tickfan_tls_handshakes_total", |text| {
        metric_sum(text, "tickfan_tls_handshakes_total") >= 2.0
    });
    let metrics = scrape_metrics(&broker);
    assert_eq!(
        metric_sum(&metrics, "tickfan_tls_handshakes_total"),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "tickfan_tls_handshake_failures_total"),
        0.0,
        "{metrics}"
    );
    let log = broker.stderr_text();
    assert!(!log.contains("ERROR") && !log.contains("WARN"), "{log}");
}
