//! Every refusal the broker answers an HTTP request with, decided in one
//! place: its status, its text, the headers the status requires and the
//! `reason` label it is counted under in `tickfan_handshake_failures_total`
//! (as [`crate::protocol::error::ProtocolError::close_code`] does for close
//! codes). The network layer picks the variant; it never builds a refusal
//! by hand, nor derives the label back from a status number.

use std::fmt;

use super::error::HttpError;
use super::publish::PublishError;
use super::query::QueryError;
use super::response::Response;
use super::router::RouteError;
use super::upgrade::HandshakeError;

/// Why a request (or an upgrade) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The head could not be read as a request.
    Head(HttpError),
    /// A WebSocket upgrade RFC 6455 does not allow.
    Upgrade(HandshakeError),
    /// No route has the path, or it takes another method.
    Route(RouteError),
    /// A body on a route that takes none (400).
    UnexpectedBody,
    /// `POST /publish` with a body over `http.max_body_bytes` (413).
    BodyTooLarge { max_bytes: usize },
    /// The token presented does not grant what the request needs (401).
    Unauthorized(&'static str),
    /// The token does not grant this topic (403); holds the topic's name.
    Forbidden(String),
    /// A long-poll or SSE query that cannot be served (400).
    Query(QueryError),
    /// A publish body that cannot be published (400).
    Body(PublishError),
    /// The publish would pass `broker.max_topics`; nothing was published (503).
    TopicLimit,
    /// Accepted over `server.max_connections` (503).
    ConnectionLimit,
    /// A cluster node cut off from its stream or catching up (503): the
    /// client should go to another node.
    NotServing,
    /// Cluster mode: `cluster.publish_window` publishes await the stream's
    /// acknowledgement (503); nothing was published, retry shortly.
    PublishWindowFull,
    /// Accepted over `server.max_connections_per_ip` (503).
    PeerConnectionLimit,
    /// More than a request head arrived while a long-poll was held, or more
    /// than a whole request while a cluster publish awaited the stream (431).
    PipelinedPastHeldRequest,
    /// The request head did not arrive within the handshake timeout (408).
    HeadTimeout,
}

impl Refusal {
    /// The status code this refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Head(error) => error.status(),
            Refusal::Upgrade(error) => error.status(),
            Refusal::Route(RouteError::NotFound) => 404,
            Refusal::Route(RouteError::MethodNotAllowed { .. }) => 405,
            Refusal::UnexpectedBody | Refusal::Query(_) | Refusal::Body(_) => 400,
            Refusal::BodyTooLarge { .. } => 413,
            Refusal::Unauthorized(_) => 401,
            Refusal::Forbidden(_) => 403,
            Refusal::TopicLimit
            | Refusal::ConnectionLimit
            | Refusal::PeerConnectionLimit
            | Refusal::NotServing
            | Refusal::PublishWindowFull => 503,
            Refusal::PipelinedPastHeldRequest => 431,
            Refusal::HeadTimeout => 408,
        }
    }

    /// The `reason` label of `tickfan_handshake_failures_total`: one of
    /// [`crate::metrics::worker_stats::FAILURE_REASONS`].
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Head(HttpError::HeadersTooLarge | HttpError::TooManyHeaders)
            | Refusal::PipelinedPastHeldRequest => "headers_too_large",
            Refusal::Head(HttpError::UnsupportedTransferEncoding) => "not_implemented",
            Refusal::Head(HttpError::UnsupportedExpectation) => "expectation_failed",
            Refusal::Head(
                HttpError::Malformed(_) | HttpError::BadHost | HttpError::BadContentLength,
            )
            | Refusal::UnexpectedBody
            | Refusal::Query(_)
            | Refusal::Body(_) => "bad_request",
            Refusal::Upgrade(HandshakeError::MethodNotGet)
            | Refusal::Route(RouteError::MethodNotAllowed { .. }) => "method_not_allowed",
            Refusal::Upgrade(HandshakeError::UnsupportedVersion) => "unsupported_version",
            Refusal::Upgrade(_) => "bad_request",
            Refusal::Route(RouteError::NotFound) => "not_found",
            Refusal::BodyTooLarge { .. } => "body_too_large",
            Refusal::Unauthorized(_) => "unauthorized",
            Refusal::Forbidden(_) => "forbidden",
            Refusal::TopicLimit | Refusal::ConnectionLimit | Refusal::PeerConnectionLimit => {
                "over_limit"
            }
            Refusal::HeadTimeout => "timeout",
            Refusal::NotServing => "not_serving",
            Refusal::PublishWindowFull => "over_limit",
        }
    }

    /// The complete answer: status, the text as a plain-text body, the
    /// headers its status requires, and `Connection: close` (a refused
    /// request ends its connection).
    pub fn response(&self) -> Response {
        match self {
            Refusal::Head(error) => error.response(),
            Refusal::Upgrade(error) => error.response(),
            // RFC 9110 §15.5.6: a 405 "MUST generate an Allow header field".
            Refusal::Route(RouteError::MethodNotAllowed { allow }) => {
                Response::error(405, &self.to_string()).allow(allow).close()
            }
            _ => Response::error(self.status(), &self.to_string()).close(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Head(error) => error.fmt(f),
            Refusal::Upgrade(error) => error.fmt(f),
            Refusal::Route(RouteError::NotFound) => f.write_str("no such route"),
            Refusal::Route(RouteError::MethodNotAllowed { .. }) => {
                f.write_str("method not allowed")
            }
            Refusal::UnexpectedBody => f.write_str("this route takes no request body"),
            Refusal::BodyTooLarge { max_bytes } => write!(f, "body over {max_bytes} bytes"),
            Refusal::Unauthorized(why) => f.write_str(why),
            Refusal::Forbidden(topic) => write!(f, "the token does not grant topic {topic}"),
            Refusal::Query(error) => error.fmt(f),
            Refusal::Body(error) => error.fmt(f),
            Refusal::TopicLimit => f.write_str(
                "the broker's topic limit is reached; nothing of the request was published",
            ),
            Refusal::ConnectionLimit => f.write_str("server at its connection limit"),
            Refusal::NotServing => f.write_str(
                "this cluster node is cut off from its stream or catching up: use another node",
            ),
            Refusal::PublishWindowFull => f.write_str(
                "the publish window to the cluster's stream is full; nothing was published, retry",
            ),
            Refusal::PeerConnectionLimit => f.write_str("too many connections from this address"),
            Refusal::PipelinedPastHeldRequest => {
                f.write_str("too much sent while a long-poll or a publish is held")
            }
            Refusal::HeadTimeout => f.write_str("request head not received in time"),
        }
    }
}

impl From<HttpError> for Refusal {
    fn from(error: HttpError) -> Self {
        Refusal::Head(error)
    }
}

impl From<HandshakeError> for Refusal {
    fn from(error: HandshakeError) -> Self {
        Refusal::Upgrade(error)
    }
}

impl From<RouteError> for Refusal {
    fn from(error: RouteError) -> Self {
        Refusal::Route(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::worker_stats::FAILURE_REASONS;

    fn every_kind() -> Vec<Refusal> {
        vec![
            Refusal::Head(HttpError::HeadersTooLarge),
            Refusal::Head(HttpError::Malformed("x")),
            Refusal::Head(HttpError::UnsupportedTransferEncoding),
            Refusal::Head(HttpError::UnsupportedExpectation),
            Refusal::Upgrade(HandshakeError::MethodNotGet),
            Refusal::Upgrade(HandshakeError::UnsupportedVersion),
            Refusal::Route(RouteError::NotFound),
            Refusal::Route(RouteError::MethodNotAllowed { allow: "GET" }),
            Refusal::UnexpectedBody,
            Refusal::BodyTooLarge { max_bytes: 10 },
            Refusal::Unauthorized("a valid token is required"),
            Refusal::Forbidden("AAPL".into()),
            Refusal::Query(QueryError::NoTopic),
            Refusal::Body(PublishError::NoTicks),
            Refusal::TopicLimit,
            Refusal::ConnectionLimit,
            Refusal::NotServing,
            Refusal::PublishWindowFull,
            Refusal::PeerConnectionLimit,
            Refusal::PipelinedPastHeldRequest,
            Refusal::HeadTimeout,
        ]
    }

    #[test]
    fn every_refusal_has_a_counted_label_and_closes() {
        for refusal in every_kind() {
            let label = refusal.label();
            assert!(
                FAILURE_REASONS.contains(&label),
                "{refusal:?}: label {label} is not exported"
            );
            let mut bytes = Vec::new();
            refusal.response().write_to(&mut bytes);
            let text = String::from_utf8(bytes).unwrap();
            let status_line = format!("HTTP/1.1 {} ", refusal.status());
            assert!(text.starts_with(&status_line), "{text}");
            assert!(text.contains("Connection: close"), "{text}");
            assert!(text.ends_with(&format!("{refusal}\n")), "{text}");
        }
    }

    #[test]
    fn statuses_carry_their_required_headers() {
        let mut bytes = Vec::new();
        Refusal::Route(RouteError::MethodNotAllowed { allow: "GET, HEAD" })
            .response()
            .write_to(&mut bytes);
        assert!(String::from_utf8(bytes)
            .unwrap()
            .contains("Allow: GET, HEAD"));
    }
}
