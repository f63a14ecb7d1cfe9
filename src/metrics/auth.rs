//! The counters of authentication: tokens presented (by transport and
//! result), in-band token refreshes, and connections closed because their
//! token expired.
//!
//! These count events that happen once per connection or per token, never
//! per tick, so they are shared Prometheus counters incremented where the
//! event happens rather than worker-local counts. The user (`sub`) is never
//! a label: it would make one series per user.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// The `transport` labels of `tickfan_authentications_total`.
pub const AUTH_TRANSPORTS: [&str; 5] = ["websocket", "sse", "longpoll", "http_publish", "in_band"];

/// The `result` labels of `tickfan_authentications_total`: `ok`, a static
/// token no list holds, each reason a JWT is refused, and an op on a topic
/// the token does not grant.
pub const AUTH_RESULTS: [&str; 11] = [
    "ok",
    "unknown_token",
    "malformed",
    "wrong_algorithm",
    "bad_signature",
    "unknown_kid",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "bad_claims",
];

/// The label of an op refused because its topic is outside the token's patterns.
pub const FORBIDDEN_TOPIC: &str = "forbidden_topic";

/// The authentication counters.
#[derive(Debug, Clone)]
pub struct AuthMetrics {
    authentications: IntCounterVec,
    refreshes: IntCounterVec,
    expiry_closes: IntCounter,
}

impl AuthMetrics {
    /// Creates the counters, every label set at zero, and registers them.
    pub fn register(registry: &Registry) -> AuthMetrics {
        let authentications = IntCounterVec::new(
            Opts::new(
                "tickfan_authentications_total",
                "Tokens presented, and ops refused for a topic the token does not grant, \
                 by transport and result",
            ),
            &["transport", "result"],
        )
        .expect("valid metric");
        let refreshes = IntCounterVec::new(
            Opts::new(
                "tickfan_token_refreshes_total",
                "In-band {\"op\":\"auth\"} token refreshes on open connections, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let expiry_closes = IntCounter::new(
            "tickfan_token_expiry_closes_total",
            "Connections closed because their token expired (WebSocket close 4001)",
        )
        .expect("valid metric");
        for transport in AUTH_TRANSPORTS {
            for result in AUTH_RESULTS.iter().chain([&FORBIDDEN_TOPIC]) {
                authentications.with_label_values(&[transport, result]);
            }
        }
        for result in ["ok", "refused"] {
            refreshes.with_label_values(&[result]);
        }
        for collector in [
            Box::new(authentications.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(refreshes.clone()),
            Box::new(expiry_closes.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        AuthMetrics {
            authentications,
            refreshes,
            expiry_closes,
        }
    }

    /// Counts one presented token (or forbidden op) under its labels.
    pub fn count(&self, transport: &str, result: &str) {
        self.authentications
            .with_label_values(&[transport, result])
            .inc();
    }

    /// Counts an in-band refresh.
    pub fn count_refresh(&self, ok: bool) {
        let result = if ok { "ok" } else { "refused" };
        self.refreshes.with_label_values(&[result]).inc();
    }

    /// Counts a connection closed at its token's expiry.
    pub fn count_expiry_close(&self) {
        self.expiry_closes.inc();
    }
}
