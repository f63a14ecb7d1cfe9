//! Errors found while reading an HTTP/1.1 request head (RFC 9112), and
//! their answers on the wire.
//!
//! This is the HTTP layer's one leaf error enum. Each variant maps to its
//! status code in [`HttpError::status`] and to a complete response in
//! [`HttpError::response`]; nothing else in the crate decides what an HTTP
//! parse error looks like to the peer. Every one of these errors leaves the
//! request stream without a trustworthy message boundary (RFC 9112 §6.3), so
//! every response built here closes the connection.

use std::fmt;

use super::response::Response;

/// Why a request head (or the framing it declares) was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// The head is longer than the configured `max_header_bytes` (431,
    /// RFC 6585 §5), whether or not its end has arrived yet.
    HeadersTooLarge,
    /// The head has more header lines than the parser has slots for (431).
    TooManyHeaders,
    /// The head is not valid HTTP/1.x syntax; the reason names the part (400).
    Malformed(&'static str),
    /// An HTTP/1.1 request lacks `Host`, or any request repeats it (400,
    /// RFC 9112 §3.2).
    BadHost,
    /// `Content-Length` is not a decimal number, overflows, or appears more
    /// than once with different values (400, RFC 9112 §6.3 item 5).
    BadContentLength,
    /// The request carries `Transfer-Encoding`; tickfan reads no chunked or
    /// otherwise coded request bodies (501, RFC 9112 §6.1).
    UnsupportedTransferEncoding,
    /// `Expect` names something other than `100-continue`, the only
    /// expectation HTTP defines (417, RFC 9110 §10.1.1).
    UnsupportedExpectation,
}

impl HttpError {
    /// The HTTP status code this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadersTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::Malformed(_) | HttpError::BadHost | HttpError::BadContentLength => 400,
            HttpError::UnsupportedTransferEncoding => 501,
            HttpError::UnsupportedExpectation => 417,
        }
    }

    /// The complete response for this error: its status, the reason as a
    /// plain-text body, and `Connection: close`.
    pub fn response(&self) -> Response {
        Response::error(self.status(), &self.to_string()).close()
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::HeadersTooLarge => f.write_str("request head too large"),
            HttpError::TooManyHeaders => f.write_str("too many request headers"),
            HttpError::Malformed(reason) => write!(f, "malformed request: {reason}"),
            HttpError::BadHost => f.write_str("missing or repeated Host header"),
            HttpError::BadContentLength => f.write_str("invalid Content-Length"),
            HttpError::UnsupportedTransferEncoding => {
                f.write_str("Transfer-Encoding is not supported on requests")
            }
            HttpError::UnsupportedExpectation => {
                f.write_str("the only expectation supported is 100-continue")
            }
        }
    }
}

impl std::error::Error for HttpError {}

impl From<httparse::Error> for HttpError {
    fn from(e: httparse::Error) -> Self {
        match e {
            httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
            httparse::Error::HeaderName => HttpError::Malformed("invalid header name"),
            httparse::Error::HeaderValue => HttpError::Malformed("invalid header value"),
            httparse::Error::NewLine => HttpError::Malformed("invalid line ending"),
            httparse::Error::Status => HttpError::Malformed("invalid status"),
            httparse::Error::Token => HttpError::Malformed("invalid method or request target"),
            httparse::Error::Version => HttpError::Malformed("invalid HTTP version"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(HttpError::HeadersTooLarge.status(), 431);
        assert_eq!(HttpError::TooManyHeaders.status(), 431);
        assert_eq!(HttpError::Malformed("x").status(), 400);
        assert_eq!(HttpError::BadHost.status(), 400);
        assert_eq!(HttpError::BadContentLength.status(), 400);
        assert_eq!(HttpError::UnsupportedTransferEncoding.status(), 501);
        assert_eq!(HttpError::UnsupportedExpectation.status(), 417);
    }

    #[test]
    fn response_closes_and_explains() {
        let mut out = Vec::new();
        HttpError::BadContentLength.response().write_to(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\ninvalid Content-Length\n"), "{text}");
    }
}
