//! Cluster mode's metrics, updated by the engine thread alone (never by a
//! worker, so their atomics cost the hot path nothing). A single node
//! exports them at zero, so one dashboard serves both modes.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// Publishes to the stream, from sending to JetStream's acknowledgement:
/// loopback R3 is about a millisecond, a leader election seconds.
const PUBLISH_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The engine's metrics; clones share the series.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    /// `tickfan_cluster_publish_seconds`: first send to acknowledgement.
    pub publish_latency: Histogram,
    /// `tickfan_cluster_publishes_total{result}`: acked, failed (given up
    /// after `cluster.publish_timeout_ms`), retried (attempts sent again).
    pub publishes: IntCounterVec,
    /// `tickfan_cluster_consumer_lag`: stream messages not applied yet.
    pub consumer_lag: IntGauge,
    /// `tickfan_cluster_applied_seq`: the last stream sequence applied.
    pub applied_seq: IntGauge,
    /// `tickfan_cluster_nats_connected`: 1 while connected to NATS.
    pub connected: IntGauge,
    /// `tickfan_cluster_serving`: 1 while connected and caught up.
    pub serving: IntGauge,
}

impl ClusterMetrics {
    /// Makes the series and registers them in `registry`.
    pub(super) fn register(registry: &Registry) -> ClusterMetrics {
        let metrics = ClusterMetrics {
            publish_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "tickfan_cluster_publish_seconds",
                    "Time from sending a publish to JetStream to its acknowledgement, retries included",
                )
                .buckets(PUBLISH_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            publishes: IntCounterVec::new(
                Opts::new(
                    "tickfan_cluster_publishes_total",
                    "Publishes to the stream, by result: acked, failed (given up), retried (attempts)",
                ),
                &["result"],
            )
            .expect("valid metric"),
            consumer_lag: IntGauge::new(
                "tickfan_cluster_consumer_lag",
                "Stream messages this node has not applied yet",
            )
            .expect("valid metric"),
            applied_seq: IntGauge::new(
                "tickfan_cluster_applied_seq",
                "The last stream sequence this node applied",
            )
            .expect("valid metric"),
            connected: IntGauge::new(
                "tickfan_cluster_nats_connected",
                "1 while the node is connected to NATS",
            )
            .expect("valid metric"),
            serving: IntGauge::new(
                "tickfan_cluster_serving",
                "1 while the node is connected and caught up with the stream (serving clients)",
            )
            .expect("valid metric"),
        };
        for result in ["acked", "failed", "retried"] {
            metrics.publishes.with_label_values(&[result]);
        }
        let collectors: [Box<dyn prometheus::core::Collector>; 6] = [
            Box::new(metrics.publish_latency.clone()),
            Box::new(metrics.publishes.clone()),
            Box::new(metrics.consumer_lag.clone()),
            Box::new(metrics.applied_seq.clone()),
            Box::new(metrics.connected.clone()),
            Box::new(metrics.serving.clone()),
        ];
        for collector in collectors {
            registry
                .register(collector)
                .expect("cluster metric names are unique");
        }
        metrics
    }
}
