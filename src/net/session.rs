//! A pub/sub client's state on its connection, and the `tickfan.v1`
//! operations it sends: subscribe (with snapshot or replay), unsubscribe,
//! publish. Errors become `error` events and the connection stays open,
//! until a client has provoked `max_client_errors` of them.
//!
//! Its input comes from the network, so it is held to the lints that
//! rule out panics and silent wrapping (Hardening II: nothing reachable
//! from network input may panic); any `allow` says why its site is safe.

use std::sync::Arc;
use std::time::Instant;

use super::context::Ctx;
use super::out_queue::OutQueue;
use crate::broker::auth::Rights;
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

impl Session {
    pub fn new(rights: Rights, max_errors: usize, now: Instant) -> Self {
        Session {
            rights,
            topics: Vec::new(),
            errors: 0,
            max_errors,
            last_sent: now,
            over_bound_since: None,
        }
    }

    /// Whether the client presented a publisher token (or publishing is open).
    pub fn can_publish(&self) -> bool {
        self.rights.publish
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
        match op {
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
                if !self.rights.publish {
                    return self.refuse(out, &Refused::PublishForbidden, Some(&topic), ctx.now);
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
        if !self.rights.subscribe {
            return self.refuse(out, &Refused::SubscribeForbidden, Some(topic), ctx.now);
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
