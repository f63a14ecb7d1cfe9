//! Building HTTP/1.1 responses as bytes (RFC 9112 §4, §6).
//!
//! Every plain-HTTP answer tickfan gives — route results, parse errors,
//! refused upgrades — goes through [`Response`], so message framing is
//! decided in one place: the builder owns `Content-Length` and
//! `Connection: close`, and the caller owns everything else. The `101` of a
//! successful WebSocket upgrade is written by
//! [`crate::protocol::handshake::write_switching_protocols`] instead, because
//! it has no body and its headers are fixed by RFC 6455 §4.2.2.
//!
//! No `Date` header is written: this layer has no clock, and the I/O owner can
//! add one with [`Response::header`] if it wants (RFC 9110 §6.6.1).

/// The reason phrase for the status codes tickfan sends, or `""` for others.
///
/// RFC 9112 §4 lets the reason phrase be empty, so an unknown code still
/// yields a valid status line.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// An HTTP/1.1 response under construction: status, headers, body, and
/// whether the connection ends after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    /// Header lines other than `Content-Length` and `Connection`, in order.
    /// Values never contain CR or LF (see [`Response::header`]).
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    close: bool,
    /// Write `Connection: keep-alive` (unless `close`).
    keep_alive: bool,
    /// The answer to a `HEAD`: `Content-Length` of `body`, but not the body.
    head: bool,
}

impl Response {
    /// A response with the given status, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            close: false,
            keep_alive: false,
            head: false,
        }
    }

    /// A `text/plain; charset=utf-8` response whose body is `message` and a newline.
    pub fn error(status: u16, message: &str) -> Self {
        let mut body = Vec::with_capacity(message.len().saturating_add(1));
        body.extend_from_slice(message.as_bytes());
        body.push(b'\n');
        Response::new(status).body("text/plain; charset=utf-8", body)
    }

    /// An `application/json` response with the given (already serialised) body.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response::new(status).body("application/json", body)
    }

    /// Adds a header line; the caller must not add `Content-Length` or
    /// `Connection`, which the builder writes itself.
    ///
    /// CR and LF in `value` are replaced by spaces so that no value can end
    /// the header line early and inject another (RFC 9110 §5.5).
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        let mut value = value.into();
        if value.contains(['\r', '\n']) {
            value = value.replace(['\r', '\n'], " ");
        }
        self.headers.push((name, value));
        self
    }

    /// Sets the body and its `Content-Type`.
    pub fn body(self, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        let mut this = self.header("Content-Type", content_type);
        this.body = body.into();
        this
    }

    /// Marks the connection as ending after this response (`Connection: close`).
    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }

    /// Says the connection stays open (`Connection: keep-alive`), which an
    /// HTTP/1.0 client must hear to keep it (RFC 9112 §9.3 and Appendix
    /// C.2.2: 1.0 persistence is opt-in on both sides); HTTP/1.1 needs
    /// nothing. [`Response::close`] wins over it.
    pub fn keep_alive(mut self) -> Self {
        self.keep_alive = true;
        self
    }

    /// Makes this the answer to a `HEAD` request: the same status and
    /// headers, `Content-Length` of the body included, but no body (RFC 9110
    /// §9.3.2: the headers "as it would have sent if the request method had
    /// been GET").
    pub fn head(mut self) -> Self {
        self.head = true;
        self
    }

    /// Adds `Allow: <methods>`, which a 405 must carry (RFC 9110 §15.5.6).
    pub fn allow(self, methods: &'static str) -> Self {
        self.header("Allow", methods)
    }

    /// Adds `Sec-WebSocket-Version: 13`, which a 426 refusing a WebSocket
    /// version must carry (RFC 6455 §4.2.2).
    pub fn websocket_version(self) -> Self {
        self.header("Sec-WebSocket-Version", "13")
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the connection ends after this response.
    pub fn closes_connection(&self) -> bool {
        self.close
    }

    /// The body bytes.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// Appends the status line, headers, blank line and body to `out`.
    ///
    /// `Content-Length` is always written, except for 1xx and 204 responses,
    /// which must carry neither it nor a body (RFC 9110 §8.6, §15.3.5); their
    /// body, if one was set, is dropped. An answer to `HEAD` ([`Self::head`])
    /// has its `Content-Length` but not its body.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let bodyless = self.status < 200 || self.status == 204;
        let body: &[u8] = if bodyless { &[] } else { &self.body };
        out.reserve(
            body.len()
                .saturating_add(self.headers.len().saturating_mul(32))
                .saturating_add(64),
        );
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason_phrase(self.status).as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            write_header(out, name, value.as_bytes());
        }
        if !bodyless {
            write_header(out, "Content-Length", body.len().to_string().as_bytes());
        }
        if self.close {
            write_header(out, "Connection", b"close");
        } else if self.keep_alive {
            write_header(out, "Connection", b"keep-alive");
        }
        out.extend_from_slice(b"\r\n");
        if !self.head {
            out.extend_from_slice(body);
        }
    }
}

/// Appends one `name: value\r\n` line.
fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(r: &Response) -> String {
        let mut out = Vec::new();
        r.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn error_layout() {
        let r = Response::error(404, "no such route");
        assert_eq!(
            bytes(&r),
            "HTTP/1.1 404 Not Found\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 14\r\n\
             \r\n\
             no such route\n"
        );
    }

    #[test]
    fn json_with_close() {
        let r = Response::json(200, &b"{\"ok\":true}"[..]).close();
        assert_eq!(
            bytes(&r),
            "HTTP/1.1 200 OK\r\n\
             Content-Type: application/json\r\n\
             Content-Length: 11\r\n\
             Connection: close\r\n\
             \r\n\
             {\"ok\":true}"
        );
        assert!(r.closes_connection());
    }

    #[test]
    fn keep_alive_is_announced_unless_closing() {
        assert_eq!(
            bytes(&Response::new(202).keep_alive()),
            "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        );
        assert_eq!(
            bytes(&Response::new(202).keep_alive().close()),
            "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn head_keeps_the_length_and_drops_the_body() {
        let get = Response::error(200, "ok");
        assert_eq!(
            bytes(&get.clone().head()),
            bytes(&get).strip_suffix("ok\n").unwrap()
        );
        assert!(bytes(&Response::error(200, "ok").head()).contains("\r\nContent-Length: 3\r\n"));
    }

    #[test]
    fn empty_body_still_has_content_length() {
        assert_eq!(
            bytes(&Response::new(202)),
            "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn no_content_has_no_length_or_body() {
        let r = Response::new(204).body("text/plain", &b"dropped"[..]);
        assert_eq!(
            bytes(&r),
            "HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\n\r\n"
        );
    }

    #[test]
    fn continue_is_a_bare_status_line() {
        assert_eq!(bytes(&Response::new(100)), "HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn allow_and_websocket_version() {
        let s = bytes(&Response::error(405, "use GET").allow("GET"));
        assert!(s.contains("\r\nAllow: GET\r\n"), "{s}");
        let s = bytes(&Response::error(426, "v13 only").websocket_version());
        assert!(s.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{s}");
        assert!(s.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{s}");
    }

    #[test]
    fn header_values_cannot_inject_lines() {
        let s = bytes(&Response::new(200).header("X-Note", "a\r\nSet-Cookie: x"));
        assert!(s.contains("\r\nX-Note: a  Set-Cookie: x\r\n"), "{s}");
    }

    #[test]
    fn every_listed_status_has_a_reason() {
        for code in [
            100, 101, 200, 202, 204, 400, 401, 403, 404, 405, 408, 413, 417, 426, 429, 431, 500,
            501, 503, 504,
        ] {
            assert!(!reason_phrase(code).is_empty(), "{code}");
        }
        assert_eq!(
            bytes(&Response::new(299)),
            "HTTP/1.1 299 \r\nContent-Length: 0\r\n\r\n"
        );
    }
}
