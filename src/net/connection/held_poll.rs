//! Long-polling on a connection (`GET /poll`): answered at once when the
//! history ring has ticks after the client's cursors, otherwise held — no
//! CPU, just a timer and a local subscription per topic — until a tick
//! arrives or the hold times out (204). HTTP keep-alive lets a client poll in
//! a loop on one connection.

use std::sync::Arc;
use std::time::Instant;

use super::{Connection, Flow, Phase, Verdict};
use crate::broker::tick::{Tick, TopicId};
use crate::broker::topic_table::Start;
use crate::http::longpoll::{poll_body, Gap};
use crate::http::query::{format_cursor, StreamRequest};
use crate::http::request::Request;
use crate::http::response::Response;
use crate::net::context::{Ctx, Transport};

/// One topic of a held poll and the client's position in it.
#[derive(Debug)]
struct PollTopic {
    name: Arc<str>,
    id: TopicId,
    /// The newest seq the client has (or will have, with this answer).
    cursor: u64,
}

/// A long-poll waiting for ticks.
#[derive(Debug)]
pub(super) struct HeldPoll {
    topics: Vec<PollTopic>,
    ticks: Vec<Tick>,
    gaps: Vec<Gap>,
    keep_alive: bool,
    /// The answer must say `Connection: keep-alive` (an HTTP/1.0 client).
    announce_keep_alive: bool,
    pub(super) expires: Instant,
}

impl HeldPoll {
    /// A tick arrived for one of the topics: it answers the poll this turn.
    pub(super) fn add(&mut self, tick: &Tick) {
        self.ticks.push(tick.clone());
    }

    /// Whether ticks are waiting to be answered.
    pub(super) fn is_ready(&self) -> bool {
        !self.ticks.is_empty()
    }

    pub(super) fn topic_count(&self) -> usize {
        self.topics.len()
    }

    pub(super) fn take_topics(&mut self) -> Vec<(Arc<str>, TopicId)> {
        self.topics.drain(..).map(|t| (t.name, t.id)).collect()
    }
}

impl Connection {
    /// Starts a long-poll: registers on every topic (under each topic's lock,
    /// so nothing published meanwhile is missed), then answers at once or holds.
    pub(super) fn start_poll(
        &mut self,
        request: &Request<'_>,
        stream: StreamRequest,
        ctx: &mut Ctx<'_>,
    ) -> (usize, Flow) {
        let mut poll = HeldPoll {
            topics: Vec::with_capacity(stream.topics.len()),
            ticks: Vec::new(),
            gaps: Vec::new(),
            keep_alive: request.keep_alive(),
            announce_keep_alive: request.needs_keep_alive_header(),
            expires: ctx.now + stream.timeout,
        };
        for wanted in &stream.topics {
            let start = Start::from_cursor(wanted.since, None);
            let Ok(subscribed) = ctx.table.subscribe(&wanted.topic, ctx.worker, start) else {
                for (name, id) in poll.take_topics() {
                    ctx.local.remove(id, ctx.token);
                    ctx.table.unsubscribe(&name, id, ctx.worker);
                }
                self.refuse(
                    Response::error(503, "the broker's topic limit is reached"),
                    ctx,
                );
                return (request.head_len, Flow::NeedMore);
            };
            let name: Arc<str> = wanted.topic.as_str().into();
            if let Some((from, to)) = subscribed.gap {
                poll.gaps.push(Gap {
                    topic: wanted.topic.clone(),
                    from,
                    to,
                });
            }
            poll.ticks.extend(subscribed.ticks);
            ctx.local
                .add_subscriber(subscribed.topic, &name, subscribed.seq, ctx.token, None);
            poll.topics.push(PollTopic {
                name,
                id: subscribed.topic,
                cursor: wanted.since.unwrap_or(subscribed.seq).min(subscribed.seq),
            });
        }
        ctx.stats.handshakes[Transport::LongPoll as usize] += 1;
        let answer_now = poll.is_ready() || !poll.gaps.is_empty();
        self.transport = Transport::LongPoll;
        self.enter(Phase::Polling(Box::new(poll)), ctx.now);
        if answer_now {
            self.finish_poll(ctx);
        }
        // Answered at once: a request pipelined behind it is next.
        let flow = match self.phase {
            Phase::Http => Flow::Continue,
            _ => Flow::NeedMore,
        };
        (request.head_len, flow)
    }

    /// Whether a held poll has ticks to answer with (the worker then calls
    /// [`Self::finish_poll`] once per loop turn).
    pub fn poll_ready(&self) -> bool {
        matches!(&self.phase, Phase::Polling(poll) if poll.is_ready())
    }

    /// Answers a held poll with what it collected (or 204 when it timed
    /// out), drops its subscriptions, and waits for the next request.
    pub fn finish_poll(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        let Phase::Polling(poll) = &mut self.phase else {
            return Verdict::Keep;
        };
        let mut poll = std::mem::replace(
            poll,
            Box::new(HeldPoll {
                topics: Vec::new(),
                ticks: Vec::new(),
                gaps: Vec::new(),
                keep_alive: false,
                announce_keep_alive: false,
                expires: ctx.now,
            }),
        );
        for topic in &poll.topics {
            ctx.local.remove(topic.id, ctx.token);
            ctx.table.unsubscribe(&topic.name, topic.id, ctx.worker);
        }
        let response = if poll.ticks.is_empty() && poll.gaps.is_empty() {
            Response::new(204)
        } else {
            for tick in &poll.ticks {
                if let Some(topic) = poll.topics.iter_mut().find(|t| t.id == tick.topic) {
                    topic.cursor = topic.cursor.max(tick.seq);
                }
            }
            let cursor = format_cursor(poll.topics.iter().map(|t| (&*t.name, t.cursor)));
            ctx.stats.delivered[Transport::LongPoll as usize] += poll.ticks.len() as u64;
            Response::json(200, poll_body(&poll.ticks, &poll.gaps, &cursor))
                .header("Cache-Control", "no-store")
        };
        poll.topics.clear();
        if poll.keep_alive {
            let response = if poll.announce_keep_alive {
                response.keep_alive()
            } else {
                response
            };
            self.out.append(|buf| response.write_to(buf));
            self.enter(Phase::Http, ctx.now);
            if !self.pending.is_empty() {
                // Requests that arrived while the poll was held.
                self.pending_unprocessed = true;
                self.read_unfinished = true;
            }
        } else {
            self.respond_and_close(response, ctx.now);
        }
        Verdict::Keep
    }
}
