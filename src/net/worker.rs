//! A worker thread: one `mio::Poll`, one listener, and the connections it
//! accepted. Workers share nothing mutable but the connection count and the
//! stop flag, so a connection is only ever touched by its own thread.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::connection::{Connection, Verdict};
use super::listener::configure_accepted;
use super::read_buf::ReadBuf;
use super::settings::Settings;
use super::slab::Slab;
use super::timer::Timers;

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// The shared scratch buffer every read goes into first.
const SCRATCH_BYTES: usize = 64 * 1024;

/// How long accepting pauses after the process ran out of file descriptors,
/// so a full table does not spin the loop on a listener that stays ready.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// State every worker sees.
#[derive(Debug)]
pub struct Shared {
    pub settings: Settings,
    /// Connections open across all workers, for `max_connections`.
    pub live_connections: AtomicUsize,
    /// Set once by the server when it is asked to stop.
    pub stopping: AtomicBool,
}

/// A worker's event loop and everything it owns.
#[derive(Debug)]
pub struct Worker {
    poll: Poll,
    listener: Option<TcpListener>,
    connections: Slab<Connection>,
    timers: Timers,
    scratch: ReadBuf,
    shared: Arc<Shared>,
    /// Connections that stopped reading before `WouldBlock` and must be
    /// read again without waiting for an edge.
    reread: Vec<Token>,
    accept_paused_until: Option<Instant>,
    stop_deadline: Option<Instant>,
}

impl Worker {
    /// Sets up a worker around `listener`, returning the waker that others
    /// use to get its attention.
    pub fn new(mut listener: TcpListener, shared: Arc<Shared>) -> io::Result<(Worker, Arc<Waker>)> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let worker = Worker {
            poll,
            listener: Some(listener),
            connections: Slab::default(),
            timers: Timers::default(),
            scratch: ReadBuf::with_capacity(SCRATCH_BYTES),
            shared,
            reread: Vec::new(),
            accept_paused_until: None,
            stop_deadline: None,
        };
        Ok((worker, waker))
    }

    /// Runs until the server stops and every connection has closed or the
    /// shutdown grace period has passed.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => {}
                    token => {
                        self.on_event(token, event.is_readable() || event.is_read_closed(), now)
                    }
                }
            }
            self.reread_unfinished(now);
            self.fire_timers(now);
            if self.shared.stopping.load(Ordering::Acquire) && self.stop(now) {
                return Ok(());
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.reread.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = [
            self.timers.next_at(),
            self.accept_paused_until,
            self.stop_deadline,
        ]
        .into_iter()
        .flatten()
        .min()?;
        // Round up to whole milliseconds so we do not wake just before it.
        Some(next.saturating_duration_since(now) + Duration::from_millis(1))
    }

    fn accept(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|until| now < until) {
            return;
        }
        self.accept_paused_until = None;
        let Some(listener) = self.listener.take() else {
            return;
        };
        self.accept_from(&listener, now);
        self.listener = Some(listener);
    }

    fn accept_from(&mut self, listener: &TcpListener, now: Instant) {
        loop {
            match listener.accept() {
                Ok((socket, _peer)) => self.admit(socket, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_out_of_descriptors(&e) => {
                    tracing::warn!(error = %e, "accept failed: out of file descriptors; pausing accepts");
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
                Err(e) => {
                    // ECONNABORTED and friends concern one connection only.
                    tracing::debug!(error = %e, "accept failed");
                }
            }
        }
    }

    fn admit(&mut self, socket: mio::net::TcpStream, now: Instant) {
        if configure_accepted(&socket).is_err() {
            return;
        }
        let live = self.shared.live_connections.fetch_add(1, Ordering::AcqRel) + 1;
        let over_limit = live > self.shared.settings.max_connections;
        let token = self
            .connections
            .insert(Connection::new(socket, now, over_limit));
        let connection = self.connections.get_mut(token).expect("just inserted");
        let registered = self.poll.registry().register(
            connection.socket_mut(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        );
        if registered.is_err() {
            self.close(token);
            return;
        }
        if over_limit {
            tracing::debug!(live, "connection over max_connections: answering 503");
        }
        self.reschedule(token);
    }

    fn on_event(&mut self, token: Token, readable: bool, now: Instant) {
        let Some(connection) = self.connections.get_mut(token) else {
            return; // a late event for a connection already closed
        };
        let settings = &self.shared.settings;
        let mut verdict = Verdict::Keep;
        if readable {
            verdict = connection.on_readable(&mut self.scratch, settings, now);
        }
        if verdict == Verdict::Keep {
            verdict = connection.flush();
        }
        self.settle(token, verdict);
    }

    /// Applies a verdict: closes, or re-queues reads and refreshes the timer.
    fn settle(&mut self, token: Token, verdict: Verdict) {
        if verdict == Verdict::Close {
            self.close(token);
            return;
        }
        let Some(connection) = self.connections.get_mut(token) else {
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

    /// Files a timer entry if the connection's deadline is earlier than the
    /// one it already has (later deadlines are found when that one fires).
    fn reschedule(&mut self, token: Token) {
        let Some(connection) = self.connections.get_mut(token) else {
            return;
        };
        let deadline = connection.deadline(&self.shared.settings);
        if connection.timer_at.is_none_or(|at| deadline < at) {
            connection.timer_at = Some(deadline);
            self.timers.schedule(deadline, token);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((at, token)) = self.timers.pop_due(now) {
            let Some(connection) = self.connections.get_mut(token) else {
                continue;
            };
            if connection.timer_at != Some(at) {
                continue; // superseded by an earlier entry
            }
            connection.timer_at = None;
            let mut verdict = connection.on_deadline(&self.shared.settings, now);
            if verdict == Verdict::Keep {
                verdict = connection.flush();
            }
            self.settle(token, verdict);
        }
    }

    /// Stops accepting and asks every connection to close; true once the
    /// worker may exit.
    fn stop(&mut self, now: Instant) -> bool {
        if self.stop_deadline.is_none() {
            self.stop_deadline = Some(now + self.shared.settings.shutdown_grace);
            if let Some(mut listener) = self.listener.take() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
            for token in self.connections.tokens() {
                let Some(connection) = self.connections.get_mut(token) else {
                    continue;
                };
                let mut verdict = connection.begin_shutdown(now);
                if verdict == Verdict::Keep {
                    verdict = connection.flush();
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
        if let Some(mut connection) = self.connections.remove(token) {
            let _ = self.poll.registry().deregister(connection.socket_mut());
            self.shared.live_connections.fetch_sub(1, Ordering::AcqRel);
            self.reread.retain(|t| *t != token);
        }
    }
}

fn is_out_of_descriptors(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}
