use super::*;

const WRITE_COST: Duration = Duration::from_micros(10);
const TICK_COST: Duration = Duration::from_nanos(150);

fn at(base: Instant, micros: u64) -> Instant {
    base + Duration::from_micros(micros)
}

/// What a modelled run of a worker broadcasting to `connections` saw.
#[derive(Debug)]
struct Run {
    ticks_per_write: f64,
    /// The longest a tick waited from its arrival to the start of the
    /// sweep that wrote it, beyond the sweep running when it arrived.
    longest_extra_wait: Duration,
    busy_fraction: f64,
}

/// Models a worker's loop under the pacer: one tick every `spacing`
/// reaching all `connections`, each sweep costing a write per connection
/// plus a little per queued tick (the figures behind DESIGN.md's
/// ceilings), for `span` of model time.
fn model(batching: Batching, connections: u64, spacing: Duration, span: Duration) -> Run {
    let base = Instant::now();
    let mut pacer = Pacer::new(batching, base);
    let mut now = base;
    let mut next_tick = base;
    let mut pending: Vec<Instant> = Vec::new();
    let (mut writes, mut ticks, mut busy) = (0u64, 0u64, Duration::ZERO);
    let mut longest_extra_wait = Duration::ZERO;
    // When the tick that starts a backlog arrived inside a sweep, it
    // could not be written before that sweep's end.
    let mut last_sweep_end = base;
    while now < base + span {
        while next_tick <= now {
            pending.push(next_tick);
            next_tick += spacing;
        }
        if !pending.is_empty() {
            pacer.note_dirty(now);
        }
        if !pending.is_empty() && now >= pacer.not_before() {
            pacer.sweep_started(now);
            let per_connection = pending.len() as u64;
            let cost =
                WRITE_COST * connections as u32 + TICK_COST * (per_connection * connections) as u32;
            let ended = now + cost;
            let oldest = pending[0].max(last_sweep_end);
            longest_extra_wait = longest_extra_wait.max(now - oldest);
            pacer.sweep_ended(Sweep {
                started: now,
                ended,
                writes: connections,
                ticks: per_connection * connections,
            });
            writes += connections;
            ticks += per_connection * connections;
            busy += cost;
            pending.clear();
            last_sweep_end = ended;
            now = ended;
        } else if pending.is_empty() {
            now = next_tick;
        } else {
            // Ticks arriving meanwhile are collected by their arrival time.
            now = pacer.not_before();
        }
    }
    Run {
        ticks_per_write: ticks as f64 / writes.max(1) as f64,
        longest_extra_wait,
        busy_fraction: busy.as_secs_f64() / span.as_secs_f64(),
    }
}

const BUDGET: Duration = Duration::from_millis(5);

#[test]
fn a_tick_after_a_quiet_spell_is_swept_at_once() {
    let base = Instant::now();
    for batching in [
        Batching::Immediate,
        Batching::Sweep { budget: BUDGET },
        Batching::Fixed(Duration::from_millis(20)),
    ] {
        let mut pacer = Pacer::new(batching, base);
        pacer.sweep_started(at(base, 0));
        pacer.sweep_ended(Sweep {
            started: at(base, 0),
            ended: at(base, 10_000),
            writes: 1000,
            ticks: 1000,
        });
        // A second later a single tick comes: nothing holds it back.
        pacer.note_dirty(at(base, 1_000_000));
        assert!(pacer.not_before() <= at(base, 1_000_000), "{batching:?}");
    }
    let pacer = Pacer::new(Batching::Connection { budget: BUDGET }, base);
    assert_eq!(
        pacer.hold_connection(Some(at(base, 0)), 100, at(base, 1_000_000)),
        None
    );
    assert_eq!(pacer.hold_connection(None, 100, at(base, 0)), None);
}

#[test]
fn a_worker_that_keeps_up_writes_every_tick_at_once() {
    // 100 connections (1 ms sweeps), a tick every 5 ms: never backed up.
    let run = model(
        Batching::Sweep { budget: BUDGET },
        100,
        Duration::from_millis(5),
        Duration::from_secs(2),
    );
    assert_eq!(run.ticks_per_write, 1.0, "{run:?}");
    assert_eq!(run.longest_extra_wait, Duration::ZERO, "{run:?}");
}

#[test]
fn a_saturated_worker_puts_more_ticks_in_each_write_within_the_budget() {
    // 1,000 connections (10 ms sweeps), a tick every 1.3 ms (746/s).
    let spacing = Duration::from_micros(1340);
    let span = Duration::from_secs(3);
    let immediate = model(Batching::Immediate, 1000, spacing, span);
    let paced = model(Batching::Sweep { budget: BUDGET }, 1000, spacing, span);
    assert!(immediate.busy_fraction > 0.95, "{immediate:?}");
    assert!(
        paced.ticks_per_write > immediate.ticks_per_write * 1.3,
        "{paced:?} vs {immediate:?}"
    );
    assert!(
        paced.busy_fraction < immediate.busy_fraction * 0.8,
        "{paced:?}"
    );
    // No tick waits more than the budget beyond the sweep it arrived in.
    assert!(paced.longest_extra_wait <= BUDGET, "{paced:?}");
    assert_eq!(
        immediate.longest_extra_wait,
        Duration::ZERO,
        "{immediate:?}"
    );
}

#[test]
fn the_wait_grows_with_the_sweep_cost_up_to_the_budget_only() {
    let base = Instant::now();
    let mut pacer = Pacer::new(Batching::Sweep { budget: BUDGET }, base);
    let sweep = |start_us, cost_us| Sweep {
        started: at(base, start_us),
        ended: at(base, start_us + cost_us),
        writes: 1000,
        ticks: 4000,
    };
    // Work right after a 2 ms sweep: the next one waits 2 ms.
    pacer.sweep_ended(sweep(0, 2_000));
    pacer.note_dirty(at(base, 2_100));
    assert_eq!(pacer.not_before(), at(base, 4_000));
    // Only the first sight of work after a sweep decides.
    pacer.note_dirty(at(base, 3_000));
    assert_eq!(pacer.not_before(), at(base, 4_000));
    // After a 50 ms sweep: no more than the budget.
    pacer.sweep_ended(sweep(10_000, 50_000));
    pacer.note_dirty(at(base, 60_000));
    assert_eq!(pacer.not_before(), at(base, 60_000) + BUDGET);
    // Work that comes later than a sweep's cost after it: at once.
    pacer.sweep_ended(sweep(100_000, 2_000));
    pacer.note_dirty(at(base, 105_000));
    assert!(pacer.not_before() <= at(base, 105_000));
    assert_eq!(pacer.take_waits(), 2);
    assert_eq!(pacer.take_waits(), 0);
}

#[test]
fn full_batches_are_not_held_back() {
    let base = Instant::now();
    let mut pacer = Pacer::new(Batching::Sweep { budget: BUDGET }, base);
    pacer.sweep_ended(Sweep {
        started: at(base, 0),
        ended: at(base, 20_000),
        writes: 1000,
        ticks: 1000 * FULL_BATCH_TICKS,
    });
    pacer.note_dirty(at(base, 20_000));
    assert!(pacer.not_before() <= at(base, 20_000));
}

#[test]
fn a_fixed_interval_counts_from_sweep_starts_whatever_the_load() {
    let base = Instant::now();
    let interval = Duration::from_millis(20);
    let mut pacer = Pacer::new(Batching::Fixed(interval), base);
    pacer.sweep_started(at(base, 1_000));
    pacer.sweep_ended(Sweep {
        started: at(base, 1_000),
        ended: at(base, 2_000),
        writes: 1,
        ticks: 1,
    });
    assert_eq!(pacer.not_before(), at(base, 1_000) + interval);
}

#[test]
fn per_connection_batching_holds_only_recent_writers_with_small_queues() {
    let base = Instant::now();
    let pacer = Pacer::new(Batching::Connection { budget: BUDGET }, base);
    let wrote = Some(at(base, 0));
    assert_eq!(
        pacer.hold_connection(wrote, 200, at(base, 1_000)),
        Some(at(base, 0) + BUDGET)
    );
    assert_eq!(
        pacer.hold_connection(wrote, FULL_BATCH_BYTES, at(base, 1_000)),
        None
    );
    assert_eq!(
        pacer.hold_connection(wrote, 200, at(base, 0) + BUDGET),
        None
    );
    // The other modes never hold a connection.
    let sweep = Pacer::new(Batching::Sweep { budget: BUDGET }, base);
    assert_eq!(sweep.hold_connection(wrote, 200, at(base, 1_000)), None);
}
