//! Prometheus metrics: the registry behind `GET /metrics`.
//!
//! Workers never touch these on the hot path: each counts in its own plain
//! [`WorkerStats`] and publishes the difference about once a second
//! ([`Metrics::flush_worker`]), so counting a delivered tick costs an
//! increment in a cache line the worker owns, not an atomic on a shared one.
//! Names follow Prometheus conventions (`_total` counters, base units).

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub mod auth;
pub mod cluster;
pub mod worker_stats;

use self::auth::AuthMetrics;
pub use self::cluster::ClusterMetrics;

use self::worker_stats::{
    Transport, WorkerStats, CLOSE_CODES, FAILURE_REASONS, TLS_FAILURE_REASONS,
};

/// Per-worker values that are levels, not counts: measured when flushed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerGauges {
    pub connections: [i64; Transport::ALL.len()],
    pub subscriptions: i64,
    pub queued_bytes: i64,
    pub held_polls: i64,
}

/// Every metric tickfan exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    published: IntCounterVec,
    delivered: IntCounterVec,
    received_bytes: IntCounter,
    sent_bytes: IntCounter,
    write_syscalls: IntCounter,
    slow_consumer_actions: IntCounterVec,
    handshakes: IntCounterVec,
    handshake_failures: IntCounterVec,
    tls_reloads: IntCounterVec,
    tls_handshakes: IntCounter,
    tls_handshake_failures: IntCounterVec,
    closes: IntCounterVec,
    worker_busy: CounterVec,
    accept_errors: IntCounter,
    publisher_pauses: IntCounter,
    batch_waits: IntCounter,
    deflate_compressions: IntCounter,
    deflate_bytes: IntCounterVec,
    inflated_messages: IntCounter,
    inflated_bytes: IntCounter,
    connections: IntGaugeVec,
    subscriptions: IntGaugeVec,
    topics: IntGauge,
    queued_bytes: IntGaugeVec,
    held_polls: IntGaugeVec,
    latency: Histogram,
    /// Tokens presented, refreshes and expiry closes (counted where they happen).
    pub auth: AuthMetrics,
    cluster: ClusterMetrics,
}

/// Buckets of the publish-to-write latency, in seconds: 10 µs to 1 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
];

impl Metrics {
    /// Creates and registers every metric, plus the process collector.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            published: counter_vec(
                "tickfan_ticks_published_total",
                "Ticks published, by transport",
                &["transport"],
            ),
            delivered: counter_vec(
                "tickfan_ticks_delivered_total",
                "Ticks written to subscribers, by transport",
                &["transport"],
            ),
            received_bytes: counter(
                "tickfan_received_bytes_total",
                "Bytes read from client sockets",
            ),
            sent_bytes: counter(
                "tickfan_sent_bytes_total",
                "Bytes written to client sockets",
            ),
            write_syscalls: counter(
                "tickfan_write_syscalls_total",
                "write/writev calls on client sockets",
            ),
            slow_consumer_actions: counter_vec(
                "tickfan_slow_consumer_actions_total",
                "Ticks conflated or dropped, and connections closed, for slow consumers, by policy",
                &["policy"],
            ),
            handshakes: counter_vec(
                "tickfan_handshakes_total",
                "Accepted WebSocket upgrades and HTTP requests, by transport",
                &["transport"],
            ),
            handshake_failures: counter_vec(
                "tickfan_handshake_failures_total",
                "Refused upgrades and HTTP requests, by reason",
                &["reason"],
            ),
            tls_reloads: counter_vec(
                "tickfan_tls_reloads_total",
                "Reloads of the TLS certificate (SIGHUP), by result",
                &["result"],
            ),
            tls_handshakes: counter(
                "tickfan_tls_handshakes_total",
                "TLS handshakes completed on the TLS listener",
            ),
            tls_handshake_failures: counter_vec(
                "tickfan_tls_handshake_failures_total",
                "TLS handshakes that failed, by reason",
                &["reason"],
            ),
            closes: counter_vec(
                "tickfan_closes_total",
                "WebSocket close frames sent, by close code",
                &["code"],
            ),
            worker_busy: CounterVec::new(
                Opts::new(
                    "tickfan_worker_busy_seconds_total",
                    "Event-loop time spent working rather than waiting in poll, by worker",
                ),
                &["worker"],
            )
            .expect("valid metric"),
            accept_errors: counter("tickfan_accept_errors_total", "Failed accept(2) calls"),
            publisher_pauses: counter(
                "tickfan_publisher_pauses_total",
                "Reads of publishing connections put off (2 ms each) because a worker mailbox \
                 held over broker.max_mailbox_ticks: publishers faster than fan-out",
            ),
            batch_waits: counter(
                "tickfan_batch_waits_total",
                "Write sweeps a saturated worker let wait (up to broker.max_batch_delay_ms) \
                 so that writes carry more ticks; with broker.batching = \"connection\", \
                 connections held back",
            ),
            deflate_compressions: counter(
                "tickfan_deflate_compressions_total",
                "Ticks compressed for permessage-deflate subscribers: once per publish \
                 (and per smaller window asked for), shared by every such subscriber",
            ),
            deflate_bytes: counter_vec(
                "tickfan_deflate_bytes_total",
                "Bytes through those compressions: stage=in the envelopes, stage=out \
                 the compressed payloads",
                &["stage"],
            ),
            inflated_messages: counter(
                "tickfan_inflated_messages_total",
                "Compressed (permessage-deflate) client messages inflated",
            ),
            inflated_bytes: counter(
                "tickfan_inflated_bytes_total",
                "Bytes compressed client messages inflated to",
            ),
            connections: gauge_vec(
                "tickfan_connections",
                "Open connections, by worker and transport",
                &["worker", "transport"],
            ),
            subscriptions: gauge_vec(
                "tickfan_subscriptions",
                "Topic subscriptions, by worker",
                &["worker"],
            ),
            topics: IntGauge::new("tickfan_topics", "Topics alive in the topic table")
                .expect("valid metric"),
            queued_bytes: gauge_vec(
                "tickfan_outbound_queue_bytes",
                "Bytes waiting in outbound queues, by worker",
                &["worker"],
            ),
            held_polls: gauge_vec(
                "tickfan_longpolls_held",
                "Long-poll requests being held, by worker",
                &["worker"],
            ),
            latency: Histogram::with_opts(
                HistogramOpts::new(
                    "tickfan_publish_to_write_seconds",
                    "Time from a tick's publish to the write that completed it",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            auth: AuthMetrics::register(&registry),
            cluster: ClusterMetrics::register(&registry),
            registry,
        };
        let collectors: [Box<dyn Collector>; 26] = [
            Box::new(m.published.clone()),
            Box::new(m.delivered.clone()),
            Box::new(m.received_bytes.clone()),
            Box::new(m.sent_bytes.clone()),
            Box::new(m.write_syscalls.clone()),
            Box::new(m.slow_consumer_actions.clone()),
            Box::new(m.handshakes.clone()),
            Box::new(m.handshake_failures.clone()),
            Box::new(m.tls_reloads.clone()),
            Box::new(m.tls_handshakes.clone()),
            Box::new(m.tls_handshake_failures.clone()),
            Box::new(m.closes.clone()),
            Box::new(m.worker_busy.clone()),
            Box::new(m.accept_errors.clone()),
            Box::new(m.publisher_pauses.clone()),
            Box::new(m.batch_waits.clone()),
            Box::new(m.deflate_compressions.clone()),
            Box::new(m.deflate_bytes.clone()),
            Box::new(m.inflated_messages.clone()),
            Box::new(m.inflated_bytes.clone()),
            Box::new(m.connections.clone()),
            Box::new(m.subscriptions.clone()),
            Box::new(m.topics.clone()),
            Box::new(m.queued_bytes.clone()),
            Box::new(m.held_polls.clone()),
            Box::new(m.latency.clone()),
        ];
        for collector in collectors {
            m.registry
                .register(collector)
                .expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            m.registry
                .register(Box::new(process))
                .expect("process metrics register once");
        }
        m.init_label_sets();
        m
    }

    /// Cluster mode's metrics, for the engine to update (in single-node
    /// mode they are exported and stay at zero, so one dashboard fits both).
    pub fn cluster(&self) -> ClusterMetrics {
        self.cluster.clone()
    }

    /// Creates every known label combination at zero, so dashboards show
    /// series (and rates) before the first event of each kind.
    fn init_label_sets(&self) {
        for transport in ["websocket", "http", "demo"] {
            self.published.with_label_values(&[transport]);
        }
        for transport in ["websocket", "sse", "longpoll"] {
            self.delivered.with_label_values(&[transport]);
        }
        for policy in ["conflate", "drop", "disconnect"] {
            self.slow_consumer_actions.with_label_values(&[policy]);
        }
        for transport in Transport::ALL {
            self.handshakes.with_label_values(&[transport.label()]);
        }
        for reason in FAILURE_REASONS {
            self.handshake_failures.with_label_values(&[reason]);
        }
        for reason in TLS_FAILURE_REASONS {
            self.tls_handshake_failures.with_label_values(&[reason]);
        }
        for code in CLOSE_CODES {
            self.closes.with_label_values(&[&code.to_string()]);
        }
    }

    /// The histogram a worker records publish-to-write latencies in; the
    /// worker keeps a local copy and flushes it with its counters.
    /// Counts `ticks` the `--demo-feed` market published, under
    /// `transport="demo"` (its own thread, not a worker: counted directly,
    /// once per publishing step).
    pub fn count_demo_published(&self, ticks: u64) {
        self.published.with_label_values(&["demo"]).inc_by(ticks);
    }

    /// Counts a reload of the TLS certificate, `ok` or failed.
    pub fn count_tls_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.tls_reloads.with_label_values(&[result]).inc();
    }

    pub fn latency(&self) -> &Histogram {
        &self.latency
    }

    /// Publishes a worker's counts since its last flush, and its levels.
    pub fn flush_worker(
        &self,
        worker: usize,
        now: &WorkerStats,
        before: &WorkerStats,
        gauges: &WorkerGauges,
    ) {
        let delta = |a: u64, b: u64| a.saturating_sub(b);
        self.published
            .with_label_values(&["websocket"])
            .inc_by(delta(now.published_ws, before.published_ws));
        self.published
            .with_label_values(&["http"])
            .inc_by(delta(now.published_http, before.published_http));
        let streamed = [
            Transport::WebSocket,
            Transport::Sse,
            Transport::LongPoll,
            Transport::Wss,
            Transport::Tls,
        ];
        for transport in streamed {
            let i = transport as usize;
            self.delivered
                .with_label_values(&[transport.label()])
                .inc_by(delta(now.delivered[i], before.delivered[i]));
        }
        self.received_bytes
            .inc_by(delta(now.bytes_in, before.bytes_in));
        self.sent_bytes
            .inc_by(delta(now.bytes_out, before.bytes_out));
        self.write_syscalls
            .inc_by(delta(now.write_syscalls, before.write_syscalls));
        let slow = &self.slow_consumer_actions;
        slow.with_label_values(&["conflate"])
            .inc_by(delta(now.conflated, before.conflated));
        slow.with_label_values(&["drop"])
            .inc_by(delta(now.dropped, before.dropped));
        slow.with_label_values(&["disconnect"])
            .inc_by(delta(now.slow_disconnects, before.slow_disconnects));
        for transport in Transport::ALL {
            let i = transport as usize;
            self.handshakes
                .with_label_values(&[transport.label()])
                .inc_by(delta(now.handshakes[i], before.handshakes[i]));
        }
        for (i, reason) in FAILURE_REASONS.iter().enumerate() {
            let added = delta(now.handshake_failures[i], before.handshake_failures[i]);
            if added > 0 {
                self.handshake_failures
                    .with_label_values(&[reason])
                    .inc_by(added);
            }
        }
        self.tls_handshakes
            .inc_by(delta(now.tls_handshakes, before.tls_handshakes));
        for (i, reason) in TLS_FAILURE_REASONS.iter().enumerate() {
            let added = delta(
                now.tls_handshake_failures[i],
                before.tls_handshake_failures[i],
            );
            if added > 0 {
                self.tls_handshake_failures
                    .with_label_values(&[reason])
                    .inc_by(added);
            }
        }
        for (i, code) in CLOSE_CODES.iter().enumerate() {
            let added = delta(now.closes[i], before.closes[i]);
            if added > 0 {
                self.closes
                    .with_label_values(&[&code.to_string()])
                    .inc_by(added);
            }
        }
        self.accept_errors
            .inc_by(delta(now.accept_errors, before.accept_errors));
        self.publisher_pauses
            .inc_by(delta(now.publisher_pauses, before.publisher_pauses));
        self.batch_waits
            .inc_by(delta(now.batch_waits, before.batch_waits));
        self.deflate_compressions
            .inc_by(delta(now.deflate_compressions, before.deflate_compressions));
        self.deflate_bytes
            .with_label_values(&["in"])
            .inc_by(delta(now.deflate_bytes_in, before.deflate_bytes_in));
        self.deflate_bytes
            .with_label_values(&["out"])
            .inc_by(delta(now.deflate_bytes_out, before.deflate_bytes_out));
        self.inflated_messages
            .inc_by(delta(now.inflated_messages, before.inflated_messages));
        self.inflated_bytes
            .inc_by(delta(now.inflated_bytes, before.inflated_bytes));
        let worker = worker.to_string();
        let busy = delta(now.busy_nanos, before.busy_nanos) as f64 / 1e9;
        self.worker_busy.with_label_values(&[&worker]).inc_by(busy);
        for transport in Transport::ALL {
            self.connections
                .with_label_values(&[&worker, transport.label()])
                .set(gauges.connections[transport as usize]);
        }
        self.subscriptions
            .with_label_values(&[&worker])
            .set(gauges.subscriptions);
        self.queued_bytes
            .with_label_values(&[&worker])
            .set(gauges.queued_bytes);
        self.held_polls
            .with_label_values(&[&worker])
            .set(gauges.held_polls);
    }

    /// The text exposition of every metric; `topics` is read at scrape time.
    pub fn render(&self, topics: usize) -> Vec<u8> {
        self.topics.set(topics as i64);
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_adds_deltas_and_sets_levels() {
        let metrics = Metrics::new();
        let before = WorkerStats::default();
        let mut now = before;
        now.delivered[Transport::WebSocket as usize] = 7;
        now.published_http = 2;
        now.closes[1] = 1; // 1001
        let mut gauges = WorkerGauges::default();
        gauges.connections[Transport::WebSocket as usize] = 3;
        metrics.flush_worker(0, &now, &before, &gauges);
        metrics.flush_worker(0, &now, &now, &gauges);
        let text = String::from_utf8(metrics.render(5)).unwrap();
        assert!(
            text.contains("tickfan_ticks_delivered_total{transport=\"websocket\"} 7"),
            "{text}"
        );
        assert!(text.contains("tickfan_ticks_published_total{transport=\"http\"} 2"));
        assert!(text.contains("tickfan_connections{transport=\"websocket\",worker=\"0\"} 3"));
        assert!(text.contains("tickfan_closes_total{code=\"1001\"} 1"));
        assert!(text.contains("tickfan_topics 5"));
        assert!(text.contains("tickfan_publish_to_write_seconds_bucket"));
    }
}
