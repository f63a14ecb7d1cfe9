//! The Grafana dashboard (`grafana/tickfan-dashboard.json`) against what
//! tickfan really exports: every metric a panel queries must be documented,
//! must appear on a live broker's `/metrics`, and every expression must be
//! PromQL that Prometheus accepts. Also checks the example Prometheus config
//! with `promtool`.
//!
//! The PromQL checks need the Debian package `prometheus`; see
//! `common::prometheus` for what a missing binary means.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::prometheus::{broker_metrics, http_get, prometheus_bin, promtool_bin, Prometheus};
use common::*;
use serde_json::Value;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/grafana/tickfan-dashboard.json"
);
const PROMETHEUS_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/prometheus.yml");

/// The metric families tickfan exports (its `/metrics` contract); the
/// dashboard may query these and nothing else.
const DOCUMENTED_METRICS: &[&str] = &[
    "tickfan_ticks_published_total",
    "tickfan_ticks_delivered_total",
    "tickfan_received_bytes_total",
    "tickfan_sent_bytes_total",
    "tickfan_write_syscalls_total",
    "tickfan_slow_consumer_actions_total",
    "tickfan_handshakes_total",
    "tickfan_handshake_failures_total",
    "tickfan_tls_handshakes_total",
    "tickfan_tls_handshake_failures_total",
    "tickfan_tls_reloads_total",
    "tickfan_closes_total",
    "tickfan_worker_busy_seconds_total",
    "tickfan_accept_errors_total",
    "tickfan_publisher_pauses_total",
    "tickfan_batch_waits_total",
    "tickfan_authentications_total",
    "tickfan_token_refreshes_total",
    "tickfan_token_expiry_closes_total",
    "tickfan_connections",
    "tickfan_subscriptions",
    "tickfan_topics",
    "tickfan_outbound_queue_bytes",
    "tickfan_longpolls_held",
    "tickfan_publish_to_write_seconds",
    "tickfan_cluster_publish_seconds",
    "tickfan_cluster_publishes_total",
    "tickfan_cluster_consumer_lag",
    "tickfan_cluster_applied_seq",
    "tickfan_cluster_nats_connected",
    "tickfan_cluster_serving",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
];

/// Documented histograms: queried through their `_bucket`, `_sum` and
/// `_count` series.
const HISTOGRAMS: &[&str] = &[
    "tickfan_publish_to_write_seconds",
    "tickfan_cluster_publish_seconds",
];

/// How long the broker may take to flush per-worker counts into `/metrics`.
const FLUSH_DEADLINE: Duration = Duration::from_secs(10);

// ------------------------------------------------------------ the dashboard

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).expect("read the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every `expr` in the dashboard, with the title of the panel it is in.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(value: &Value, title: &str, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                let title = map.get("title").and_then(Value::as_str).unwrap_or(title);
                for (key, child) in map {
                    match (key.as_str(), child) {
                        ("expr", Value::String(expr)) => out.push((title.to_owned(), expr.clone())),
                        _ => walk(child, title, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, title, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, "", &mut out);
    out
}

/// `expr` as Prometheus can evaluate it: Grafana's interval variables become
/// `1m`, every other variable (only used in `=~` matchers) matches anything.
fn substitute_variables(expr: &str) -> String {
    let mut out = expr.to_owned();
    for var in ["__rate_interval", "__interval", "__range"] {
        out = out.replace(&format!("${{{var}}}"), "1m");
        out = out.replace(&format!("${var}"), "1m");
    }
    let mut result = String::new();
    let mut chars = out.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            result.push(c);
            continue;
        }
        if chars.peek() == Some(&'{') {
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
            }
        } else {
            while chars
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                chars.next();
            }
        }
        result.push_str(".*");
    }
    result
}

/// PromQL words that are never metric names when not followed by `(`.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    // Aggregation operators, which may be followed by `by (...)` first.
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names `expr` selects, in order of appearance. A small PromQL
/// scanner: skips strings, label matchers `{...}`, ranges `[...]`, Grafana
/// variables, numbers, keywords, label lists after `by`/`on`/..., and
/// function names (identifiers followed by `(`).
fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_to = |i: usize, close: u8| -> usize {
        let mut j = i + 1;
        while j < bytes.len() && bytes[j] != close {
            if bytes[j] == b'"' || bytes[j] == b'\'' || bytes[j] == b'`' {
                j = skip_string(bytes, j);
            } else {
                j += 1;
            }
        }
        j + 1
    };
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' | b'\'' | b'`' => i = skip_string(bytes, i),
            b'{' => i = skip_to(i, b'}'),
            b'[' => i = skip_to(i, b']'),
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'$' => {
                i += 1;
                if bytes.get(i) == Some(&b'{') {
                    i = skip_to(i, b'}');
                } else {
                    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_')
                    {
                        i += 1;
                    }
                }
            }
            b'0'..=b'9' | b'.' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut next = i;
                while next < bytes.len() && bytes[next].is_ascii_whitespace() {
                    next += 1;
                }
                let lower = word.to_ascii_lowercase();
                if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                    if bytes.get(next) == Some(&b'(') {
                        i = skip_to(next, b')');
                    }
                } else if KEYWORDS.contains(&lower.as_str()) || bytes.get(next) == Some(&b'(') {
                    // A keyword, or a function or aggregation call.
                } else {
                    names.push(word.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The index just past the string literal that starts at `start`.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut j = start + 1;
    while j < bytes.len() && bytes[j] != quote {
        // Backticks are raw strings; the others have escapes.
        j += if bytes[j] == b'\\' && quote != b'`' {
            2
        } else {
            1
        };
    }
    j + 1
}

/// The documented family a queried series name belongs to, if any.
fn documented_family(name: &str) -> Option<&'static str> {
    if let Some(family) = DOCUMENTED_METRICS.iter().find(|m| **m == name) {
        return Some(family);
    }
    HISTOGRAMS.iter().copied().find(|h| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| name.strip_suffix(suffix) == Some(*h))
    })
}

#[test]
fn the_metric_name_scanner_skips_everything_but_metric_names() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{x=~"$instance",y="b{c}"}[$__rate_interval])))"#
        ),
        ["a_bucket"]
    );
    assert_eq!(
        metric_names(
            "sum without (worker) (x) / on (instance) group_left (job) y offset 5m > bool 1e3"
        ),
        ["x", "y"]
    );
    assert_eq!(
        metric_names(r#"label_replace(up, "dst", "$1", "src", "(.*)") or vector(0)"#),
        ["up"]
    );
    assert_eq!(metric_names("topk (3, rate(z:rate1m [1m]))"), ["z:rate1m"]);
    assert_eq!(
        substitute_variables(r#"rate(a{i=~"$instance", j=~"${job}"}[$__rate_interval])"#),
        r#"rate(a{i=~".*", j=~".*"}[1m])"#
    );
}

#[test]
fn dashboard_is_provisionable_and_queries_only_documented_metrics() {
    let dashboard = dashboard();
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert_eq!(dashboard["uid"], "tickfan-overview");

    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        variables.iter().any(|v| v["name"] == "DS_PROMETHEUS"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no `DS_PROMETHEUS` data source variable: {variables:?}"
    );

    // Every panel and every target queries through the variable, never a
    // data source that exists only on the machine it was exported from.
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("panel title");
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no queries");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            assert!(target["expr"].is_string(), "{title}: target without expr");
        }
    }

    let exprs = expressions(&dashboard);
    assert!(exprs.len() >= 15, "only {} expressions", exprs.len());
    for (title, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{title}: no metric in {expr}");
        for name in names {
            assert!(
                documented_family(&name).is_some(),
                "{title}: {expr} queries {name}, which tickfan does not document"
            );
        }
    }
}

// ------------------------------------------------------------ against tickfan

/// Every series and family name on a `/metrics` page: sample names, plus the
/// families of `# TYPE` lines with their types.
fn exported_names(page: &str) -> (BTreeSet<String>, BTreeSet<(String, String)>) {
    let mut samples = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                families.insert((name.to_owned(), kind.to_owned()));
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_owned());
        }
    }
    (samples, families)
}

/// Whether the series `name` a query selects is on the page.
fn is_exported(
    name: &str,
    samples: &BTreeSet<String>,
    families: &BTreeSet<(String, String)>,
) -> bool {
    if samples.contains(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            families.contains(&(base.to_owned(), "histogram".to_owned()))
                || families.contains(&(base.to_owned(), "summary".to_owned()))
        })
    })
}

/// Drives traffic that gives the labelled families a child: a WebSocket
/// subscribe, publish and normal close, and a refused request.
fn exercise(broker: &Broker) {
    let mut subscriber = broker.connect_ws("/ws");
    subscriber
        .send(Message::text(r#"{"op":"sub","topic":"D"}"#))
        .unwrap();
    let mut publisher = broker.connect_ws("/ws");
    publisher
        .send(Message::text(r#"{"op":"pub","topic":"D","data":1}"#))
        .unwrap();
    // `subscribed`, then the tick (published after the sub was read or not,
    // it arrives live or as the topic's last tick).
    let mut ticks = 0;
    while ticks == 0 {
        match subscriber.read().expect("read subscriber") {
            Message::Text(text) if !text.contains("\"event\"") => ticks += 1,
            _ => {}
        }
    }
    for mut ws in [subscriber, publisher] {
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .unwrap();
        // Until the server's close answer: tickfan then sends close 1000 too.
        while ws.read().is_ok() {}
    }
    let response = http_get(broker.addr(), "/no-such-route").expect("GET /no-such-route");
    assert_eq!(response.status, 404);
}

#[test]
fn every_metric_the_dashboard_queries_is_exported_by_tickfan() {
    let broker = Broker::start(&["--workers", "2"]);
    exercise(&broker);
    let exprs = expressions(&dashboard());
    let wanted: BTreeSet<String> = exprs
        .iter()
        .flat_map(|(_, expr)| metric_names(expr))
        .collect();

    // Counters are flushed from the workers about once a second.
    let deadline = Instant::now() + FLUSH_DEADLINE;
    let (missing, page) = loop {
        let page = broker_metrics(&broker);
        let (samples, families) = exported_names(&page);
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|name| !is_exported(name, &samples, &families))
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break (missing, page);
        }
        // Polling the broker's flush: bounded by the deadline above.
        std::thread::sleep(Duration::from_millis(200));
    };
    let queried_by = |name: &str| -> Vec<&str> {
        exprs
            .iter()
            .filter(|(_, expr)| metric_names(expr).iter().any(|n| n == name))
            .map(|(title, _)| title.as_str())
            .collect()
    };
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics that /metrics does not show after {FLUSH_DEADLINE:?}:\n{}\n\
         (a labelled family with no child yet is left out of the text format: \
         initialise the known label values at startup)\n/metrics:\n{page}",
        missing
            .iter()
            .map(|name| format!("  {name} (panels {:?})", queried_by(name)))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ------------------------------------------------------------ against Prometheus

#[test]
fn every_dashboard_expression_is_valid_promql() {
    let Some(bin) = prometheus_bin() else { return };
    // Prometheus evaluates queries without any target; none is needed to
    // check the syntax and the types (e.g. rate() over a range vector).
    let prometheus = Prometheus::start(&bin, &[], Duration::from_secs(1));
    let mut failures = Vec::new();
    for (title, expr) in expressions(&dashboard()) {
        let query = substitute_variables(&expr);
        let answer = prometheus.query(&query);
        if answer["status"] != "success" {
            failures.push(format!("{title}: {query}\n    {answer}"));
        }
    }
    prometheus.stop();
    assert!(
        failures.is_empty(),
        "Prometheus rejected:\n{}",
        failures.join("\n")
    );
}

#[test]
fn example_prometheus_config_is_valid() {
    let Some(promtool) = promtool_bin() else {
        return;
    };
    assert!(Path::new(PROMETHEUS_CONFIG).is_file());
    let output = std::process::Command::new(promtool)
        .args(["check", "config", PROMETHEUS_CONFIG])
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool check config {PROMETHEUS_CONFIG}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
