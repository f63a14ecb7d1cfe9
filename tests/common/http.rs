//! Raw HTTP/1.1 over a `TcpStream`: requests written by hand, response
//! heads and `Content-Length` bodies read back without taking a byte more,
//! and the end of the stream.
//!
//! Nothing a client library adds gets in the way: keep-alive, pipelining
//! and framing are exactly what the test sends.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use super::broker::Broker;

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

/// Parses a response head as read by [`read_response_head`].
pub(super) fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
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

/// `http_exchange` for a request that is not UTF-8 text.
pub fn http_exchange_bytes(broker: &Broker, request: &[u8]) -> (HttpResponse, TcpStream) {
    let mut stream = broker.tcp();
    stream.write_all(request).unwrap();
    let response = read_http_response(&mut stream);
    (response, stream)
}

/// One `GET` on a fresh connection.
pub fn get_once(broker: &Broker, target: &str) -> HttpResponse {
    http_exchange(broker, &get_request(target)).0
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
