//! The opening handshake and plain HTTP routes (RFC 6455 §4.2, RFC 9112):
//! what a real client gets on success, and the exact status and headers of
//! every refusal, sent over raw TCP.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;

use common::*;
use tungstenite::Message;

/// A request for `path` with the upgrade headers in `headers` (each ending in CRLF).
fn request(method: &str, path: &str, headers: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n")
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n";

/// Fails unless the server then ends the connection: nothing more, then EOF.
fn assert_closed_after(stream: &mut std::net::TcpStream) {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "bytes after the response: {rest:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

/// Sends `request`, expects `status` with `Connection: close`, then EOF.
fn refused(broker: &Broker, request: &str, status: u16) -> HttpResponse {
    let (response, mut stream) = http_exchange(broker, request);
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    assert!(
        response.header("sec-websocket-accept").is_none(),
        "{response:?}"
    );
    assert_closed_after(&mut stream);
    response
}

#[test]
fn tungstenite_upgrades_without_subprotocol() {
    let broker = Broker::start(&[]);
    let (mut ws, response) = broker.connect_ws_with(ECHO, None);
    assert_eq!(response.status(), 101);
    assert!(
        response.headers().get("sec-websocket-protocol").is_none(),
        "{response:?}"
    );
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
}

#[test]
fn tungstenite_upgrades_with_tickfan_v1() {
    let broker = Broker::start(&[]);
    let (mut ws, response) = broker.connect_ws_with(ECHO, Some("tickfan.v1"));
    assert_eq!(response.status(), 101);
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "tickfan.v1"
    );
    ws.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![1, 2, 3]));
}

#[test]
fn subprotocol_is_picked_from_a_list_and_omitted_when_not_offered() {
    let broker = Broker::start(&[]);
    let offer = |protocols: &str| {
        let mut stream = broker.tcp();
        let mut req = upgrade_request(ECHO, SAMPLE_KEY);
        req.truncate(req.len() - 2);
        req.push_str(&format!("Sec-WebSocket-Protocol: {protocols}\r\n\r\n"));
        stream.write_all(req.as_bytes()).unwrap();
        let head = read_response_head(&mut stream);
        assert_switching_protocols(&head);
        head.to_ascii_lowercase()
    };
    assert!(offer("chat, tickfan.v1").contains("\r\nsec-websocket-protocol: tickfan.v1\r\n"));
    assert!(!offer("chat, superchat").contains("sec-websocket-protocol"));
    // Subprotocol names compare case-sensitively (RFC 6455 §4.1).
    assert!(!offer("TICKFAN.V1").contains("sec-websocket-protocol"));
}

#[test]
fn raw_upgrade_answers_the_rfc_accept_key() {
    let broker = Broker::start(&[]);
    let mut stream = broker.raw_handshake(ECHO);
    stream
        .write_all(&client_frame(true, OP_TEXT, b"raw"))
        .unwrap();
    assert_eq!(read_server_frame(&mut stream), (OP_TEXT, b"raw".to_vec()));
}

#[test]
fn missing_key_is_400() {
    let broker = Broker::start(&[]);
    let req = request(
        "GET",
        ECHO,
        &format!("{UPGRADE}Sec-WebSocket-Version: 13\r\n"),
    );
    let response = refused(&broker, &req, 400);
    assert_eq!(response.body, b"missing Sec-WebSocket-Key\n");
}

#[test]
fn key_that_is_not_16_bytes_is_400() {
    let broker = Broker::start(&[]);
    // "too short" in base64: valid base64, 9 bytes.
    for key in [
        "dG9vIHNob3J0",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "!!!!!!!!!!!!!!!!!!!!!!==",
    ] {
        let req = request(
            "GET",
            ECHO,
            &format!("{UPGRADE}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"),
        );
        let response = refused(&broker, &req, 400);
        assert_eq!(
            response.body, b"Sec-WebSocket-Key must be 16 bytes in base64\n",
            "key {key}"
        );
    }
}

#[test]
fn repeated_key_is_400() {
    let broker = Broker::start(&[]);
    let req = request(
        "GET",
        ECHO,
        &format!(
            "{UPGRADE}Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\n"
        ),
    );
    refused(&broker, &req, 400);
}

#[test]
fn other_websocket_version_is_426_naming_13() {
    let broker = Broker::start(&[]);
    for version in ["8", "14", ""] {
        let req = request(
            "GET",
            ECHO,
            &format!(
                "{UPGRADE}Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\n"
            ),
        );
        let response = refused(&broker, &req, 426);
        assert_eq!(
            response.header("sec-websocket-version"),
            Some("13"),
            "version {version:?}: {response:?}"
        );
    }
    // Missing altogether is the same refusal.
    let req = request(
        "GET",
        ECHO,
        &format!("{UPGRADE}Sec-WebSocket-Key: {SAMPLE_KEY}\r\n"),
    );
    let response = refused(&broker, &req, 426);
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
}

#[test]
fn post_upgrade_is_405_allowing_get() {
    let broker = Broker::start(&[]);
    let req = request(
        "POST",
        ECHO,
        &format!(
            "{UPGRADE}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\nContent-Length: 0\r\n"
        ),
    );
    let response = refused(&broker, &req, 405);
    assert_eq!(response.header("allow"), Some("GET"));
}

#[test]
fn post_to_healthz_is_405_allowing_get_and_head() {
    let broker = Broker::start(&[]);
    let req = request("POST", "/healthz", "Content-Length: 0\r\n");
    let (response, _stream) = http_exchange(&broker, &req);
    assert_eq!(response.status, 405, "{response:?}");
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
}

#[test]
fn unknown_path_is_404_for_upgrades_and_plain_requests() {
    let broker = Broker::start(&[]);
    let mut stream = broker.tcp();
    stream
        .write_all(upgrade_request("/nope", SAMPLE_KEY).as_bytes())
        .unwrap();
    let response = read_http_response(&mut stream);
    assert_eq!(response.status, 404, "{response:?}");
    assert_eq!(response.header("connection"), Some("close"));
    assert_closed_after(&mut stream);

    let (response, _stream) = http_exchange(&broker, &request("GET", "/nope", ""));
    assert_eq!(response.status, 404, "{response:?}");
    // The echo path is a WebSocket route only.
    let (response, _stream) = http_exchange(&broker, &request("GET", ECHO, ""));
    assert_eq!(response.status, 404, "{response:?}");
}

#[test]
fn echo_path_can_be_turned_off() {
    let broker = Broker::start(&["--echo-path", ""]);
    let req = upgrade_request(ECHO, SAMPLE_KEY);
    refused(&broker, &req, 404);
}

#[test]
fn oversized_head_is_431() {
    let broker = Broker::start(&["--max-header-bytes", "2048"]);
    // A complete head just over the limit.
    let big = format!("X-Padding: {}\r\n", "a".repeat(2100));
    let req = request("GET", ECHO, &format!("{UPGRADE}{big}"));
    refused(&broker, &req, 431);
    // A head whose end never comes is refused once the limit is reached.
    let mut stream = broker.tcp();
    let partial = format!(
        "GET {ECHO} HTTP/1.1\r\nHost: x\r\nX-Padding: {}",
        "b".repeat(4000)
    );
    stream.write_all(partial.as_bytes()).unwrap();
    let response = read_http_response(&mut stream);
    assert_eq!(response.status, 431, "{response:?}");
    assert_closed_after(&mut stream);
}

#[test]
fn head_just_under_the_limit_upgrades() {
    let broker = Broker::start(&["--max-header-bytes", "2048"]);
    let base = upgrade_request(ECHO, SAMPLE_KEY);
    let pad_line = "X-Padding: \r\n".len();
    let pad = "a".repeat(2040 - base.len() - pad_line);
    let mut req = base.clone();
    req.truncate(req.len() - 2);
    req.push_str(&format!("X-Padding: {pad}\r\n\r\n"));
    assert!(req.len() < 2048, "{}", req.len());
    let mut stream = broker.tcp();
    stream.write_all(req.as_bytes()).unwrap();
    assert_switching_protocols(&read_response_head(&mut stream));
}

#[test]
fn malformed_request_line_is_400() {
    let broker = Broker::start(&[]);
    refused(&broker, "GET\x01 / HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    // HTTP/1.1 without Host.
    refused(
        &broker,
        &format!("GET {ECHO} HTTP/1.1\r\n{UPGRADE}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\n\r\n"),
        400,
    );
}

#[test]
fn request_in_single_byte_writes_still_upgrades() {
    let broker = Broker::start(&[]);
    let mut stream = broker.tcp();
    for byte in upgrade_request(ECHO, SAMPLE_KEY).as_bytes() {
        stream.write_all(std::slice::from_ref(byte)).unwrap();
        stream.flush().unwrap();
    }
    assert_switching_protocols(&read_response_head(&mut stream));
    stream
        .write_all(&client_frame(true, OP_TEXT, b"after a slow head"))
        .unwrap();
    assert_eq!(
        read_server_frame(&mut stream),
        (OP_TEXT, b"after a slow head".to_vec())
    );
}

#[test]
fn frames_in_the_same_write_as_the_request_are_echoed() {
    let broker = Broker::start(&[]);
    let mut stream = broker.tcp();
    let mut bytes = upgrade_request(ECHO, SAMPLE_KEY).into_bytes();
    bytes.extend(client_frame(true, OP_TEXT, b"pipelined"));
    bytes.extend(client_frame(true, OP_BINARY, &[0, 1, 2, 255]));
    stream.write_all(&bytes).unwrap();
    assert_switching_protocols(&read_response_head(&mut stream));
    assert_eq!(
        read_server_frame(&mut stream),
        (OP_TEXT, b"pipelined".to_vec())
    );
    assert_eq!(
        read_server_frame(&mut stream),
        (OP_BINARY, vec![0, 1, 2, 255])
    );
}

#[test]
fn healthz_is_200_ok_and_keeps_the_connection_alive() {
    let broker = Broker::start(&[]);
    let req = request("GET", "/healthz", "");
    let mut stream = broker.tcp();
    for round in 0..2 {
        stream.write_all(req.as_bytes()).unwrap();
        let response = read_http_response(&mut stream);
        assert_eq!(response.status, 200, "round {round}: {response:?}");
        assert_eq!(response.body, b"ok\n", "round {round}");
        assert_ne!(response.header("connection"), Some("close"));
    }
    // Two requests in one write get two responses in order.
    stream.write_all(format!("{req}{req}").as_bytes()).unwrap();
    for _ in 0..2 {
        assert_eq!(read_http_response(&mut stream).status, 200);
    }
}

#[test]
fn healthz_with_connection_close_is_answered_then_closed() {
    let broker = Broker::start(&[]);
    let req = request("GET", "/healthz", "Connection: close\r\n");
    let (response, mut stream) = http_exchange(&broker, &req);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert_closed_after(&mut stream);
}

/// RFC 9112 §9.6 lets a client half-close after its request; the response
/// must still be sent. Today the read of EOF drops the queued response.
#[test]
fn request_followed_by_half_close_is_still_answered() {
    let broker = Broker::start(&[]);
    for round in 0..5 {
        let mut stream = broker.tcp();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let response = read_http_response(&mut stream);
        assert_eq!(response.status, 200, "round {round}: {response:?}");
        assert_eq!(response.body, b"ok\n");
    }
}
