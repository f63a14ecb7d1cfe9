//! wss:// and https:// on the TLS listener (`tls.listen`): a certificate
//! authority made at test time (rcgen), the broker started with a
//! certificate it signed, and real clients — rustls verifying that CA, with
//! tungstenite speaking WebSocket over it, and curl for plain HTTPS routes.
//! The same topic table serves both listeners.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use std::process::Command;
use std::sync::Arc;

use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use common::pki::Pki;
use common::*;

/// Sends one HTTP/1.1 request over `stream` and reads the whole answer
/// (the request asks the broker to close after it).
fn https_request(stream: &mut impl ReadWrite, request: &str) -> String {
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn wss_subscriber_gets_ticks_published_over_plain_ws() {
    let pki = Pki::new("wss");
    let broker = pki.broker();
    let stream = pki.connect(&broker);
    let (mut wss, response) =
        tungstenite::client("wss://localhost/ws", stream).expect("wss upgrade");
    assert_eq!(response.status(), 101);
    wss.send(tungstenite::Message::text(r#"{"op":"sub","topic":"AAPL"}"#))
        .unwrap();
    let subscribed = wss.read().unwrap().into_text().unwrap();
    assert!(
        subscribed.contains(r#""event":"subscribed""#),
        "{subscribed}"
    );
    // One topic table behind both listeners.
    let mut publisher = broker.pubsub();
    for i in 1..=50 {
        publisher.publish("AAPL", &format!("{{\"bid\":{i}}}"));
    }
    for i in 1..=50u64 {
        let tick = wss.read().unwrap().into_text().unwrap();
        assert!(tick.contains(&format!(r#""seq":{i},"#)), "{tick}");
        assert!(tick.contains(&format!(r#""data":{{"bid":{i}}}"#)), "{tick}");
    }
    wss.close(None).unwrap();
}

#[test]
fn wss_echo_round_trips_large_messages() {
    let pki = Pki::new("echo");
    let broker = pki.broker();
    let (mut wss, _) = tungstenite::client("wss://localhost/echo", pki.connect(&broker)).unwrap();
    // Larger than one TLS record, so it spans several.
    let big = "x".repeat(100_000);
    wss.send(tungstenite::Message::text(big.clone())).unwrap();
    assert_eq!(wss.read().unwrap().into_text().unwrap(), big);
}

#[test]
fn https_routes_answer_over_tls() {
    let pki = Pki::new("https");
    let broker = pki.broker();
    let health = https_request(
        &mut pki.connect(&broker),
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let body = r#"{"bid":1}"#;
    let published = https_request(
        &mut pki.connect(&broker),
        &format!(
            "POST /publish?topic=A HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(published.starts_with("HTTP/1.1 202"), "{published}");
    let polled = https_request(
        &mut pki.connect(&broker),
        "GET /poll?topic=A&since=A:0 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(polled.starts_with("HTTP/1.1 200"), "{polled}");
    assert!(polled.contains(r#""data":{"bid":1}"#), "{polled}");
}

#[test]
fn curl_verifies_the_certificate_and_reads_sse_and_metrics() {
    let pki = Pki::new("curl");
    let broker = pki.broker();
    let url = |path: &str| format!("https://localhost:{}{path}", broker.tls_addr().port());
    let curl = |args: &[&str]| {
        let output = Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "5"])
            .args([
                "--resolve",
                &format!("localhost:{}:127.0.0.1", broker.tls_addr().port()),
            ])
            .args(args)
            .output()
            .expect("run curl");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (status, metrics) = curl(&["--cacert", &pki.path("ca.pem"), &url("/metrics")]);
    assert_eq!(status, Some(0));
    assert!(metrics.contains("tickfan_topics"), "{metrics}");
    // Without the CA, curl refuses the broker's certificate.
    let (status, _) = curl(&[&url("/healthz")]);
    assert_ne!(
        status,
        Some(0),
        "curl accepted a certificate it cannot verify"
    );
    // SSE: the stream's head and the snapshot of a published topic.
    let mut publisher = broker.pubsub();
    publisher.publish("S", "7");
    let (_, events) = curl(&[
        "--cacert",
        &pki.path("ca.pem"),
        "--max-time",
        "2",
        &url("/sse?topic=S"),
    ]);
    assert!(events.contains(r#""topic":"S","seq":1"#), "{events}");
}

#[test]
fn plain_http_on_the_tls_port_is_cut_off() {
    let pki = Pki::new("plain");
    let broker = pki.broker();
    let mut tcp = TcpStream::connect(broker.tls_addr()).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    // At most a TLS alert record (content type 21), never an HTTP answer.
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    let (health, _) = http_exchange(&broker, &get_request("/healthz"));
    assert_eq!(health.status, 200);
}

fn start_error(args: &[&str]) -> String {
    let output = run_cli(args);
    assert!(!output.status.success(), "started with {args:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn unusable_certificates_stop_the_start_naming_the_key() {
    let pki = Pki::new("errors");
    let base = ["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"];
    let with = |cert: &str, key: &str| {
        let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--tls-cert".into(),
            cert.into(),
            "--tls-key".into(),
            key.into(),
        ]);
        args
    };
    let run = |args: Vec<String>| start_error(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let missing = run(with("/nonexistent/cert.pem", &pki.path("key.pem")));
    assert!(missing.contains("tls.cert_file"), "{missing}");
    let mismatched = run(with(&pki.path("cert.pem"), &pki.path("other-key.pem")));
    assert!(mismatched.contains("tls.key_file"), "{mismatched}");
    let not_a_key = run(with(&pki.path("cert.pem"), &pki.path("cert.pem")));
    assert!(not_a_key.contains("tls.key_file"), "{not_a_key}");
    let no_listener = start_error(&["--tls-cert", &pki.path("cert.pem")]);
    assert!(no_listener.contains("tls.cert_file"), "{no_listener}");
    let no_key = start_error(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &pki.path("cert.pem"),
    ]);
    assert!(no_key.contains("tls.key_file"), "{no_key}");
}

#[test]
fn a_stalled_tls_handshake_is_cut_off_by_the_handshake_timeout() {
    let pki = Pki::new("stall");
    let broker = pki.broker_with(&["--set", "websocket.handshake_timeout_ms=300"]);
    let fds_before = fd_count(broker.pid());
    // The first bytes of a ClientHello record, then nothing.
    let mut tcp = TcpStream::connect(broker.tls_addr()).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.write_all(&[22, 3, 1, 0]).unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    assert!(
        started.elapsed() < IO_TIMEOUT,
        "the broker held a stalled handshake open"
    );
    // The broker serves on, and holds nothing of the stalled client.
    let (health, _) = http_exchange(&broker, &get_request("/healthz"));
    assert_eq!(health.status, 200);
    drop(tcp);
    let (fds, back) = wait_for_fd_count(broker.pid(), IO_TIMEOUT, |n| n <= fds_before);
    assert!(
        back,
        "{fds} descriptors open, {fds_before} before the stalled client"
    );
}

#[test]
fn a_burst_of_tls_handshakes_is_served_a_few_per_turn_without_losing_any() {
    let pki = Pki::new("burst");
    let broker = pki.broker();
    // More handshakes at once than a worker takes in one loop turn.
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let config = pki.client_config();
            let addr = broker.tls_addr();
            std::thread::spawn(move || {
                let tcp = TcpStream::connect(addr).unwrap();
                tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let name = ServerName::try_from("localhost").unwrap();
                let mut stream =
                    StreamOwned::new(ClientConnection::new(config, name).unwrap(), tcp);
                https_request(
                    &mut stream,
                    "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                )
            })
        })
        .collect();
    for answer in join_all(clients) {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

#[test]
fn shutdown_closes_wss_with_1001_then_close_notify() {
    let pki = Pki::new("shutdown");
    let mut broker = pki.broker();
    let (mut wss, _) = tungstenite::client("wss://localhost/ws", pki.connect(&broker)).unwrap();
    wss.send(tungstenite::Message::text(r#"{"op":"sub","topic":"A"}"#))
        .unwrap();
    wss.read().unwrap();
    broker.send_sigterm();
    let close = loop {
        match wss.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame,
            Ok(_) => continue,
            Err(e) => panic!("no close frame before the end: {e}"),
        }
    };
    let frame = close.expect("a close code");
    assert_eq!(u16::from(frame.code), 1001);
    // The closing handshake completes and the TLS session ends cleanly
    // (close_notify: rustls reports no unexpected EOF).
    let _ = wss.close(None);
    loop {
        match wss.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("the wss connection did not end cleanly: {e}"),
        }
    }
    assert!(broker.wait_exit(IO_TIMEOUT).success());
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_only() {
    let pki = Pki::new("reload");
    let broker = pki.broker();
    let first = pki.presented(&broker);
    // An open wss connection that keeps streaming across the reload.
    let (mut wss, _) = tungstenite::client("wss://localhost/ws", pki.connect(&broker)).unwrap();
    wss.send(tungstenite::Message::text(r#"{"op":"sub","topic":"R"}"#))
        .unwrap();
    wss.read().unwrap();
    let renewed = pki.renew();
    assert_ne!(first, renewed);
    broker.send_sighup();
    // The reload is asynchronous: wait (bounded) for a new connection to see it.
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while pki.presented(&broker) != renewed {
        assert!(
            std::time::Instant::now() < deadline,
            "the certificate was not reloaded"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut publisher = broker.pubsub();
    publisher.publish("R", "1");
    let tick = wss.read().unwrap().into_text().unwrap();
    assert!(tick.contains(r#""seq":1"#), "{tick}");
    // A bad file: the reload fails, the certificate in use stays.
    std::fs::write(pki.dir.join("cert.pem"), "not a certificate").unwrap();
    broker.send_sighup();
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        let metrics = scrape_metrics(&broker);
        if metric_sum(&metrics, "tickfan_tls_reloads_total{result=\"failed\"") >= 1.0 {
            assert_eq!(
                metric_sum(&metrics, "tickfan_tls_reloads_total{result=\"ok\""),
                1.0
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed reload counted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(pki.presented(&broker), renewed);
    assert!(broker.stderr_text().contains("TLS reload failed"));
}

#[test]
fn client_certificates_are_required_when_a_client_ca_is_set() {
    let pki = Pki::new("mtls");
    let client_ca = format!("tls.client_ca_file={}", pki.path("ca.pem"));
    let broker = pki.broker_with(&["--set", &client_ca]);
    // A client certificate the CA signed.
    let client_key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["client".to_owned()]).unwrap();
    let client_cert = params.signed_by(&client_key, &pki.ca, &pki.ca_key).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let with_cert = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![client_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(client_key.serialize_der()).unwrap(),
        )
        .unwrap();
    let connect = |config: Arc<ClientConfig>| {
        let tcp = TcpStream::connect(broker.tls_addr()).unwrap();
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        StreamOwned::new(ClientConnection::new(config, name).unwrap(), tcp)
    };
    let health = https_request(
        &mut connect(Arc::new(with_cert)),
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // Without one, the broker ends the handshake: no HTTP answer comes.
    let mut without = connect(pki.client_config());
    let refused = without
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .and_then(|()| {
            let mut answer = Vec::new();
            without.read_to_end(&mut answer).map(|_| answer)
        });
    // An error is the alert the broker sent, as rustls reports it.
    if let Ok(answer) = refused {
        assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    }
}

#[test]
fn tls_connections_are_counted_as_wss_and_tls() {
    let pki = Pki::new("labels");
    let broker = pki.broker();
    let (mut wss, _) = tungstenite::client("wss://localhost/ws", pki.connect(&broker)).unwrap();
    wss.send(tungstenite::Message::text(r#"{"op":"sub","topic":"M"}"#))
        .unwrap();
    wss.read().unwrap();
    let health = https_request(
        &mut pki.connect(&broker),
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // Workers publish their counts about once a second.
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        let metrics = scrape_metrics(&broker);
        let wss_up = metric_sum(&metrics, "tickfan_handshakes_total{transport=\"wss\"") >= 1.0;
        let tls_up = metric_sum(&metrics, "tickfan_handshakes_total{transport=\"tls\"") >= 1.0;
        let open = metrics.lines().any(|l| {
            l.starts_with("tickfan_connections{")
                && l.contains("transport=\"wss\"")
                && !l.ends_with(" 0")
        });
        if wss_up && tls_up && open {
            assert_eq!(
                metric_sum(&metrics, "tickfan_handshakes_total{transport=\"websocket\""),
                0.0,
                "{metrics}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn python_websockets_verifies_the_ca_and_streams_over_wss() {
    let Some(python) = clients_python() else {
        eprintln!("skipped: no .venv/clients (scripts/install-test-deps.sh makes it)");
        return;
    };
    let pki = Pki::new("python");
    let broker = pki.broker();
    let script = r#"
import asyncio, json, ssl, sys
import websockets

async def main(port, ca):
    context = ssl.create_default_context(cafile=ca)
    async with websockets.connect(f"wss://localhost:{port}/ws", ssl=context) as ws:
        await ws.send(json.dumps({"op": "sub", "topic": "PY"}))
        print(json.loads(await ws.recv())["event"], flush=True)
        for _ in range(20):
            tick = json.loads(await ws.recv())
            print(tick["seq"], tick["data"]["i"], flush=True)

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"#;
    let client = ClientRun::start(Command::new(&python).args([
        "-c",
        script,
        &broker.tls_addr().port().to_string(),
        &pki.path("ca.pem"),
    ]));
    assert_eq!(
        client.first_line.trim(),
        "subscribed",
        "{}",
        client.first_line
    );
    let mut publisher = broker.pubsub();
    for i in 1..=20 {
        publisher.publish("PY", &format!("{{\"i\":{i}}}"));
    }
    let rest = client.finish();
    let expected: String = (1..=20).map(|i| format!("{i} {i}\n")).collect();
    assert_eq!(rest, expected);
}

#[test]
fn python_websockets_refuses_a_certificate_it_cannot_verify() {
    let Some(python) = clients_python() else {
        eprintln!("skipped: no .venv/clients (scripts/install-test-deps.sh makes it)");
        return;
    };
    let pki = Pki::new("python-refuse");
    let broker = pki.broker();
    let script = r#"
import asyncio, ssl, sys
import websockets

async def main(port):
    try:
        async with websockets.connect(f"wss://localhost:{port}/ws", ssl=ssl.create_default_context()):
            print("connected")
    except ssl.SSLCertVerificationError:
        print("refused")

asyncio.run(main(int(sys.argv[1])))
"#;
    let output = Command::new(&python)
        .args(["-c", script, &broker.tls_addr().port().to_string()])
        .output()
        .expect("run the Python client");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "refused");
}

#[test]
fn with_the_plain_listener_off_only_the_tls_listener_serves() {
    let pki = Pki::new("tls-only");
    let broker = pki.broker_with(&["--listen", ""]);
    assert_eq!(broker.plain_addr(), None);
    let tls_port = broker.tls_addr().port();
    // One listening socket per worker (SO_REUSEPORT), all on the TLS port.
    assert_eq!(
        listening_ports(broker.pid()),
        vec![tls_port, tls_port],
        "the broker listens on more than its TLS port"
    );
    let (mut wss, _) = tungstenite::client("wss://localhost/ws", pki.connect(&broker)).unwrap();
    wss.send(tungstenite::Message::text(r#"{"op":"sub","topic":"T"}"#))
        .unwrap();
    let subscribed = wss.read().unwrap().into_text().unwrap();
    assert!(
        subscribed.contains(r#""event":"subscribed""#),
        "{subscribed}"
    );
    let log = broker.stderr_text();
    assert!(
        log.contains("listen=off") && log.contains(&format!("tls=127.0.0.1:{tls_port}")),
        "{log}"
    );
}

#[test]
fn a_broker_with_neither_listener_does_not_start() {
    let stderr = start_error(&["--listen", ""]);
    assert!(
        stderr.contains("server.listen") && stderr.contains("tls.listen"),
        "{stderr}"
    );
}

#[test]
fn both_listeners_serve_side_by_side() {
    let pki = Pki::new("both");
    let broker = pki.broker();
    let (plain, tls) = (broker.addr().port(), broker.tls_addr().port());
    let mut expected = vec![plain, plain, tls, tls];
    expected.sort_unstable();
    assert_eq!(listening_ports(broker.pid()), expected);
}

#[test]
fn tls_1_2_and_1_3_clients_are_served_and_alpn_agrees_http_1_1() {
    let pki = Pki::new("versions");
    let broker = pki.broker();
    for (version, name) in [
        (&rustls::version::TLS12, "TLS 1.2"),
        (&rustls::version::TLS13, "TLS 1.3"),
    ] {
        let config = pki.client_config_with(&[version], &[b"h2", b"http/1.1"]);
        let tcp = TcpStream::connect(broker.tls_addr()).unwrap();
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let name_ = ServerName::try_from("localhost").unwrap();
        let mut stream = StreamOwned::new(ClientConnection::new(config, name_).unwrap(), tcp);
        let answer = https_request(
            &mut stream,
            "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{name}: {answer}");
        assert_eq!(
            stream.conn.protocol_version(),
            Some(version.version),
            "{name}"
        );
        assert_eq!(
            stream.conn.alpn_protocol(),
            Some(&b"http/1.1"[..]),
            "{name}"
        );
    }
}
