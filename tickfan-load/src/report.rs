//! Turns the counters of one run into its figures: a human table on stdout
//! and the same figures as JSON.
//!
//! Separate so every derived figure (rates, ratios, per-1k costs) is computed
//! once, in [`Report::new`], and both outputs print the same numbers.

use serde_json::{json, Value};

use crate::fleet::FleetStats;
use crate::perf::SyscallCounts;
use crate::procfs::{CpuShare, ProcDelta};
use crate::publisher::PublisherStats;
use crate::topics;

/// DESIGN.md's batched-write ceiling on these machines (64 ticks per
/// `writev`), the denominator of "percent of ceiling".
pub const CEILING_TICKS_PER_S: f64 = 9.5e6;

/// The run's settings as the report states them.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub label: String,
    pub target: String,
    pub subscribers_requested: usize,
    pub longpoll_requested: usize,
    pub topics: usize,
    pub topics_per_subscriber: usize,
    pub publisher_connections: usize,
    /// What the publishers sent ticks over (`ws`, `http`); `None` when
    /// nothing was published.
    pub publish_over: Option<String>,
    pub threads: usize,
    /// Ticks/s requested; 0 = flat out; `None` = nothing published.
    pub rate: Option<u64>,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub drain_s: f64,
    pub topic: String,
    pub data_bytes: usize,
    pub addr: String,
    /// The broker's RSS before any client connected.
    pub broker_rss_before_kib: Option<u64>,
    /// TCP socket memory machine-wide, pages, before setup and at window end.
    pub tcp_mem_pages: Option<(u64, u64)>,
}

/// The figures one transport's fleet adds to the report.
fn transport_json(f: &FleetStats, d: f64) -> Value {
    json!({
        "clients": f.subscribed,
        "failed": f.failed,
        "delivered_window": f.ticks_window,
        "delivered_per_s": f.ticks_window as f64 / d,
        "bytes_received_window": f.bytes_window,
        "bytes_sent_window": f.bytes_sent_window,
        "wire_bytes_per_tick": per((f.bytes_window + f.bytes_sent_window) as f64, f.ticks_window as f64),
        "requests": f.requests,
        "empty_answers": f.empty_answers,
        "gap_answers": f.gap_events,
        "server_closes_or_reconnects": f.server_closes,
    })
}

/// Every figure of one run.
#[derive(Debug)]
pub struct Report {
    json: Value,
    table: String,
}

fn per(n: f64, d: f64) -> Option<f64> {
    (d > 0.0).then(|| n / d)
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.digits$}"))
}

impl Report {
    /// Derives the figures from the raw counters.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        info: &RunInfo,
        ws: &FleetStats,
        lp: &FleetStats,
        publisher: &PublisherStats,
        broker: Option<&ProcDelta>,
        syscalls: Option<&SyscallCounts>,
        loadgen: Option<&ProcDelta>,
        cpus: &[CpuShare],
    ) -> Self {
        let d = info.duration_s;
        let mut all = FleetStats::new(ws.subs_per_topic.len());
        all.merge(ws);
        all.merge(lp);
        let fleet = &all;
        let delivered_per_s = fleet.ticks_window as f64 / d;
        let expected = topics::expected(&publisher.published_per_topic, &fleet.subs_per_topic);
        let ratio = per(fleet.ticks_total as f64, expected);
        // Bytes on the wire per tick: what clients received, plus what
        // long-poll clients sent (their requests); TCP/IP headers not counted.
        let bytes_per_tick = per(
            (fleet.bytes_window + fleet.bytes_sent_window) as f64,
            fleet.ticks_window as f64,
        );
        let pct_of_ceiling = delivered_per_s / CEILING_TICKS_PER_S * 100.0;
        let connections = fleet.subscribed;
        let rss_growth_kib = broker
            .and_then(|b| b.rss_kib)
            .zip(info.broker_rss_before_kib)
            .map(|(a, b)| a.saturating_sub(b));
        let rss_per_conn_kib = rss_growth_kib.and_then(|g| per(g as f64, connections as f64));
        let tcp_kib_per_conn = info
            .tcp_mem_pages
            .and_then(|(b, a)| per(a.saturating_sub(b) as f64 * 4.0, connections as f64));
        let h = &fleet.sample.latency_ns;
        let pct = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0);
        let (p50, p90, p99, p999, pmax) = (
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(0.999),
            (!h.is_empty()).then(|| h.max() as f64 / 1000.0),
        );

        let broker_cpu_pct = broker.map(|b| b.cpu_secs / d * 100.0);
        let broker_us_per_1k =
            broker.and_then(|b| per(b.cpu_secs * 1e6, fleet.ticks_window as f64 / 1000.0));
        let broker_busiest = broker.and_then(|b| b.busiest_thread.clone());
        // perf sees every write-family call; syscw misses send/sendto.
        let (broker_writes, writes_source) = match syscalls {
            Some(c) => (Some(c.total()), "perf: write+writev+sendto+sendmsg"),
            None => (
                broker.and_then(|b| b.write_syscalls),
                "/proc/PID/io syscw: write+writev only, misses send",
            ),
        };
        let per_write = broker_writes.and_then(|w| per(fleet.ticks_window as f64, w as f64));
        let broker_rss_mib = broker.and_then(|b| b.rss_kib).map(|k| k as f64 / 1024.0);
        let loadgen_cpu_pct = loadgen.map(|l| l.cpu_secs / d * 100.0);
        // Task time on all cores not charged to the broker or to us: other
        // processes sharing the machine, which make every figure suspect.
        let task_pct: f64 = cpus.iter().map(|c| c.user_pct + c.system_pct).sum();
        let other_pct = (!cpus.is_empty()).then(|| {
            (task_pct - broker_cpu_pct.unwrap_or(0.0) - loadgen_cpu_pct.unwrap_or(0.0)).max(0.0)
        });
        let loadgen_busiest = loadgen.and_then(|l| l.busiest_thread.clone());

        let json = json!({
            "run": {
                "label": info.label,
                "target": info.target,
                "longpoll_requested": info.longpoll_requested,
                "topics": info.topics,
                "topics_per_subscriber": info.topics_per_subscriber,
                "publisher_connections": info.publisher_connections,
                "publish_over": info.publish_over,
                "addr": info.addr,
                "topic": info.topic,
                "subscribers_requested": info.subscribers_requested,
                "subscribers": fleet.subscribed,
                "subscribers_failed": fleet.failed,
                "threads": info.threads,
                "rate_requested": info.rate,
                "warmup_s": info.warmup_s,
                "duration_s": d,
                "drain_s": info.drain_s,
                "data_bytes": info.data_bytes,
            },
            "published": {
                "total": publisher.published_total,
                "window": publisher.published_window,
                "per_s": publisher.published_window as f64 / d,
                "behind_at_end": publisher.behind_at_end,
                "error_events": publisher.error_events,
                "write_syscalls": publisher.write_syscalls,
            },
            "delivered": {
                "total": fleet.ticks_total,
                "window": fleet.ticks_window,
                "per_s": delivered_per_s,
                "expected_total": expected,
                "ratio": ratio,
                "bytes_per_tick": bytes_per_tick,
                "pct_of_ceiling": pct_of_ceiling,
                "ceiling_ticks_per_s": CEILING_TICKS_PER_S,
                "read_syscalls": fleet.read_syscalls,
                "error_events": fleet.error_events,
                "server_closes": fleet.server_closes,
                "pongs_sent": fleet.pongs_sent,
                "compressed_frames": fleet.compressed_frames,
                "deflate_subscribers": fleet.deflate_subscribers,
            },
            "websocket": transport_json(ws, d),
            "longpoll": transport_json(lp, d),
            "sample": {
                "subscribers": fleet.sample.subscribers,
                "ticks": fleet.sample.ticks,
                "gaps": fleet.sample.gaps,
                "missing": fleet.sample.missing,
                "duplicates": fleet.sample.duplicates,
                "unparsable": fleet.sample.unparsable,
                "latency_us": {
                    "count": h.len(),
                    "p50": p50, "p90": p90, "p99": p99, "p99_9": p999, "max": pmax,
                },
            },
            "broker": broker.map(|b| json!({
                "cpu_s": b.cpu_secs,
                "cpu_pct": broker_cpu_pct,
                "cpu_us_per_1k_delivered": broker_us_per_1k,
                "busiest_thread": broker_busiest.as_ref().map(|t| t.0.clone()),
                "busiest_thread_pct": broker_busiest.as_ref().map(|t| t.1 / d * 100.0),
                "rss_mib": broker_rss_mib,
                "runqueue_wait_pct": b.runqueue_wait_secs / d * 100.0,
                "rss_before_mib": info.broker_rss_before_kib.map(|k| k as f64 / 1024.0),
                "rss_kib_per_connection": rss_per_conn_kib,
                "write_syscalls": broker_writes,
                "write_syscalls_source": writes_source,
                "syscalls": syscalls.map(|c| json!({
                    "write": c.write, "writev": c.writev,
                    "sendto": c.sendto, "sendmsg": c.sendmsg,
                })),
                "proc_io_syscw": b.write_syscalls,
                "delivered_per_write_syscall": per_write,
            })),
            "loadgen": loadgen.map(|l| json!({
                "cpu_s": l.cpu_secs,
                "cpu_pct": loadgen_cpu_pct,
                "runqueue_wait_pct": l.runqueue_wait_secs / d * 100.0,
                "busiest_thread": loadgen_busiest.as_ref().map(|t| t.0.clone()),
                "busiest_thread_pct": loadgen_busiest.as_ref().map(|t| t.1 / d * 100.0),
            })),
            "cpus": cpus.iter().map(|c| json!({
                "cpu": c.name, "busy_pct": c.busy_pct, "user_pct": c.user_pct,
                "system_pct": c.system_pct, "softirq_pct": c.softirq_pct, "steal_pct": c.steal_pct,
            })).collect::<Vec<_>>(),
            "other_processes_cpu_pct": other_pct,
            "tcp_buffer_kib_per_connection": tcp_kib_per_conn,
            "failures": fleet.failures,
            "publisher_first_error": publisher.first_error,
        });

        let mut t = String::new();
        let mut row = |k: &str, v: String| t.push_str(&format!("  {k:<34} {v}\n"));
        row(
            "WebSocket subscribers (ok / failed)",
            format!(
                "{} / {}  (threads {}, {} topic(s), {} per subscriber)",
                ws.subscribed, ws.failed, info.threads, info.topics, info.topics_per_subscriber
            ),
        );
        if info.longpoll_requested > 0 {
            row(
                "long-poll clients (ok / failed)",
                format!(
                    "{} / {}  ({} requests, {} empty answers, {} reconnects, {} gap answers)",
                    lp.subscribed,
                    lp.failed,
                    lp.requests,
                    lp.empty_answers,
                    lp.server_closes,
                    lp.gap_events
                ),
            );
        }
        row(
            "rate requested",
            match info.rate {
                None => "nothing published (idle)".into(),
                Some(0) => "flat out".into(),
                Some(r) => format!("{r} ticks/s over {} topic(s)", info.topics),
            },
        );
        if let Some(over) = &info.publish_over {
            row(
                "publisher connections",
                format!(
                    "{} over {}",
                    info.publisher_connections,
                    match over.as_str() {
                        "http" => "HTTP (pipelined POST /publish, one tick each)",
                        _ => "WebSocket",
                    }
                ),
            );
        }
        row(
            "window",
            format!(
                "{:.1} s after {:.1} s warmup, {:.1} s drain",
                d, info.warmup_s, info.drain_s
            ),
        );
        row(
            "published (total / window)",
            format!(
                "{} / {}  = {:.0} ticks/s{}",
                publisher.published_total,
                publisher.published_window,
                publisher.published_window as f64 / d,
                if publisher.behind_at_end > 0 {
                    format!("  (behind schedule by {})", publisher.behind_at_end)
                } else {
                    String::new()
                }
            ),
        );
        row(
            "delivered in window",
            format!(
                "{}  = {:.0} ticks/s = {:.3}% of the {:.1}M ticks/s ceiling",
                fleet.ticks_window,
                delivered_per_s,
                pct_of_ceiling,
                CEILING_TICKS_PER_S / 1e6
            ),
        );
        row(
            "delivery ratio (run)",
            format!(
                "{}  ({} of {:.0})",
                fmt_opt(ratio, 5),
                fleet.ticks_total,
                expected
            ),
        );
        row(
            "sample gaps / missing / dups",
            format!(
                "{} / {} / {}  ({} subscribers, {} ticks)",
                fleet.sample.gaps,
                fleet.sample.missing,
                fleet.sample.duplicates,
                fleet.sample.subscribers,
                fleet.sample.ticks
            ),
        );
        row(
            "latency µs p50 / p90 / p99 / p99.9",
            format!(
                "{} / {} / {} / {}  (max {})",
                fmt_opt(p50, 0),
                fmt_opt(p90, 0),
                fmt_opt(p99, 0),
                fmt_opt(p999, 0),
                fmt_opt(pmax, 0)
            ),
        );
        row(
            "wire bytes per delivered tick",
            format!(
                "{}  (received{})",
                fmt_opt(bytes_per_tick, 1),
                if fleet.bytes_sent_window > 0 {
                    " + long-poll requests"
                } else {
                    ""
                }
            ),
        );
        if fleet.error_events + fleet.server_closes + publisher.error_events > 0 {
            row(
                "errors (sub events / closes / pub)",
                format!(
                    "{} / {} / {}",
                    fleet.error_events, fleet.server_closes, publisher.error_events
                ),
            );
        }
        if let Some(b) = broker {
            row(
                "broker CPU",
                format!(
                    "{:.2} s = {:.0}% of a core; busiest thread {}",
                    b.cpu_secs,
                    broker_cpu_pct.unwrap_or(0.0),
                    broker_busiest.as_ref().map_or("n/a".into(), |t| format!(
                        "{} {:.0}%",
                        t.0,
                        t.1 / d * 100.0
                    ))
                ),
            );
            row(
                "broker waited for a CPU",
                format!(
                    "{:.0}% of the window (runnable, not running: other processes' share)",
                    b.runqueue_wait_secs / d * 100.0
                ),
            );
            row(
                "broker CPU per 1k delivered",
                format!("{} µs", fmt_opt(broker_us_per_1k, 2)),
            );
            row(
                "broker write syscalls",
                format!(
                    "{}  = {} delivered ticks per write  ({writes_source})",
                    broker_writes.map_or("n/a".into(), |w| w.to_string()),
                    fmt_opt(per_write, 1)
                ),
            );
            row(
                "broker RSS",
                format!(
                    "{} MiB (before setup {} MiB; {} KiB per connection)",
                    fmt_opt(broker_rss_mib, 1),
                    fmt_opt(info.broker_rss_before_kib.map(|k| k as f64 / 1024.0), 1),
                    fmt_opt(rss_per_conn_kib, 2)
                ),
            );
        }
        if let Some(l) = loadgen {
            row(
                "load generator CPU",
                format!(
                    "{:.2} s = {:.0}%; busiest thread {}",
                    l.cpu_secs,
                    loadgen_cpu_pct.unwrap_or(0.0),
                    loadgen_busiest.as_ref().map_or("n/a".into(), |t| format!(
                        "{} {:.0}%",
                        t.0,
                        t.1 / d * 100.0
                    ))
                ),
            );
        }
        for c in cpus {
            row(
                &format!("{} busy", c.name),
                format!(
                    "{:.0}%  (user {:.0}, sys {:.0}, softirq {:.0}, steal {:.0})",
                    c.busy_pct, c.user_pct, c.system_pct, c.softirq_pct, c.steal_pct
                ),
            );
        }
        if let Some(k) = tcp_kib_per_conn {
            row(
                "TCP buffer memory per client",
                format!("{k:.2} KiB (queued data, both ends; /proc/net/sockstat mem)"),
            );
        }
        if let Some(other) = other_pct {
            let warn = if other > 5.0 {
                "  <- other processes share the cores: figures are suspect"
            } else {
                ""
            };
            row(
                "other processes' CPU",
                format!("{other:.0}% of a core{warn}"),
            );
        }
        for f in &fleet.failures {
            row("failure", f.clone());
        }
        if let Some(e) = &publisher.first_error {
            row("publisher error event", e.clone());
        }
        Report { json, table: t }
    }

    /// The human table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The figures as JSON.
    pub fn json(&self) -> &Value {
        &self.json
    }
}
