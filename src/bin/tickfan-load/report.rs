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

/// The run's settings as the report states them.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub subscribers_requested: usize,
    pub threads: usize,
    pub rate: u64,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub drain_s: f64,
    pub topic: String,
    pub data_bytes: usize,
    pub addr: String,
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
    pub fn new(
        info: &RunInfo,
        fleet: &FleetStats,
        publisher: &PublisherStats,
        broker: Option<&ProcDelta>,
        syscalls: Option<&SyscallCounts>,
        loadgen: Option<&ProcDelta>,
        cpus: &[CpuShare],
    ) -> Self {
        let d = info.duration_s;
        let delivered_per_s = fleet.ticks_window as f64 / d;
        let expected = publisher.published_total as f64 * fleet.subscribed as f64;
        let ratio = per(fleet.ticks_total as f64, expected);
        let bytes_per_tick = per(fleet.bytes_window as f64, fleet.ticks_window as f64);
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
                "read_syscalls": fleet.read_syscalls,
                "error_events": fleet.error_events,
                "server_closes": fleet.server_closes,
                "pongs_sent": fleet.pongs_sent,
            },
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
                "busiest_thread": loadgen_busiest.as_ref().map(|t| t.0.clone()),
                "busiest_thread_pct": loadgen_busiest.as_ref().map(|t| t.1 / d * 100.0),
            })),
            "cpus": cpus.iter().map(|c| json!({
                "cpu": c.name, "busy_pct": c.busy_pct, "user_pct": c.user_pct,
                "system_pct": c.system_pct, "softirq_pct": c.softirq_pct, "steal_pct": c.steal_pct,
            })).collect::<Vec<_>>(),
            "other_processes_cpu_pct": other_pct,
            "failures": fleet.failures,
            "publisher_first_error": publisher.first_error,
        });

        let mut t = String::new();
        let mut row = |k: &str, v: String| t.push_str(&format!("  {k:<34} {v}\n"));
        row(
            "subscribers (ok / failed)",
            format!(
                "{} / {}  (threads {})",
                fleet.subscribed, fleet.failed, info.threads
            ),
        );
        row(
            "rate requested",
            if info.rate == 0 {
                "flat out".into()
            } else {
                format!("{} ticks/s", info.rate)
            },
        );
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
            format!("{}  = {:.0} ticks/s", fleet.ticks_window, delivered_per_s),
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
        row("bytes per delivered tick", fmt_opt(bytes_per_tick, 1));
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
            row("broker RSS", format!("{} MiB", fmt_opt(broker_rss_mib, 1)));
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
