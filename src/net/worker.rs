//! A worker thread: one `mio::Poll`, one listener, the connections it
//! accepted, and its mailbox of ticks from the topic table.
//!
//! A loop turn handles readiness events, then drains the mailbox into the
//! outbound queues of local subscribers, then writes each connection that
//! got something once — so a burst of ticks costs one `writev` per
//! connection, not one write per tick (uWebSockets and nats-server do the
//! same). Workers share nothing mutable but the topic table's shards and the
//! connection count, so a connection is only ever touched by its own thread.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use super::buffer_pool;
use super::conn_io::ConnIo;
use super::connection::{Connection, OverLimit, Verdict};
use super::context::{Ctx, WorkerStats};
use super::fanout::{Fanout, Slot};
use super::listener::configure_accepted;
use super::pacer::{Pacer, Sweep};
use super::peer_limit::PeerLimit;
use super::read_buf::ReadBuf;
use super::settings::Settings;
use super::slab::Slab;
use super::timer::{Timer, Timers};
use super::tls::TlsAcceptor;
use crate::broker::auth::Auth;
use crate::broker::cluster_link::Receipt;
use crate::broker::mailbox::{Delivery, Inbox};
use crate::broker::subscriptions::LocalTopics;
use crate::broker::topic_table::TopicTable;
use crate::metrics::{Metrics, WorkerGauges};
use crate::protocol::deflate::codec::Inflater;
use crate::tick::take_deflate_counts;

const LISTENER: Token = Token(usize::MAX);
/// The token of the waker that the topic table and the server use.
pub const WAKER: Token = Token(usize::MAX - 1);
const TLS_LISTENER: Token = Token(usize::MAX - 2);

/// TLS handshake steps (a read that advances a handshake: ~0.3 ms of
/// crypto for a full one) a worker takes per loop turn; the rest wait for
/// the next turn, so a reconnect storm cannot starve established
/// connections of their writes.
const TLS_HANDSHAKES_PER_TURN: usize = 32;

/// The shared scratch buffer every read goes into first.
const SCRATCH_BYTES: usize = 64 * 1024;

/// Fan-out work (ticks times the local subscribers they reach) done per
/// loop turn before the worker writes and looks at its sockets again: with
/// 10,000 subscribers a turn handles ~25 ticks, with 10 subscribers ~25,000,
/// so a publish flood can neither starve reads nor hold every write back.
const FANOUT_BUDGET: usize = 256 * 1024;

/// The longest a write sweep runs before the worker serves its ready
/// sockets and its mailbox in between: with 1,000 subscribers a sweep
/// takes ~10 ms (10 µs per loopback write), which would otherwise delay a
/// publisher's next read, and the ticks it brings, by a whole sweep.
const SWEEP_SLICE: Duration = Duration::from_micros(500);

/// Connections written between two looks at the clock in a sweep.
const SLICE_CHECK_EVERY: usize = 16;

/// Fan-out work (ticks times the subscribers they reach) done between two
/// slices of a sweep: about as long as a slice of writes takes (~0.1 µs
/// per queued tick), so a flood in the mailbox cannot starve the sweep.
const SLICE_FANOUT_BUDGET: usize = 8 * 1024;

/// Readiness events taken between two slices of a sweep.
const SLICE_EVENTS: usize = 256;

/// How long accepting pauses after the process ran out of file descriptors,
/// so a full table does not spin the loop on a listener that stays ready.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often the worker publishes its counters to the metrics.
const METRICS_EVERY: Duration = Duration::from_secs(1);

/// How often the worker sweeps its share of the topic table for topics to
/// reclaim, and logs its slow-consumer counters when they changed.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);

/// State every worker sees.
#[derive(Debug)]
pub struct Shared {
    pub settings: Settings,
    pub table: Arc<TopicTable>,
    pub auth: Auth,
    pub metrics: Metrics,
    /// Connections open across all workers, for `max_connections`.
    pub live_connections: AtomicUsize,
    /// Connections open per client address, for `max_connections_per_ip`.
    pub peer_limit: PeerLimit,
    /// Set once by the server when it is asked to stop.
    pub stopping: AtomicBool,
    /// Set once when shutdown was asked for with a drain delay: readiness
    /// answers 503 while everything else is still served.
    pub draining: AtomicBool,
    /// The TLS listener's configuration, when there is one.
    pub tls: Option<TlsAcceptor>,
    /// Workers whose thread ended by a panic or an error: the broker is
    /// then unhealthy (`/healthz` and `/readyz` answer 503) and stopping.
    pub dead_workers: AtomicUsize,
    pub worker_count: usize,
}

/// A worker's event loop and everything it owns.
#[derive(Debug)]
pub struct Worker {
    id: usize,
    poll: Poll,
    inbox: Inbox,
    listener: Option<TcpListener>,
    /// The TLS listener (`tls.listen`), when configured.
    tls_listener: Option<TcpListener>,
    connections: Slab<Slot>,
    local: LocalTopics,
    /// Connection deadlines and `max_hz` subscriptions' held ticks.
    timers: Timers,
    fanout: Fanout,
    scratch: ReadBuf,
    /// The one permessage-deflate inflater of this worker's connections.
    inflater: Inflater,
    /// TLS handshake steps left in this loop turn.
    tls_handshakes_left: usize,
    shared: Arc<Shared>,
    stats: WorkerStats,
    logged_stats: WorkerStats,
    flushed_stats: WorkerStats,
    /// Latency observations buffered here and flushed with the counters.
    latency: prometheus::local::LocalHistogram,
    next_metrics: Instant,
    /// Connections that stopped reading before `WouldBlock` and must be
    /// read again without waiting for an edge.
    reread: Vec<Token>,
    /// The mailbox had more than one turn's budget.
    mail_waiting: bool,
    /// When the next sweep of dirty connections may start.
    pacer: Pacer,
    /// Dirty connections held back by per-connection batching, and the
    /// earliest instant one of them is due.
    held: Vec<Token>,
    held_until: Option<Instant>,
    /// Readiness events polled between two slices of a sweep.
    slice_events: Events,
    accept_paused_until: Option<Instant>,
    next_housekeeping: Instant,
    stop_deadline: Option<Instant>,
}

impl Worker {
    /// Sets up worker `id` around its poll (whose waker the topic table
    /// holds), its listeners (plain, and TLS when configured) and its mailbox.
    pub fn new(
        id: usize,
        poll: Poll,
        mut listener: Option<TcpListener>,
        mut tls_listener: Option<TcpListener>,
        inbox: Inbox,
        shared: Arc<Shared>,
    ) -> io::Result<Worker> {
        if let Some(listener) = listener.as_mut() {
            poll.registry()
                .register(listener, LISTENER, Interest::READABLE)?;
        }
        if let Some(tls_listener) = tls_listener.as_mut() {
            poll.registry()
                .register(tls_listener, TLS_LISTENER, Interest::READABLE)?;
        }
        let pacer = Pacer::new(shared.settings.batching, Instant::now());
        Ok(Worker {
            id,
            poll,
            inbox,
            listener,
            tls_listener,
            connections: Slab::default(),
            local: LocalTopics::default(),
            timers: Timers::default(),
            fanout: Fanout::default(),
            scratch: ReadBuf::with_capacity(SCRATCH_BYTES),
            inflater: Inflater::new(),
            tls_handshakes_left: TLS_HANDSHAKES_PER_TURN,
            stats: WorkerStats::default(),
            logged_stats: WorkerStats::default(),
            flushed_stats: WorkerStats::default(),
            latency: shared.metrics.latency().local(),
            shared,
            next_metrics: Instant::now() + METRICS_EVERY,
            reread: Vec::new(),
            mail_waiting: false,
            pacer,
            held: Vec::new(),
            held_until: None,
            slice_events: Events::with_capacity(SLICE_EVENTS),
            accept_paused_until: None,
            next_housekeeping: Instant::now() + HOUSEKEEPING_EVERY,
            stop_deadline: None,
        })
    }

    /// Runs until the server stops and every connection has closed or the
    /// shutdown grace period has passed.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let mut timeout = self.poll_timeout(Instant::now());
            let mailbox = self.shared.table.mailbox(self.id);
            if timeout != Some(Duration::ZERO) && !mailbox.prepare_to_sleep(&self.inbox) {
                timeout = Some(Duration::ZERO);
            }
            let polled = self.poll.poll(&mut events, timeout);
            mailbox.awake();
            if let Err(e) = polled {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            self.tls_handshakes_left = TLS_HANDSHAKES_PER_TURN;
            self.handle_events(&events, now);
            if self.accept_paused_until.is_some_and(|until| now >= until) {
                // The listener stays readable without a new edge: retry
                // the connections still waiting in the backlog.
                self.accept(now);
            }
            self.reread_unfinished(now);
            self.drain_mailbox(now, FANOUT_BUDGET);
            self.fire_timers(now);
            if self.fanout.has_dirty() {
                self.pacer.note_dirty(now);
            }
            if self.sweep_due(now) {
                self.flush_dirty(now);
            }
            if now >= self.next_metrics {
                self.flush_metrics(now);
            }
            if now >= self.next_housekeeping {
                self.housekeeping(now);
            }
            // Busy: from poll's return to the next poll (time inside poll is idle).
            self.stats.busy_nanos += now.elapsed().as_nanos() as u64;
            if self.shared.stopping.load(Ordering::Acquire) && self.stop(now) {
                return Ok(());
            }
        }
    }

    fn handle_events(&mut self, events: &Events, now: Instant) {
        for event in events.iter() {
            match event.token() {
                LISTENER | TLS_LISTENER => self.accept(now),
                WAKER => {}
                token => self.on_event(token, event.is_readable() || event.is_read_closed(), now),
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.reread.is_empty() || self.mail_waiting {
            return Some(Duration::ZERO);
        }
        let sweep = self.next_sweep();
        if sweep.is_some_and(|at| at <= now) {
            return Some(Duration::ZERO);
        }
        let next = [
            sweep,
            self.timers.next_at(),
            self.accept_paused_until,
            self.stop_deadline,
            Some(self.next_housekeeping),
            Some(self.next_metrics),
        ]
        .into_iter()
        .flatten()
        .min()?;
        // Round up to whole milliseconds so we do not wake just before it.
        Some(next.saturating_duration_since(now) + Duration::from_millis(1))
    }

    /// `token` takes its share of its topics' pending ticks before it acts
    /// (see [`Fanout::catch_up`]).
    fn catch_up(&mut self, token: Token, now: Instant) {
        self.fanout.catch_up(
            token,
            &mut self.local,
            &mut self.connections,
            &self.shared.settings,
            &mut self.stats,
            now,
        );
    }

    /// Every topic's pending ticks go to its subscribers' queues (see
    /// [`Fanout::hand_out`]).
    fn hand_out(&mut self, now: Instant) {
        self.fanout.hand_out(
            &mut self.local,
            &mut self.connections,
            &self.shared.settings,
            &mut self.stats,
            now,
        );
    }

    /// Lends a connection what it needs from the worker for one event.
    fn ctx(&mut self, token: Token, now: Instant) -> (Option<&mut Slot>, Ctx<'_>) {
        let tick_bound = self.fanout.tick_bound(&self.shared.settings);
        let Worker {
            connections,
            local,
            scratch,
            inflater,
            tls_handshakes_left,
            stats,
            latency,
            shared,
            id,
            ..
        } = self;
        let ctx = Ctx {
            settings: &shared.settings,
            table: &shared.table,
            auth: &shared.auth,
            metrics: &shared.metrics,
            not_ready: shared.draining.load(Ordering::Relaxed)
                || shared.stopping.load(Ordering::Relaxed),
            unhealthy: shared.dead_workers.load(Ordering::Relaxed) > 0,
            tick_bound,
            local,
            scratch,
            inflater,
            tls_handshakes_left,
            stats,
            latency,
            worker: *id,
            token,
            now,
        };
        (connections.get_mut(token), ctx)
    }

    fn accept(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|until| now < until) {
            return;
        }
        self.accept_paused_until = None;
        if let Some(listener) = self.listener.take() {
            self.accept_from(&listener, false, now);
            self.listener = Some(listener);
        }
        if let Some(listener) = self.tls_listener.take() {
            self.accept_from(&listener, true, now);
            self.tls_listener = Some(listener);
        }
    }

    fn accept_from(&mut self, listener: &TcpListener, tls: bool, now: Instant) {
        loop {
            match listener.accept() {
                Ok((socket, peer)) => self.admit(socket, peer.ip(), tls, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_out_of_descriptors(&e) => {
                    self.stats.accept_errors += 1;
                    tracing::warn!(error = %e, "accept failed: out of file descriptors; pausing accepts");
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
                Err(e) => {
                    // ECONNABORTED and friends concern one connection only.
                    self.stats.accept_errors += 1;
                    tracing::debug!(error = %e, "accept failed");
                }
            }
        }
    }

    fn admit(&mut self, socket: mio::net::TcpStream, peer: IpAddr, tls: bool, now: Instant) {
        if configure_accepted(&socket).is_err() {
            return;
        }
        let io = match (&self.shared.tls, tls) {
            (Some(acceptor), true) => match ConnIo::new_tls(socket, acceptor.current()) {
                Ok(io) => io,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a TLS session");
                    return;
                }
            },
            _ => ConnIo::new(socket),
        };
        let live = self.shared.live_connections.fetch_add(1, Ordering::AcqRel) + 1;
        let within_peer_limit = self.shared.peer_limit.admit(peer);
        let over_limit = if live > self.shared.settings.max_connections {
            Some(OverLimit::Broker)
        } else if within_peer_limit == Some(false) {
            Some(OverLimit::PeerAddress)
        } else {
            None
        };
        let counted_peer = within_peer_limit.map(|_| peer);
        let token = self.connections.insert(Slot::new(Connection::new(
            io,
            now,
            over_limit,
            counted_peer,
        )));
        let slot = self.connections.get_mut(token).expect("just inserted");
        let registered = self.poll.registry().register(
            slot.connection.socket_mut(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        );
        if registered.is_err() {
            self.close(token);
            return;
        }
        if let Some(limit) = over_limit {
            tracing::debug!(live, %peer, ?limit, "connection over a connection limit: answering 503");
        }
        self.reschedule(token);
    }

    fn on_event(&mut self, token: Token, readable: bool, now: Instant) {
        if readable {
            self.catch_up(token, now);
        }
        let (Some(Slot { connection, .. }), mut ctx) = self.ctx(token, now) else {
            return; // a late event for a connection already closed
        };
        let mut verdict = Verdict::Keep;
        if readable {
            verdict = connection.on_readable(&mut ctx);
        }
        if verdict == Verdict::Keep {
            verdict = connection.flush(ctx.stats, ctx.latency);
        }
        self.settle(token, verdict);
    }

    /// Applies a verdict: closes, or re-queues reads and refreshes the timer.
    fn settle(&mut self, token: Token, verdict: Verdict) {
        if verdict == Verdict::Close {
            self.close(token);
            return;
        }
        self.recount(token);
        let Some(Slot { connection, .. }) = self.connections.get_mut(token) else {
            return;
        };
        if connection.wants_reread(&self.shared.settings) && !self.reread.contains(&token) {
            self.reread.push(token);
        }
        self.reschedule(token);
    }

    fn reread_unfinished(&mut self, now: Instant) {
        for token in std::mem::take(&mut self.reread) {
            self.on_event(token, true, now);
        }
    }

    /// Hands the mailbox's ticks to local subscribers' queues.
    fn drain_mailbox(&mut self, now: Instant, budget: usize) {
        self.mail_waiting = false;
        let mut work = 0;
        while work < budget {
            match self.inbox.try_take() {
                // At least one unit per tick, so ticks nobody here wants
                // are budgeted too.
                Some(Delivery::Tick(tick)) => {
                    let reached = self.fanout.deliver(
                        tick,
                        &mut self.local,
                        &mut self.connections,
                        &mut self.timers,
                        &self.shared.settings,
                        &mut self.stats,
                        now,
                    );
                    work += reached.max(1);
                }
                Some(Delivery::Reconnect) => {
                    self.send_away(now);
                    work += 1;
                }
                Some(Delivery::Stored { receipt, seq }) => {
                    self.on_stored(receipt, seq, now);
                    work += 1;
                }
                None => return,
            }
        }
        self.mail_waiting = true;
    }

    /// When the next sweep is due: as soon as the pacer allows if some
    /// connection is dirty, or when a held connection's batch is due.
    fn next_sweep(&self) -> Option<Instant> {
        let dirty = self.fanout.has_dirty().then_some(self.pacer.not_before());
        [dirty, self.held_until].into_iter().flatten().min()
    }

    fn sweep_due(&self, now: Instant) -> bool {
        self.next_sweep().is_some_and(|at| at <= now)
    }

    /// Cluster mode: the stream's outcome of a tick a held `POST /publish`
    /// carried (see [`Connection::on_stored`]).
    fn on_stored(&mut self, receipt: Receipt, seq: Option<u64>, now: Instant) {
        let token = Token(receipt.to.token);
        self.catch_up(token, now);
        let (Some(Slot { connection, .. }), mut ctx) = self.ctx(token, now) else {
            return; // closed while it waited
        };
        let mut verdict = connection.on_stored(receipt.to.request, receipt.item, seq, &mut ctx);
        if verdict == Verdict::Keep {
            verdict = connection.flush(ctx.stats, ctx.latency);
        }
        self.settle(token, verdict);
    }

    /// Cluster mode, the node lost its stream: every subscriber is sent
    /// away (see [`Connection::send_away`]).
    fn send_away(&mut self, now: Instant) {
        self.hand_out(now);
        for token in self.connections.tokens() {
            let (Some(Slot { connection, .. }), mut ctx) = self.ctx(token, now) else {
                continue;
            };
            let mut verdict = connection.send_away(&mut ctx);
            if verdict == Verdict::Keep {
                verdict = connection.flush(ctx.stats, ctx.latency);
            }
            self.settle(token, verdict);
        }
    }

    /// Writes every connection that got ticks since the last sweep, once;
    /// held long-polls that got ticks are answered first. When the sweep
    /// may start is the [`Pacer`]'s decision: at once while the worker
    /// keeps up; later, so that writes carry more ticks, while it is
    /// saturated or with a fixed `flush_interval_ms`.
    fn flush_dirty(&mut self, now: Instant) {
        self.pacer.sweep_started(now);
        self.hand_out(now);
        let (writes_before, ticks_before) =
            (self.stats.write_syscalls, self.stats.delivered_total());
        let mut tokens = self.fanout.take_dirty();
        if self.held_until.is_some_and(|at| at <= now) {
            self.held_until = None;
            tokens.append(&mut self.held);
        }
        let mut next_slice = now + SWEEP_SLICE;
        for (i, token) in tokens.into_iter().enumerate() {
            if i % SLICE_CHECK_EVERY == SLICE_CHECK_EVERY - 1 {
                let at = Instant::now();
                if at >= next_slice {
                    self.between_slices(at);
                    // Writes get at least as long as the work in between
                    // took: when publishers and the mailbox are backed up
                    // too, the core is shared half and half.
                    let resumed = Instant::now();
                    next_slice = resumed + SWEEP_SLICE.max(resumed - at);
                }
            }
            if let Some(release) = self.connections.get_mut(token).and_then(|slot| {
                let queued = slot.connection.queued_bytes();
                self.pacer.hold_connection(slot.last_write, queued, now)
            }) {
                self.pacer.count_held();
                self.held.push(token);
                self.held_until = Some(self.held_until.map_or(release, |at| at.min(release)));
                continue;
            }
            let (Some(slot), mut ctx) = self.ctx(token, now) else {
                continue;
            };
            slot.dirty = false;
            slot.last_write = Some(now);
            let connection = &mut slot.connection;
            if connection.poll_ready() {
                connection.finish_poll(&mut ctx);
            }
            let verdict = connection.flush(ctx.stats, ctx.latency);
            self.settle(token, verdict);
        }
        self.pacer.sweep_ended(Sweep {
            started: now,
            ended: Instant::now(),
            writes: self.stats.write_syscalls - writes_before,
            ticks: self.stats.delivered_total() - ticks_before,
        });
    }

    /// Between two slices of a long sweep: the sockets that became ready
    /// (publishers above all) are served and the mailbox is drained, so a
    /// publisher is read every [`SWEEP_SLICE`] however long the sweep, and
    /// ticks that came meanwhile still reach the connections this sweep
    /// has not written yet — a connection's next write carries every tick
    /// that arrived before it, not only those queued when the sweep began.
    fn between_slices(&mut self, now: Instant) {
        let mut events = std::mem::replace(&mut self.slice_events, Events::with_capacity(0));
        if self.poll.poll(&mut events, Some(Duration::ZERO)).is_ok() {
            self.handle_events(&events, now);
        }
        self.slice_events = events;
        self.reread_unfinished(now);
        self.drain_mailbox(now, SLICE_FANOUT_BUDGET);
        self.hand_out(now);
    }

    /// Brings the fan-out's queued-bytes total up to date with one
    /// connection's queue (see [`Fanout::recount`]).
    fn recount(&mut self, token: Token) {
        if let Some(slot) = self.connections.get_mut(token) {
            self.fanout.recount(slot);
        }
    }

    /// Files a timer entry if the connection's deadline is earlier than the
    /// one it already has (later deadlines are found when that one fires).
    fn reschedule(&mut self, token: Token) {
        let Some(slot) = self.connections.get_mut(token) else {
            return;
        };
        let deadline = slot.connection.deadline(&self.shared.settings);
        if slot.timer_at.is_none_or(|at| deadline < at) {
            slot.timer_at = Some(deadline);
            self.timers.schedule(deadline, token);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((at, timer)) = self.timers.pop_due(now) {
            match timer {
                Timer::Deadline(token) => self.on_deadline(token, at, now),
                Timer::HeldTick(topic, token) => self.fanout.release_held(
                    topic,
                    token,
                    &mut self.local,
                    &mut self.connections,
                    &self.shared.settings,
                    &mut self.stats,
                    now,
                ),
            }
        }
    }

    /// A connection's filed deadline `at` passed.
    fn on_deadline(&mut self, token: Token, at: Instant, now: Instant) {
        let Some(slot) = self.connections.get_mut(token) else {
            return;
        };
        if slot.timer_at != Some(at) {
            return; // superseded by an earlier entry
        }
        // Only a deadline that has really passed queues something (a
        // heartbeat naming the last seqs, a close); a busy connection's
        // moved on with its writes and costs no hand-out here.
        if slot.connection.deadline(&self.shared.settings) <= now {
            self.catch_up(token, now);
        }
        let (Some(slot), mut ctx) = self.ctx(token, now) else {
            return;
        };
        slot.timer_at = None;
        let connection = &mut slot.connection;
        let mut verdict = connection.on_deadline(&mut ctx);
        if verdict == Verdict::Keep {
            verdict = connection.flush(ctx.stats, ctx.latency);
        }
        self.settle(token, verdict);
    }

    /// Publishes this worker's counts and levels to the metrics.
    fn flush_metrics(&mut self, now: Instant) {
        self.next_metrics = now + METRICS_EVERY;
        // Ticks this thread compressed for its deflate subscribers.
        self.stats.batch_waits += self.pacer.take_waits();
        let deflated = take_deflate_counts();
        self.stats.deflate_compressions += deflated.compressions;
        self.stats.deflate_bytes_in += deflated.bytes_in;
        self.stats.deflate_bytes_out += deflated.bytes_out;
        let mut gauges = WorkerGauges::default();
        for token in self.connections.tokens() {
            let Some(Slot { connection, .. }) = self.connections.get_mut(token) else {
                continue;
            };
            gauges.connections[connection.transport() as usize] += 1;
            gauges.queued_bytes += connection.queued_bytes() as i64;
            gauges.subscriptions += connection.topic_count() as i64;
            gauges.held_polls += i64::from(connection.is_held_poll());
        }
        self.shared
            .metrics
            .flush_worker(self.id, &self.stats, &self.flushed_stats, &gauges);
        self.flushed_stats = self.stats;
        self.latency.flush();
    }

    /// Reclaims idle topics from this worker's share of the shards and logs
    /// slow-consumer actions taken since the last time.
    fn housekeeping(&mut self, now: Instant) {
        self.next_housekeeping = now + HOUSEKEEPING_EVERY;
        let reclaimed = self
            .shared
            .table
            .reclaim(now, self.id, self.shared.worker_count);
        if reclaimed > 0 {
            tracing::debug!(worker = self.id, reclaimed, "reclaimed idle topics");
        }
        buffer_pool::trim();
        let (s, before) = (self.stats, self.logged_stats);
        if (s.conflated, s.dropped, s.slow_disconnects)
            != (before.conflated, before.dropped, before.slow_disconnects)
        {
            tracing::info!(
                worker = self.id,
                conflated = s.conflated - before.conflated,
                dropped = s.dropped - before.dropped,
                disconnected = s.slow_disconnects - before.slow_disconnects,
                "slow consumers since last report"
            );
        }
        self.logged_stats = s;
    }

    /// Stops accepting and asks every connection to close; true once the
    /// worker may exit.
    fn stop(&mut self, now: Instant) -> bool {
        if self.stop_deadline.is_none() {
            self.stop_deadline = Some(now + self.shared.settings.shutdown_grace);
            for mut listener in [self.listener.take(), self.tls_listener.take()]
                .into_iter()
                .flatten()
            {
                let _ = self.poll.registry().deregister(&mut listener);
            }
            // Ticks delivered before the stop reach the queues ahead of the close.
            self.hand_out(now);
            for token in self.connections.tokens() {
                let (Some(Slot { connection, .. }), mut ctx) = self.ctx(token, now) else {
                    continue;
                };
                let mut verdict = connection.begin_shutdown(&mut ctx);
                if verdict == Verdict::Keep {
                    verdict = connection.flush(ctx.stats, ctx.latency);
                }
                self.settle(token, verdict);
            }
        }
        if self.connections.is_empty() {
            return true;
        }
        if self.stop_deadline.is_some_and(|deadline| now >= deadline) {
            for token in self.connections.tokens() {
                self.close(token);
            }
            return true;
        }
        false
    }

    fn close(&mut self, token: Token) {
        let Some(slot) = self.connections.remove(token) else {
            return;
        };
        self.fanout.forget(&slot);
        let mut connection = slot.connection;
        let _ = self.poll.registry().deregister(connection.socket_mut());
        self.shared.live_connections.fetch_sub(1, Ordering::AcqRel);
        if let Some(peer) = connection.counted_peer() {
            self.shared.peer_limit.release(peer);
        }
        self.reread.retain(|t| *t != token);
        for (name, id) in connection.take_topics() {
            self.local.remove(id, token);
            self.shared.table.unsubscribe(&name, id, self.id);
        }
    }
}

fn is_out_of_descriptors(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}
