//! The demo feed (`--demo-feed`, `[demo]`): a synthetic market the broker
//! publishes into its own topic table, so that the demo page shows live
//! prices on a broker with nothing else running.
//!
//! It publishes through [`TopicTable::publish`], the call a WebSocket `pub`
//! and `POST /publish` end in, so its ticks take the path of real ones (seq,
//! history, fan-out) and prove nothing special-cased. Its rate is bounded
//! by `demo.feed_ticks_per_second` (at most 100,000/s) and paced against
//! the clock, not by a sleep per tick: ticks due in a 10 ms step go out
//! together, and a step that ran late does not make the next one burst
//! beyond what the rate allows for the time passed. Separate from the
//! workers (a thread of its own, started and joined by `server.rs`)
//! because a publisher that never reads a socket has no business in an
//! event loop.
//!
//! The random walk is a small xorshift generator, seeded per run: the
//! prices need to move, not to be unpredictable.

// Nothing here reads the network: the symbols come from the checked
// config and the numbers from the generator itself, so the broker layer's
// panic-class lints are relaxed for its arithmetic.
#![allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::topic_table::TopicTable;
use crate::metrics::Metrics;
use crate::topic::TopicName;

/// How often the feed wakes to publish what is due.
const STEP: Duration = Duration::from_millis(10);

/// One symbol's random walk.
#[derive(Debug, Clone)]
struct Quote {
    topic: TopicName<'static>,
    /// In cents, so that prices print with two decimals exactly.
    price_cents: i64,
}

/// A random-walk market over a set of symbols.
#[derive(Debug, Clone)]
pub struct Market {
    quotes: Vec<Quote>,
    rng: u64,
}

impl Market {
    /// A market over `symbols` (already checked as topic names by the
    /// config; any that is not is left out), its start prices derived from
    /// the names so that a restart looks like the same market.
    pub fn new(symbols: &[String], seed: u64) -> Market {
        let quotes = symbols
            .iter()
            .filter_map(|s| TopicName::new(s).ok().map(TopicName::into_owned))
            .map(|topic| {
                let h = topic.as_str().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                // 20.00 to 520.00
                let price_cents = 2_000i64.saturating_add((h % 50_000) as i64);
                Quote { topic, price_cents }
            })
            .collect();
        Market {
            quotes,
            rng: seed | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: a full-period generator on non-zero states.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Moves one symbol, picked at random, and returns its topic and the
    /// tick's JSON: `{"price":189.21,"bid":189.20,"ask":189.22}`.
    pub fn next_tick(&mut self) -> Option<(TopicName<'static>, String)> {
        if self.quotes.is_empty() {
            return None;
        }
        let r = self.next_random();
        let index = (r % self.quotes.len() as u64) as usize;
        // A step of -0.1% to +0.1% of the price, at least a cent.
        let step_per_mille = ((r >> 32) % 201) as i64 - 100;
        let quote = self.quotes.get_mut(index)?;
        let delta = quote.price_cents.saturating_mul(step_per_mille) / 100_000;
        let delta = if delta == 0 { step_per_mille.signum() } else { delta };
        quote.price_cents = quote.price_cents.saturating_add(delta).max(100);
        let spread = (quote.price_cents / 5_000).max(1);
        let json = format!(
            "{{\"price\":{},\"bid\":{},\"ask\":{}}}",
            cents(quote.price_cents),
            cents(quote.price_cents.saturating_sub(spread)),
            cents(quote.price_cents.saturating_add(spread)),
        );
        Some((quote.topic.clone(), json))
    }
}

/// `18921` as `189.21`.
fn cents(value: i64) -> String {
    format!("{}.{:02}", value / 100, value % 100)
}

/// Publishes `market` into `table` at `ticks_per_second` until `stop` is
/// set, counting what the table took in `tickfan_ticks_published_total{transport="demo"}`.
pub fn run(
    table: &TopicTable,
    metrics: &Metrics,
    mut market: Market,
    ticks_per_second: u32,
    stop: &AtomicBool,
) {
    let start = Instant::now();
    let mut sent: u64 = 0;
    while !stop.load(Ordering::Acquire) {
        let elapsed = start.elapsed();
        let due = (elapsed.as_secs_f64() * f64::from(ticks_per_second)) as u64;
        // After a stall (a suspended VM), skip what is overdue by more than
        // a second rather than publishing it in one burst.
        let floor = due.saturating_sub(u64::from(ticks_per_second));
        sent = sent.max(floor);
        let mut published = 0u64;
        while sent < due {
            let Some((topic, json)) = market.next_tick() else {
                return;
            };
            // A full table (`broker.max_topics`) refuses the tick; the demo
            // goes on with the symbols that have a place.
            if table.publish(&topic, json.as_bytes()).is_ok() {
                published += 1;
            }
            sent = sent.saturating_add(1);
        }
        if published > 0 {
            metrics.count_demo_published(published);
        }
        std::thread::sleep(STEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_json_quotes_around_a_moving_price() {
        let mut market = Market::new(&["AAPL".into(), "bad topic".into(), "MSFT".into()], 7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let (topic, json) = market.next_tick().unwrap();
            seen.insert(topic.as_str().to_owned());
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            let (price, bid, ask) = (
                v["price"].as_f64().unwrap(),
                v["bid"].as_f64().unwrap(),
                v["ask"].as_f64().unwrap(),
            );
            assert!(bid < price && price < ask, "{json}");
            assert!(price >= 1.0);
        }
        assert_eq!(seen.len(), 2, "the bad name is left out");
        assert_eq!(cents(18_921), "189.21");
        assert_eq!(cents(105), "1.05");
    }

    #[test]
    fn empty_market_has_no_ticks() {
        assert!(Market::new(&[], 1).next_tick().is_none());
    }
}
