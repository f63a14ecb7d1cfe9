//! Pub/sub clients of the `tickfan.v1` protocol at `/ws`.
//!
//! [`PsClient`] speaks the protocol over a raw socket with its own read buffer,
//! so that tests which read millions of ticks in a debug build spend their time
//! in the broker, not in the client: a frame is parsed in place, and a tick's
//! `seq` and `data` are found without building a JSON tree ([`parse_tick`]).
//! [`ws_subscriber`] is the tungstenite subscriber of the HTTP transport tests.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use super::broker::{Broker, IO_TIMEOUT};
use super::http::{parse_head, read_response_head, HttpResponse};
use super::ws::{
    assert_switching_protocols, client_close, client_frame, upgrade_request_with, OP_CLOSE,
    OP_PING, OP_PONG, OP_TEXT,
};

/// The pub/sub route every broker here serves unless told otherwise.
pub const WS: &str = "/ws";

/// A pub/sub client on a raw, upgraded TCP connection.
#[derive(Debug)]
pub struct PsClient {
    stream: TcpStream,
    /// Bytes read but not yet handed out live in `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// A server message as [`PsClient::recv`] returns it.
#[derive(Debug, Clone)]
pub enum Msg {
    Tick(OwnedTick),
    /// Anything with an `"event"` field (subscribed, gap, error, ...).
    Event(serde_json::Value),
}

/// A tick with its text kept, for byte-for-byte checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedTick {
    pub topic: String,
    pub seq: u64,
    /// The `data` value exactly as it appears in the tick's text.
    pub data: String,
    /// The whole message.
    pub text: String,
}

impl Msg {
    /// The tick; fails the test (naming `what`) if this is an event.
    pub fn tick(self, what: &str) -> OwnedTick {
        match self {
            Msg::Tick(tick) => tick,
            Msg::Event(event) => panic!("{what}: expected a tick, got event {event}"),
        }
    }

    /// The event, which must be named `name`.
    pub fn event(self, name: &str) -> serde_json::Value {
        match self {
            Msg::Event(event) if event["event"] == name => event,
            other => panic!("expected a {name:?} event, got {other:?}"),
        }
    }

    /// The event name, if this is an event.
    pub fn event_name(&self) -> Option<&str> {
        match self {
            Msg::Event(event) => event["event"].as_str(),
            Msg::Tick(_) => None,
        }
    }
}

/// A tick seen in place: its topic, seq and `data` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickView<'a> {
    pub topic: &'a str,
    pub seq: u64,
    pub data: &'a [u8],
}

/// Parses a tick message; `None` for events and anything else.
///
/// The fast path reads the layout the broker writes
/// (`{"topic":"T","seq":N,"ts":N,"data":D}`); any other layout (fields may
/// grow) falls back to a full JSON parse, so the result never depends on it.
pub fn parse_tick(payload: &[u8]) -> Option<TickView<'_>> {
    fast_tick(payload).or_else(|| slow_tick(payload))
}

fn fast_tick(payload: &[u8]) -> Option<TickView<'_>> {
    let rest = payload.strip_prefix(b"{\"topic\":\"")?;
    let quote = rest.iter().position(|&b| b == b'"')?;
    let topic = std::str::from_utf8(&rest[..quote]).ok()?;
    let rest = rest[quote..].strip_prefix(b"\",\"seq\":")?;
    let (seq, rest) = leading_u64(rest)?;
    let rest = rest.strip_prefix(b",\"ts\":")?;
    let (_ts, rest) = leading_u64(rest)?;
    let data = rest.strip_prefix(b",\"data\":")?.strip_suffix(b"}")?;
    Some(TickView { topic, seq, data })
}

fn slow_tick(payload: &[u8]) -> Option<TickView<'_>> {
    #[derive(serde::Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        topic: &'a str,
        seq: u64,
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
        #[serde(default)]
        event: Option<serde::de::IgnoredAny>,
    }
    let wire: Wire<'_> = serde_json::from_slice(payload).ok()?;
    if wire.event.is_some() {
        return None;
    }
    // `data` borrows from `payload`: find where, so the bytes are the sender's.
    let raw = wire.data.get().as_bytes();
    let at = raw.as_ptr() as usize - payload.as_ptr() as usize;
    Some(TickView {
        topic: wire.topic,
        seq: wire.seq,
        data: &payload[at..at + raw.len()],
    })
}

/// The decimal number at the front of `bytes` and what follows it.
pub fn leading_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut value = 0u64;
    for &b in &bytes[..digits] {
        value = value * 10 + u64::from(b - b'0');
    }
    Some((value, &bytes[digits..]))
}

/// The masked text frame of `{"op":"pub","topic":topic,"data":data}`;
/// `data` must be JSON and is sent byte for byte.
pub fn pub_frame(topic: &str, data: &str) -> Vec<u8> {
    client_frame(
        true,
        OP_TEXT,
        format!(r#"{{"op":"pub","topic":"{topic}","data":{data}}}"#).as_bytes(),
    )
}

impl Broker {
    /// A pub/sub client upgraded at [`WS`] with no token.
    pub fn pubsub(&self) -> PsClient {
        self.pubsub_with(WS, &[])
    }

    /// A pub/sub client upgraded at `target` (e.g. `/ws?token=T`) with
    /// extra request headers; fails the test unless the answer is 101.
    pub fn pubsub_with(&self, target: &str, headers: &[(&str, &str)]) -> PsClient {
        match PsClient::upgrade(self.tcp(), target, headers) {
            Ok(client) => client,
            Err(response) => panic!(
                "upgrade at {target} answered {} {:?}",
                response.status,
                String::from_utf8_lossy(&response.body)
            ),
        }
    }
}

impl PsClient {
    /// Upgrades `stream` at `target`; the answer is returned if it is not 101.
    pub fn upgrade(
        mut stream: TcpStream,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<PsClient, HttpResponse> {
        stream
            .write_all(upgrade_request_with(target, headers).as_bytes())
            .unwrap();
        let head = read_response_head(&mut stream);
        let (status, response_headers) = parse_head(&head);
        if status != 101 {
            let mut response = HttpResponse {
                status,
                headers: response_headers,
                body: Vec::new(),
            };
            if let Some(len) = response.header("content-length") {
                let len: usize = len.parse().expect("numeric Content-Length");
                response.body = vec![0; len];
                stream
                    .read_exact(&mut response.body)
                    .expect("read response body");
            }
            return Err(response);
        }
        assert_switching_protocols(&head);
        Ok(PsClient {
            stream,
            buf: vec![0; 256 * 1024],
            start: 0,
            end: 0,
        })
    }

    /// The socket (for timeouts and shutdown).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    /// Writes bytes as they are (one or more client frames).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to tickfan");
    }

    /// Sends one text message.
    pub fn send_text(&mut self, text: &str) {
        self.send_raw(&client_frame(true, OP_TEXT, text.as_bytes()));
    }

    /// Publishes `data` (JSON, sent byte for byte) to `topic`.
    pub fn publish(&mut self, topic: &str, data: &str) {
        self.send_raw(&pub_frame(topic, data));
    }

    /// Subscribes to `topic` with extra fields (`""` or e.g. `,"since":4`)
    /// and returns the `subscribed` event, which must come next.
    pub fn subscribe_with(&mut self, topic: &str, extra: &str) -> serde_json::Value {
        self.send_text(&format!(r#"{{"op":"sub","topic":"{topic}"{extra}}}"#));
        let event = self.recv().event("subscribed");
        assert_eq!(event["topic"], topic, "{event}");
        event
    }

    /// Subscribes to `topic` for live ticks (and the snapshot, if any).
    pub fn subscribe(&mut self, topic: &str) -> serde_json::Value {
        self.subscribe_with(topic, "")
    }

    /// Ensures `n` unread bytes are buffered.
    fn fill(&mut self, n: usize) -> io::Result<()> {
        while self.end - self.start < n {
            if self.start + n > self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if n > self.buf.len() {
                    self.buf.resize(n, 0);
                }
            }
            let got = self.stream.read(&mut self.buf[self.end..])?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.end += got;
        }
        Ok(())
    }

    /// Reads the next frame: its opcode and where its payload lies in `buf`.
    /// Server frames must be final, unmasked and free of RSV bits.
    fn read_frame(&mut self) -> io::Result<(u8, std::ops::Range<usize>)> {
        self.fill(2)?;
        let (b0, b1) = (self.buf[self.start], self.buf[self.start + 1]);
        assert_eq!(b0 & 0x80, 0x80, "server frame without FIN");
        assert_eq!(b0 & 0x70, 0, "server frame with RSV bits");
        assert_eq!(b1 & 0x80, 0, "server frame is masked");
        let (header, len) = match b1 & 0x7F {
            126 => {
                self.fill(4)?;
                let at = self.start + 2;
                (
                    4,
                    u16::from_be_bytes([self.buf[at], self.buf[at + 1]]) as usize,
                )
            }
            127 => {
                self.fill(10)?;
                let at = self.start + 2;
                let bytes: [u8; 8] = self.buf[at..at + 8].try_into().unwrap();
                (10, usize::try_from(u64::from_be_bytes(bytes)).unwrap())
            }
            n => (2, n as usize),
        };
        self.fill(header + len)?;
        let at = self.start + header;
        self.start = at + len;
        Ok((b0 & 0x0F, at..at + len))
    }

    /// Reads the next frame: (opcode, payload), borrowed until the next call.
    pub fn try_frame(&mut self) -> io::Result<(u8, &[u8])> {
        let (opcode, range) = self.read_frame()?;
        Ok((opcode, &self.buf[range]))
    }

    /// The payload of the next text message; pings are answered on the way,
    /// and anything else (close, binary, EOF, timeout) fails the test.
    pub fn next_text(&mut self) -> &[u8] {
        match self.try_next_text() {
            Ok(range) => &self.buf[range],
            Err(e) => panic!("reading a pub/sub message failed: {e}"),
        }
    }

    /// [`Self::next_text`], returning read errors (timeout, EOF) instead of
    /// failing; a close frame is an `UnexpectedEof` error naming its code.
    fn try_next_text(&mut self) -> io::Result<std::ops::Range<usize>> {
        loop {
            let (opcode, range) = self.read_frame()?;
            match opcode {
                OP_TEXT => return Ok(range),
                OP_PING => {
                    let pong = client_frame(true, OP_PONG, &self.buf[range]);
                    self.send_raw(&pong);
                }
                OP_CLOSE => {
                    let payload = &self.buf[range];
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]));
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("server sent close {code:?} {reason:?}"),
                    ));
                }
                other => panic!(
                    "expected a text message, got opcode {other:#x}: {:?}",
                    &self.buf[range]
                ),
            }
        }
    }

    /// The next message, heartbeats included, or the read error (EOF, a
    /// close frame, a timeout) instead of failing the test: for clients
    /// that outlive the node they are connected to.
    pub fn try_recv_any(&mut self) -> io::Result<Msg> {
        let range = self.try_next_text()?;
        Ok(to_msg(&self.buf[range]))
    }

    /// The next message, heartbeats included.
    pub fn recv_any(&mut self) -> Msg {
        let payload = self.next_text();
        to_msg(payload)
    }

    /// The next message that is not a heartbeat (a heartbeat can come
    /// whenever the connection was quiet for the heartbeat interval).
    pub fn recv(&mut self) -> Msg {
        loop {
            let msg = self.recv_any();
            if msg.event_name() != Some("heartbeat") {
                return msg;
            }
        }
    }

    /// [`Self::recv`], returning `None` when nothing arrives within the
    /// read timeout; EOF and close frames still fail the test.
    pub fn recv_within(&mut self, timeout: Duration) -> Option<Msg> {
        self.set_read_timeout(timeout);
        let result = loop {
            match self.try_next_text() {
                Ok(range) => {
                    let msg = to_msg(&self.buf[range]);
                    if msg.event_name() != Some("heartbeat") {
                        break Some(msg);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break None
                }
                Err(e) => panic!("reading a pub/sub message failed: {e}"),
            }
        };
        self.set_read_timeout(IO_TIMEOUT);
        result
    }

    /// The next message, which must be an event named `name`.
    pub fn expect_event(&mut self, name: &str) -> serde_json::Value {
        self.recv().event(name)
    }

    /// The next message, which must be a tick.
    pub fn expect_tick(&mut self, what: &str) -> OwnedTick {
        self.recv().tick(what)
    }

    /// Reads until the server's close frame, skipping any messages before
    /// it, and returns its code and reason; `None` if the stream ended (EOF
    /// or reset) without one. Fails the test on a read timeout.
    pub fn read_until_close(&mut self) -> Option<(u16, String)> {
        loop {
            match self.read_frame() {
                Ok((OP_CLOSE, range)) => {
                    let payload = &self.buf[range];
                    assert!(
                        payload.len() >= 2,
                        "close frame without a code: {payload:?}"
                    );
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    let reason = String::from_utf8_lossy(&payload[2..]).into_owned();
                    return Some((code, reason));
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("waiting for a close frame failed: {e}"),
            }
        }
    }

    /// Answers a close with `code` and expects the server to end TCP.
    pub fn finish_close(mut self, code: u16) {
        assert_eq!(
            self.start,
            self.end,
            "bytes after the close: {:?}",
            &self.buf[self.start..self.end]
        );
        let _ = self.stream.write_all(&client_close(code, b""));
        let _ = self.stream.shutdown(Shutdown::Write);
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "bytes after the close: {rest:?}"),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected EOF after the close, got {e}"),
        }
    }
}

/// Classifies a text message as a tick or an event.
fn to_msg(payload: &[u8]) -> Msg {
    if let Some(tick) = parse_tick(payload) {
        return Msg::Tick(OwnedTick {
            topic: tick.topic.to_owned(),
            seq: tick.seq,
            data: String::from_utf8(tick.data.to_vec()).expect("tick data is UTF-8"),
            text: String::from_utf8(payload.to_vec()).expect("tick is UTF-8"),
        });
    }
    let value: serde_json::Value = serde_json::from_slice(payload).unwrap_or_else(|e| {
        panic!(
            "server message is not JSON ({e}): {:?}",
            String::from_utf8_lossy(payload)
        )
    });
    assert!(
        value["event"].is_string(),
        "server message is neither a tick nor an event: {value}"
    );
    Msg::Event(value)
}

/// A tungstenite client on `/ws` subscribed to `topics` (each answered with
/// `subscribed` before the next is sent).
pub fn ws_subscriber(broker: &Broker, topics: &[&str]) -> WebSocket<TcpStream> {
    let mut ws = broker.connect_ws(WS);
    for topic in topics {
        ws.send(Message::text(
            json!({"op": "sub", "topic": topic}).to_string(),
        ))
        .unwrap();
        let event: Value = serde_json::from_str(&next_ws_text(&mut ws)).unwrap();
        assert_eq!(event["event"], "subscribed", "{event}");
        assert_eq!(event["topic"], *topic, "{event}");
    }
    ws
}

/// The next text message that is not a heartbeat; pings are answered by
/// tungstenite and skipped.
pub fn next_ws_text(ws: &mut WebSocket<TcpStream>) -> String {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) if text.starts_with(r#"{"event":"heartbeat""#) => {}
            Ok(Message::Text(text)) => return text,
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(other) => panic!("unexpected WebSocket message {other:?}"),
            Err(e) => panic!("reading the WebSocket subscriber failed: {e:?}"),
        }
    }
}

/// `{"topic":"T","seq":N,"ts":..,"data":DATA}` with DATA exactly `data`.
pub fn assert_envelope(envelope: &str, topic: &str, seq: u64, data: &str) {
    let prefix = format!(r#"{{"topic":"{topic}","seq":{seq},"ts":"#);
    let suffix = format!(r#","data":{data}}}"#);
    assert!(
        envelope.starts_with(&prefix) && envelope.ends_with(&suffix),
        "expected {prefix}..{suffix}, got {envelope}"
    );
}
