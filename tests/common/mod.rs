//! Shared integration-test support: runs the real `tickfan` binary on an
//! ephemeral port and talks to it as a client would.
//!
//! Every test starts its own [`Broker`], so tests share no state and may run
//! in parallel. The broker is told `--listen 127.0.0.1:0`; the port it got is
//! read from its "tickfan listening" log line. Normal traffic goes through
//! tungstenite ([`Broker::connect_ws`]); malformed input goes over a raw
//! [`TcpStream`] upgraded by hand ([`Broker::raw_handshake`]) and the
//! server's replies are read back with [`read_server_frame`].
//!
//! Nothing here sleeps to synchronise: every read has a timeout, and every
//! wait has a deadline after which the test fails with what it saw.

// Each test file uses a different part of this module.
#![allow(dead_code)]

pub mod prometheus;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Response;
use tungstenite::http::HeaderValue;
use tungstenite::WebSocket;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tickfan");

/// How long any single read, startup or exit may take before the test fails.
/// Generous: the suite must pass on a loaded two-core machine.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The echo route every broker here serves unless told otherwise.
pub const ECHO: &str = "/echo";

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

/// A running `tickfan` process, killed on drop if it has not exited.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    addr: SocketAddr,
    /// Every stderr line so far; a thread keeps appending until EOF.
    stderr: Arc<Mutex<Vec<String>>>,
    exit: Option<ExitStatus>,
}

impl Broker {
    /// Starts the binary with `--listen 127.0.0.1:0` and `extra` flags, plus
    /// `--echo-path /echo` and `--workers 2` unless `extra` sets them, and
    /// waits for its listening line.
    pub fn start(extra: &[&str]) -> Broker {
        Broker::spawn(Command::new(BIN), extra)
    }

    /// Starts the binary as [`Broker::start`] does, with its open-files
    /// limit (soft and hard) set to `limit` first, so accepts run out of
    /// descriptors after a few connections.
    pub fn start_with_open_files(limit: u32, extra: &[&str]) -> Broker {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
            BIN,
        ]);
        Broker::spawn(command, extra)
    }

    /// Starts the binary as [`Broker::start`] does, with `env` added to
    /// its environment.
    pub fn start_with_env(env: &[(&str, &str)], extra: &[&str]) -> Broker {
        let mut command = Command::new(BIN);
        command.envs(env.iter().copied());
        Broker::spawn(command, extra)
    }

    fn spawn(mut command: Command, extra: &[&str]) -> Broker {
        let mut args: Vec<&str> = vec!["--listen", "127.0.0.1:0"];
        if !extra.contains(&"--echo-path") {
            args.extend(["--echo-path", ECHO]);
        }
        if !extra.contains(&"--workers") {
            args.extend(["--workers", "2"]);
        }
        args.extend_from_slice(extra);

        let mut child = command
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tickfan");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        {
            let lines = Arc::clone(&lines);
            // Drains stderr for the whole life of the child, so it never
            // blocks on a full pipe, and reports the port once it is known.
            std::thread::spawn(move || {
                let mut ready_tx = Some(ready_tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = listening_addr(&line) {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(addr);
                        }
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let mut broker = Broker {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr: lines,
            exit: None,
        };
        match ready_rx.recv_timeout(IO_TIMEOUT) {
            Ok(addr) => broker.addr = addr,
            Err(e) => panic!(
                "tickfan {args:?} did not report its address ({e}); stderr:\n{}",
                broker.stderr_text()
            ),
        }
        broker
    }

    /// The address the broker listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id of the broker.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Everything the broker wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// A TCP connection to the broker with read and write timeouts set.
    pub fn tcp(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect to tickfan");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

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

    /// Sends SIGTERM to the broker process (and to nothing else).
    pub fn send_sigterm(&self) {
        signal(self.child.id(), libc::SIGTERM).expect("kill(SIGTERM)");
    }

    /// Sends SIGINT to the broker process (and to nothing else).
    pub fn send_sigint(&self) {
        signal(self.child.id(), libc::SIGINT).expect("kill(SIGINT)");
    }

    /// Waits up to `timeout` for the broker to exit and returns its status;
    /// fails the test if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "tickfan still running {timeout:?} later; stderr:\n{}",
                    self.stderr_text()
                );
            }
            // Polling an exit status: the wait is bounded by the deadline above.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            // Child::kill signals exactly the process this Broker spawned.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `sig` to the process `pid`, one this test suite spawned and has
/// not reaped yet (so the pid cannot name a reused process).
fn signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).map_err(io::Error::other)?);
    let sig = nix::sys::signal::Signal::try_from(sig).map_err(io::Error::other)?;
    nix::sys::signal::kill(pid, sig).map_err(io::Error::other)
}

/// The address in a `tickfan listening listen=ADDR ...` log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("tickfan listening").nth(1)?;
    let value = rest.split("listen=").nth(1)?;
    value.split_whitespace().next()?.parse().ok()
}

/// Runs the binary with `args` to completion (at most [`IO_TIMEOUT`]) and
/// returns what it printed.
pub fn run_cli(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tickfan");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(IO_TIMEOUT) {
        Ok(output) => output.expect("wait for tickfan"),
        Err(_) => {
            // Not reaped yet (wait_with_output has not returned), so the pid is still ours.
            let _ = signal(pid, libc::SIGKILL);
            panic!("tickfan {args:?} did not exit within {IO_TIMEOUT:?}");
        }
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

/// Reads an HTTP response head byte by byte up to and including the blank
/// line, so that no byte after it is taken from the stream.
pub fn read_response_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => panic!(
                "connection closed inside a response head: {:?}",
                String::from_utf8_lossy(&head)
            ),
            Ok(_) => head.push(byte[0]),
            Err(e) => panic!(
                "reading a response head failed ({e}); got {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
        assert!(head.len() < 64 * 1024, "response head too long");
    }
    String::from_utf8(head).expect("response head is UTF-8")
}

/// An HTTP response as read off the wire.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// (lower-cased name, value) in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a response head as read by [`read_response_head`].
fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(
        parts.next(),
        Some("HTTP/1.1"),
        "status line {status_line:?}"
    );
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {l:?}"));
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    (status, headers)
}

/// Reads one whole HTTP response (head and `Content-Length` body).
pub fn read_http_response(stream: &mut TcpStream) -> HttpResponse {
    let head = read_response_head(stream);
    let mut response = response_with_head(&head);
    read_sized_body(stream, &mut response).expect("read response body");
    response
}

/// A response with the status and headers of `head` and no body yet.
pub fn response_with_head(head: &str) -> HttpResponse {
    let (status, headers) = parse_head(head);
    HttpResponse {
        status,
        headers,
        body: Vec::new(),
    }
}

/// Reads `response`'s body when its head gives a `Content-Length`; false
/// (nothing read) when it does not.
pub fn read_sized_body(reader: &mut impl Read, response: &mut HttpResponse) -> io::Result<bool> {
    let Some(len) = response.header("content-length") else {
        return Ok(false);
    };
    let len: usize = len.parse().map_err(io::Error::other)?;
    response.body = vec![0; len];
    reader.read_exact(&mut response.body)?;
    Ok(true)
}

/// Sends `request` on a fresh connection and reads the one response.
pub fn http_exchange(broker: &Broker, request: &str) -> (HttpResponse, TcpStream) {
    let mut stream = broker.tcp();
    stream.write_all(request.as_bytes()).unwrap();
    let response = read_http_response(&mut stream);
    (response, stream)
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
    let mut head = [0u8; 2];
    stream.read_exact(&mut head)?;
    assert_eq!(head[0] & 0x80, 0x80, "server frame without FIN: {head:?}");
    assert_eq!(head[0] & 0x70, 0, "server frame with RSV bits: {head:?}");
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
    Ok((head[0] & 0x0F, payload))
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

/// Reads until the server ends the TCP stream (EOF or reset), failing if
/// any more bytes arrive or nothing happens within the read timeout.
pub fn expect_eof(stream: &mut TcpStream) {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("expected EOF, got {:?}", &buf[..n]),
        Err(e) => panic!("expected EOF, got error {e}"),
    }
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

// ---------------------------------------------------------------------------
// Pub/sub clients (the `tickfan.v1` protocol at `/ws`).
//
// [`PsClient`] speaks the protocol over a raw socket with its own read buffer,
// so that tests which read millions of ticks in a debug build spend their time
// in the broker, not in the client: a frame is parsed in place, and a tick's
// `seq` and `data` are found without building a JSON tree ([`parse_tick`]).
// ---------------------------------------------------------------------------

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

/// The resident set size of process `pid`, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
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

    /// A TCP connection whose receive buffer was set to `bytes` before it
    /// connected, so that it can hold little that the broker sends (a client
    /// that stops reading then backs up into the broker's queue at once,
    /// instead of into megabytes of kernel buffers).
    pub fn tcp_small_rcvbuf(&self, bytes: usize) -> TcpStream {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        socket
            .connect(&self.addr.into())
            .expect("connect to tickfan");
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
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

/// Joins every thread, re-raising the first panic (after all have ended, so
/// no thread outlives the test's broker).
pub fn join_all<T>(handles: Vec<std::thread::JoinHandle<T>>) -> Vec<T> {
    let results: Vec<std::thread::Result<T>> = handles.into_iter().map(|h| h.join()).collect();
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect()
}

/// Reads a response head only (status and headers, empty body), leaving
/// whatever follows it (a close-delimited stream such as SSE) unread.
pub fn read_head_only(stream: &mut TcpStream) -> HttpResponse {
    let head = read_response_head(stream);
    let (status, headers) = parse_head(&head);
    HttpResponse {
        status,
        headers,
        body: Vec::new(),
    }
}

/// `GET {target}` with the headers of a plain HTTP/1.1 client (keep-alive).
pub fn get_request(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
}

/// `POST {target}` with `body` and any `extra_headers` (each ending in CRLF).
pub fn post_request(target: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra_headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Sends `GET {target}` on a kept-alive `stream` and reads the response.
pub fn http_get(stream: &mut TcpStream, target: &str) -> HttpResponse {
    stream.write_all(get_request(target).as_bytes()).unwrap();
    read_http_response(stream)
}

/// Sends `POST {target}` on a kept-alive `stream` and reads the response.
pub fn http_post(
    stream: &mut TcpStream,
    target: &str,
    extra_headers: &str,
    body: &[u8],
) -> HttpResponse {
    stream
        .write_all(&post_request(target, extra_headers, body))
        .unwrap();
    read_http_response(stream)
}

impl HttpResponse {
    /// The body as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("response body is UTF-8")
    }

    /// The body parsed as JSON; fails the test with the body otherwise.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body of {} is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The number of file descriptors process `pid` has open (the entries of
/// `/proc/PID/fd`): the listener, the workers' polls, and one per connection.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc fd directory")
        .count()
}

/// Polls [`fd_count`] until `ok` accepts it or `timeout` passes; returns
/// the last count seen and whether `ok` accepted it.
pub fn wait_for_fd_count(pid: u32, timeout: Duration, ok: impl Fn(usize) -> bool) -> (usize, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let count = fd_count(pid);
        if ok(count) {
            return (count, true);
        }
        if Instant::now() >= deadline {
            return (count, false);
        }
        // Polling a count the broker changes on its own time; bounded above.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sum over all label sets of the series `name` (optionally narrowed
/// to lines starting with `name{labels`) in Prometheus text: a gauge or
/// counter summed over workers or policies.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ', ',', '}']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `GET /metrics` on a fresh connection, as text.
pub fn scrape_metrics(broker: &Broker) -> String {
    let (response, _) = http_exchange(
        broker,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    response.text()
}
