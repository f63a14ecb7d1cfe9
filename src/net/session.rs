//! A pub/sub client's state on its connection, and the `tickfan.v1`
//! operations it sends: subscribe (with snapshot or replay), unsubscribe,
//! publish, and `auth` (in-band authentication, or a token refresh).
//! Errors become `error` events and the connection stays open, until a
//! client has provoked `max_client_errors` of them.
//!
//! Its input comes from the network, so it is held to the lints that
//! rule out panics and silent wrapping (Hardening II: nothing reachable
//! from network input may panic); any `allow` says why its site is safe.

use std::sync::Arc;
use std::time::Instant;

use super::context::Ctx;
use super::out_queue::OutQueue;
use super::token_expiry::{Due, TokenExpiry};
use crate::broker::auth::{Access, Rights, TokenResult};
use crate::broker::client_op::{parse_op, ClientOp};
use crate::broker::events;
use crate::broker::refused::Refused;
use crate::broker::subscriptions::RateCap;
use crate::broker::topic_table::{PublishError, Start};
use crate::protocol::close::CloseCode;
use crate::tick::TopicId;
use crate::topic::TopicName;

/// The per-connection state of a pub/sub client.
#[derive(Debug)]
pub struct Session {
    rights: Rights,
    /// When the connection's JWT ends (static rights never do).
    expiry: Option<TokenExpiry>,
    /// Admitted without a token while one is required: every op but
    /// `auth` is refused, and the connection is closed (4003) at this deadline.
    auth_deadline: Option<Instant>,
    /// The topics this connection subscribes to (a handful: a Vec is faster
    /// than a map and is bounded by `max_topics_per_connection`).
    topics: Vec<(Arc<str>, TopicId)>,
    errors: usize,
    /// `max_client_errors`: errors tolerated before the connection is closed.
    max_errors: usize,
    /// When something was last queued for the client (heartbeats fill silence).
    pub last_sent: Instant,
    /// Since when the outbound queue has been over its bound (`disconnect`).
    pub over_bound_since: Option<Instant>,
}

/// The session asks for the connection to be failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: CloseCode,
    pub reason: &'static str,
}

/// What a passed token deadline asks of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDue {
    /// `token_expiring` was queued.
    Warned,
    /// Close the connection: its token expired, or it never authenticated.
    Close(CloseRequest),
}

impl Session {
    pub fn new(rights: Rights, max_errors: usize, now: Instant) -> Self {
        Session {
            rights,
            expiry: None,
            auth_deadline: None,
            topics: Vec::new(),
            errors: 0,
            max_errors,
            last_sent: now,
            over_bound_since: None,
        }
    }

    /// Sets when the session's token ends (from its rights' JWT, if any).
    pub fn expire_with(mut self, settings: &super::settings::Settings, now: Instant) -> Self {
        self.expiry = TokenExpiry::of(&self.rights, settings, now);
        self
    }

    /// Makes the session wait for an in-band `auth` until `deadline`.
    pub fn await_auth(mut self, deadline: Instant) -> Self {
        self.auth_deadline = Some(deadline);
        self
    }

    /// Whether the client may publish to some topic (a publisher token, a
    /// JWT with `tf.pub`, or publishing is open).
    pub fn can_publish(&self) -> bool {
        self.rights.admit(Access::Publish)
    }

    /// The user of the connection's JWT, for log lines.
    pub fn user(&self) -> Option<&str> {
        self.rights.user()
    }

    /// The next token deadline: the end of the wait for `auth`, the expiry
    /// warning, or the expiry.
    pub fn token_deadline(&self) -> Option<Instant> {
        let expiry = self.expiry.as_ref().map(TokenExpiry::deadline);
        self.auth_deadline.into_iter().chain(expiry).min()
    }

    /// Acts on a passed token deadline: queues `token_expiring`, or asks for
    /// the close (4001 at expiry, 4003 when `auth` never came).
    pub fn on_token_deadline(&mut self, out: &mut OutQueue, now: Instant) -> Option<TokenDue> {
        if self.auth_deadline.is_some_and(|deadline| now >= deadline) {
            return Some(TokenDue::Close(CloseRequest {
                code: CloseCode::AUTH_REQUIRED,
                reason: "authentication required",
            }));
        }
        match self.expiry.as_mut()?.due(now)? {
            Due::Warn { exp, expires_in } => {
                let ms = u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX);
                out.push_event(&events::token_expiring(exp, ms));
                self.last_sent = now;
                Some(TokenDue::Warned)
            }
            Due::Close => Some(TokenDue::Close(CloseRequest {
                code: CloseCode::TOKEN_EXPIRED,
                reason: "token expired: get a new token before reconnecting",
            })),
        }
    }

    /// Whether the connection has subscriptions (and so wants heartbeats).
    pub fn has_topics(&self) -> bool {
        !self.topics.is_empty()
    }

    /// The subscriptions, for heartbeats.
    pub fn topics(&self) -> impl Iterator<Item = &(Arc<str>, TopicId)> {
        self.topics.iter()
    }

    /// Takes every subscription away (the connection is closing).
    pub fn take_topics(&mut self) -> Vec<(Arc<str>, TopicId)> {
        std::mem::take(&mut self.topics)
    }

    /// Handles one text message from the client.
    pub fn on_text(
        &mut self,
        out: &mut OutQueue,
        message: &[u8],
        ctx: &mut Ctx<'_>,
    ) -> Result<(), CloseRequest> {
        match parse_op(message) {
            Ok(op) => self.on_op(out, op, ctx),
            Err(error) => self.refuse(out, &Refused::Invalid(error), None, ctx.now),
        }
    }

    /// Binary messages are not part of the protocol.
    pub fn on_binary(&mut self, out: &mut OutQueue, now: Instant) -> Result<(), CloseRequest> {
        self.refuse(out, &Refused::Binary, None, now)
    }

    fn on_op(
        &mut self,
        out: &mut OutQueue,
        op: ClientOp<'_>,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), CloseRequest> {
        if self.auth_deadline.is_some() && !matches!(op, ClientOp::Auth { .. }) {
            return self.refuse(out, &Refused::AuthFirst, None, ctx.now);
        }
        match op {
            ClientOp::Auth { token } => self.authenticate(out, &token.0, ctx),
            ClientOp::Subscribe {
                topic,
                since,
                epoch,
                max_hz,
            } => {
                let start = Start::from_cursor(since, epoch.as_deref());
                self.subscribe(out, &topic, start, max_hz, ctx)
            }
            ClientOp::Unsubscribe { topic } => self.unsubscribe(out, &topic, ctx),
            ClientOp::Publish { topic, data } => {
                if !self.rights.may_publish(&topic) {
                    let refused = if self.rights.admit(Access::Publish) {
                        count_forbidden(ctx);
                        Refused::TopicForbidden
                    } else {
                        Refused::PublishForbidden
                    };
                    return self.refuse(out, &refused, Some(&topic), ctx.now);
                }
                match ctx.table.publish(&topic, data.get().as_bytes()) {
                    Ok(_) => {
                        ctx.stats.published_ws = ctx.stats.published_ws.saturating_add(1);
                        Ok(())
                    }
                    Err(PublishError::TooManyTopics) => {
                        self.refuse(out, &Refused::BrokerTopicLimit, Some(&topic), ctx.now)
                    }
                    Err(PublishError::NotServing) => {
                        self.refuse(out, &Refused::NotServing, Some(&topic), ctx.now)
                    }
                }
            }
        }
    }

    pub(crate) fn subscribe(
        &mut self,
        out: &mut OutQueue,
        name: &TopicName<'_>,
        start: Start<'_>,
        max_hz: Option<f64>,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), CloseRequest> {
        let topic = name.as_str();
        if !self.rights.may_subscribe(topic) {
            let refused = if self.rights.admit(Access::Subscribe) {
                count_forbidden(ctx);
                Refused::TopicForbidden
            } else {
                Refused::SubscribeForbidden
            };
            return self.refuse(out, &refused, Some(topic), ctx.now);
        }
        if self.topics.iter().any(|(name, _)| &**name == topic) {
            return self.refuse(out, &Refused::AlreadySubscribed, Some(topic), ctx.now);
        }
        if self.topics.len() >= ctx.settings.max_topics_per_connection {
            return self.refuse(out, &Refused::ConnectionTopicLimit, Some(topic), ctx.now);
        }
        let subscribed = ctx.table.subscribe(name, ctx.worker, start);
        let name: Arc<str> = topic.into();
        let rate = max_hz.map(|hz| RateCap::new(hz, ctx.now));
        ctx.local
            .add_subscriber(subscribed.topic, &name, subscribed.seq, ctx.token, rate);
        self.topics.push((name, subscribed.topic));
        out.push_event(&events::subscribed(
            topic,
            subscribed.seq,
            &subscribed.epoch,
        ));
        if let Some((from, to)) = subscribed.gap {
            out.push_event(&events::gap(topic, from, to));
        }
        for tick in subscribed.ticks {
            out.push_tick_unbounded(tick);
        }
        self.last_sent = ctx.now;
        Ok(())
    }

    fn unsubscribe(
        &mut self,
        out: &mut OutQueue,
        topic: &str,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), CloseRequest> {
        let Some(index) = self.topics.iter().position(|(name, _)| &**name == topic) else {
            return self.refuse(out, &Refused::NotSubscribed, Some(topic), ctx.now);
        };
        let (name, id) = self.topics.swap_remove(index);
        ctx.local.remove(id, ctx.token);
        ctx.table.unsubscribe(&name, id, ctx.worker);
        out.purge_topic(id);
        out.push_event(&events::unsubscribed(topic));
        Ok(())
    }

    /// `{"op":"auth"}`: takes the token's rights when it verifies. A
    /// connection that already has a JWT must keep its user (`sub`): a
    /// refresh extends the connection, it never turns it into another
    /// user's. Subscriptions the new token does not grant are ended. A
    /// refused token is an `auth_failed` error event; for a connection still
    /// waiting for its first token it is the close (4003).
    fn authenticate(
        &mut self,
        out: &mut OutQueue,
        token: &str,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), CloseRequest> {
        let authentication = ctx.auth.authenticate(Some(token));
        let refreshing = self.rights.grant.is_some();
        let mut label = authentication.result.label().unwrap_or("malformed");
        let refusal = match &authentication.result {
            TokenResult::Refused(error) => Some(error.to_string()),
            TokenResult::Unknown | TokenResult::None => Some("unknown token".to_owned()),
            TokenResult::Static | TokenResult::Jwt
                if refreshing && authentication.rights.user() != self.rights.user() =>
            {
                label = "wrong_user";
                Some("a refresh must carry the same sub as the connection's token".to_owned())
            }
            TokenResult::Static | TokenResult::Jwt => None,
        };
        if label != "wrong_user" {
            ctx.metrics.auth.count("in_band", label);
        }
        if refreshing {
            ctx.metrics.auth.count_refresh(refusal.is_none());
        }
        if let Some(why) = refusal {
            tracing::debug!(user = self.user().unwrap_or("-"), result = label, "in-band auth refused");
            if self.auth_deadline.is_some() {
                return Err(CloseRequest {
                    code: CloseCode::AUTH_REQUIRED,
                    reason: "authentication failed",
                });
            }
            return self.refuse(out, &Refused::AuthFailed(why), None, ctx.now);
        }
        self.rights = authentication.rights;
        self.auth_deadline = None;
        let previous = self.expiry.take();
        self.expiry = TokenExpiry::of(&self.rights, ctx.settings, ctx.now);
        if let (Some(expiry), Some(previous)) = (&mut self.expiry, &previous) {
            expiry.carry_warning(previous, ctx.now);
        }
        tracing::debug!(user = self.user().unwrap_or("-"), refresh = refreshing, "in-band auth");
        let revoked: Vec<Arc<str>> = self
            .topics
            .iter()
            .filter(|(name, _)| !self.rights.may_subscribe(name))
            .map(|(name, _)| Arc::clone(name))
            .collect();
        for topic in revoked {
            self.unsubscribe(out, &topic, ctx)?;
        }
        let exp = self.rights.grant.as_ref().map(|g| g.exp);
        out.push_event(&events::authenticated(self.user(), exp));
        self.last_sent = ctx.now;
        Ok(())
    }

    /// Sends an error event; too many of them fail the connection (1008).
    fn refuse(
        &mut self,
        out: &mut OutQueue,
        refused: &Refused,
        topic: Option<&str>,
        now: Instant,
    ) -> Result<(), CloseRequest> {
        self.errors = self.errors.saturating_add(1);
        out.push_event(&events::error(refused.code(), &refused.message(), topic));
        self.last_sent = now;
        if self.errors >= self.max_errors {
            return Err(CloseRequest {
                code: CloseCode::POLICY_VIOLATION,
                reason: "too many invalid operations",
            });
        }
        Ok(())
    }
}

/// Counts an op refused for a topic outside the token's patterns.
fn count_forbidden(ctx: &Ctx<'_>) {
    ctx.metrics
        .auth
        .count("websocket", crate::metrics::auth::FORBIDDEN_TOPIC);
}
