//! `tickfan-load`: an event-driven client fleet that measures a pub/sub
//! broker end to end: N WebSocket subscribers and M HTTP long-poll clients
//! spread over K topics, and P publisher connections (WebSocket, or HTTP
//! `POST /publish` for tickfan) round-robining the topics at an aggregate
//! rate or flat out. The broker is tickfan or one of the peers in
//! `../shared/peers` (`--target`); `scripts/bench.sh` runs the named
//! scenarios.
//!
//! Its read and write paths are its own (mio, one scratch buffer per loop),
//! not the broker's, and so is its WebSocket code (`ws.rs`: this crate does
//! not depend on `tickfan`), so what it measures is the broker. It ends by itself:
//! setup is bounded by `--setup-timeout`, the run by warmup + duration +
//! drain, and a watchdog exits the process if a thread overstays.

mod dial;
mod fleet;
mod http_publish;
mod inflate;
mod longpoll;
mod perf;
mod plan;
mod procfs;
mod publisher;
mod report;
mod target;
mod tls;
mod topics;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clap::Parser;

use fleet::{FleetConfig, FleetStats};
use longpoll::PollConfig;
use plan::Plan;
use publisher::{PublishOver, PublisherConfig, PublisherStats};
use report::{Report, RunInfo};
use target::Target;
use topics::Topics;

/// File descriptors kept free for everything that is not a subscriber
/// socket (epoll instances, the publisher, /proc reads, stdio).
const SPARE_FDS: u64 = 100;

/// How long past the planned end the watchdog waits for threads to finish.
const WATCHDOG_GRACE: Duration = Duration::from_secs(10);

/// A load generator for tickfan and its peers: P publisher connections, N
/// WebSocket subscribers and M long-poll clients over K topics.
#[derive(Debug, Parser)]
#[command(name = "tickfan-load", version)]
struct Args {
    /// Broker address (loopback), e.g. 127.0.0.1:9001.
    #[arg(long, default_value = "127.0.0.1:9001")]
    addr: SocketAddr,
    /// Subscribers offer permessage-deflate (RFC 7692, Chrome's offer);
    /// sampled subscribers inflate compressed ticks, sinks count them.
    #[arg(long)]
    deflate: bool,
    /// The JSON each tick carries: small (~100 B quote), quote (~300 B) or
    /// book (~2 KB order-book snapshot).
    #[arg(long, default_value = "small")]
    tick_shape: publisher::TickShape,
    /// The broker's dialect: tickfan, nchan, nats, uws or ws (npm `ws`).
    #[arg(long, default_value = "tickfan")]
    target: Target,
    /// WebSocket path of tickfan's pub/sub protocol.
    #[arg(long, default_value = "/ws")]
    path: String,
    /// Topic name, or the prefix of the K topic names (`PREFIXt0`, ...);
    /// default a fresh one per run (`loadPID`), so no last value from an
    /// earlier run is replayed to the fleet. Letters and digits only suit
    /// every target.
    #[arg(long)]
    topic: Option<String>,
    /// Topics K: subscriber and long-poll client i follow topic i % K, and
    /// the publishers send to the topics in turn at the aggregate --rate.
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Instead of one topic each, every WebSocket subscriber follows this
    /// many distinct topics drawn by a Zipf law over the K topics (one sub
    /// op each). tickfan, NATS and uWebSockets (`uws`) only.
    #[arg(long, default_value_t = 0)]
    zipf_per_client: usize,
    /// Exponent s of that Zipf law (rank r weighted 1/r^s).
    #[arg(long, default_value_t = 1.0)]
    zipf_s: f64,
    /// WebSocket subscriber connections. One process holds at most its
    /// open-file limit less 100 (19,900 with `ulimit -n 20000`), long-poll
    /// clients and publisher connections included.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// HTTP long-poll clients (keep-alive, each looping on its topic's cursor).
    #[arg(long, default_value_t = 0)]
    longpoll: usize,
    /// Publish nothing: measure idle connections (RSS, idle CPU).
    #[arg(long)]
    no_publish: bool,
    /// Publisher connections P, at most K (tickfan and nats, which take
    /// every topic on one connection): topic t is always sent on connection
    /// t % P, so each topic keeps its order; --rate is shared by all. The
    /// other targets open one connection per topic and refuse P > 1.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// How publishers send ticks: ws (WebSocket) or http (tickfan only:
    /// pipelined `POST /publish?topic=T` on keep-alive HTTP/1.1, one tick
    /// per request; an answer other than 202 counts as an error; a quiet
    /// connection is kept open with `GET /healthz`).
    #[arg(long, default_value = "ws")]
    publish_over: PublishOver,
    /// Seconds between "everyone is in" and the first tick; long-poll runs
    /// add 0.5 s so every first request is held before anything is published.
    #[arg(long, default_value_t = 0.05)]
    settle: f64,
    /// A label for the run, copied into the JSON (the scenario's name).
    #[arg(long, default_value = "")]
    label: String,
    /// Subscribers that parse every tick (seq gaps, duplicates, latency).
    #[arg(long, default_value_t = 50)]
    sample: usize,
    /// Subscribers per source address: past this many, subscribers bind
    /// 127.0.0.2, 127.0.0.3, ... (each has its own ephemeral port range).
    #[arg(long, default_value_t = 20_000)]
    per_source_ip: usize,
    /// Event-loop threads dividing the subscribers (the publishers share one
    /// of their own).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Ticks per second published, over all publishers; 0 = flat out (as fast
    /// as the broker reads).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds published before the window opens, not measured.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds the fleet keeps reading after publishing stops.
    #[arg(long, default_value_t = 1.0)]
    drain: f64,
    /// Seconds allowed to connect and subscribe the whole fleet.
    #[arg(long, default_value_t = 60.0)]
    setup_timeout: f64,
    /// Connections per loop between connect and `subscribed` at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Token for the publishers (`Authorization: Bearer`), if the broker needs one.
    #[arg(long)]
    publish_token: Option<String>,
    /// Token for subscribers, if the broker needs one.
    #[arg(long)]
    subscribe_token: Option<String>,
    /// Connect over TLS (wss), trusting the certificates in this PEM file
    /// (a self-signed broker certificate itself will do); `--addr` is then
    /// the broker's TLS listener. Subscribers and WebSocket publishers.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The name the broker's certificate is verified against.
    #[arg(long, default_value = "localhost")]
    tls_server_name: String,
    /// The broker's pid: report its CPU, RSS and write syscalls over the window.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// The `perf` binary used to count the broker's write syscalls (write,
    /// writev, sendto, sendmsg) over the window; `/proc/PID/io` misses `send`.
    #[arg(long, default_value = "perf")]
    perf: String,
    /// Do not run perf; fall back to `/proc/PID/io` syscw.
    #[arg(long)]
    no_perf: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn secs(s: f64, name: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("--{name} must be a non-negative number"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickfan-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if !args.addr.ip().is_loopback() {
        return Err(format!("--addr {} is not a loopback address", args.addr));
    }
    let clients = args.subscribers + args.longpoll;
    if clients == 0 || args.threads == 0 || args.per_source_ip == 0 || args.topics == 0 {
        return Err(
            "--subscribers + --longpoll, --threads, --topics and --per-source-ip must be at least 1"
                .into(),
        );
    }
    if args.longpoll > 0 && !args.target.has_longpoll() {
        return Err(format!("--target {} has no long-poll route", args.target));
    }
    if args.zipf_per_client > 1 && !args.target.multi_topic() {
        return Err(format!(
            "--target {} takes one topic per connection",
            args.target
        ));
    }
    check_publishers(args)?;
    let tls = match &args.tls_ca {
        Some(_) if args.longpoll > 0 => {
            return Err("--tls-ca: long-poll clients do not speak TLS; use --longpoll 0".into())
        }
        Some(ca) => Some(tls::TlsClient::new(ca, &args.tls_server_name)?),
        None => None,
    };
    let publisher_conns = match (args.no_publish, args.target.one_publisher_connection()) {
        (true, _) => 0,
        (false, true) => args.publishers,
        (false, false) => args.topics,
    };
    let limit = procfs::open_files_limit().unwrap_or(1024);
    let cap = limit.saturating_sub(SPARE_FDS) as usize;
    if clients + publisher_conns > cap {
        return Err(format!(
            "{clients} clients + {publisher_conns} publisher connections are over this \
             process's cap of {cap} sockets (open-file limit {limit} less {SPARE_FDS}); \
             raise `ulimit -n` or run several processes"
        ));
    }
    let warmup = secs(args.warmup, "warmup")?;
    let duration = secs(args.duration, "duration")?;
    let drain = secs(args.drain, "drain")?;
    let setup_timeout = secs(args.setup_timeout, "setup-timeout")?;
    if duration.is_zero() {
        return Err("--duration must be above 0".into());
    }
    let settle = secs(args.settle, "settle")?
        + if args.longpoll > 0 {
            Duration::from_millis(500)
        } else {
            Duration::ZERO
        };
    let threads = args.threads.min(clients);
    let prefix = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("load{}", std::process::id()));
    let mut topics = Topics::new(&prefix, args.topics);
    if args.zipf_per_client > 0 {
        topics = topics.with_zipf(
            args.subscribers,
            args.zipf_per_client,
            args.zipf_s,
            0x5EED ^ args.topics as u64,
        );
    }
    let topics = Arc::new(topics);
    let plan = Arc::new(Plan::new(warmup, duration, drain));
    let setup_deadline = Instant::now() + setup_timeout;
    // The broker's memory before any client connects: RSS per connection
    // is the growth over this.
    let broker_pid = args.broker_pid.map(|p| p.to_string());
    let broker_rss_before = broker_pid
        .as_deref()
        .and_then(|p| procfs::sample(p).ok())
        .and_then(|s| s.rss_kib);
    let sockstat_before = procfs::tcp_mem_pages();

    let publisher = if args.no_publish {
        plan.publisher_ready.store(true, Ordering::Release);
        None
    } else {
        let config = PublisherConfig {
            addr: args.addr,
            path: args.path.clone(),
            target: args.target,
            topics: topics.names.clone(),
            token: args.publish_token.clone(),
            rate: args.rate,
            publishers: args.publishers,
            over: args.publish_over,
            setup_deadline,
            tls: tls.clone(),
            shape: args.tick_shape,
        };
        let plan = plan.clone();
        Some(spawn("publisher", move || publisher::run(config, plan))?)
    };
    let mut loops = Vec::with_capacity(threads * 2);
    let ws_threads = threads.min(args.subscribers);
    let sample_count = args.sample.min(args.subscribers);
    let sample_stride = (args.subscribers / sample_count.max(1)).max(1);
    for i in 0..ws_threads {
        let range = (args.subscribers * i / ws_threads)..(args.subscribers * (i + 1) / ws_threads);
        let config = FleetConfig {
            addr: args.addr,
            path: args.path.clone(),
            target: args.target,
            topics: topics.clone(),
            token: args.subscribe_token.clone(),
            subscribers: range,
            sample_stride,
            sample_count,
            per_source_ip: (args.subscribers > args.per_source_ip).then_some(args.per_source_ip),
            connect_concurrency: args.connect_concurrency.max(1),
            setup_deadline,
            tls: tls.clone(),
            deflate: args.deflate,
        };
        let plan = plan.clone();
        loops.push((
            false,
            spawn(&format!("fleet-{i}"), move || {
                fleet::run(config, plan).map_err(|e| e.to_string())
            })?,
        ));
    }
    let lp_threads = threads.min(args.longpoll);
    let lp_sample_count = args.sample.min(args.longpoll);
    let lp_sample_stride = (args.longpoll / lp_sample_count.max(1)).max(1);
    for i in 0..lp_threads {
        let range = (args.longpoll * i / lp_threads)..(args.longpoll * (i + 1) / lp_threads);
        let config = PollConfig {
            addr: args.addr,
            target: args.target,
            topics: topics.clone(),
            clients: range,
            sample_stride: lp_sample_stride,
            sample_count: lp_sample_count,
            per_source_ip: (args.longpoll > args.per_source_ip).then_some(args.per_source_ip),
            connect_concurrency: args.connect_concurrency.max(1),
            setup_deadline,
        };
        let plan = plan.clone();
        loops.push((
            true,
            spawn(&format!("longpoll-{i}"), move || {
                longpoll::run(config, plan).map_err(|e| e.to_string())
            })?,
        ));
    }

    // Setup: wait until every subscriber is in (or failed) and the publisher is up.
    let setup_started = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        let ready = plan.ready.load(Ordering::Relaxed);
        let failed = plan.failed.load(Ordering::Relaxed);
        let publisher_up = plan.publisher_ready.load(Ordering::Acquire);
        if ready + failed >= clients && publisher_up {
            eprintln!(
                "tickfan-load: {ready} subscribed, {failed} failed in {:.2} s",
                setup_started.elapsed().as_secs_f64()
            );
            break;
        }
        let publisher_done = publisher.as_ref().is_some_and(|p| p.is_finished());
        if publisher_done || Instant::now() > setup_deadline + Duration::from_secs(1) {
            plan.abort.store(true, Ordering::Relaxed);
            let publisher_result = match publisher {
                Some(p) => p.join().map_err(|_| "publisher panicked")?,
                None => Ok(PublisherStats::default()),
            };
            return Err(format!(
                "setup failed: {ready} subscribed, {failed} failed, publisher {}",
                match publisher_result {
                    Ok(_) if publisher_up => "ready".to_string(),
                    Ok(_) => "not ready".to_string(),
                    Err(e) => e,
                }
            ));
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            eprintln!("tickfan-load: setup: {ready} subscribed, {failed} failed");
            last_progress = Instant::now();
        }
        thread::sleep(Duration::from_millis(10));
    }
    if plan.ready.load(Ordering::Relaxed) == 0 {
        plan.abort.store(true, Ordering::Relaxed);
        return Err("no subscriber could subscribe".into());
    }

    let start = Instant::now() + settle;
    plan.start_at(start);
    let window_start = start + warmup;
    let window_end = window_start + duration;
    let drain_end = window_end + drain;
    sleep_until(window_start);
    let broker_before = broker_pid.as_deref().map(procfs::sample);
    let self_before = procfs::sample("self");
    let cpus_before = procfs::cpu_times();
    let perf = match args.broker_pid {
        Some(pid) if !args.no_perf => perf::PerfCount::start(&args.perf, pid, duration),
        _ => None,
    };
    sleep_until(window_end);
    let sockstat_after = procfs::tcp_mem_pages();
    let broker_after = broker_pid.as_deref().map(procfs::sample);
    let self_after = procfs::sample("self");
    let cpus = procfs::cpu_shares(&cpus_before, &procfs::cpu_times());
    let syscalls = perf.and_then(|p| {
        p.finish()
            .map_err(|e| eprintln!("tickfan-load: {e}; using /proc/PID/io syscw"))
            .ok()
    });

    let ticks = procfs::clock_ticks_per_sec();
    let broker = match (broker_before, broker_after) {
        (Some(Ok(b)), Some(Ok(a))) => Some(procfs::delta(&b, &a, ticks)),
        (Some(Err(e)), _) | (_, Some(Err(e))) => {
            eprintln!("tickfan-load: cannot read /proc for the broker: {e}");
            None
        }
        _ => None,
    };
    let loadgen = match (self_before, self_after) {
        (Ok(b), Ok(a)) => Some(procfs::delta(&b, &a, ticks)),
        _ => None,
    };

    // Join, bounded: a thread still running long after the plan ended is stuck.
    let watchdog = drain_end + WATCHDOG_GRACE;
    let publisher_stats: PublisherStats = match publisher {
        Some(p) => join_by(p, watchdog, "publisher")?.map_err(|e| format!("publisher: {e}"))?,
        None => PublisherStats {
            published_per_topic: vec![0; topics.names.len()],
            ..PublisherStats::default()
        },
    };
    let mut ws_stats = FleetStats::new(topics.names.len());
    let mut lp_stats = FleetStats::new(topics.names.len());
    for (i, (is_lp, handle)) in loops.into_iter().enumerate() {
        let stats = join_by(handle, watchdog, &format!("loop-{i}"))?
            .map_err(|e| format!("loop-{i}: {e}"))?;
        if is_lp {
            lp_stats.merge(&stats);
        } else {
            ws_stats.merge(&stats);
        }
    }

    let info = RunInfo {
        label: args.label.clone(),
        target: args.target.to_string(),
        subscribers_requested: args.subscribers,
        longpoll_requested: args.longpoll,
        topics: topics.names.len(),
        topics_per_subscriber: topics.per_client(),
        publisher_connections: publisher_stats.connections,
        publish_over: publisher_stats.transport.map(|t| t.to_string()),
        threads,
        rate: if args.no_publish {
            None
        } else {
            Some(args.rate)
        },
        warmup_s: warmup.as_secs_f64(),
        duration_s: duration.as_secs_f64(),
        drain_s: drain.as_secs_f64(),
        data_bytes: publisher::shaped_tick_data(args.tick_shape, plan::now_unix_ns(), 1000).len(),
        topic: prefix,
        addr: args.addr.to_string(),
        broker_rss_before_kib: broker_rss_before,
        tcp_mem_pages: sockstat_before.zip(sockstat_after),
    };
    let report = Report::new(
        &info,
        &ws_stats,
        &lp_stats,
        &publisher_stats,
        broker.as_ref(),
        syscalls.as_ref(),
        loadgen.as_ref(),
        &cpus,
    );
    println!(
        "tickfan-load: {} {}, {} topic(s), {} WebSocket + {} long-poll clients",
        args.target,
        if args.label.is_empty() {
            "run"
        } else {
            &args.label
        },
        topics.names.len(),
        args.subscribers,
        args.longpoll
    );
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(report.json()).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Refuses publisher settings the target cannot honour, naming the flag.
fn check_publishers(args: &Args) -> Result<(), String> {
    if args.publishers == 0 {
        return Err("--publishers must be at least 1".into());
    }
    if args.publishers > 1 && !args.target.one_publisher_connection() {
        return Err(format!(
            "--publishers applies to tickfan and nats; --target {} opens one publisher \
             connection per topic (--topics sets how many)",
            args.target
        ));
    }
    if args.publishers > args.topics {
        return Err(format!(
            "--publishers {} is more than --topics {}: topic t goes on connection t % P, \
             so the extra connections would carry nothing",
            args.publishers, args.topics
        ));
    }
    if args.publish_over == PublishOver::Http && args.target != Target::Tickfan {
        return Err(format!(
            "--publish-over http is for tickfan (POST /publish); --target {} publishes over ws",
            args.target
        ));
    }
    let header_safe = |t: &String| t.bytes().all(|b| b.is_ascii_graphic());
    if !args.publish_token.iter().all(header_safe) {
        return Err("--publish-token must be printable ASCII without spaces".into());
    }
    Ok(())
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, String> {
    thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| format!("cannot start thread {name}: {e}"))
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        thread::sleep(at - now);
    }
}

/// Joins `handle`, or exits the process if it is still running at `deadline`:
/// the run must end by itself even if the broker (or a loop) is stuck.
fn join_by<T>(handle: JoinHandle<T>, deadline: Instant, name: &str) -> Result<T, String> {
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            eprintln!("tickfan-load: {name} still running past the deadline; exiting");
            std::process::exit(3);
        }
        thread::sleep(Duration::from_millis(20));
    }
    handle.join().map_err(|_| format!("{name} panicked"))
}
