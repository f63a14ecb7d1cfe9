//! Starting and stopping the broker: binds one listener per worker, runs the
//! workers on their own threads, and turns a stop request into the graceful
//! shutdown every worker carries out (close 1001, grace period, exit).

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Poll, Waker};

use crate::broker::auth::Auth;
use crate::broker::demo_feed::{self, Market};
use crate::broker::jwt::JwtVerifier;
use crate::broker::mailbox::mailbox;
use crate::broker::topic_table::{TableLimits, TopicTable};
use crate::cluster;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::net::listener::bind_listeners;
use crate::net::peer_limit::PeerLimit;
use crate::net::settings::Settings;
use crate::net::tls::{TlsAcceptor, TlsFiles};
use crate::net::worker::{Shared, Worker, WAKER};

/// How long a cluster node waits at start to reach NATS and catch up with
/// the stream before it gives up (and the process exits non-zero).
const CLUSTER_START_WAIT: Duration = Duration::from_secs(60);

/// A running broker.
#[derive(Debug)]
pub struct Server {
    /// The plain listener's address, when `server.listen` is set.
    local_addr: Option<SocketAddr>,
    /// The TLS listener's address, when `tls.listen` is set.
    tls_local_addr: Option<SocketAddr>,
    worker_count: usize,
    stopper: Stopper,
    threads: Vec<JoinHandle<()>>,
    /// The `--demo-feed` publisher, when it runs; stopped with the workers.
    demo_feed: Option<JoinHandle<()>>,
    /// Each worker thread says here how it ended, as it ends.
    ended: Receiver<WorkerEnd>,
    /// `server.drain_delay_ms`: after a worker died, how long `/readyz`
    /// and `/healthz` answer 503 while the others still serve.
    drain_delay: Duration,
}

/// How one worker thread ended.
#[derive(Debug)]
struct WorkerEnd {
    worker: usize,
    /// `Err` with the panic message or the I/O error when it died.
    outcome: Result<(), String>,
}

/// A worker died (panicked, or its event loop failed) while the broker was
/// serving: the broker stopped because of it.
///
/// The decision (README.md, "Operations"): a broker with a worker fewer is
/// half alive — that worker's clients are gone and its share of new
/// connections would still be routed to a closed listener — so instead of
/// going on, the others shut down gracefully (close 1001) and the process
/// exits non-zero, for a supervisor to restart it. Meanwhile `/healthz` and
/// `/readyz` answer 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerDied {
    pub worker: usize,
    pub reason: String,
}

impl fmt::Display for WorkerDied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {} died: {}", self.worker, self.reason)
    }
}

impl std::error::Error for WorkerDied {}

/// Asks a running server to shut down gracefully; cheap to clone into a
/// signal-handling thread.
#[derive(Debug, Clone)]
pub struct Stopper {
    shared: Arc<Shared>,
    wakers: Arc<Vec<Arc<Waker>>>,
}

impl Stopper {
    /// Makes `/readyz` answer 503 while everything else is still served:
    /// the drain delay before [`Stopper::stop`]; idempotent.
    pub fn drain(&self) {
        self.shared.draining.store(true, Ordering::Release);
    }

    /// Reads the TLS certificate and key again (SIGHUP): new connections
    /// get the new certificate, open ones keep theirs; a failed reload
    /// keeps the old one. Logged and counted in
    /// `tickfan_tls_reloads_total{result}`; a no-op without TLS.
    pub fn reload_tls(&self) {
        let Some(acceptor) = &self.shared.tls else {
            tracing::info!("SIGHUP: no TLS listener, nothing to reload");
            return;
        };
        match acceptor.reload() {
            Ok(()) => {
                tracing::info!("TLS certificate reloaded: new connections get it");
                self.shared.metrics.count_tls_reload(true);
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS reload failed: keeping the certificate in use");
                self.shared.metrics.count_tls_reload(false);
            }
        }
    }

    /// Reads the JWT key file (`jwt.public_key_file` or `jwt.jwks_file`)
    /// again (SIGHUP): tokens verified from now on use the new keys; a
    /// failed reload keeps the old ones. A no-op without a key file.
    pub fn reload_jwt_keys(&self) {
        let Some(jwt) = self.shared.auth.jwt().filter(|jwt| jwt.has_key_file()) else {
            return;
        };
        match jwt.reload() {
            Ok(()) => tracing::info!("JWT keys reloaded"),
            Err(e) => tracing::warn!(error = %e, "JWT key reload failed: keeping the keys in use"),
        }
    }

    /// Starts the graceful shutdown on every worker; idempotent.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        for waker in self.wakers.iter() {
            let _ = waker.wake();
        }
    }
}

impl Server {
    /// Binds the configured listeners (plain, TLS, or both) and starts the workers.
    pub fn start(config: &Config) -> io::Result<Server> {
        let worker_count = config.worker_count();
        let (local_addr, listeners) = match config.server.listen {
            Some(listen) => {
                let listeners = bind_listeners(listen, config.server.backlog, worker_count)?;
                (
                    Some(listeners[0].local_addr()?),
                    listeners.into_iter().map(Some).collect(),
                )
            }
            None => (None, (0..worker_count).map(|_| None).collect::<Vec<_>>()),
        };
        let tls = tls_setup(config, worker_count)?;
        let jwt = JwtVerifier::from_config(&config.jwt)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let tls_local_addr = match &tls {
            Some((_, listeners)) => Some(listeners[0].local_addr()?),
            None => None,
        };
        let (tls_config, tls_listeners) = match tls {
            Some((config, listeners)) => (Some(config), listeners.into_iter().map(Some).collect()),
            None => (None, (0..worker_count).map(|_| None).collect::<Vec<_>>()),
        };
        // Each worker's poll exists before the topic table, which holds
        // every worker's waker in its mailboxes.
        let mut polls = Vec::with_capacity(worker_count);
        let mut wakers = Vec::with_capacity(worker_count);
        let mut mailboxes = Vec::with_capacity(worker_count);
        let mut inboxes = Vec::with_capacity(worker_count);
        for _ in 0..worker_count {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (mailbox, inbox) = mailbox(Arc::clone(&waker));
            polls.push(poll);
            wakers.push(waker);
            mailboxes.push(mailbox);
            inboxes.push(inbox);
        }
        let metrics = Metrics::new();
        let broker = &config.broker;
        let limits = TableLimits {
            shards: broker.shards,
            history_depth: broker.history_depth,
            max_topics: broker.max_topics,
            topic_ttl: broker.topic_ttl(),
        };
        // Cluster mode: the table numbers by the stream, and the workers
        // start only once the engine has caught up with it.
        let table = match config.cluster.enabled() {
            false => Arc::new(TopicTable::new(limits, mailboxes)),
            true => {
                let pending = cluster::link(&config.cluster);
                let table = Arc::new(TopicTable::with_cluster(limits, mailboxes, pending.link()));
                pending.start(
                    &config.cluster,
                    broker.history_depth,
                    Arc::clone(&table),
                    metrics.cluster(),
                    CLUSTER_START_WAIT,
                )?;
                table
            }
        };
        let auth = &config.auth;
        let shared = Arc::new(Shared {
            settings: Settings::from_config(config),
            table,
            auth: Auth::new(
                &auth.publish_tokens,
                &auth.subscribe_tokens,
                auth.subscribe_requires_token,
            )
            .with_jwt(jwt),
            metrics,
            live_connections: AtomicUsize::new(0),
            peer_limit: PeerLimit::new(config.server.max_connections_per_ip),
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            dead_workers: AtomicUsize::new(0),
            tls: tls_config,
            worker_count,
        });
        let mut workers = Vec::with_capacity(worker_count);
        for (id, (((poll, listener), tls_listener), inbox)) in polls
            .into_iter()
            .zip(listeners)
            .zip(tls_listeners)
            .zip(inboxes)
            .enumerate()
        {
            let shared = Arc::clone(&shared);
            workers.push(Worker::new(
                id,
                poll,
                listener,
                tls_listener,
                inbox,
                shared,
            )?);
        }
        install_worker_panic_hook();
        let (ended_tx, ended) = channel();
        let threads = workers
            .into_iter()
            .enumerate()
            .map(|(id, worker): (usize, Worker)| {
                let shared = Arc::clone(&shared);
                let ended = ended_tx.clone();
                std::thread::Builder::new()
                    .name(format!("tickfan-worker-{id}"))
                    .spawn(move || run_worker(id, worker, &shared, &ended))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let demo_feed = if config.demo.feed {
            let shared = Arc::clone(&shared);
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            let market = Market::new(&config.demo.feed_symbols, seed);
            let rate = config.demo.feed_ticks_per_second;
            tracing::info!(
                symbols = config.demo.feed_symbols.len(),
                ticks_per_second = rate,
                "demo feed: publishing a synthetic market"
            );
            Some(
                std::thread::Builder::new()
                    .name("tickfan-demo-feed".to_owned())
                    .spawn(move || {
                        demo_feed::run(
                            &shared.table,
                            &shared.metrics,
                            market,
                            rate,
                            &shared.stopping,
                        )
                    })?,
            )
        } else {
            None
        };
        Ok(Server {
            local_addr,
            tls_local_addr,
            worker_count,
            stopper: Stopper {
                shared,
                wakers: Arc::new(wakers),
            },
            threads,
            demo_feed,
            ended,
            drain_delay: config.server.drain_delay(),
        })
    }

    /// The plain listener's bound address (the port is real even if 0 was
    /// asked for), when there is one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The TLS listener's bound address, when there is one.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_local_addr
    }

    pub fn worker_count(&self) -> usize {
        self.worker_count
    }

    /// A handle that can stop this server from another thread.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Waits for every worker to finish. When one dies first, the broker
    /// turns unhealthy and draining, and after the drain delay the others
    /// are stopped (gracefully, as on SIGTERM); the death is returned.
    pub fn join(self) -> Result<(), WorkerDied> {
        let mut died: Option<WorkerDied> = None;
        let mut stop_at: Option<Instant> = None;
        let mut running = self.threads.len();
        while running > 0 {
            // Every thread sends exactly once (its body catches panics),
            // so this cannot wait for a thread that is gone.
            let end = match stop_at {
                None => self.ended.recv().ok(),
                Some(at) => match self
                    .ended
                    .recv_timeout(at.saturating_duration_since(Instant::now()))
                {
                    Ok(end) => Some(end),
                    Err(RecvTimeoutError::Timeout) => {
                        self.stopper.stop();
                        stop_at = None;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                },
            };
            let Some(end) = end else { break };
            running -= 1;
            let Err(reason) = end.outcome else { continue };
            tracing::error!(
                worker = end.worker,
                reason = %reason,
                drain_delay_ms = self.drain_delay.as_millis() as u64,
                "worker died: /healthz and /readyz answer 503; every other worker stops after the drain delay and the process exits non-zero"
            );
            if died.is_none() {
                self.stopper.drain();
                stop_at = Some(Instant::now() + self.drain_delay);
                died = Some(WorkerDied {
                    worker: end.worker,
                    reason,
                });
            }
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        if let Some(feed) = self.demo_feed {
            // The workers are gone, so `stopping` is set (a death sets it
            // through the stopper too) and the feed ends within one step.
            self.stopper.stop();
            let _ = feed.join();
        }
        died.map_or(Ok(()), Err)
    }
}

thread_local! {
    /// On a worker thread, the state its panic must mark as unhealthy.
    static WORKER_SHARED: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that marks the broker
/// unhealthy the moment a worker thread panics: before the unwind drops its
/// connections, so no client can see its socket close and then hear 200
/// from `/healthz`. Other threads' panics pass through to the previous hook.
fn install_worker_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = WORKER_SHARED.try_with(|shared| {
                if let Ok(shared) = shared.try_borrow() {
                    if let Some(shared) = shared.as_ref() {
                        shared.dead_workers.fetch_add(1, Ordering::AcqRel);
                    }
                }
            });
            previous(info);
        }));
    });
}

/// A worker thread's body: runs the worker, and whatever way it ends —
/// returning, failing or panicking — says how it ended; a death is marked
/// (by the panic hook for a panic, here for a failed event loop).
fn run_worker(id: usize, worker: Worker, shared: &Arc<Shared>, ended: &Sender<WorkerEnd>) {
    WORKER_SHARED.with(|slot| *slot.borrow_mut() = Some(Arc::clone(shared)));
    // The worker's state is dropped during the unwind; nothing of it is
    // used afterwards, and the shared table's locks survive poisoning.
    let outcome = match catch_unwind(AssertUnwindSafe(|| worker.run())) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => {
            shared.dead_workers.fetch_add(1, Ordering::AcqRel);
            Err(format!("event loop failed: {error}"))
        }
        Err(panic) => Err(format!("panicked: {}", panic_message(&*panic))),
    };
    WORKER_SHARED.with(|slot| slot.borrow_mut().take());
    let _ = ended.send(WorkerEnd {
        worker: id,
        outcome,
    });
}

/// The text a panic was raised with, when it was a string.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)")
}

/// The TLS listeners (one per worker) and their rustls configuration, when
/// `tls.listen` is set; a certificate or key that cannot be used is an
/// error naming its config key.
fn tls_setup(
    config: &Config,
    worker_count: usize,
) -> io::Result<Option<(TlsAcceptor, Vec<mio::net::TcpListener>)>> {
    let tls = &config.tls;
    let (Some(listen), Some(cert_file), Some(key_file)) =
        (tls.listen, &tls.cert_file, &tls.key_file)
    else {
        return Ok(None);
    };
    let acceptor = TlsAcceptor::load(TlsFiles {
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
        client_ca_file: tls.client_ca_file.clone(),
    })
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let listeners = bind_listeners(listen, config.server.backlog, worker_count)?;
    Ok(Some((acceptor, listeners)))
}

/// Reads every file the configuration names (the TLS certificate, key and
/// client CA; the JWT public key or JWK Set) as starting would, without
/// binding anything: `tickfan check-config`. The error names the key.
pub fn check_files(config: &Config) -> Result<(), String> {
    let tls = &config.tls;
    if let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) {
        TlsAcceptor::load(TlsFiles {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            client_ca_file: tls.client_ca_file.clone(),
        })
        .map_err(|e| e.to_string())?;
    }
    JwtVerifier::from_config(&config.jwt).map_err(|e| e.to_string())?;
    Ok(())
}

/// Verifies `token` as the broker configured by `config` would (for
/// `tickfan gen-token`, which checks what it signed); the error says why not.
pub fn verify_token(config: &Config, token: &str) -> Result<(), String> {
    let jwt = JwtVerifier::from_config(&config.jwt)
        .map_err(|e| e.to_string())?
        .ok_or("JWTs are off: jwt.algorithm is empty")?;
    jwt.verify(token).map(drop).map_err(|e| e.to_string())
}
