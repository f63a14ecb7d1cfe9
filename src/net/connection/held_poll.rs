//! Long-polling on a connection (`GET /poll`): answered at once when the
//! history ring has ticks after the client's cursors, otherwise held — no
//! CPU, just a timer and a local subscription per topic — until a tick
//! arrives or the hold times out (204). HTTP keep-alive lets a client poll in
//! a loop on one connection.

use std::sync::Arc;
use std::time::Instant;

use super::{Connection, Flow, Phase, Verdict};
use crate::broker::topic_table::Start;
use crate::http::longpoll::{poll_body, Gap};
use crate::http::query::{format_cursor, StreamRequest};
use crate::http::request::Request;
use crate::http::response::Response;
use crate::net::context::{Ctx, Transport};
use crate::tick::{Tick, TopicId};

/// One topic of a held poll and the client's position in it.
#[derive(Debug)]
struct PollTopic {
    name: Arc<str>,
    id: TopicId,
    /// The newest seq the client has (or will have, with this answer).
    cursor: u64,
    /// The topic's numbering, told in the answer's `epochs`.
    epoch: String,
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
    /// `timeout=0`: answered at once, with a 200 that carries the cursors
    /// and epochs even without ticks, so that a client learns where every
    /// topic is (and its numbering) before anything is published.
    answer_empty: bool,
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

    pub(super) fn topic_ids(&self) -> impl Iterator<Item = TopicId> + '_ {
        self.topics.iter().map(|t| t.id)
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
            answer_empty: stream.timeout.is_zero(),
            expires: ctx.now + stream.timeout,
        };
        for wanted in &stream.topics {
            let start = Start::from_cursor(wanted.since, wanted.epoch.as_deref());
            let subscribed = ctx.table.subscribe(&wanted.topic, ctx.worker, start);
            let name: Arc<str> = wanted.topic.as_str().into();
            if let Some((from, to)) = subscribed.gap {
                poll.gaps.push(Gap {
                    topic: wanted.topic.to_string(),
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
                cursor: if wanted
                    .epoch
                    .as_deref()
                    .is_some_and(|e| e != subscribed.epoch)
                {
                    // Another numbering: the client's seqs mean nothing
                    // here; the snapshot in the answer (if any) moves the
                    // cursor to where this numbering is.
                    0
                } else {
                    wanted.since.unwrap_or(subscribed.seq).min(subscribed.seq)
                },
                epoch: subscribed.epoch,
            });
        }
        let transport = self.set_transport(Transport::LongPoll);
        ctx.stats.count_handshake(transport);
        let answer_now = poll.is_ready() || !poll.gaps.is_empty() || poll.answer_empty;
        self.enter(Phase::Polling(Box::new(poll)), ctx.now);
        if answer_now {
            self.finish_poll(ctx);
        }
        // Answered at once: a request pipelined behind it is next.
        let flow = match self.phase {
            Phase::Http(_) => Flow::Continue,
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
                answer_empty: false,
                expires: ctx.now,
            }),
        );
        for topic in &poll.topics {
            ctx.local.remove(topic.id, ctx.token);
            ctx.table.unsubscribe(&topic.name, topic.id, ctx.worker);
        }
        let response = if poll.ticks.is_empty() && poll.gaps.is_empty() && !poll.answer_empty {
            Response::new(204)
        } else {
            let kept = answer_prefix(&poll.ticks, ctx.settings.out_pause_bytes());
            advance_cursors(&mut poll.topics, &poll.ticks, kept);
            poll.ticks.truncate(kept);
            let cursor = format_cursor(poll.topics.iter().map(|t| (&*t.name, t.cursor)));
            let epochs: Vec<(&str, &str)> = poll
                .topics
                .iter()
                .map(|t| (&*t.name, t.epoch.as_str()))
                .collect();
            ctx.stats.count_delivered(self.transport, poll.ticks.len());
            Response::json(200, poll_body(&poll.ticks, &poll.gaps, &cursor, &epochs))
                .header("Cache-Control", "no-store")
        };
        poll.topics.clear();
        self.answer_held(response, poll.keep_alive, poll.announce_keep_alive, ctx.now);
        Verdict::Keep
    }
}

/// How many of `ticks` (in the order they are answered) fit in an answer of
/// about `max_bytes`: at least one, so a single large tick still goes out.
/// The rest stays in the history ring for the client's next poll, which its
/// cursor asks for at once: one request never costs more than one bounded
/// answer, whatever the history and the number of topics.
fn answer_prefix(ticks: &[Tick], max_bytes: usize) -> usize {
    let mut bytes = 0usize;
    ticks
        .iter()
        .take_while(|tick| {
            let fits = bytes == 0 || bytes.saturating_add(tick.envelope().len()) <= max_bytes;
            bytes = bytes.saturating_add(tick.envelope().len());
            fits
        })
        .count()
}

/// Moves each topic's cursor to the newest of its ticks in the answer (the
/// first `kept` of `ticks`). A topic whose ticks were all left out has its
/// cursor just before the first of them, so the next poll brings them.
fn advance_cursors(topics: &mut [PollTopic], ticks: &[Tick], kept: usize) {
    for topic in topics.iter_mut() {
        let mut answered = None;
        let mut first_left_out = None;
        for (i, tick) in ticks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.topic == topic.id)
        {
            if i < kept {
                answered = answered.max(Some(tick.seq));
            } else {
                first_left_out = first_left_out.or(Some(tick.seq));
            }
        }
        topic.cursor = match (answered, first_left_out) {
            (Some(seq), _) => topic.cursor.max(seq),
            (None, Some(seq)) => topic.cursor.min(seq.saturating_sub(1)),
            (None, None) => topic.cursor,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::TopicName;

    fn ticks(topic: u64, seqs: std::ops::RangeInclusive<u64>) -> Vec<Tick> {
        seqs.map(|seq| {
            Tick::encode(
                TopicId(topic),
                &TopicName::new("T").unwrap(),
                seq,
                0,
                b"12345678",
            )
        })
        .collect()
    }

    #[test]
    fn answer_is_cut_to_the_bound_and_cursors_resume_after_it() {
        let mut all = ticks(1, 1..=10);
        all.extend(ticks(2, 5..=6));
        let one = all[0].envelope().len();
        assert_eq!(answer_prefix(&all, usize::MAX), 12);
        assert_eq!(answer_prefix(&all, one * 4), 4);
        assert_eq!(
            answer_prefix(&all, 1),
            1,
            "a tick over the bound still goes"
        );
        let mut topics = vec![
            PollTopic {
                name: "A".into(),
                id: TopicId(1),
                cursor: 0,
                epoch: String::new(),
            },
            PollTopic {
                name: "B".into(),
                id: TopicId(2),
                cursor: 6, // "latest" without a cursor: the snapshot's seq
                epoch: String::new(),
            },
        ];
        advance_cursors(&mut topics, &all, 4);
        assert_eq!(topics[0].cursor, 4);
        assert_eq!(
            topics[1].cursor, 4,
            "B's snapshot was left out: ask again from 5"
        );
        advance_cursors(&mut topics, &all, 12);
        assert_eq!((topics[0].cursor, topics[1].cursor), (10, 6));
    }
}
