//! Parsing an HTTP/1.1 request head in place (RFC 9112 §2–§3, §6.3, §9.3).
//!
//! This module owns the step from "bytes read so far" to "a complete request
//! head, or not yet": it tells *need more bytes* ([`Parsed::Partial`]) apart
//! from *invalid* ([`HttpError`]), consumes nothing on a partial input, and
//! borrows every string from the caller's buffer. It is separate from the
//! WebSocket upgrade ([`crate::http::upgrade`]) because the same head
//! may be routed as plain HTTP; it decides nothing about routes.
//!
//! A [`Request`] returned by [`parse_request`] has valid message framing: a
//! `Host` as RFC 9112 §3.2 requires, and a usable `Content-Length` and no
//! `Transfer-Encoding` (RFC 9112 §6.3), so the caller can always tell where
//! the next pipelined request starts.

use crate::wire::is_b64token;
use std::borrow::Cow;

use super::error::HttpError;

/// How many header lines a request head may have; one more is a 431.
pub const MAX_HEADERS: usize = 64;

/// The outcome of parsing the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'b> {
    /// The head has not ended yet; read more and parse the whole buffer again.
    Partial,
    /// The head is complete; its bytes are `buf[..request.head_len]`.
    Complete(Request<'b>),
}

/// A parsed request head, borrowing every string from the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'b> {
    /// The method, e.g. `GET`; case-sensitive (RFC 9110 §9.1).
    pub method: &'b str,
    /// The request target up to (not including) the first `?`; for an
    /// absolute-form target (`http://host/path`), its path alone.
    pub path: &'b str,
    /// The request target after the first `?`, still percent-encoded; `""` if none.
    pub query: &'b str,
    /// The minor version of `HTTP/1.x`: 0 or 1.
    pub version_minor: u8,
    /// Header lines in the order received, names as sent, values with
    /// surrounding whitespace as httparse leaves it.
    pub headers: Vec<(&'b str, &'b [u8])>,
    /// The length of the head, through its terminating blank line. Bytes
    /// after it (a body, or the next pipelined request) belong to the caller.
    pub head_len: usize,
}

/// Parses the request head at the start of `buf`.
///
/// Returns [`Parsed::Partial`] while the head is incomplete and shorter than
/// `max_header_bytes`, and [`HttpError::HeadersTooLarge`] once it is certain
/// the head exceeds the limit: when a complete head is longer than
/// `max_header_bytes`, or when `buf.len() >= max_header_bytes` and the head
/// has still not ended (its end can then only come past the limit). Only the
/// first `max_header_bytes` bytes are examined, so repeated calls on a
/// growing buffer cost at most that much each.
///
/// A complete head is also checked for `Host` (RFC 9112 §3.2) and body
/// framing ([`Request::content_length`]), so a returned request can be
/// answered and the connection reused safely. More than [`MAX_HEADERS`]
/// header lines is [`HttpError::TooManyHeaders`].
pub fn parse_request(buf: &[u8], max_header_bytes: usize) -> Result<Parsed<'_>, HttpError> {
    let window = buf.get(..max_header_bytes).unwrap_or(buf);
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut raw = httparse::Request::new(&mut slots);
    let head_len = match raw.parse(window)? {
        httparse::Status::Partial if buf.len() >= max_header_bytes => {
            return Err(HttpError::HeadersTooLarge)
        }
        httparse::Status::Partial => return Ok(Parsed::Partial),
        httparse::Status::Complete(n) => n,
    };
    // httparse fills all three on Complete; a missing one is malformed, not a panic.
    let (Some(method), Some(target), Some(version_minor)) = (raw.method, raw.path, raw.version)
    else {
        return Err(HttpError::Malformed("incomplete request line"));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = absolute_form_path(path);
    let request = Request {
        method,
        path,
        query,
        version_minor,
        headers: raw.headers.iter().map(|h| (h.name, h.value)).collect(),
        head_len,
    };
    // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
    // code to any HTTP/1.1 request message that lacks a Host header field and
    // to any request message that contains more than one Host header field".
    let hosts = request.headers_named("host").count();
    if hosts > 1 || (hosts == 0 && version_minor >= 1) {
        return Err(HttpError::BadHost);
    }
    request.content_length()?;
    Ok(Parsed::Complete(request))
}

impl<'b> Request<'b> {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers_named(name).next()
    }

    /// The values of every header named `name` (case-insensitive), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'b [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }

    /// The declared body length: `None` without `Content-Length`.
    ///
    /// Repeated `Content-Length` headers, or a comma list in one, are
    /// accepted when every value is the same (RFC 9112 §6.3 item 5); values
    /// that differ, or that are not plain decimal digits, or that overflow
    /// `usize`, are [`HttpError::BadContentLength`]. Any `Transfer-Encoding`
    /// is [`HttpError::UnsupportedTransferEncoding`] (501): tickfan decodes
    /// no coded request bodies, and RFC 9112 §6.1 says a server "SHOULD
    /// respond with a 501" to a transfer coding it does not understand.
    pub fn content_length(&self) -> Result<Option<usize>, HttpError> {
        if self.header("transfer-encoding").is_some() {
            return Err(HttpError::UnsupportedTransferEncoding);
        }
        let mut length = None;
        for value in self.headers_named("content-length") {
            for item in value.split(|&b| b == b',') {
                let n = parse_decimal(trim_ows(item)).ok_or(HttpError::BadContentLength)?;
                match length {
                    Some(m) if m != n => return Err(HttpError::BadContentLength),
                    _ => length = Some(n),
                }
            }
        }
        Ok(length)
    }

    /// Whether the connection may carry another request after this one
    /// (RFC 9112 §9.3).
    ///
    /// HTTP/1.1 persists unless `Connection` has the `close` token; HTTP/1.0
    /// persists only with the `keep-alive` token and no `close`.
    pub fn keep_alive(&self) -> bool {
        let mut close = false;
        let mut keep_alive = false;
        for value in self.headers_named("connection") {
            close |= header_has_token(value, "close");
            keep_alive |= header_has_token(value, "keep-alive");
        }
        !close && (self.version_minor >= 1 || keep_alive)
    }

    /// Whether a response that keeps the connection must say so with
    /// `Connection: keep-alive`: an HTTP/1.0 client closes otherwise
    /// (RFC 9112 Appendix C.2.2).
    pub fn needs_keep_alive_header(&self) -> bool {
        self.version_minor == 0 && self.keep_alive()
    }

    /// Whether the client waits for `100 Continue` before it sends the body
    /// (RFC 9110 §10.1.1).
    ///
    /// `Expect: 100-continue` (case-insensitive) is `true` on HTTP/1.1; on
    /// HTTP/1.0 it is `false`, as "a server that receives a 100-continue
    /// expectation in an HTTP/1.0 request MUST ignore that expectation".
    /// Any other expectation is [`HttpError::UnsupportedExpectation`] (417).
    pub fn expects_continue(&self) -> Result<bool, HttpError> {
        let mut wants = false;
        for value in self.headers_named("expect") {
            for expectation in header_tokens(value) {
                if !expectation.eq_ignore_ascii_case(b"100-continue") {
                    return Err(HttpError::UnsupportedExpectation);
                }
                wants = true;
            }
        }
        Ok(wants && self.version_minor >= 1)
    }

    /// The query's `key=value` pairs, decoded as
    /// `application/x-www-form-urlencoded` (WHATWG URL standard, §5) by
    /// [`form_urlencoded::parse`].
    ///
    /// Pairs are separated by `&`; empty pairs are skipped; a pair without
    /// `=` has the value `""`. Repeated keys are all yielded, in order. `+`
    /// is a space (a literal `+` must be sent as `%2B`), `%XX` escapes are
    /// decoded, an invalid escape (a `%` not followed by two hex digits) is
    /// kept as it is rather than rejected, and decoded bytes that are not
    /// UTF-8 become U+FFFD. Borrows when there is nothing to decode.
    pub fn query_params(&self) -> impl Iterator<Item = (Cow<'b, str>, Cow<'b, str>)> + 'b {
        form_urlencoded::parse(self.query.as_bytes())
    }

    /// The token of `Authorization: Bearer <token>` (RFC 6750 §2.1), if the
    /// first `Authorization` header has that form.
    ///
    /// The scheme is matched case-insensitively (RFC 9110 §11.1); the token
    /// must be a non-empty `b64token`, or `None` is returned.
    pub fn bearer_token(&self) -> Option<&'b str> {
        let value = std::str::from_utf8(self.header("authorization")?).ok()?;
        let (scheme, token) = value.trim_matches([' ', '\t']).split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim_start_matches(' ');
        is_b64token(token).then_some(token)
    }
}

/// The path of an absolute-form request target (query already split off),
/// or the target as it is when it is not one.
///
/// RFC 9112 §3.2.2: "a server MUST accept the use of the absolute-form in
/// requests", which proxies send: `http://host:port/path` routes as `/path`,
/// and `http://host` as `/`. The authority is not checked against `Host`;
/// routing does not depend on either. A target that is neither origin-form
/// nor `scheme://...` (`*`, `host:port`) is left alone and matches no route.
fn absolute_form_path(target: &str) -> &str {
    if target.starts_with('/') {
        return target;
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        return target;
    };
    // RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
    let mut chars = scheme.bytes();
    let valid_scheme = chars.next().is_some_and(|b| b.is_ascii_alphabetic())
        && chars.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !valid_scheme {
        return target;
    }
    rest.find('/').map_or("/", |start| &rest[start..])
}

/// The non-empty elements of a comma-separated header value, with optional
/// whitespace around each removed (RFC 9110 §5.6.1).
pub fn header_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// Whether a comma-separated header value contains `token`, compared
/// case-insensitively, as for `Connection: keep-alive, Upgrade`.
pub fn header_has_token(value: &[u8], token: &str) -> bool {
    header_tokens(value).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses `1*DIGIT` without sign or whitespace, refusing overflow.
fn parse_decimal(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &b| {
        let digit = usize::try_from(char::from(b).to_digit(10)?).ok()?;
        n.checked_mul(10)?.checked_add(digit)
    })
}

/// Strips optional whitespace (SP / HTAB, RFC 9110 §5.6.3) from both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 8 * 1024;

    fn complete(buf: &[u8]) -> Request<'_> {
        match parse_request(buf, LIMIT) {
            Ok(Parsed::Complete(r)) => r,
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    fn err(buf: &[u8]) -> HttpError {
        match parse_request(buf, LIMIT) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn parses_request_line_and_headers() {
        let buf = b"GET /ws/ticks?topic=AAPL&x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n";
        let r = complete(buf);
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/ws/ticks");
        assert_eq!(r.query, "topic=AAPL&x");
        assert_eq!(r.version_minor, 1);
        assert_eq!(r.head_len, buf.len());
        assert_eq!(r.header("HOST"), Some(&b"a"[..]));
        assert_eq!(r.header("x-a"), Some(&b"1"[..]));
        assert_eq!(r.headers_named("X-A").collect::<Vec<_>>(), [b"1", b"2"]);
        assert_eq!(r.header("missing"), None);
    }

    #[test]
    fn absolute_form_routes_by_its_path_and_query() {
        let r = complete(b"GET http://example.com:9001/poll?topic=A&since=A:1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!((r.path, r.query), ("/poll", "topic=A&since=A:1"));
        for (target, path, query) in [
            ("HTTPS://h/healthz", "/healthz", ""),
            ("http://h", "/", ""),
            ("http://h?x=1", "/", "x=1"),
            ("http://user@h:1/a/b", "/a/b", ""),
            ("ws+x.y-z://h/ws", "/ws", ""),
            // Not absolute-form: left as sent, so no route matches.
            ("*", "*", ""),
            ("h:80", "h:80", ""),
            ("1http://h/healthz", "1http://h/healthz", ""),
            ("://h/healthz", "://h/healthz", ""),
        ] {
            let buf = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let r = complete(buf.as_bytes());
            assert_eq!((r.path, r.query), (path, query), "{target}");
        }
    }

    #[test]
    fn no_query_is_empty() {
        let r = complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((r.path, r.query), ("/", ""));
        assert_eq!(r.query_params().count(), 0);
    }

    #[test]
    fn pipelined_bytes_are_not_part_of_the_head() {
        let head = b"POST /publish HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
        let mut buf = head.to_vec();
        buf.extend_from_slice(b"hello");
        buf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = complete(&buf);
        assert_eq!(r.head_len, head.len());
        assert_eq!(r.content_length(), Ok(Some(5)));
    }

    #[test]
    fn every_prefix_is_partial() {
        let buf = b"GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
                    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                    Sec-WebSocket-Version: 13\r\n\r\n";
        for end in 0..buf.len() {
            assert_eq!(
                parse_request(&buf[..end], LIMIT),
                Ok(Parsed::Partial),
                "{end}"
            );
        }
        assert_eq!(complete(buf).head_len, buf.len());
    }

    #[test]
    fn oversized_head_is_431() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let n = buf.len();
        // Complete, but longer than the limit.
        assert_eq!(parse_request(buf, n - 1), Err(HttpError::HeadersTooLarge));
        // Exactly at the limit is fine.
        assert!(matches!(parse_request(buf, n), Ok(Parsed::Complete(_))));
        // Incomplete and already longer than the limit.
        assert_eq!(
            parse_request(&buf[..30], 20),
            Err(HttpError::HeadersTooLarge)
        );
        // Incomplete and filling the limit exactly: the end can only come later.
        assert_eq!(
            parse_request(&buf[..20], 20),
            Err(HttpError::HeadersTooLarge)
        );
        // Incomplete and under the limit.
        assert_eq!(parse_request(&buf[..19], 20), Ok(Parsed::Partial));
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        let e = err(&buf);
        assert_eq!((e, e.status()), (HttpError::TooManyHeaders, 431));
        // Exactly MAX_HEADERS is accepted.
        let mut ok = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 1..MAX_HEADERS {
            ok.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        ok.extend_from_slice(b"\r\n");
        assert_eq!(complete(&ok).headers.len(), MAX_HEADERS);
    }

    #[test]
    fn malformed_is_400() {
        for buf in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"G\0T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        ] {
            let e = err(buf);
            assert!(matches!(e, HttpError::Malformed(_)), "{e:?}");
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn host_rules() {
        assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), HttpError::BadHost);
        assert_eq!(
            err(b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n"),
            HttpError::BadHost
        );
        assert_eq!(complete(b"GET / HTTP/1.0\r\n\r\n").version_minor, 0);
    }

    #[test]
    fn content_length_rules() {
        let cl = |headers: &str| {
            let buf = format!("POST / HTTP/1.1\r\nHost: a\r\n{headers}\r\n");
            parse_request(buf.as_bytes(), LIMIT).map(|p| match p {
                Parsed::Complete(r) => r.content_length().unwrap(),
                Parsed::Partial => panic!("partial"),
            })
        };
        assert_eq!(cl(""), Ok(None));
        assert_eq!(cl("Content-Length: 0\r\n"), Ok(Some(0)));
        assert_eq!(cl("Content-Length: 42\r\n"), Ok(Some(42)));
        assert_eq!(cl("Content-Length: 42, 42\r\n"), Ok(Some(42)));
        assert_eq!(
            cl("Content-Length: 42\r\ncontent-length: 42\r\n"),
            Ok(Some(42))
        );
        for bad in [
            "Content-Length: 42, 43\r\n",
            "Content-Length: 1\r\nContent-Length: 2\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length:\r\n",
            "Content-Length: 99999999999999999999999999\r\n",
        ] {
            assert_eq!(cl(bad), Err(HttpError::BadContentLength), "{bad}");
        }
        assert_eq!(
            cl("Transfer-Encoding: chunked\r\n"),
            Err(HttpError::UnsupportedTransferEncoding)
        );
        assert_eq!(
            cl("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"),
            Err(HttpError::UnsupportedTransferEncoding)
        );
        assert_eq!(HttpError::UnsupportedTransferEncoding.status(), 501);
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |version: &str, headers: &str| {
            let buf = format!("GET / HTTP/{version}\r\nHost: a\r\n{headers}\r\n");
            complete(buf.as_bytes()).keep_alive()
        };
        assert!(ka("1.1", ""));
        assert!(ka("1.1", "Connection: keep-alive\r\n"));
        assert!(!ka("1.1", "Connection: close\r\n"));
        assert!(!ka("1.1", "Connection: Upgrade, CLOSE\r\n"));
        assert!(!ka(
            "1.1",
            "Connection: keep-alive\r\nConnection: close\r\n"
        ));
        assert!(!ka("1.0", ""));
        assert!(ka("1.0", "Connection: Keep-Alive\r\n"));
        assert!(!ka("1.0", "Connection: keep-alive, close\r\n"));
        let announce = |version: &str, headers: &str| {
            let buf = format!("GET / HTTP/{version}\r\nHost: a\r\n{headers}\r\n");
            complete(buf.as_bytes()).needs_keep_alive_header()
        };
        assert!(announce("1.0", "Connection: keep-alive\r\n"));
        assert!(!announce("1.0", ""));
        assert!(!announce("1.1", ""));
        assert!(!announce("1.1", "Connection: keep-alive\r\n"));
    }

    #[test]
    fn expectations() {
        let expects = |version: &str, headers: &str| {
            let buf = format!("POST / HTTP/{version}\r\nHost: a\r\n{headers}\r\n");
            complete(buf.as_bytes()).expects_continue()
        };
        assert_eq!(expects("1.1", ""), Ok(false));
        assert_eq!(expects("1.1", "Expect: 100-continue\r\n"), Ok(true));
        assert_eq!(expects("1.1", "expect: 100-Continue \r\n"), Ok(true));
        assert_eq!(expects("1.1", "Expect:\r\n"), Ok(false));
        assert_eq!(expects("1.0", "Expect: 100-continue\r\n"), Ok(false));
        for bad in [
            "Expect: 200-ok\r\n",
            "Expect: 100-continue, x=1\r\n",
            "Expect: 100-continue\r\nExpect: fast\r\n",
        ] {
            assert_eq!(
                expects("1.1", bad),
                Err(HttpError::UnsupportedExpectation),
                "{bad}"
            );
            assert_eq!(expects("1.0", bad), Err(HttpError::UnsupportedExpectation));
        }
    }

    #[test]
    fn tokens() {
        assert!(header_has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(header_has_token(b"Upgrade", "upgrade"));
        assert!(header_has_token(b" ,\tupgrade\t, ", "UPGRADE"));
        assert!(!header_has_token(b"upgraded", "upgrade"));
        assert!(!header_has_token(b"keep-alive upgrade", "upgrade"));
        assert!(!header_has_token(b"", "upgrade"));
        assert_eq!(
            header_tokens(b"a,  b ,,c").collect::<Vec<_>>(),
            [&b"a"[..], b"b", b"c"]
        );
    }

    #[test]
    fn query_decoding() {
        let r = complete(
            b"GET /p?topic=BRK%2EB&name=a+b&raw=100%&bad=%zz&&flag&t=%E2%82%AC&x=%ff HTTP/1.1\r\nHost: a\r\n\r\n",
        );
        let params: Vec<(String, String)> = r
            .query_params()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let expected = [
            ("topic", "BRK.B"),
            ("name", "a b"),
            ("raw", "100%"),
            ("bad", "%zz"),
            ("flag", ""),
            ("t", "€"),
            ("x", "\u{FFFD}"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(params, expected);
        let r = complete(b"GET /p?plain=text HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(matches!(
            r.query_params().next(),
            Some((Cow::Borrowed("plain"), Cow::Borrowed("text")))
        ));
    }

    #[test]
    fn bearer_tokens() {
        let bearer = |value: &str| {
            let buf = format!("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: {value}\r\n\r\n");
            complete(buf.as_bytes()).bearer_token().map(str::to_owned)
        };
        assert_eq!(
            bearer("Bearer abc.DEF-123_~+/=="),
            Some("abc.DEF-123_~+/==".into())
        );
        assert_eq!(bearer("bearer  tok"), Some("tok".into()));
        assert_eq!(bearer("Basic dXNlcjpwdw=="), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer a b"), None);
        assert_eq!(bearer("Bearer a=b"), None);
        assert_eq!(
            complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").bearer_token(),
            None
        );
    }

    /// A valid request head built from generated parts.
    fn valid_request() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(vec!["GET", "POST", "DELETE"]),
            "/[a-z0-9/._-]{0,20}(\\?[a-z0-9=&%+]{0,20})?",
            prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,30}"), 0..10),
        )
            .prop_map(|(method, target, headers)| {
                let mut buf = format!("{method} {target} HTTP/1.1\r\nHost: h\r\n");
                for (name, value) in headers {
                    let name = match name.to_ascii_lowercase().as_str() {
                        // Keep framing valid so the head parses Complete.
                        "host" | "content-length" | "transfer-encoding" => format!("X-{name}"),
                        _ => name,
                    };
                    buf.push_str(&format!("{name}: {}\r\n", value.trim()));
                }
                buf.push_str("\r\n");
                buf.into_bytes()
            })
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(
            buf in prop::collection::vec(any::<u8>(), 0..512),
            limit in 0usize..600,
        ) {
            if let Ok(Parsed::Complete(r)) = parse_request(&buf, limit) {
                prop_assert!(r.head_len <= buf.len().min(limit));
                let _ = (r.content_length(), r.keep_alive(), r.bearer_token(), r.expects_continue());
                for _ in r.query_params() {}
            }
        }

        #[test]
        fn never_panics_on_arbitrary_header_bytes(
            tail in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut buf = b"GET /?a=%f0%9f+b HTTP/1.1\r\nHost: h\r\n".to_vec();
            buf.extend_from_slice(&tail);
            buf.extend_from_slice(b"\r\n\r\n");
            if let Ok(Parsed::Complete(r)) = parse_request(&buf, LIMIT) {
                prop_assert!(r.head_len <= buf.len());
                let _ = (r.content_length(), r.keep_alive(), r.bearer_token(), r.expects_continue());
                for _ in r.query_params() {}
            }
        }

        #[test]
        fn prefixes_of_valid_requests_are_partial(buf in valid_request(), tail in "[ -~]{0,20}") {
            for end in 0..buf.len() {
                prop_assert_eq!(parse_request(&buf[..end], LIMIT), Ok(Parsed::Partial));
            }
            let mut with_tail = buf.clone();
            with_tail.extend_from_slice(tail.as_bytes());
            match parse_request(&with_tail, LIMIT) {
                Ok(Parsed::Complete(r)) => prop_assert_eq!(r.head_len, buf.len()),
                other => prop_assert!(false, "not complete: {:?}", other),
            }
        }
    }
}
