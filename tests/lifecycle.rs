//! The life of the process and of its connections: graceful shutdown on
//! SIGTERM/SIGINT, keep-alive pings and the idle timeout, the handshake
//! timeout, the connection limit, and the command line (the ready file
//! included).
//!
//! Timers are configured short and asserted only with generous bounds
//! ("within a few seconds"); lower bounds are checked only where the server
//! cannot possibly act earlier.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// Generous bound for anything that should happen "promptly".
const PROMPTLY: Duration = Duration::from_secs(10);

/// Reads a tungstenite client until the server's close arrives, answers it,
/// and reads on until the server ends the stream; returns the close frame.
fn read_until_closed(ws: &mut WebSocket<TcpStream>) -> (CloseCode, String) {
    let mut close = None;
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                close = Some((frame.code, frame.reason.into_owned()));
            }
            Ok(Message::Close(None)) => panic!("close frame without a code"),
            Ok(other) => panic!("unexpected message before close: {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading until close failed: {e:?}"),
        }
    }
    close.expect("server closed without a close frame")
}

/// Reads everything until EOF; a reset counts as the end too.
fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    match stream.read_to_end(&mut bytes) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected the server to close, got {e} after {bytes:?}"),
    }
    bytes
}

fn echo_round_trip(ws: &mut WebSocket<TcpStream>, text: &str) {
    ws.send(Message::text(text)).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(text));
}

// ------------------------------------------------------------ shutdown

#[test]
fn sigterm_closes_every_client_with_1001_and_exits_zero() {
    let mut broker = Broker::start(&[]);
    let mut a = broker.connect_ws(ECHO);
    let mut b = broker.connect_ws_with(ECHO, Some("tickfan.v1")).0;
    echo_round_trip(&mut a, "a");
    echo_round_trip(&mut b, "b");
    broker.send_sigterm();
    for ws in [&mut a, &mut b] {
        let (code, reason) = read_until_closed(ws);
        assert_eq!(code, CloseCode::Away);
        assert_eq!(reason, "server shutting down");
    }
    let status = broker.wait_exit(PROMPTLY);
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        broker.stderr_text().contains("stopped"),
        "{}",
        broker.stderr_text()
    );
}

#[test]
fn sigint_shuts_down_like_sigterm() {
    let mut broker = Broker::start(&[]);
    let mut ws = broker.connect_ws(ECHO);
    echo_round_trip(&mut ws, "x");
    broker.send_sigint();
    assert_eq!(read_until_closed(&mut ws).0, CloseCode::Away);
    assert_eq!(broker.wait_exit(PROMPTLY).code(), Some(0));
}

#[test]
fn sigterm_with_no_clients_exits_zero_and_stops_listening() {
    let mut broker = Broker::start(&[]);
    let addr = broker.addr();
    broker.send_sigterm();
    assert_eq!(broker.wait_exit(PROMPTLY).code(), Some(0));
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after exit"
    );
}

#[test]
fn shutdown_does_not_wait_forever_for_a_client_that_never_answers() {
    let mut broker = Broker::start(&["--shutdown-grace-ms", "1000", "--close-timeout-ms", "5000"]);
    // A raw client that reads the close but never replies nor closes TCP.
    let mut silent = broker.raw_handshake(ECHO);
    let mut polite = broker.connect_ws(ECHO);
    echo_round_trip(&mut polite, "still here");
    broker.send_sigterm();
    let (code, reason) = read_close(&mut silent);
    assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    assert_eq!(read_until_closed(&mut polite).0, CloseCode::Away);
    // The grace period ends the process although `silent` still holds its socket.
    assert_eq!(broker.wait_exit(PROMPTLY).code(), Some(0));
    assert!(read_to_eof(&mut silent).is_empty());
}

#[test]
fn idle_http_connection_does_not_delay_shutdown() {
    let mut broker = Broker::start(&[]);
    let mut idle = broker.tcp();
    // Make sure the connection has been accepted and served once.
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_http_response(&mut idle).status, 200);
    broker.send_sigterm();
    assert!(read_to_eof(&mut idle).is_empty());
    assert_eq!(broker.wait_exit(PROMPTLY).code(), Some(0));
}

// ------------------------------------------------------------ keep-alive and idle

#[test]
fn quiet_client_is_pinged_then_closed_with_1001_after_the_idle_timeout() {
    let broker = Broker::start(&["--ping-interval-ms", "200", "--idle-timeout-ms", "600"]);
    // The server's clock for this connection starts after this instant.
    let start = Instant::now();
    let mut stream = broker.raw_handshake(ECHO);
    assert_eq!(read_server_frame(&mut stream), (OP_PING, Vec::new()));
    // Never answer: the next frame is the idle close.
    let (code, reason) = read_close(&mut stream);
    let elapsed = start.elapsed();
    assert_eq!((code, reason.as_str()), (1001, "idle timeout"));
    assert!(
        elapsed >= Duration::from_millis(550),
        "closed before the idle timeout: {elapsed:?}"
    );
    assert!(elapsed < PROMPTLY, "idle close took {elapsed:?}");
    // After the close frame the server ends the stream.
    stream.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_eof(&mut stream).is_empty());
}

#[test]
fn client_that_answers_pings_stays_connected() {
    // A long idle timeout leaves a loaded machine seconds to answer each ping.
    let broker = Broker::start(&["--ping-interval-ms", "100", "--idle-timeout-ms", "5000"]);
    let mut stream = broker.raw_handshake(ECHO);
    // Answer three pings; each answer restarts the quiet period.
    for round in 0..3 {
        let (opcode, payload) = read_server_frame(&mut stream);
        assert_eq!(opcode, OP_PING, "round {round}");
        stream
            .write_all(&client_frame(true, OP_PONG, &payload))
            .unwrap();
    }
    stream
        .write_all(&client_frame(true, OP_TEXT, b"alive"))
        .unwrap();
    // Pings may still arrive before the echo; skip them.
    loop {
        match read_server_frame(&mut stream) {
            (OP_PING, _) => continue,
            frame => {
                assert_eq!(frame, (OP_TEXT, b"alive".to_vec()));
                break;
            }
        }
    }
}

#[test]
fn tungstenite_client_reading_keeps_the_connection_alive() {
    // tungstenite answers pings by itself while the test waits for an echo.
    let broker = Broker::start(&["--ping-interval-ms", "100", "--idle-timeout-ms", "5000"]);
    let mut ws = broker.connect_ws(ECHO);
    let mut raw = broker.raw_handshake(ECHO);
    // Let several ping intervals pass, measured by the raw client's pings.
    for _ in 0..3 {
        assert_eq!(read_server_frame(&mut raw).0, OP_PING);
        raw.write_all(&client_frame(true, OP_PONG, b"")).unwrap();
    }
    ws.send(Message::text("still open")).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Ping(_) | Message::Pong(_) => continue,
            message => {
                assert_eq!(message, Message::text("still open"));
                break;
            }
        }
    }
}

// ------------------------------------------------------------ handshake timeout

#[test]
fn half_a_request_is_cut_off_after_the_handshake_timeout() {
    let broker = Broker::start(&["--handshake-timeout-ms", "300"]);
    let start = Instant::now();
    let mut stream = broker.tcp();
    stream
        .write_all(format!("GET {ECHO} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr").as_bytes())
        .unwrap();
    let answer = read_to_eof(&mut stream);
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 408 "),
        "unexpected answer {text:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(250),
        "cut off early: {elapsed:?}"
    );
    assert!(elapsed < PROMPTLY, "took {elapsed:?}");
}

#[test]
fn silent_connection_is_cut_off_after_the_handshake_timeout() {
    let broker = Broker::start(&["--handshake-timeout-ms", "300"]);
    let mut stream = broker.tcp();
    let answer = read_to_eof(&mut stream);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 408 "),
        "unexpected answer {text:?}"
    );
}

#[test]
fn handshake_timeout_does_not_touch_upgraded_connections() {
    let broker = Broker::start(&["--handshake-timeout-ms", "200"]);
    let mut ws = broker.connect_ws(ECHO);
    // Wait out the handshake timeout on a connection that never completes one.
    let mut slow = broker.tcp();
    assert!(read_to_eof(&mut slow).len() < 1024);
    echo_round_trip(&mut ws, "after the handshake deadline");
}

// ------------------------------------------------------------ connection limit

#[test]
fn connection_over_the_limit_gets_503_and_the_others_keep_working() {
    let broker = Broker::start(&["--max-connections", "2"]);
    let mut first = broker.connect_ws(ECHO);
    let mut second = broker.connect_ws(ECHO);
    echo_round_trip(&mut first, "one");
    echo_round_trip(&mut second, "two");

    let mut third = broker.tcp();
    third
        .write_all(upgrade_request(ECHO, SAMPLE_KEY).as_bytes())
        .unwrap();
    let response = read_http_response(&mut third);
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(read_to_eof(&mut third).is_empty());

    // Plain HTTP over the limit is refused the same way.
    let (response, _stream) = http_exchange(&broker, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.status, 503, "{response:?}");

    echo_round_trip(&mut first, "one again");
    echo_round_trip(&mut second, "two again");
}

#[test]
fn a_closed_connection_frees_its_slot() {
    let broker = Broker::start(&["--max-connections", "1"]);
    let mut only = broker.connect_ws(ECHO);
    echo_round_trip(&mut only, "one");
    only.close(None).unwrap();
    // Completing the close handshake means the server has dropped the socket.
    loop {
        match only.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    let mut next = broker.connect_ws(ECHO);
    echo_round_trip(&mut next, "the slot was freed");
}

// ------------------------------------------------------------ command line

#[test]
fn help_lists_the_config_flags() {
    let output = run_cli(&["--help"]);
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--echo-path",
        "--max-frame-bytes",
        "--max-message-bytes",
        "--idle-timeout-ms",
        "--set",
        "--config",
        "--print-default-config",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(help.contains("websocket.max_frame_bytes"), "{help}");
}

#[test]
fn unknown_config_key_exits_nonzero_naming_the_key() {
    let output = run_cli(&["--listen", "127.0.0.1:0", "--set", "websocket.nope=1"]);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("websocket.nope"), "{stderr}");
    assert!(
        !stderr.contains("tickfan listening"),
        "started anyway: {stderr}"
    );
}

#[test]
fn invalid_flag_value_exits_nonzero_naming_the_key() {
    let output = run_cli(&["--listen", "127.0.0.1:0", "--max-frame-bytes", "lots"]);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("websocket.max_frame_bytes"), "{stderr}");

    let output = run_cli(&[
        "--listen",
        "127.0.0.1:0",
        "--ping-interval-ms",
        "1000",
        "--idle-timeout-ms",
        "500",
    ]);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("websocket.idle_timeout_ms"), "{stderr}");
}

#[test]
fn print_default_config_prints_parseable_toml() {
    let output = run_cli(&["--print-default-config"]);
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("[websocket]"), "{text}");
    assert!(text.contains("[server]"), "{text}");
    let table: toml::Table = text.parse().expect("default config is TOML");
    assert_eq!(
        table["websocket"]["max_frame_bytes"].as_integer(),
        Some(1_048_576)
    );
}

#[test]
fn config_file_is_applied_under_the_flags() {
    let path =
        std::env::temp_dir().join(format!("tickfan-itest-{}-config.toml", std::process::id()));
    std::fs::write(
        &path,
        "[websocket]\necho_path = \"/from-file\"\nmax_frame_bytes = 200\n",
    )
    .unwrap();
    // Broker::start adds --echo-path /echo, which overrides the file's path.
    let broker = Broker::start(&["--config", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    let (response, _stream) = http_exchange(&broker, &upgrade_request("/from-file", SAMPLE_KEY));
    assert_eq!(response.status, 404, "the flag did not win: {response:?}");
    // The file's frame limit applies.
    let mut stream = broker.raw_handshake(ECHO);
    stream
        .write_all(&client_frame(true, OP_BINARY, &[1u8; 200]))
        .unwrap();
    assert_eq!(read_server_frame(&mut stream), (OP_BINARY, vec![1u8; 200]));
    expect_failure(&broker, &client_frame(true, OP_BINARY, &[1u8; 201]), 1009);
}

#[test]
fn address_in_use_exits_nonzero() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run_cli(&["--listen", &addr, "--echo-path", ECHO]);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot start"), "{stderr}");
}

/// `--ready-file` (with which the harness starts every broker, and learns
/// its port) holds the real bound address and a newline once the broker
/// listens, renamed into place whole: the address the log line names, and
/// one that serves.
#[test]
fn ready_file_holds_the_bound_address() {
    let broker = Broker::start(&[]);
    let addr = broker.addr();
    assert_eq!(addr.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_ne!(addr.port(), 0, "the bound port, not the configured 0");
    let text = std::fs::read_to_string(broker.ready_file()).expect("read the ready file");
    assert_eq!(text, format!("{addr}\n"));
    let mut tmp = broker.ready_file().as_os_str().to_owned();
    tmp.push(".tmp");
    assert!(
        !std::path::Path::new(&tmp).exists(),
        "{tmp:?} left beside the ready file"
    );

    // The log line went out before the file; the stderr thread reads it on its own time.
    let deadline = Instant::now() + PROMPTLY;
    while !broker.stderr_text().contains("tickfan listening") {
        assert!(Instant::now() < deadline, "no listening line");
        // Polling a log the broker already wrote; bounded by the deadline.
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = broker.stderr_text();
    assert!(log.contains(&format!("listen={addr} ")), "{log}");

    let (response, _) = http_exchange(&broker, &get_request("/healthz"));
    assert_eq!((response.status, response.text().as_str()), (200, "ok\n"));
}

#[test]
fn unwritable_ready_file_exits_nonzero_naming_it() {
    let output = run_cli(&[
        "--listen",
        "127.0.0.1:0",
        "--ready-file",
        "/nonexistent/tickfan.ready",
    ]);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot write the ready file"), "{stderr}");
    assert!(stderr.contains("/nonexistent/tickfan.ready"), "{stderr}");
}

/// Regression: with the reader of its stderr gone (a supervisor or test
/// harness that died), the log line about the signal failed, tracing
/// reported that failure with `eprintln!`, which panicked on the same
/// closed stderr, and the thread that should have stopped the broker died
/// with it: SIGTERM was ignored.
#[test]
fn sigterm_stops_the_broker_even_when_nobody_reads_its_stderr() {
    let ready =
        std::env::temp_dir().join(format!("tickfan-lifecycle-{}.ready", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let mut child = std::process::Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tickfan");
    let deadline = Instant::now() + PROMPTLY;
    while !ready.exists() {
        assert!(Instant::now() < deadline, "tickfan never became ready");
        // Polling for a file the broker writes; bounded by the deadline.
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(child.stderr.take()); // nobody reads its stderr any more
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill(SIGTERM)");
    let deadline = Instant::now() + PROMPTLY;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("tickfan ignored SIGTERM with its stderr closed");
        }
        // Polling an exit status; bounded by the deadline.
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&ready);
    assert!(status.success(), "{status}");
}
