//! The client → server half of the `tickfan.v1` protocol: JSON operations in
//! WebSocket text messages (see README.md, "Client protocol").
//!
//! Parsing borrows from the message; the publisher's `data` is validated as
//! JSON and kept as the exact bytes it arrived as, never re-serialised.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::topic::{BadTopic, TopicName};
use crate::wire::checked_max_hz;

pub use crate::wire::{MAX_HZ_LIMIT, MIN_MAX_HZ};

/// One operation a client asked for.
#[derive(Debug)]
pub enum ClientOp<'a> {
    Subscribe {
        topic: TopicName<'a>,
        /// Resume after this seq (recovery after a reconnect).
        since: Option<u64>,
        /// The epoch `since` belongs to, if the client knows it.
        epoch: Option<Cow<'a, str>>,
        /// At most this many ticks per second (the newest wins).
        max_hz: Option<f64>,
    },
    Unsubscribe {
        topic: TopicName<'a>,
    },
    Publish {
        topic: TopicName<'a>,
        /// The publisher's JSON, byte for byte.
        data: &'a RawValue,
    },
    /// `{"op":"auth","token":"..."}`: authenticate in-band, or refresh the
    /// connection's token before it expires. The token is a secret: this
    /// variant's `Debug` does not show it.
    Auth { token: Secret<'a> },
}

/// A token as it arrived; `Debug` prints only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<'a>(pub Cow<'a, str>);

impl std::fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Why an operation was refused; each maps to an `error` event code.
#[derive(Debug, Clone, PartialEq)]
pub enum OpError {
    /// Not JSON, or not an object of the expected shape.
    BadJson(String),
    UnknownOp(String),
    MissingField(&'static str),
    BadTopic(BadTopic),
    BadField {
        field: &'static str,
        reason: &'static str,
    },
}

impl OpError {
    /// The `code` of the error event.
    pub fn code(&self) -> &'static str {
        match self {
            OpError::BadJson(_) => "bad_json",
            OpError::UnknownOp(_) => "unknown_op",
            OpError::MissingField(_) => "missing_field",
            OpError::BadTopic(_) => "bad_topic",
            OpError::BadField { .. } => "bad_field",
        }
    }

    /// A human-readable message for the error event.
    pub fn message(&self) -> String {
        match self {
            OpError::BadJson(detail) => format!("not a valid operation: {detail}"),
            OpError::UnknownOp(op) => {
                format!("unknown op {op:?}; expected \"sub\", \"unsub\", \"pub\" or \"auth\"")
            }
            OpError::MissingField(field) => format!("missing field \"{field}\""),
            OpError::BadTopic(bad) => bad.to_string(),
            OpError::BadField { field, reason } => format!("field \"{field}\": {reason}"),
        }
    }
}

/// The wire shape before the op-specific checks.
#[derive(Deserialize)]
struct WireOp<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow, default)]
    topic: Option<Cow<'a, str>>,
    #[serde(default)]
    since: Option<u64>,
    #[serde(borrow, default)]
    epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    max_hz: Option<f64>,
    /// Present-but-null must stay distinguishable from absent.
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<Cow<'a, str>>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Parses one text message into an operation.
pub fn parse_op(message: &[u8]) -> Result<ClientOp<'_>, OpError> {
    let wire: WireOp<'_> =
        serde_json::from_slice(message).map_err(|e| OpError::BadJson(e.to_string()))?;
    if wire.op == "auth" {
        let token = wire.token.ok_or(OpError::MissingField("token"))?;
        return Ok(ClientOp::Auth {
            token: Secret(token),
        });
    }
    let topic = wire.topic.ok_or(OpError::MissingField("topic"))?;
    let topic = TopicName::new(topic).map_err(OpError::BadTopic)?;
    match wire.op.as_ref() {
        "sub" => {
            let max_hz = match wire.max_hz.map(checked_max_hz) {
                Some(Err(())) => {
                    return Err(OpError::BadField {
                        field: "max_hz",
                        reason: "must be a number from 0.001 (one tick per 1,000 s) up",
                    })
                }
                Some(Ok(hz)) => hz,
                None => None,
            };
            Ok(ClientOp::Subscribe {
                topic,
                since: wire.since,
                epoch: wire.epoch,
                max_hz,
            })
        }
        "unsub" => Ok(ClientOp::Unsubscribe { topic }),
        "pub" => Ok(ClientOp::Publish {
            topic,
            data: wire.data.ok_or(OpError::MissingField("data"))?,
        }),
        other => Err(OpError::UnknownOp(other.chars().take(32).collect())),
    }
}

#[cfg(test)]
// Tests unwrap freely: a panic there is a failed test.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_forms() {
        let op = parse_op(br#"{"op":"sub","topic":"AAPL"}"#).unwrap();
        assert!(
            matches!(op, ClientOp::Subscribe { ref topic, since: None, epoch: None, max_hz: None } if topic.as_str() == "AAPL")
        );
        let op = parse_op(br#"{"op":"sub","topic":"AAPL","since":41,"epoch":"k3f9","max_hz":10}"#)
            .unwrap();
        match op {
            ClientOp::Subscribe {
                since,
                epoch,
                max_hz,
                ..
            } => {
                assert_eq!(since, Some(41));
                assert_eq!(epoch.as_deref(), Some("k3f9"));
                assert_eq!(max_hz, Some(10.0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn publish_keeps_data_byte_for_byte() {
        let msg = br#"{"op":"pub","topic":"AAPL","data":{"bid": 189.210, "x":[1, 2]}}"#;
        match parse_op(msg).unwrap() {
            ClientOp::Publish { data, .. } => {
                assert_eq!(data.get(), r#"{"bid": 189.210, "x":[1, 2]}"#)
            }
            other => panic!("{other:?}"),
        }
        match parse_op(br#"{"op":"pub","topic":"A","data":null}"#).unwrap() {
            ClientOp::Publish { data, .. } => assert_eq!(data.get(), "null"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn auth_carries_its_token_and_hides_it() {
        match parse_op(br#"{"op":"auth","token":"eyJ.a.b"}"#).unwrap() {
            ClientOp::Auth { token } => {
                assert_eq!(token.0, "eyJ.a.b");
                assert!(!format!("{token:?}").contains("eyJ"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_op(br#"{"op":"auth"}"#).unwrap_err(),
            OpError::MissingField("token")
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(parse_op(b"not json").unwrap_err().code(), "bad_json");
        assert_eq!(parse_op(b"[1,2]").unwrap_err().code(), "bad_json");
        assert_eq!(
            parse_op(br#"{"op":"sub"}"#).unwrap_err(),
            OpError::MissingField("topic")
        );
        assert_eq!(
            parse_op(br#"{"op":"pub","topic":"A"}"#).unwrap_err(),
            OpError::MissingField("data")
        );
        assert_eq!(
            parse_op(br#"{"op":"nope","topic":"A"}"#)
                .unwrap_err()
                .code(),
            "unknown_op"
        );
        assert_eq!(
            parse_op(br#"{"op":"sub","topic":"a b"}"#)
                .unwrap_err()
                .code(),
            "bad_topic"
        );
        assert_eq!(
            parse_op(br#"{"op":"sub","topic":"A","since":-1}"#)
                .unwrap_err()
                .code(),
            "bad_json"
        );
        assert_eq!(
            parse_op(br#"{"op":"sub","topic":"A","max_hz":0}"#)
                .unwrap_err()
                .code(),
            "bad_field"
        );
        // Positive but far below one tick per 1,000 s: once a panic when
        // turned into a Duration, now refused.
        for tiny in ["1e-20", "5e-324", "0.0009", "-1", "1e400"] {
            let op = format!(r#"{{"op":"sub","topic":"A","max_hz":{tiny}}}"#);
            let code = parse_op(op.as_bytes())
                .map(|_| "ok")
                .unwrap_or_else(|e| e.code());
            assert_ne!(code, "ok", "max_hz {tiny} must be refused");
        }
        assert!(parse_op(br#"{"op":"sub","topic":"A","max_hz":0.001}"#).is_ok());
        assert_eq!(
            parse_op(br#"{"op":"pub","topic":"A","data":{"x":}}"#)
                .unwrap_err()
                .code(),
            "bad_json"
        );
    }
}
