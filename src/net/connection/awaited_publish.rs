//! Cluster mode: a `POST /publish` is answered only once the stream has
//! stored every tick it carries, with the seqs the stream gave them, so a
//! 202 means stored on the cluster (README.md, "Cluster"). Until then the
//! connection holds the request like a long-poll: nothing after it is read
//! (a request pipelined behind it waits its turn), and its deadline is
//! `Settings::stored_answer_timeout`.

use std::time::Instant;

use super::{Connection, Phase, Verdict};
use crate::broker::cluster_link::ReplyTo;
use crate::http::response::Response;
use crate::net::context::Ctx;

/// A publish request waiting for the stream's outcome of each of its ticks.
#[derive(Debug)]
pub(super) struct AwaitedPublish {
    /// Matches the receipts of this request (see [`ReplyTo::request`]).
    request: u64,
    topics: Vec<String>,
    outcomes: Vec<Outcome>,
    /// `?topic=`: answered with one object, as in single-node mode.
    single: bool,
    keep_alive: bool,
    /// The answer must say `Connection: keep-alive` (an HTTP/1.0 client).
    announce_keep_alive: bool,
    pub(super) expires: Instant,
}

/// What the stream did with one tick of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Waiting,
    Stored(u64),
    GivenUp,
}

/// What [`Connection::await_stored`] needs of the request it holds.
#[derive(Debug)]
pub(super) struct PublishRequest {
    pub reply_to: ReplyTo,
    pub topics: Vec<String>,
    pub single: bool,
    pub keep_alive: bool,
    pub announce_keep_alive: bool,
}

impl AwaitedPublish {
    fn is_complete(&self) -> bool {
        !self.outcomes.contains(&Outcome::Waiting)
    }

    /// The answer: 202 with every seq when all were stored; otherwise 504,
    /// each tick with its seq or `null`. A `null` tick is not known to be
    /// stored, nor known not to be: an attempt given up after its ack
    /// timed out may still have reached the stream.
    fn response(&self) -> Response {
        let ticks: Vec<serde_json::Value> = self
            .topics
            .iter()
            .zip(&self.outcomes)
            .map(|(topic, outcome)| {
                let seq = match outcome {
                    Outcome::Stored(seq) => serde_json::json!(seq),
                    Outcome::Waiting | Outcome::GivenUp => serde_json::Value::Null,
                };
                serde_json::json!({"topic": topic, "seq": seq})
            })
            .collect();
        let stored = self
            .outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Stored(_)))
            .count();
        if stored == self.outcomes.len() {
            let body = match (self.single, ticks.first()) {
                (true, Some(tick)) => tick.clone(),
                _ => serde_json::json!({"published": stored, "ticks": ticks}),
            };
            return Response::json(202, body.to_string());
        }
        let body = serde_json::json!({
            "error": "not_confirmed",
            "message": "the cluster's stream did not confirm every tick within cluster.publish_timeout_ms; a tick with \"seq\": null may or may not be stored",
            "published": stored,
            "ticks": ticks,
        });
        Response::json(504, body.to_string())
    }
}

impl Connection {
    /// Holds a publish request until the stream's outcome of each of its
    /// ticks has arrived ([`Self::on_stored`]) or its deadline passes.
    pub(super) fn await_stored(&mut self, request: PublishRequest, ctx: &mut Ctx<'_>) {
        let awaited = AwaitedPublish {
            request: request.reply_to.request,
            outcomes: vec![Outcome::Waiting; request.topics.len()],
            topics: request.topics,
            single: request.single,
            keep_alive: request.keep_alive,
            announce_keep_alive: request.announce_keep_alive,
            expires: ctx.now + ctx.settings.stored_answer_timeout,
        };
        self.enter(Phase::AwaitingStored(Box::new(awaited)), ctx.now);
    }

    /// The engine's word on item `item` of request `request`: stored at
    /// `seq`, or given up (`None`). An outcome for another request (this
    /// connection's token once belonged to a connection that closed while
    /// it waited) is dropped. Answers once the last outcome is in.
    pub fn on_stored(
        &mut self,
        request: u64,
        item: usize,
        seq: Option<u64>,
        ctx: &mut Ctx<'_>,
    ) -> Verdict {
        let Phase::AwaitingStored(awaited) = &mut self.phase else {
            return Verdict::Keep;
        };
        if awaited.request != request {
            return Verdict::Keep;
        }
        if let Some(outcome) = awaited.outcomes.get_mut(item) {
            *outcome = seq.map_or(Outcome::GivenUp, Outcome::Stored);
        }
        if awaited.is_complete() {
            self.answer_stored(ctx);
        }
        Verdict::Keep
    }

    /// Answers the held publish with what is known now (at its deadline,
    /// 504 for what is not), and goes back to reading requests.
    pub(super) fn answer_stored(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        let Phase::AwaitingStored(awaited) = &self.phase else {
            return Verdict::Keep;
        };
        let response = awaited.response();
        let (keep_alive, announce) = (awaited.keep_alive, awaited.announce_keep_alive);
        self.answer_held(response, keep_alive, announce, ctx.now);
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn awaited(outcomes: Vec<Outcome>, single: bool) -> AwaitedPublish {
        AwaitedPublish {
            request: 1,
            topics: (0..outcomes.len()).map(|i| format!("T{i}")).collect(),
            outcomes,
            single,
            keep_alive: true,
            announce_keep_alive: false,
            expires: Instant::now(),
        }
    }

    fn status_and_body(response: &Response) -> (u16, serde_json::Value) {
        let mut bytes = Vec::new();
        response.write_to(&mut bytes);
        let text = String::from_utf8(bytes).unwrap();
        let status = text[9..12].parse().unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        (status, serde_json::from_str(body).unwrap())
    }

    #[test]
    fn all_stored_is_a_202_with_the_streams_seqs() {
        let (status, body) = status_and_body(
            &awaited(vec![Outcome::Stored(7), Outcome::Stored(9)], false).response(),
        );
        assert_eq!(status, 202);
        assert_eq!(body["published"], 2);
        assert_eq!(body["ticks"][1]["seq"], 9);
        let (status, body) = status_and_body(&awaited(vec![Outcome::Stored(3)], true).response());
        assert_eq!(
            (status, body),
            (202, serde_json::json!({"topic": "T0", "seq": 3}))
        );
    }

    #[test]
    fn a_tick_not_confirmed_makes_a_504_naming_what_was_stored() {
        for missing in [Outcome::GivenUp, Outcome::Waiting] {
            let answer = awaited(vec![Outcome::Stored(7), missing], false);
            assert_eq!(answer.is_complete(), missing == Outcome::GivenUp);
            let (status, body) = status_and_body(&answer.response());
            assert_eq!(status, 504);
            assert_eq!(body["error"], "not_confirmed");
            assert_eq!(body["published"], 1);
            assert_eq!(body["ticks"][0]["seq"], 7);
            assert!(body["ticks"][1]["seq"].is_null());
        }
    }
}
