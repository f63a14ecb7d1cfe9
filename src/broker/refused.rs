//! Why the broker refused a client's operation, decided in one place: each
//! refusal maps to the `code` and `message` of the `error` event it is
//! answered with (README.md, "Client protocol"), as
//! [`crate::protocol::error::ProtocolError::close_code`] does for close
//! codes. The session picks the variant; it never writes a code itself.

use std::borrow::Cow;

use super::client_op::OpError;

/// A refused operation (the connection stays open, up to
/// `broker.max_client_errors` of them).
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// Not a valid operation.
    Invalid(OpError),
    /// A binary message: operations are JSON text.
    Binary,
    /// A publish without publisher rights.
    PublishForbidden,
    /// A subscribe without subscriber rights.
    SubscribeForbidden,
    /// A `sub` or `pub` on a topic outside the token's patterns.
    TopicForbidden,
    /// An op before the `auth` a connection admitted without a token owes.
    AuthFirst,
    /// An in-band `auth` whose token was refused (the reason, never the token).
    AuthFailed(String),
    AlreadySubscribed,
    NotSubscribed,
    /// `broker.max_topics_per_connection` subscriptions exist.
    ConnectionTopicLimit,
    /// A publish would pass `broker.max_topics`.
    BrokerTopicLimit,
    /// Cluster mode: the node is cut off from its stream (the connection
    /// is about to be closed with 4000 "reconnect elsewhere").
    NotServing,
}

impl Refused {
    /// The `code` of the `error` event.
    pub fn code(&self) -> &'static str {
        match self {
            Refused::Invalid(error) => error.code(),
            Refused::Binary => "binary_not_supported",
            Refused::PublishForbidden
            | Refused::SubscribeForbidden
            | Refused::TopicForbidden
            | Refused::AuthFirst => "forbidden",
            Refused::AuthFailed(_) => "auth_failed",
            Refused::AlreadySubscribed => "already_subscribed",
            Refused::NotSubscribed => "not_subscribed",
            Refused::ConnectionTopicLimit | Refused::BrokerTopicLimit => "too_many_topics",
            Refused::NotServing => "not_serving",
        }
    }

    /// The `message` of the `error` event.
    pub fn message(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Refused::Invalid(error) => return Cow::Owned(error.message()),
            Refused::AuthFailed(why) => return Cow::Owned(why.clone()),
            Refused::TopicForbidden => "the token does not grant this topic",
            Refused::AuthFirst => "authenticate first with {\"op\":\"auth\",\"token\":...}",
            Refused::Binary => "operations are JSON text messages",
            Refused::PublishForbidden => "publishing needs a publisher token",
            Refused::SubscribeForbidden => "subscribing needs a token",
            Refused::AlreadySubscribed => "already subscribed to this topic",
            Refused::NotSubscribed => "not subscribed to this topic",
            Refused::ConnectionTopicLimit => "this connection's topic limit is reached",
            Refused::BrokerTopicLimit => "the broker's topic limit is reached",
            Refused::NotServing => "this cluster node cannot publish now: use another node",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        let documented = [
            "bad_json",
            "unknown_op",
            "missing_field",
            "bad_topic",
            "bad_field",
            "forbidden",
            "too_many_topics",
            "already_subscribed",
            "not_subscribed",
            "binary_not_supported",
            "auth_failed",
            "not_serving",
        ];
        let refusals = [
            Refused::Invalid(OpError::MissingField("topic")),
            Refused::Binary,
            Refused::PublishForbidden,
            Refused::SubscribeForbidden,
            Refused::TopicForbidden,
            Refused::AuthFirst,
            Refused::AuthFailed("expired".into()),
            Refused::AlreadySubscribed,
            Refused::NotSubscribed,
            Refused::ConnectionTopicLimit,
            Refused::BrokerTopicLimit,
            Refused::NotServing,
        ];
        for refused in refusals {
            assert!(documented.contains(&refused.code()), "{refused:?}");
            assert!(!refused.message().is_empty());
        }
    }
}
