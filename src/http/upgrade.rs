//! The server side of the WebSocket opening handshake (RFC 6455 §4.2), as
//! far as it is HTTP: given a parsed request head, is it a WebSocket
//! upgrade, and if so, is it acceptable?
//!
//! It answers with an [`Upgrade`] (write the `101` with
//! [`Upgrade::write_response`] and hand the bytes after `head_len` to the
//! frame layer), with `None` (route the request as plain HTTP), or with a
//! [`HandshakeError`] whose [`response`](HandshakeError::response) is the
//! refusal. The WebSocket-only parts — the accept key, the `101` bytes, the
//! version and key rules — are [`crate::protocol::handshake`]'s; this module
//! applies them to an HTTP request, and does no I/O.
//!
//! The one extension tickfan knows, permessage-deflate (RFC 7692), is
//! negotiated here from the request's `Sec-WebSocket-Extensions` offers
//! ([`crate::protocol::deflate::offer`]); whether it is then used is the
//! configuration's call (`websocket.deflate`), made by the connection.

use std::fmt;

use super::request::{header_has_token, header_tokens, Request};
use super::response::Response;
use crate::protocol::deflate::offer::{negotiate, Agreement};
use crate::protocol::handshake::{
    accept_key, is_valid_key, write_switching_protocols, SUBPROTOCOL, WEBSOCKET_VERSION,
};

/// An accepted upgrade: what the `101` needs and what the router needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade<'b> {
    /// The client's `Sec-WebSocket-Key`, whitespace-trimmed, known to decode
    /// to 16 bytes.
    pub key: &'b str,
    /// The selected subprotocol, `Some(SUBPROTOCOL)` only if the client offered it.
    pub subprotocol: Option<&'static str>,
    /// The request target before `?`.
    pub path: &'b str,
    /// The request target after `?`, still percent-encoded; `""` if none.
    pub query: &'b str,
    /// The first acceptable permessage-deflate offer, if the client made one.
    pub deflate: Option<Agreement>,
}

impl Upgrade<'_> {
    /// The `Sec-WebSocket-Accept` value for this upgrade's key.
    pub fn accept_key(&self) -> String {
        accept_key(self.key)
    }

    /// Appends this upgrade's `101 Switching Protocols` response to `out`.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        write_switching_protocols(
            out,
            &self.accept_key(),
            self.subprotocol,
            self.deflate.as_ref(),
        );
    }
}

/// Why a request that asks for a WebSocket upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The method is not `GET` (405 with `Allow: GET`).
    MethodNotGet,
    /// The request is HTTP/1.0; upgrades need HTTP/1.1 or later (400).
    HttpVersion,
    /// An HTTP/1.1 request without exactly one `Host` (400).
    MissingHost,
    /// `Sec-WebSocket-Key` is present but `Upgrade` lacks the `websocket` token (400).
    UpgradeNotWebSocket,
    /// `Connection` lacks the `Upgrade` token (400).
    ConnectionNotUpgrade,
    /// `Sec-WebSocket-Version` is missing, repeated, or not `13` (426 with
    /// `Sec-WebSocket-Version: 13`).
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` is missing (400).
    MissingKey,
    /// `Sec-WebSocket-Key` appears more than once (400, RFC 6455 §11.3.1).
    DuplicateKey,
    /// `Sec-WebSocket-Key` does not base64-decode to exactly 16 bytes (400).
    InvalidKey,
}

impl HandshakeError {
    /// The HTTP status code this refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::MethodNotGet => 405,
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::HttpVersion
            | HandshakeError::MissingHost
            | HandshakeError::UpgradeNotWebSocket
            | HandshakeError::ConnectionNotUpgrade
            | HandshakeError::MissingKey
            | HandshakeError::DuplicateKey
            | HandshakeError::InvalidKey => 400,
        }
    }

    /// The complete refusal: status, the reason as a plain-text body, the
    /// headers the status requires, and `Connection: close`.
    ///
    /// The connection is closed because a client that failed to upgrade has
    /// no further use for it, and a non-GET request may carry a body that was
    /// never read.
    pub fn response(&self) -> Response {
        let response = Response::error(self.status(), &self.to_string()).close();
        match self {
            // RFC 9110 §15.5.6: a 405 "MUST generate an Allow header field".
            HandshakeError::MethodNotGet => response.allow("GET"),
            // RFC 6455 §4.2.2: if the version is not understood, the server
            // "MUST ... send back a |Sec-WebSocket-Version| header field
            // containing the version(s) the server is capable of understanding".
            HandshakeError::UnsupportedVersion => response.websocket_version(),
            _ => response,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::MethodNotGet => "WebSocket upgrade requires GET",
            HandshakeError::HttpVersion => "WebSocket upgrade requires HTTP/1.1",
            HandshakeError::MissingHost => "missing or repeated Host header",
            HandshakeError::UpgradeNotWebSocket => "Upgrade header must contain websocket",
            HandshakeError::ConnectionNotUpgrade => "Connection header must contain Upgrade",
            HandshakeError::UnsupportedVersion => "unsupported Sec-WebSocket-Version; use 13",
            HandshakeError::MissingKey => "missing Sec-WebSocket-Key",
            HandshakeError::DuplicateKey => "repeated Sec-WebSocket-Key",
            HandshakeError::InvalidKey => "Sec-WebSocket-Key must be 16 bytes in base64",
        })
    }
}

impl std::error::Error for HandshakeError {}

/// Decides whether `req` is a WebSocket upgrade and whether to accept it.
///
/// A request asks for an upgrade when some `Upgrade` header has the
/// `websocket` token (case-insensitive). Without one it is plain HTTP and
/// `Ok(None)` is returned — including `Upgrade: h2c` and other protocols,
/// which a server "MAY ignore" (RFC 9110 §7.8) — unless it also carries
/// `Sec-WebSocket-Key`, which only a broken WebSocket client sends, and which
/// is refused with [`HandshakeError::UpgradeNotWebSocket`].
///
/// An upgrade request is then checked against RFC 6455 §4.2.1 in this order:
/// `GET`, HTTP/1.1 or later, `Host`, `Connection: Upgrade`,
/// `Sec-WebSocket-Version: 13`, and one `Sec-WebSocket-Key` of 16 bytes. The
/// version is checked before the key so that a client speaking another
/// version learns which one to use (426) rather than that its key is bad.
pub fn upgrade_request<'b>(req: &Request<'b>) -> Result<Option<Upgrade<'b>>, HandshakeError> {
    let wants_websocket = req
        .headers_named("upgrade")
        .any(|v| header_has_token(v, "websocket"));
    if !wants_websocket {
        if req.header("sec-websocket-key").is_some() {
            return Err(HandshakeError::UpgradeNotWebSocket);
        }
        return Ok(None);
    }
    // RFC 6455 §4.2.1 item 1: "An HTTP/1.1 or higher GET request".
    if req.method != "GET" {
        return Err(HandshakeError::MethodNotGet);
    }
    if req.version_minor < 1 {
        return Err(HandshakeError::HttpVersion);
    }
    // Item 2: "A |Host| header field". parse_request already enforces this;
    // checked again because a Request can be built without it.
    if req.headers_named("host").count() != 1 {
        return Err(HandshakeError::MissingHost);
    }
    // Item 4: "A |Connection| header field that includes the token "Upgrade",
    // treated as an ASCII case-insensitive value."
    if !req
        .headers_named("connection")
        .any(|v| header_has_token(v, "upgrade"))
    {
        return Err(HandshakeError::ConnectionNotUpgrade);
    }
    // Item 6: "A |Sec-WebSocket-Version| header field, with a value of 13."
    let mut versions = req.headers_named("sec-websocket-version");
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.trim_ascii() == WEBSOCKET_VERSION => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    let key = websocket_key(req)?;
    Ok(Some(Upgrade {
        key,
        subprotocol: select_subprotocol(req),
        path: req.path,
        query: req.query,
        deflate: negotiate(req.headers_named("sec-websocket-extensions")),
    }))
}

/// The single `Sec-WebSocket-Key`, checked to decode to 16 bytes.
///
/// RFC 6455 §4.2.1 item 5: the key, "when decoded, is 16 bytes in length".
fn websocket_key<'b>(req: &Request<'b>) -> Result<&'b str, HandshakeError> {
    let mut keys = req.headers_named("sec-websocket-key");
    let raw = match (keys.next(), keys.next()) {
        (None, _) => return Err(HandshakeError::MissingKey),
        (Some(_), Some(_)) => return Err(HandshakeError::DuplicateKey),
        (Some(raw), None) => raw.trim_ascii(),
    };
    let key = std::str::from_utf8(raw).map_err(|_| HandshakeError::InvalidKey)?;
    if is_valid_key(key) {
        Ok(key)
    } else {
        Err(HandshakeError::InvalidKey)
    }
}

/// The prefix of a `Sec-WebSocket-Protocol` entry that carries a token,
/// offered next to [`SUBPROTOCOL`]: browsers cannot set headers on a
/// WebSocket, but they can list subprotocols. Only [`SUBPROTOCOL`] is
/// ever selected, so the token is never echoed.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "tickfan.token.";

/// The token of the first `tickfan.token.<token>` entry of the
/// `Sec-WebSocket-Protocol` headers, if any.
pub fn subprotocol_token<'b>(req: &Request<'b>) -> Option<&'b str> {
    req.headers_named("sec-websocket-protocol")
        .flat_map(header_tokens)
        .find_map(|offer| offer.strip_prefix(TOKEN_SUBPROTOCOL_PREFIX.as_bytes()))
        .and_then(|token| std::str::from_utf8(token).ok())
        .filter(|token| !token.is_empty())
}

/// [`SUBPROTOCOL`] if any `Sec-WebSocket-Protocol` header lists it.
///
/// Offers are comma lists, possibly over repeated headers (RFC 6455
/// §11.3.4), compared case-sensitively. Offers that do not include ours get
/// no protocol: the server may select none and omit the header (§4.2.2).
fn select_subprotocol(req: &Request<'_>) -> Option<&'static str> {
    req.headers_named("sec-websocket-protocol")
        .flat_map(header_tokens)
        .any(|offer| offer == SUBPROTOCOL.as_bytes())
        .then_some(SUBPROTOCOL)
}

#[cfg(test)]
// Tests index and unwrap freely: a panic there is a failed test.
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::http::request::{parse_request, Parsed};
    use crate::protocol::handshake::accept_key;

    /// RFC 6455 §1.3's example key.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn head(request_line: &str, headers: &[&str]) -> String {
        let mut s = format!("{request_line}\r\n");
        for h in headers {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s
    }

    fn decide(buf: &str) -> Result<Option<Upgrade<'_>>, HandshakeError> {
        match parse_request(buf.as_bytes(), 8192) {
            Ok(Parsed::Complete(req)) => upgrade_request(&req),
            other => panic!("not a complete request: {other:?}"),
        }
    }

    /// A valid upgrade with `replace` swapped in for the header line that
    /// starts with the same name (or added), and `remove` dropped.
    fn upgrade_with(method_line: &str, replace: &[&str], remove: &[&str]) -> String {
        let base = [
            "Host: server.example.com",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ];
        let name = |h: &str| h.split(':').next().unwrap_or("").to_ascii_lowercase();
        let mut headers: Vec<&str> = base
            .iter()
            .copied()
            .filter(|h| !remove.iter().any(|r| name(h) == name(r)))
            .filter(|h| !replace.iter().any(|r| name(h) == name(r)))
            .collect();
        headers.extend_from_slice(replace);
        head(method_line, &headers)
    }

    fn refusal(buf: &str) -> HandshakeError {
        match decide(buf) {
            Err(e) => e,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn rfc_example_accept_key() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn valid_upgrade_mixed_case() {
        let buf = upgrade_with(
            "GET /ws?topics=AAPL HTTP/1.1",
            &["Upgrade: WebSocket", "Connection: keep-alive, Upgrade"],
            &[],
        );
        let up = decide(&buf).unwrap().unwrap();
        assert_eq!(
            up,
            Upgrade {
                key: KEY,
                subprotocol: None,
                path: "/ws",
                query: "topics=AAPL",
                deflate: None,
            }
        );
        let mut out = Vec::new();
        up.write_response(&mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn plain_http_is_not_an_upgrade() {
        let buf = head("GET /health HTTP/1.1", &["Host: a"]);
        assert_eq!(decide(&buf), Ok(None));
        // Another protocol's upgrade may be ignored (RFC 9110 §7.8).
        let h2c = head(
            "GET / HTTP/1.1",
            &[
                "Host: a",
                "Connection: Upgrade, HTTP2-Settings",
                "Upgrade: h2c",
            ],
        );
        assert_eq!(decide(&h2c), Ok(None));
        // ...but not when it is plainly a broken WebSocket request.
        let broken = upgrade_with("GET / HTTP/1.1", &["Upgrade: websockets"], &[]);
        assert_eq!(refusal(&broken), HandshakeError::UpgradeNotWebSocket);
        assert_eq!(HandshakeError::UpgradeNotWebSocket.status(), 400);
    }

    #[test]
    fn refusals_and_their_statuses() {
        let cases: [(String, HandshakeError, u16); 9] = [
            (
                upgrade_with("GET / HTTP/1.1", &[], &["Sec-WebSocket-Key:"]),
                HandshakeError::MissingKey,
                400,
            ),
            (
                // 15 bytes: "AAAAAAAAAAAAAAAAAAAA" is 20 characters.
                upgrade_with(
                    "GET / HTTP/1.1",
                    &["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA"],
                    &[],
                ),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                // 24 characters, but 17 bytes.
                upgrade_with(
                    "GET / HTTP/1.1",
                    &["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA="],
                    &[],
                ),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                upgrade_with(
                    "GET / HTTP/1.1",
                    &["Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!=="],
                    &[],
                ),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                upgrade_with(
                    "GET / HTTP/1.1",
                    &[
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                        "Sec-WebSocket-Key: x",
                    ],
                    &[],
                ),
                HandshakeError::DuplicateKey,
                400,
            ),
            (
                upgrade_with("POST / HTTP/1.1", &[], &[]),
                HandshakeError::MethodNotGet,
                405,
            ),
            (
                upgrade_with("GET / HTTP/1.0", &[], &[]),
                HandshakeError::HttpVersion,
                400,
            ),
            (
                upgrade_with("GET / HTTP/1.1", &["Connection: keep-alive"], &[]),
                HandshakeError::ConnectionNotUpgrade,
                400,
            ),
            (
                upgrade_with("GET / HTTP/1.1", &[], &["Connection:"]),
                HandshakeError::ConnectionNotUpgrade,
                400,
            ),
        ];
        for (buf, error, status) in cases {
            assert_eq!(refusal(&buf), error, "{buf}");
            assert_eq!(error.status(), status);
            assert_eq!(error.response().status(), status);
            assert!(error.response().closes_connection());
        }
    }

    #[test]
    fn method_not_get_carries_allow() {
        let mut out = Vec::new();
        HandshakeError::MethodNotGet.response().write_to(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAllow: GET\r\n"), "{text}");
    }

    #[test]
    fn wrong_version_is_426_with_supported_version() {
        for headers in [
            &["Sec-WebSocket-Version: 12"][..],
            &["Sec-WebSocket-Version: 13, 8"],
            &["Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13"],
        ] {
            let buf = upgrade_with("GET / HTTP/1.1", headers, &[]);
            assert_eq!(refusal(&buf), HandshakeError::UnsupportedVersion, "{buf}");
        }
        let missing = upgrade_with("GET / HTTP/1.1", &[], &["Sec-WebSocket-Version:"]);
        assert_eq!(refusal(&missing), HandshakeError::UnsupportedVersion);
        // The version is checked before the key.
        let both = upgrade_with(
            "GET / HTTP/1.1",
            &["Sec-WebSocket-Version: 8", "Sec-WebSocket-Key: short"],
            &[],
        );
        assert_eq!(refusal(&both), HandshakeError::UnsupportedVersion);

        let mut out = Vec::new();
        HandshakeError::UnsupportedVersion
            .response()
            .write_to(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{text}");
    }

    #[test]
    fn host_is_required_for_upgrades() {
        let buf = upgrade_with("GET / HTTP/1.1", &[], &[]);
        let Ok(Parsed::Complete(mut req)) = parse_request(buf.as_bytes(), 8192) else {
            panic!("valid request did not parse");
        };
        req.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
        assert_eq!(upgrade_request(&req), Err(HandshakeError::MissingHost));
    }

    #[test]
    fn subprotocol_selection() {
        let select = |offers: &[&str]| {
            let buf = upgrade_with("GET / HTTP/1.1", offers, &[]);
            decide(&buf).unwrap().unwrap().subprotocol
        };
        assert_eq!(
            select(&["Sec-WebSocket-Protocol: tickfan.v1"]),
            Some(SUBPROTOCOL)
        );
        assert_eq!(
            select(&["Sec-WebSocket-Protocol: chat, tickfan.v1 ,mqtt"]),
            Some(SUBPROTOCOL)
        );
        assert_eq!(
            select(&[
                "Sec-WebSocket-Protocol: chat",
                "Sec-WebSocket-Protocol: tickfan.v1"
            ]),
            Some(SUBPROTOCOL)
        );
        assert_eq!(select(&[]), None);
        assert_eq!(select(&["Sec-WebSocket-Protocol: chat, mqtt"]), None);
        assert_eq!(select(&["Sec-WebSocket-Protocol: tickfan.v2"]), None);
        // Extensions never affect the subprotocol.
        assert_eq!(
            select(&["Sec-WebSocket-Extensions: permessage-deflate"]),
            None
        );
    }

    #[test]
    fn deflate_offers_over_repeated_headers() {
        let decide_deflate = |offers: &[&str]| {
            let buf = upgrade_with("GET / HTTP/1.1", offers, &[]);
            decide(&buf).unwrap().unwrap().deflate
        };
        assert_eq!(decide_deflate(&[]), None);
        assert_eq!(
            decide_deflate(&[
                "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8",
                "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10",
            ]),
            Some(Agreement {
                server_max_window_bits: Some(10)
            })
        );
        let buf = upgrade_with(
            "GET / HTTP/1.1",
            &["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"],
            &[],
        );
        let mut out = Vec::new();
        decide(&buf).unwrap().unwrap().write_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with(
                "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
                 client_no_context_takeover\r\n\r\n"
            ),
            "{text}"
        );
        assert!(!text.contains("client_max_window_bits"), "{text}");
    }

    #[test]
    fn switching_protocols_with_subprotocol() {
        let mut out = Vec::new();
        write_switching_protocols(&mut out, &accept_key(KEY), Some(SUBPROTOCOL), None);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Sec-WebSocket-Protocol: tickfan.v1\r\n\r\n"
        );
    }

    #[test]
    fn key_whitespace_is_trimmed() {
        let buf = upgrade_with(
            "GET / HTTP/1.1",
            &["Sec-WebSocket-Key:   dGhlIHNhbXBsZSBub25jZQ==  "],
            &[],
        );
        assert_eq!(decide(&buf).unwrap().unwrap().key, KEY);
    }

    /// An in-memory stream for driving tungstenite's client: it reads what
    /// the test queued in `to_client` and would block when that is empty.
    #[derive(Debug, Default)]
    struct Pipe {
        to_server: Vec<u8>,
        to_client: Vec<u8>,
    }

    impl std::io::Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.to_client.is_empty() {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.to_client.len());
            buf[..n].copy_from_slice(&self.to_client[..n]);
            self.to_client.drain(..n);
            Ok(n)
        }
    }

    impl std::io::Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.to_server.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn tungstenite_client_accepts_our_101() {
        use tungstenite::client::IntoClientRequest;

        let mut request = "ws://server.example.com/ws?topics=AAPL"
            .into_client_request()
            .unwrap();
        // No space after the comma: tungstenite 0.24 splits its own offer on
        // "," without trimming, so it would not recognise " tickfan.v1".
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "chat,tickfan.v1".parse().unwrap());
        let mut mid = match tungstenite::client(request, Pipe::default()) {
            Err(tungstenite::HandshakeError::Interrupted(mid)) => mid,
            Err(e) => panic!("client failed early: {e}"),
            Ok(_) => panic!("client finished without a response"),
        };
        let sent = mid.get_ref().get_ref().to_server.clone();
        let Ok(Parsed::Complete(req)) = parse_request(&sent, 8192) else {
            panic!("tungstenite's request did not parse");
        };
        assert_eq!(req.head_len, sent.len());
        let up = upgrade_request(&req).unwrap().unwrap();
        assert_eq!((up.path, up.query), ("/ws", "topics=AAPL"));
        assert_eq!(up.subprotocol, Some(SUBPROTOCOL));
        up.write_response(&mut mid.get_mut().get_mut().to_client);
        let (_socket, response) = mid.handshake().unwrap();
        assert_eq!(response.status(), 101);
        assert_eq!(
            response.headers().get("sec-websocket-protocol").unwrap(),
            SUBPROTOCOL
        );
    }

    proptest::proptest! {
        #[test]
        fn upgrade_decision_never_panics(
            lines in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "Upgrade", "Connection", "Sec-WebSocket-Key",
                        "Sec-WebSocket-Version", "Sec-WebSocket-Protocol", "Host", "X",
                    ]),
                    "[ -~]{0,40}",
                ),
                0..8,
            ),
            method in proptest::sample::select(vec!["GET", "POST"]),
            minor in 0u8..2,
        ) {
            let mut buf = format!("{method} /ws HTTP/1.{minor}\r\nUpgrade: websocket\r\n");
            for (name, value) in lines {
                buf.push_str(&format!("{name}: {}\r\n", value.trim()));
            }
            buf.push_str("\r\n");
            if let Ok(Parsed::Complete(req)) = parse_request(buf.as_bytes(), 8192) {
                match upgrade_request(&req) {
                    Ok(Some(up)) => {
                        let mut out = Vec::new();
                        up.write_response(&mut out);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let mut out = Vec::new();
                        e.response().write_to(&mut out);
                    }
                }
            }
        }
    }
}
