//! `tickfan-load`: an event-driven WebSocket client fleet that measures the
//! broker end to end. Scenario: broadcast — one topic, one publisher, N
//! subscribers.
//!
//! Its read and write paths are its own (mio, one scratch buffer per loop),
//! not the broker's, so what it measures is the broker. It ends by itself:
//! setup is bounded by `--setup-timeout`, the run by warmup + duration +
//! drain, and a watchdog exits the process if a thread overstays.

mod fleet;
mod perf;
mod plan;
mod procfs;
mod publisher;
mod report;
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
use plan::Plan;
use publisher::{PublisherConfig, PublisherStats};
use report::{Report, RunInfo};

/// File descriptors kept free for everything that is not a subscriber
/// socket (epoll instances, the publisher, /proc reads, stdio).
const SPARE_FDS: u64 = 100;

/// How long past the planned end the watchdog waits for threads to finish.
const WATCHDOG_GRACE: Duration = Duration::from_secs(10);

/// A WebSocket load generator for tickfan: one publisher, N subscribers on one topic.
#[derive(Debug, Parser)]
#[command(name = "tickfan-load", version)]
struct Args {
    /// Broker address (loopback), e.g. 127.0.0.1:9001.
    #[arg(long, default_value = "127.0.0.1:9001")]
    addr: SocketAddr,
    /// WebSocket path of the pub/sub protocol.
    #[arg(long, default_value = "/ws")]
    path: String,
    /// Topic to use; default a fresh one per run (`load-PID`), so no last
    /// value from an earlier run is replayed to the fleet.
    #[arg(long)]
    topic: Option<String>,
    /// Subscriber connections. One process holds at most its open-file limit
    /// less 100 (19,900 with `ulimit -n 20000`); run several processes for more.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Subscribers that parse every tick (seq gaps, duplicates, latency).
    #[arg(long, default_value_t = 50)]
    sample: usize,
    /// Subscribers per source address: past this many, subscribers bind
    /// 127.0.0.2, 127.0.0.3, ... (each has its own ephemeral port range).
    #[arg(long, default_value_t = 20_000)]
    per_source_ip: usize,
    /// Event-loop threads dividing the subscribers (the publisher has its own).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Ticks per second published; 0 = flat out (as fast as the broker reads).
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
    /// Token for the publisher (`Authorization: Bearer`), if the broker needs one.
    #[arg(long)]
    publish_token: Option<String>,
    /// Token for subscribers, if the broker needs one.
    #[arg(long)]
    subscribe_token: Option<String>,
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
    if args.subscribers == 0 || args.threads == 0 || args.per_source_ip == 0 {
        return Err("--subscribers, --threads and --per-source-ip must be at least 1".into());
    }
    let limit = procfs::open_files_limit().unwrap_or(1024);
    let cap = limit.saturating_sub(SPARE_FDS) as usize;
    if args.subscribers > cap {
        return Err(format!(
            "--subscribers {} is over this process's cap of {cap} sockets (open-file limit \
             {limit} less {SPARE_FDS}); raise `ulimit -n` or run several processes",
            args.subscribers
        ));
    }
    let warmup = secs(args.warmup, "warmup")?;
    let duration = secs(args.duration, "duration")?;
    let drain = secs(args.drain, "drain")?;
    let setup_timeout = secs(args.setup_timeout, "setup-timeout")?;
    if duration.is_zero() {
        return Err("--duration must be above 0".into());
    }
    let threads = args.threads.min(args.subscribers);
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("load-{}", std::process::id()));
    let plan = Arc::new(Plan::new(warmup, duration, drain));
    let setup_deadline = Instant::now() + setup_timeout;

    let publisher = {
        let config = PublisherConfig {
            addr: args.addr,
            path: args.path.clone(),
            topic: topic.clone(),
            token: args.publish_token.clone(),
            rate: args.rate,
            setup_deadline,
        };
        let plan = plan.clone();
        spawn("publisher", move || publisher::run(config, plan))?
    };
    let sample_count = args.sample.min(args.subscribers);
    let sample_stride = (args.subscribers / sample_count.max(1)).max(1);
    let mut loops = Vec::with_capacity(threads);
    for i in 0..threads {
        let range = (args.subscribers * i / threads)..(args.subscribers * (i + 1) / threads);
        let config = FleetConfig {
            addr: args.addr,
            path: args.path.clone(),
            topic: topic.clone(),
            token: args.subscribe_token.clone(),
            subscribers: range,
            sample_stride,
            sample_count,
            per_source_ip: (args.subscribers > args.per_source_ip).then_some(args.per_source_ip),
            connect_concurrency: args.connect_concurrency.max(1),
            setup_deadline,
        };
        let plan = plan.clone();
        loops.push(spawn(&format!("fleet-{i}"), move || {
            fleet::run(config, plan).map_err(|e| e.to_string())
        })?);
    }

    // Setup: wait until every subscriber is in (or failed) and the publisher is up.
    let setup_started = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        let ready = plan.ready.load(Ordering::Relaxed);
        let failed = plan.failed.load(Ordering::Relaxed);
        let publisher_up = plan.publisher_ready.load(Ordering::Acquire);
        if ready + failed >= args.subscribers && publisher_up {
            eprintln!(
                "tickfan-load: {ready} subscribed, {failed} failed in {:.2} s",
                setup_started.elapsed().as_secs_f64()
            );
            break;
        }
        if publisher.is_finished() || Instant::now() > setup_deadline + Duration::from_secs(1) {
            plan.abort.store(true, Ordering::Relaxed);
            let publisher_result = publisher.join().map_err(|_| "publisher panicked")?;
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

    let start = Instant::now() + Duration::from_millis(50);
    plan.start_at(start);
    let window_start = start + warmup;
    let window_end = window_start + duration;
    let drain_end = window_end + drain;
    let broker_pid = args.broker_pid.map(|p| p.to_string());
    sleep_until(window_start);
    let broker_before = broker_pid.as_deref().map(procfs::sample);
    let self_before = procfs::sample("self");
    let cpus_before = procfs::cpu_times();
    let perf = match args.broker_pid {
        Some(pid) if !args.no_perf => perf::PerfCount::start(&args.perf, pid, duration),
        _ => None,
    };
    sleep_until(window_end);
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
    let publisher_stats: PublisherStats =
        join_by(publisher, watchdog, "publisher")?.map_err(|e| format!("publisher: {e}"))?;
    let mut fleet_stats: Option<FleetStats> = None;
    for (i, handle) in loops.into_iter().enumerate() {
        let stats = join_by(handle, watchdog, &format!("fleet-{i}"))?
            .map_err(|e| format!("fleet-{i}: {e}"))?;
        match fleet_stats.as_mut() {
            Some(total) => total.merge(&stats),
            None => fleet_stats = Some(stats),
        }
    }
    let fleet_stats = fleet_stats.ok_or("no fleet loop ran")?;

    let info = RunInfo {
        subscribers_requested: args.subscribers,
        threads,
        rate: args.rate,
        warmup_s: warmup.as_secs_f64(),
        duration_s: duration.as_secs_f64(),
        drain_s: drain.as_secs_f64(),
        data_bytes: data_bytes(&topic),
        topic,
        addr: args.addr.to_string(),
    };
    let report = Report::new(
        &info,
        &fleet_stats,
        &publisher_stats,
        broker.as_ref(),
        syscalls.as_ref(),
        loadgen.as_ref(),
        &cpus,
    );
    println!("tickfan-load: broadcast, 1 topic, 1 publisher");
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(report.json()).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Bytes of one tick's `data` object, as the report states the payload size.
fn data_bytes(topic: &str) -> usize {
    let payload = publisher::tick_payload(topic, plan::now_unix_ns());
    let data_at = payload.find("\"data\":").map_or(0, |i| i + 7);
    payload.len() - data_at - 1
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
