//! WebSocket by hand: the opening handshake (RFC 6455 §4) written and
//! checked byte for byte, masked client frames, and server frames read back
//! raw (§5.2), for the tests that send what no library would; plus the
//! tungstenite clients for well-formed traffic.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};

use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Response;
use tungstenite::http::HeaderValue;
use tungstenite::WebSocket;

use super::broker::{Broker, ECHO};
use super::http::{expect_eof, parse_head, read_response_head};

/// A client key and the accept value the server must answer it with
/// (the example of RFC 6455 §1.3).
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// WebSocket opcodes as they appear on the wire (RFC 6455 §5.2).
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

impl Broker {
    /// A tungstenite client upgraded at `path`, offering no subprotocol.
    pub fn connect_ws(&self, path: &str) -> WebSocket<TcpStream> {
        self.connect_ws_with(path, None).0
    }

    /// A tungstenite client upgraded at `path`, offering `protocol` if given;
    /// returns the server's 101 response too.
    pub fn connect_ws_with(
        &self,
        path: &str,
        protocol: Option<&str>,
    ) -> (WebSocket<TcpStream>, Response) {
        let mut request = self.ws_url(path).into_client_request().unwrap();
        if let Some(protocol) = protocol {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(protocol).unwrap(),
            );
        }
        match tungstenite::client(request, self.tcp()) {
            Ok(pair) => pair,
            Err(e) => panic!("WebSocket handshake at {path} failed: {e:?}"),
        }
    }

    /// A raw TCP connection upgraded at `path` by hand; the 101 and its
    /// `Sec-WebSocket-Accept` are checked, and nothing after the response
    /// head is consumed.
    pub fn raw_handshake(&self, path: &str) -> TcpStream {
        raw_upgrade(self.tcp(), path)
    }
}

/// A complete, valid upgrade request for `path` with `key`.
pub fn upgrade_request(path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\n\
         Host: 127.0.0.1\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Version: 13\r\n\
         \r\n"
    )
}

/// A complete upgrade request for `target` (path and query) with extra
/// header lines.
pub fn upgrade_request_with(target: &str, headers: &[(&str, &str)]) -> String {
    let mut request = upgrade_request(target, SAMPLE_KEY);
    request.truncate(request.len() - 2);
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// Upgrades `stream` at `path` by hand, as [`Broker::raw_handshake`] does.
pub fn raw_upgrade(mut stream: TcpStream, path: &str) -> TcpStream {
    stream
        .write_all(upgrade_request(path, SAMPLE_KEY).as_bytes())
        .unwrap();
    let head = read_response_head(&mut stream);
    assert_switching_protocols(&head);
    stream
}

/// Fails unless `head` is a 101 upgrade with the accept value for [`SAMPLE_KEY`].
pub fn assert_switching_protocols(head: &str) {
    let (status, headers) = parse_head(head);
    assert_eq!(status, 101, "expected 101, got:\n{head}");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        header("sec-websocket-accept"),
        Some(SAMPLE_ACCEPT),
        "{head}"
    );
    assert!(
        header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{head}"
    );
}

/// A masked client frame, as a conforming client would send it.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    use tickfan::protocol::frame::{encode_client_frame, OpCode};
    let op = match opcode {
        OP_CONTINUATION => OpCode::Continuation,
        OP_TEXT => OpCode::Text,
        OP_BINARY => OpCode::Binary,
        OP_CLOSE => OpCode::Close,
        OP_PING => OpCode::Ping,
        OP_PONG => OpCode::Pong,
        other => panic!("no OpCode for {other:#x}; build the bytes by hand"),
    };
    encode_client_frame(fin, op, [0x37, 0xfa, 0x21, 0x3d], payload)
}

/// A masked close frame carrying `code` and `reason`.
pub fn client_close(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    client_frame(true, OP_CLOSE, &payload)
}

/// Reads one server frame: (opcode, payload). Server frames must be
/// unmasked, unfragmented by this server, and free of RSV bits.
pub fn read_server_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    try_read_server_frame(stream).unwrap_or_else(|e| panic!("reading a server frame failed: {e}"))
}

/// [`read_server_frame`], returning the I/O error (EOF, timeout, reset).
pub fn try_read_server_frame(stream: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let (rsv1, opcode, payload) = read_frame_allowing_rsv1(stream)?;
    assert!(!rsv1, "server frame with RSV1 (no extension was agreed)");
    Ok((opcode, payload))
}

/// Reads one server frame on a connection that agreed permessage-deflate:
/// (RSV1, opcode, payload), the payload still compressed when RSV1 is set.
pub fn read_server_frame_rsv1(stream: &mut TcpStream) -> (bool, u8, Vec<u8>) {
    read_frame_allowing_rsv1(stream)
        .unwrap_or_else(|e| panic!("reading a server frame failed: {e}"))
}

fn read_frame_allowing_rsv1(stream: &mut TcpStream) -> io::Result<(bool, u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head)?;
    assert_eq!(head[0] & 0x80, 0x80, "server frame without FIN: {head:?}");
    assert_eq!(head[0] & 0x30, 0, "server frame with RSV2/RSV3: {head:?}");
    let rsv1 = head[0] & 0x40 != 0;
    assert_eq!(head[1] & 0x80, 0, "server frame is masked: {head:?}");
    let len = match head[1] & 0x7F {
        126 => {
            let mut ext = [0u8; 2];
            stream.read_exact(&mut ext)?;
            u16::from_be_bytes(ext) as usize
        }
        127 => {
            let mut ext = [0u8; 8];
            stream.read_exact(&mut ext)?;
            usize::try_from(u64::from_be_bytes(ext)).unwrap()
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    Ok((rsv1, head[0] & 0x0F, payload))
}

/// Reads the next server frame, which must be a close; returns its code and reason.
pub fn read_close(stream: &mut TcpStream) -> (u16, String) {
    let (opcode, payload) = read_server_frame(stream);
    assert_eq!(
        opcode,
        OP_CLOSE,
        "expected a close frame, got opcode {opcode:#x} with {:?}",
        String::from_utf8_lossy(&payload)
    );
    assert!(
        payload.len() >= 2,
        "close frame without a code: {payload:?}"
    );
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    let reason = String::from_utf8(payload[2..].to_vec()).expect("close reason is UTF-8");
    (code, reason)
}

/// Sends `frames` in one write and expects the server to fail the connection
/// with `code`: a close frame with that code, then the end of the stream once
/// we close our side.
pub fn expect_failure(broker: &Broker, frames: &[u8], code: u16) -> String {
    let mut stream = broker.raw_handshake(ECHO);
    stream.write_all(frames).unwrap();
    let (got, reason) = read_close(&mut stream);
    assert_eq!(got, code, "close reason {reason:?}");
    // Answer the close; the server then closes TCP.
    let _ = stream.write_all(&client_close(code, b""));
    let _ = stream.shutdown(Shutdown::Write);
    expect_eof(&mut stream);
    reason
}
