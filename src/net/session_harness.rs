//! One pub/sub [`Session`] with everything a worker lends it, outside a
//! worker: so the fuzzer (`fuzz/fuzz_targets/session_ops.rs`) and tests can
//! drive the real session code — parsing, `max_hz`, `since`/`epoch`
//! replay, topic limits, error counting — with arbitrary messages and no
//! sockets. Not used by the broker itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Poll, Token, Waker};

use super::context::{Ctx, WorkerStats};
use super::out_queue::OutQueue;
use super::read_buf::ReadBuf;
use super::session::Session;
use super::settings::Settings;
use crate::broker::auth::{Auth, Rights};
use crate::broker::mailbox::{mailbox, Inbox};
use crate::broker::subscriptions::LocalTopics;
use crate::broker::topic_table::{TableLimits, TopicTable};
use crate::metrics::Metrics;
use crate::protocol::deflate::codec::Inflater;

/// A session on worker 0 of a one-worker table, with publish rights.
#[derive(Debug)]
pub struct SessionHarness {
    session: Session,
    out: OutQueue,
    settings: Settings,
    table: TopicTable,
    auth: Auth,
    metrics: Metrics,
    local: LocalTopics,
    scratch: ReadBuf,
    inflater: Inflater,
    tls_handshakes_left: usize,
    stats: WorkerStats,
    latency: prometheus::local::LocalHistogram,
    inbox: Inbox,
    now: Instant,
    /// Keeps the mailbox's waker registered.
    _poll: Poll,
}

impl SessionHarness {
    /// A harness with the embedded default configuration, a small history
    /// ring and topic limit so that replays and refusals are reached soon.
    pub fn new() -> std::io::Result<SessionHarness> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), Token(0))?);
        let (mailbox, inbox) = mailbox(waker);
        let table = TopicTable::new(
            TableLimits {
                shards: 4,
                history_depth: 16,
                max_topics: 32,
                topic_ttl: Duration::from_secs(60),
            },
            vec![mailbox],
        );
        let metrics = Metrics::new();
        let latency = metrics.latency().local();
        let settings = Settings::embedded_default();
        let now = Instant::now();
        let rights = Rights {
            publish: true,
            subscribe: true,
            grant: None,
        };
        Ok(SessionHarness {
            session: Session::new(rights, settings.max_client_errors, now),
            out: OutQueue::default(),
            settings,
            table,
            auth: Auth::new(&[], &[], false),
            metrics,
            local: LocalTopics::default(),
            scratch: ReadBuf::default(),
            inflater: Inflater::new(),
            tls_handshakes_left: 0,
            stats: WorkerStats::default(),
            latency,
            inbox,
            now,
            _poll: poll,
        })
    }

    /// Hands one text message to the session, `advance` after the last;
    /// returns whether the session asked for the connection to close. What
    /// it queued is dropped (a reader that keeps up), as are the ticks the
    /// table posted to this worker.
    pub fn on_text(&mut self, message: &[u8], advance: Duration) -> bool {
        self.now = self.now.checked_add(advance).unwrap_or(self.now);
        let mut ctx = Ctx {
            settings: &self.settings,
            table: &self.table,
            auth: &self.auth,
            metrics: &self.metrics,
            not_ready: false,
            unhealthy: false,
            tick_bound: self.settings.max_queue_bytes,
            local: &mut self.local,
            scratch: &mut self.scratch,
            inflater: &mut self.inflater,
            tls_handshakes_left: &mut self.tls_handshakes_left,
            stats: &mut self.stats,
            latency: &self.latency,
            worker: 0,
            token: Token(1),
            now: self.now,
        };
        let closed = self
            .session
            .on_text(&mut self.out, message, &mut ctx)
            .is_err();
        self.out.clear();
        while self.inbox.try_take().is_some() {}
        closed
    }

    /// Topics the session is subscribed to.
    pub fn topic_count(&self) -> usize {
        self.session.topics().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drives_the_real_session_with_hostile_numbers() {
        let mut harness = SessionHarness::new().unwrap();
        let step = Duration::from_millis(1);
        assert!(!harness.on_text(br#"{"op":"pub","topic":"A","data":1}"#, step));
        // The message that once panicked the worker, then its neighbours.
        for hostile in [
            r#"{"op":"sub","topic":"A","max_hz":1e-20}"#,
            r#"{"op":"sub","topic":"A","max_hz":5e-324}"#,
            r#"{"op":"sub","topic":"A","since":18446744073709551615,"epoch":"x"}"#,
        ] {
            harness.on_text(hostile.as_bytes(), step);
        }
        assert_eq!(
            harness.topic_count(),
            1,
            "the max_hz ones are refused, the since one resumes"
        );
        assert!(!harness.on_text(
            br#"{"op":"sub","topic":"B","max_hz":0.001,"since":0}"#,
            step
        ));
        assert_eq!(harness.topic_count(), 2);
    }
}
