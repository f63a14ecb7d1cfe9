//! Publishing over HTTP (`--publish-over http`, tickfan only): each publisher
//! connection is a keep-alive HTTP/1.1 connection carrying pipelined
//! `POST /publish?topic=T` requests, one tick each, and this module tracks
//! the answers still owed on it (RFC 9112 §9.3.2: a server answers
//! pipelined requests in the order they came).
//!
//! Separate from `publisher.rs` so the event loop stays transport-neutral:
//! here are the request bytes, the response parsing (heads by `httparse`,
//! bodies by `Content-Length`) and the verdict on each answer; no sockets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::publisher::PublisherStats;

/// Quiet time after which an idle connection is sent `GET /healthz`: the
/// broker closes an HTTP connection that sends no request for its
/// `websocket.handshake_timeout_ms` (5 s by default), and a publisher waits
/// through the fleet's setup, or paces a low rate over many connections.
const KEEPALIVE_AFTER: Duration = Duration::from_secs(1);

/// Largest response head accepted; the broker's are a few hundred bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Largest response body accepted; `202 {"topic":..,"seq":..}` is tiny, and
/// anything near this is a broken stream rather than an answer.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Response header slots; the broker sends three or four headers.
const MAX_HEADERS: usize = 16;

/// Bytes of an unexpected answer's body kept for the report.
const ERROR_TEXT_BYTES: usize = 200;

/// What a request on the connection asked for, hence which status is right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// `POST /publish`: `202 Accepted`.
    Publish,
    /// `GET /healthz`, sent only to keep an idle connection open: `200`.
    KeepAlive,
}

impl Asked {
    fn expected_status(self) -> u16 {
        match self {
            Asked::Publish => 202,
            Asked::KeepAlive => 200,
        }
    }
}

/// A request queued or sent whose answer has not been read yet.
#[derive(Debug, Clone, Copy)]
struct Awaited {
    /// Offset of the request's first byte in the connection's cumulative
    /// output, so requests not yet started can be dropped at the end.
    start: usize,
    asked: Asked,
}

/// One complete answer at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer<'a> {
    pub status: u16,
    pub body: &'a [u8],
    /// Head and body: the bytes the answer used.
    pub len: usize,
}

/// The HTTP side of one publisher connection: the bytes every request needs
/// and the answers still owed, oldest first.
#[derive(Debug)]
pub struct HttpPipeline {
    host: String,
    /// The `Authorization` header line, when a token was given.
    auth: Option<String>,
    awaiting: VecDeque<Awaited>,
    last_request: Instant,
}

impl HttpPipeline {
    /// A pipeline for a connection to `host`, publishing with `token`.
    pub fn new(host: String, token: Option<&str>, now: Instant) -> Self {
        HttpPipeline {
            host,
            auth: token.map(|t| format!("Authorization: Bearer {t}\r\n")),
            awaiting: VecDeque::new(),
            last_request: now,
        }
    }

    /// Appends `POST /publish?topic=…` carrying `data` (one tick's JSON) to
    /// `out`; `start` is where the request begins in the cumulative output.
    pub fn push_publish(
        &mut self,
        out: &mut Vec<u8>,
        start: usize,
        topic: &str,
        data: &str,
        now: Instant,
    ) {
        out.extend_from_slice(b"POST /publish?topic=");
        push_query_value(out, topic);
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(self.host.as_bytes());
        out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
        out.extend_from_slice(data.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(auth) = &self.auth {
            out.extend_from_slice(auth.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(data.as_bytes());
        self.sent(start, Asked::Publish, now);
    }

    /// Appends `GET /healthz` when the connection has been quiet (nothing
    /// queued, no answer owed) for [`KEEPALIVE_AFTER`], so the broker does
    /// not close it; `true` if a request was appended.
    pub fn push_keepalive_if_idle(
        &mut self,
        out: &mut Vec<u8>,
        start: usize,
        now: Instant,
    ) -> bool {
        if !out.is_empty()
            || !self.awaiting.is_empty()
            || now.duration_since(self.last_request) < KEEPALIVE_AFTER
        {
            return false;
        }
        out.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: ");
        out.extend_from_slice(self.host.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        self.sent(start, Asked::KeepAlive, now);
        true
    }

    fn sent(&mut self, start: usize, asked: Asked, now: Instant) {
        self.awaiting.push_back(Awaited { start, asked });
        self.last_request = now;
    }

    /// Answers still owed.
    pub fn in_flight(&self) -> usize {
        self.awaiting.len()
    }

    /// Reads the complete answers at the front of `buf`, matching each to
    /// its request in order; an answer with another status than its request
    /// calls for (or one nobody asked for) is counted as an error. Returns
    /// the bytes used; a broken stream is `Err`.
    pub fn take_answers(
        &mut self,
        buf: &[u8],
        stats: &mut PublisherStats,
    ) -> Result<usize, String> {
        let mut pos = 0;
        while let Some(answer) = parse_answer(&buf[pos..])? {
            pos += answer.len;
            let asked = self.awaiting.pop_front().map(|a| a.asked);
            if asked.map(Asked::expected_status) == Some(answer.status) {
                continue;
            }
            let what = if asked.is_some() { "" } else { "unrequested " };
            let body = &answer.body[..answer.body.len().min(ERROR_TEXT_BYTES)];
            stats.count_error(format!(
                "{what}HTTP {} {}",
                answer.status,
                String::from_utf8_lossy(body).trim_end()
            ));
        }
        Ok(pos)
    }

    /// Forgets the requests whose first byte has not been written (the run
    /// is over: they will not be sent) and returns the cumulative output
    /// offset where the kept requests end, so the caller can cut its queue
    /// there; a request partly written is kept, so the stream stays whole.
    pub fn drop_unstarted(&mut self, written_total: usize, queued_total: usize) -> usize {
        let keep = self
            .awaiting
            .iter()
            .position(|a| a.start >= written_total)
            .unwrap_or(self.awaiting.len());
        let end = self.awaiting.get(keep).map_or(queued_total, |a| a.start);
        self.awaiting.truncate(keep);
        end
    }
}

/// Appends `value` to a query string, percent-encoding every byte outside
/// RFC 3986's unreserved set, so any topic name reaches the broker as sent.
fn push_query_value(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

/// Parses the answer at the front of `buf`: `None` until head and body are
/// all there; `Err` for a stream that is not HTTP/1.1 answers this client
/// can follow (no `Content-Length`, chunked, oversized).
pub fn parse_answer(buf: &[u8]) -> Result<Option<Answer<'_>>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(format!("HTTP answer head over {MAX_HEAD_BYTES} bytes"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad HTTP answer from the broker: {e}")),
    };
    let status = response.code.unwrap_or(0);
    let body_len = body_len(status, response.headers)?;
    let len = head_len + body_len;
    Ok(buf
        .get(head_len..len)
        .map(|body| Answer { status, body, len }))
}

/// The body length an answer's head announces (RFC 9112 §6.3), limited to
/// what this client follows: `Content-Length`, or no body for 1xx, 204, 304.
fn body_len(status: u16, headers: &[httparse::Header<'_>]) -> Result<usize, String> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if header("transfer-encoding").is_some() {
        return Err(format!("HTTP {status} answer with Transfer-Encoding"));
    }
    let len = match header("content-length") {
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| format!("HTTP {status} answer with a bad Content-Length"))?,
        None if status < 200 || status == 204 || status == 304 => 0,
        None => return Err(format!("HTTP {status} answer without Content-Length")),
    };
    if len > MAX_BODY_BYTES {
        return Err(format!(
            "HTTP {status} answer body over {MAX_BODY_BYTES} bytes"
        ));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCEPTED: &[u8] = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n\
        Content-Length: 25\r\n\r\n{\"topic\":\"AAPL\",\"seq\":42}";

    fn pipeline() -> HttpPipeline {
        HttpPipeline::new("127.0.0.1:9001".into(), Some("s3cret"), Instant::now())
    }

    #[test]
    fn publish_request_is_a_complete_post() {
        let mut http = pipeline();
        let mut out = Vec::new();
        let data = r#"{"bid":1.5}"#;
        http.push_publish(&mut out, 0, "AAPL", data, Instant::now());
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut request = httparse::Request::new(&mut headers);
        let head_len = match request.parse(&out).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial request"),
        };
        assert_eq!(request.method, Some("POST"));
        assert_eq!(request.path, Some("/publish?topic=AAPL"));
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|h| h.name == name)
                .map(|h| h.value)
        };
        assert_eq!(header("Content-Type"), Some(&b"application/json"[..]));
        assert_eq!(header("Content-Length"), Some(&b"11"[..]));
        assert_eq!(header("Authorization"), Some(&b"Bearer s3cret"[..]));
        assert_eq!(&out[head_len..], data.as_bytes());
        assert_eq!(http.in_flight(), 1);
    }

    #[test]
    fn topic_names_are_percent_encoded() {
        let mut out = Vec::new();
        push_query_value(&mut out, "a b&c=d/é~x");
        assert_eq!(out, b"a%20b%26c%3Dd%2F%C3%A9~x");
    }

    #[test]
    fn pipelined_answers_split_anywhere() {
        let mut stream = ACCEPTED.to_vec();
        stream.extend_from_slice(ACCEPTED);
        let first = parse_answer(&stream).unwrap().unwrap();
        assert_eq!(first.status, 202);
        assert_eq!(first.len, ACCEPTED.len());
        assert_eq!(first.body, &b"{\"topic\":\"AAPL\",\"seq\":42}"[..]);
        // Every strict prefix of an answer is "need more", nothing consumed.
        for cut in 0..ACCEPTED.len() {
            assert_eq!(parse_answer(&ACCEPTED[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn answers_are_matched_to_requests_in_order() {
        let mut http = pipeline();
        let mut out = Vec::new();
        let now = Instant::now();
        for start in 0..3 {
            http.push_publish(&mut out, start, "T", "{}", now);
        }
        let refused = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 35\r\nConnection: close\r\n\r\npublishing needs a publisher token\n";
        let mut stream = ACCEPTED.to_vec();
        stream.extend_from_slice(refused);
        stream.extend_from_slice(&ACCEPTED[..10]);
        let mut stats = PublisherStats::default();
        let used = http.take_answers(&stream, &mut stats).unwrap();
        assert_eq!(used, ACCEPTED.len() + refused.len());
        assert_eq!(http.in_flight(), 1);
        assert_eq!(stats.error_events, 1);
        assert_eq!(
            stats.first_error.as_deref(),
            Some("HTTP 401 publishing needs a publisher token")
        );
        // One more answer than requests: counted, not fatal.
        let used = http.take_answers(&[ACCEPTED, ACCEPTED].concat(), &mut stats);
        assert_eq!(used, Ok(2 * ACCEPTED.len()));
        assert_eq!(stats.error_events, 2);
    }

    #[test]
    fn keepalive_only_on_a_quiet_connection_and_wants_200() {
        let t0 = Instant::now();
        let mut http = HttpPipeline::new("h".into(), None, t0);
        let mut out = Vec::new();
        assert!(!http.push_keepalive_if_idle(&mut out, 0, t0));
        let later = t0 + KEEPALIVE_AFTER;
        assert!(http.push_keepalive_if_idle(&mut out, 0, later));
        assert_eq!(out, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
        // An answer is owed: not idle.
        out.clear();
        assert!(!http.push_keepalive_if_idle(&mut out, 0, later + KEEPALIVE_AFTER));
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
        let mut stats = PublisherStats::default();
        assert_eq!(http.take_answers(ok, &mut stats), Ok(ok.len()));
        assert_eq!(stats.error_events, 0);
    }

    #[test]
    fn unstarted_requests_are_dropped_at_the_end() {
        let mut http = pipeline();
        let now = Instant::now();
        // Three requests of 10 bytes at offsets 0, 10, 20; 15 bytes written.
        for start in [0, 10, 20] {
            http.push_publish(&mut Vec::new(), start, "T", "{}", now);
        }
        assert_eq!(http.drop_unstarted(15, 30), 20);
        assert_eq!(http.in_flight(), 2);
        // Everything written: nothing dropped.
        assert_eq!(http.drop_unstarted(20, 20), 20);
        assert_eq!(http.in_flight(), 2);
    }

    #[test]
    fn answers_this_client_cannot_follow_are_errors() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(parse_answer(chunked)
            .unwrap_err()
            .contains("Transfer-Encoding"));
        let no_length = b"HTTP/1.1 200 OK\r\n\r\nok";
        assert!(parse_answer(no_length)
            .unwrap_err()
            .contains("Content-Length"));
        let bad_length = b"HTTP/1.1 202 Accepted\r\nContent-Length: x\r\n\r\n";
        assert!(parse_answer(bad_length)
            .unwrap_err()
            .contains("Content-Length"));
        let huge = b"HTTP/1.1 202 Accepted\r\nContent-Length: 99999999\r\n\r\n";
        assert!(parse_answer(huge).unwrap_err().contains("over"));
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_answer(&vec![b'a'; MAX_HEAD_BYTES + 1]).is_err());
        let no_content = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            parse_answer(no_content).unwrap().unwrap().len,
            no_content.len()
        );
    }
}
