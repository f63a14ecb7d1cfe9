use super::*;
use crate::net::conn_io::write_out;
use crate::topic::TopicName;
use std::io::{self, Write};

fn tick(topic: u64, seq: u64) -> Tick {
    Tick::encode(TopicId(topic), &TopicName::new("T").unwrap(), seq, 0, b"1")
}

/// A socket that takes at most `limit` bytes per call and then blocks.
struct Trickle {
    out: Vec<u8>,
    per_call: usize,
    calls_left: usize,
}

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.calls_left == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.calls_left -= 1;
        let mut n = 0;
        for buf in bufs {
            let take = buf.len().min(self.per_call - n);
            self.out.extend_from_slice(&buf[..take]);
            n += take;
            if n == self.per_call {
                break;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn seqs_in(bytes: &[u8]) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = bytes[at + 1] as usize;
        let v: serde_json::Value = serde_json::from_slice(&bytes[at + 2..at + 2 + len]).unwrap();
        seqs.push(v["seq"].as_u64().unwrap());
        at += 2 + len;
    }
    seqs
}

#[test]
fn partial_writes_resume_in_order() {
    let mut queue = OutQueue::default();
    for seq in 1..=50 {
        queue.push_tick(&tick(1, seq), 1 << 20, SlowConsumerPolicy::Drop);
    }
    let total = queue.len();
    let mut sink = Trickle {
        out: Vec::new(),
        per_call: 37,
        calls_left: 3,
    };
    let first = write_out(&mut queue, &mut sink).unwrap();
    assert_eq!(first.syscalls, 4); // three writes, then WouldBlock
    assert_eq!(queue.len(), total - 111);
    sink.calls_left = usize::MAX;
    sink.per_call = 1 << 20;
    let rest = write_out(&mut queue, &mut sink).unwrap();
    assert_eq!(first.ticks + rest.ticks, 50);
    assert!(queue.is_empty());
    assert_eq!(seqs_in(&sink.out), (1..=50).collect::<Vec<_>>());
}

#[test]
fn owned_bytes_keep_their_place() {
    let mut queue = OutQueue::default();
    queue.append(|b| b.extend_from_slice(b"AB"));
    queue.push_tick_unbounded(tick(1, 1));
    queue.append(|b| b.extend_from_slice(b"CD"));
    queue.append(|b| b.extend_from_slice(b"EF"));
    let mut sink = Trickle {
        out: Vec::new(),
        per_call: 1 << 20,
        calls_left: 10,
    };
    write_out(&mut queue, &mut sink).unwrap();
    assert_eq!(&sink.out[..2], b"AB");
    assert_eq!(&sink.out[sink.out.len() - 4..], b"CDEF");
}

#[test]
fn drop_policy_stops_at_the_bound() {
    let mut queue = OutQueue::default();
    // Two-digit seqs only, so every tick has the same size.
    let size = tick(1, 10).frame().len();
    let bound = size * 10;
    let outcomes: Vec<Pushed> = (10..30)
        .map(|s| queue.push_tick(&tick(1, s), bound, SlowConsumerPolicy::Drop))
        .collect();
    assert_eq!(
        outcomes.iter().filter(|p| **p == Pushed::Queued).count(),
        10
    );
    assert_eq!(
        outcomes.iter().filter(|p| **p == Pushed::Dropped).count(),
        10
    );
    assert!(queue.len() <= bound);
}

#[test]
fn conflate_keeps_the_newest_tick_per_topic_in_order() {
    let mut queue = OutQueue::default();
    let size = tick(1, 1).frame().len();
    let bound = size * 4;
    for seq in 1..=100 {
        queue.push_tick(&tick(seq % 2, seq), bound, SlowConsumerPolicy::Conflate);
    }
    // Under the bound ticks are copied; past it each topic keeps one shared
    // tick that newer ones replace, so the queue outgrows the bound by at
    // most one tick per topic.
    assert!(
        queue.len() <= bound + 2 * (size + 2),
        "{} > {bound}",
        queue.len()
    );
    let shared = queue
        .chunks
        .iter()
        .filter(|c| matches!(c, Chunk::Tick(..)))
        .count();
    assert_eq!(shared, 2);
    let mut sink = Trickle {
        out: Vec::new(),
        per_call: 1 << 20,
        calls_left: 10,
    };
    write_out(&mut queue, &mut sink).unwrap();
    let seqs = seqs_in(&sink.out);
    // The newest of each topic survives; per topic the order still rises.
    assert!(seqs.contains(&100) && seqs.contains(&99));
    for parity in 0..2 {
        let topic: Vec<u64> = seqs.iter().copied().filter(|s| s % 2 == parity).collect();
        assert!(topic.windows(2).all(|w| w[0] < w[1]), "{topic:?}");
    }
}

/// A shared tick kept past the bound must not be replaced by a newer one
/// once ticks of its topic were copied after it (the queue drained below
/// the bound in between): the client would get the newest tick before the
/// copied ones, its seq going back.
#[test]
fn conflate_never_moves_a_tick_ahead_of_newer_copied_ones() {
    let mut queue = OutQueue::default();
    let size = tick(1, 1).frame().len();
    let bound = size * 4;
    let mut written = Vec::new();
    let mut seq = 0;
    for _round in 0..4 {
        // Past the bound: copied ticks, then one shared tick of the topic.
        for _ in 0..8 {
            seq += 1;
            queue.push_tick(&tick(1, seq), bound, SlowConsumerPolicy::Conflate);
        }
        // The peer reads a little: below the bound again, but the shared
        // tick is still queued.
        let mut sink = Trickle {
            out: Vec::new(),
            per_call: size * 2,
            calls_left: 1,
        };
        write_out(&mut queue, &mut sink).unwrap();
        written.extend_from_slice(&sink.out);
    }
    let mut sink = Trickle {
        out: Vec::new(),
        per_call: 1 << 20,
        calls_left: 100,
    };
    write_out(&mut queue, &mut sink).unwrap();
    written.extend_from_slice(&sink.out);
    let seqs = seqs_in(&written);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(seqs.last(), Some(&seq), "the newest tick is delivered");
}

#[test]
fn disconnect_policy_allows_twice_the_bound_then_overflows() {
    let mut queue = OutQueue::default();
    let size = tick(1, 1).frame().len();
    let bound = size * 4;
    let outcomes: Vec<Pushed> = (1..=9)
        .map(|s| queue.push_tick(&tick(1, s), bound, SlowConsumerPolicy::Disconnect))
        .collect();
    assert_eq!(outcomes[..8], [Pushed::Queued; 8]);
    assert_eq!(outcomes[8], Pushed::Overflow);
}

#[test]
fn purge_removes_only_that_topic() {
    let mut queue = OutQueue::default();
    queue.push_tick_unbounded(tick(1, 1));
    queue.push_tick_unbounded(tick(2, 2));
    queue.push_tick_unbounded(tick(1, 3));
    queue.purge_topic(TopicId(1));
    let mut sink = Trickle {
        out: Vec::new(),
        per_call: 1 << 20,
        calls_left: 10,
    };
    write_out(&mut queue, &mut sink).unwrap();
    assert_eq!(seqs_in(&sink.out), vec![2]);
}

/// One step of a connection's life as its outbound queue sees it.
#[derive(Debug, Clone)]
enum Step {
    /// A live tick of topic `0..TOPICS`, small (copied) or large (shared).
    Push { topic: u64, large: bool },
    /// The peer reads: up to `calls` writes of at most `per_call` bytes.
    Read { per_call: usize, calls: usize },
    /// An event (a heartbeat, say) queued between ticks.
    Event,
}

const PROP_TOPICS: u64 = 3;

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (0..PROP_TOPICS, proptest::bool::weighted(0.3))
            .prop_map(|(topic, large)| Step::Push { topic, large }),
        2 => (1usize..1500, 0usize..4).prop_map(|(per_call, calls)| Step::Read { per_call, calls }),
        1 => Just(Step::Event),
    ]
}

/// Every frame in `bytes` as (topic, seq) for ticks, `None` for events.
fn frames_in(bytes: &[u8]) -> Vec<Option<(u64, u64)>> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (len, header) = match bytes[at + 1] & 0x7f {
            126 => (
                usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])),
                4,
            ),
            len => (usize::from(len), 2),
        };
        let payload = &bytes[at + header..at + header + len];
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        frames.push(v["seq"].as_u64().map(|seq| {
            let topic = v["topic"].as_str().unwrap()[1..].parse().unwrap();
            (topic, seq)
        }));
        at += header + len;
    }
    frames
}

proptest::proptest! {
    /// Whatever the policy, the pushes and the peer's reads, a client gets
    /// each topic's ticks in rising seq order and the queue's byte count
    /// matches what comes out; with `conflate`, the newest tick of every
    /// topic always arrives.
    #[test]
    fn ticks_leave_in_seq_order_under_every_policy(
        steps in proptest::collection::vec(step(), 1..200),
        policy in proptest::sample::select(vec![
            SlowConsumerPolicy::Conflate,
            SlowConsumerPolicy::Drop,
            SlowConsumerPolicy::Disconnect,
        ]),
        bound in 600usize..4000,
    ) {
        let mut queue = OutQueue::default();
        let mut written = Vec::new();
        let mut next_seq = [0u64; PROP_TOPICS as usize];
        for step in steps {
            match step {
                Step::Push { topic, large } => {
                    next_seq[topic as usize] += 1;
                    let data = if large { format!("\"{}\"", "x".repeat(600)) } else { "1".into() };
                    let tick = Tick::encode(
                        TopicId(topic),
                        &TopicName::new(format!("T{topic}")).unwrap(),
                        next_seq[topic as usize],
                        0,
                        data.as_bytes(),
                    );
                    if queue.push_tick(&tick, bound, policy) == Pushed::Overflow {
                        break; // the connection is closed: nothing more is queued
                    }
                }
                Step::Read { per_call, calls } => {
                    let mut sink = Trickle { out: Vec::new(), per_call, calls_left: calls };
                    let before = queue.len();
                    let done = write_out(&mut queue, &mut sink).unwrap();
                    proptest::prop_assert_eq!(done.bytes, sink.out.len());
                    proptest::prop_assert_eq!(queue.len(), before - sink.out.len());
                    written.extend_from_slice(&sink.out);
                }
                Step::Event => queue.push_event(br#"{"event":"heartbeat","seqs":{}}"#),
            }
        }
        let mut sink = Trickle { out: Vec::new(), per_call: usize::MAX, calls_left: usize::MAX };
        write_out(&mut queue, &mut sink).unwrap();
        written.extend_from_slice(&sink.out);
        proptest::prop_assert_eq!(queue.len(), 0);

        let mut last = [0u64; PROP_TOPICS as usize];
        for (topic, seq) in frames_in(&written).into_iter().flatten() {
            proptest::prop_assert!(
                seq > last[topic as usize],
                "topic {} seq {} after {}", topic, seq, last[topic as usize]
            );
            last[topic as usize] = seq;
        }
        if policy == SlowConsumerPolicy::Conflate {
            proptest::prop_assert_eq!(last, next_seq, "the newest tick of each topic arrives");
        }
    }
}

/// One step of a topic's life on a worker as one subscriber sees it.
#[derive(Debug, Clone)]
enum PendingStep {
    /// A tick is delivered (small, or large enough to be kept by reference).
    Deliver { large: bool },
    /// The subscriber takes what it is owed (a sweep, or a catch-up).
    Take,
    /// Every subscriber has taken the pending ticks: they are cleared.
    Sweep,
}

fn pending_step() -> impl proptest::strategy::Strategy<Value = PendingStep> {
    use proptest::prelude::*;
    prop_oneof![
        6 => proptest::bool::weighted(0.1).prop_map(|large| PendingStep::Deliver { large }),
        1 => Just(PendingStep::Take),
        1 => Just(PendingStep::Sweep),
    ]
}

proptest::proptest! {
    /// Taking a topic's pending ticks in one run of frames queues the same
    /// bytes, in the same order, as queuing each tick on delivery did:
    /// every tick delivered after the subscriber joined and above its
    /// `after_seq`, once.
    #[test]
    fn pending_ticks_taken_in_runs_match_ticks_queued_one_by_one(
        steps in proptest::collection::vec(pending_step(), 1..120),
        join_at in 0usize..40,
        after_seq in 0u64..30,
        per_write in 1usize..300,
    ) {
        use crate::broker::pending_ticks::PendingTicks;
        let bound = usize::MAX / 4;
        let policy = SlowConsumerPolicy::Drop;
        let mut one_by_one = OutQueue::default();
        let mut in_runs = OutQueue::default();
        let mut pending = PendingTicks::default();
        let mut cursor = None;
        let mut delivered = 0usize;
        let take = |pending: &mut PendingTicks, cursor: &mut Option<_>, queue: &mut OutQueue| {
            let Some(at) = *cursor else { return };
            let at_end = pending.cursor_at_end();
            let owed = pending.owed(at, after_seq);
            *cursor = Some(at_end);
            let queued = match owed.frames {
                Some(frames) => queue.push_frames(frames, owed.ticks, bound),
                None => false,
            };
            if !queued {
                for tick in owed.ticks.iter().filter(|t| t.seq > after_seq) {
                    queue.push_tick(tick, bound, policy);
                }
            }
        };
        for step in steps {
            if delivered == join_at && cursor.is_none() {
                cursor = Some(pending.cursor_at_end());
            }
            match step {
                PendingStep::Deliver { large } => {
                    delivered += 1;
                    let data = if large { format!("\"{}\"", "x".repeat(600)) } else { "1".into() };
                    let tick = Tick::encode(
                        TopicId(0),
                        &TopicName::new("T0").unwrap(),
                        delivered as u64,
                        0,
                        data.as_bytes(),
                    );
                    if cursor.is_some() && tick.seq > after_seq {
                        one_by_one.push_tick(&tick, bound, policy);
                    }
                    pending.push(tick);
                }
                PendingStep::Take => take(&mut pending, &mut cursor, &mut in_runs),
                PendingStep::Sweep => {
                    take(&mut pending, &mut cursor, &mut in_runs);
                    pending.clear();
                }
            }
        }
        take(&mut pending, &mut cursor, &mut in_runs);
        // The runs are written a few bytes at a time, so their chunks are
        // also sent partly, from the middle.
        let drain = |queue: &mut OutQueue, per_call: usize| {
            let mut sink = Trickle { out: Vec::new(), per_call, calls_left: usize::MAX };
            let done = write_out(queue, &mut sink).unwrap();
            (sink.out, done.ticks)
        };
        let (expected, expected_ticks) = drain(&mut one_by_one, usize::MAX);
        let (got, got_ticks) = drain(&mut in_runs, per_write);
        proptest::prop_assert_eq!(frames_in(&got), frames_in(&expected));
        proptest::prop_assert_eq!(got, expected);
        proptest::prop_assert_eq!(got_ticks, expected_ticks);
    }
}

#[test]
fn frames_past_the_bound_or_on_another_wire_are_refused_whole() {
    use crate::broker::pending_ticks::PendingTicks;
    let mut pending = PendingTicks::default();
    let cursor = pending.cursor_at_end();
    for seq in 1..=3 {
        pending.push(tick(1, seq));
    }
    let owed = pending.owed(cursor, 0);
    let frames = owed.frames.unwrap();
    let mut queue = OutQueue::default();
    assert!(!queue.push_frames(frames.clone(), owed.ticks, frames.len() - 1));
    assert!(queue.is_empty());
    queue.set_wire(Wire::Sse);
    assert!(!queue.push_frames(frames.clone(), owed.ticks, usize::MAX));
    queue.set_wire(Wire::WebSocket);
    assert!(queue.push_frames(frames.clone(), owed.ticks, frames.len()));
    assert_eq!(queue.len(), frames.len());
}

#[test]
fn a_run_is_kept_by_reference_unless_it_would_keep_much_more_alive() {
    use crate::broker::pending_ticks::PendingTicks;
    let mut pending = PendingTicks::default();
    let start = pending.cursor_at_end();
    for seq in 1..=3 {
        pending.push(tick(1, seq));
    }
    let late = pending.cursor_at_end();
    pending.push(tick(1, 4));
    let whole = pending.owed(start, 0).frames.unwrap();
    let (suffix, suffix_ticks) = {
        let owed = pending.owed(late, 0);
        (owed.frames.unwrap(), owed.ticks.to_vec())
    };
    let all_ticks = pending.owed(start, 0).ticks.to_vec();

    let mut shared = OutQueue::default();
    assert!(shared.push_frames(whole.clone(), &all_ticks, usize::MAX));
    let queued = shared.only_chunk().unwrap();
    assert_eq!(queued, whole.as_bytes());
    assert_eq!(queued.as_ptr(), whole.as_bytes().as_ptr(), "the run itself, not a copy");

    let mut copied = OutQueue::default();
    assert!(copied.push_frames(suffix.clone(), &suffix_ticks, usize::MAX));
    let queued = copied.only_chunk().unwrap();
    assert_eq!(queued, tick(1, 4).frame());
    assert_ne!(queued.as_ptr(), suffix.as_bytes().as_ptr(), "a short suffix is copied");
}
