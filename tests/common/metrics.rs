//! Reading the broker's `/metrics` as the tests need it: one series summed
//! over its labels, a scrape, and waits for a value (workers publish their
//! counts about once a second, so a test polls with a deadline).
//!
//! `prometheus.rs` is the other side: a real Prometheus server scraping it.

use std::time::{Duration, Instant};

use super::broker::{Broker, PROMPTLY};
use super::http::{http_exchange, http_get};

/// The sum over all label sets of the series `name` (optionally narrowed
/// to lines starting with `name{labels`) in Prometheus text: a gauge or
/// counter summed over workers or policies.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ', ',', '}']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `GET /metrics` on a fresh connection, as text.
pub fn scrape_metrics(broker: &Broker) -> String {
    let (response, _) = http_exchange(
        broker,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    response.text()
}

/// Scrapes `/metrics` until `ok` holds for the text (metrics are flushed
/// about once a second); fails after [`PROMPTLY`] with the last scrape.
pub fn wait_for_metrics(broker: &Broker, what: &str, ok: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + PROMPTLY;
    let mut stream = broker.tcp();
    loop {
        let response = http_get(&mut stream, "/metrics");
        assert_eq!(response.status, 200);
        let text = response.text();
        if ok(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {what}:\n{text}"
        );
        // Polling a value that changes once a second; bounded by the deadline.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until at least `n` long-polls are held across the workers.
pub fn wait_for_held_polls(broker: &Broker, n: usize) {
    wait_for_metrics(broker, &format!("{n} held polls"), |text| {
        metric_sum(text, "tickfan_longpolls_held") >= n as f64
    });
}
