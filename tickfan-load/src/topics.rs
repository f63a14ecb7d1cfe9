//! Which topics exist in a run and which of them each client follows.
//!
//! Separate so the publisher, the WebSocket fleet, the long-poll fleet and
//! the report agree on one numbering: topic `k` is `names[k]`, and every
//! per-topic count is indexed by `k`.

use crate::ws::Rng;

/// How WebSocket subscribers pick their topics.
#[derive(Debug, Clone)]
pub enum Assign {
    /// Client `i` follows topic `i % K`.
    RoundRobin,
    /// Each client follows `per_client` distinct topics drawn by a Zipf law
    /// (rank `r` weighted `1 / r^s`): a few topics are followed by many.
    Zipf {
        per_client: usize,
        lists: Vec<Vec<u32>>,
    },
}

/// The run's topics.
#[derive(Debug, Clone)]
pub struct Topics {
    pub names: Vec<String>,
    pub assign: Assign,
}

impl Topics {
    /// `count` topics named after `prefix` (just `prefix` when there is one),
    /// each name only `[A-Za-z0-9]` so every target accepts it.
    pub fn new(prefix: &str, count: usize) -> Self {
        let names = if count == 1 {
            vec![prefix.to_string()]
        } else {
            (0..count).map(|k| format!("{prefix}t{k}")).collect()
        };
        Topics {
            names,
            assign: Assign::RoundRobin,
        }
    }

    /// Draws `per_client` Zipf(`s`) topics for each of `clients` clients,
    /// deterministically from `seed`.
    pub fn with_zipf(mut self, clients: usize, per_client: usize, s: f64, seed: u64) -> Self {
        let k = self.names.len();
        let per_client = per_client.min(k);
        let mut cumulative = Vec::with_capacity(k);
        let mut total = 0.0;
        for rank in 1..=k {
            total += 1.0 / (rank as f64).powf(s);
            cumulative.push(total);
        }
        let mut rng = Rng::new(seed);
        let lists = (0..clients)
            .map(|_| {
                let mut list: Vec<u32> = Vec::with_capacity(per_client);
                // Bounded: rejection of repeats only, and per_client <= k.
                while list.len() < per_client {
                    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
                    let topic = cumulative.partition_point(|&c| c < u).min(k - 1) as u32;
                    if !list.contains(&topic) {
                        list.push(topic);
                    }
                }
                list
            })
            .collect();
        self.assign = Assign::Zipf { per_client, lists };
        self
    }

    /// Topic indices WebSocket subscriber `client` follows.
    pub fn of_client(&self, client: usize) -> Vec<u32> {
        match &self.assign {
            Assign::RoundRobin => vec![(client % self.names.len()) as u32],
            Assign::Zipf { lists, .. } => lists[client].clone(),
        }
    }

    /// Topic index long-poll client `client` follows (always round robin).
    pub fn of_poller(&self, client: usize) -> u32 {
        (client % self.names.len()) as u32
    }

    /// Topics per WebSocket subscriber.
    pub fn per_client(&self) -> usize {
        match &self.assign {
            Assign::RoundRobin => 1,
            Assign::Zipf { per_client, .. } => *per_client,
        }
    }
}

/// Deliveries the subscriptions call for: `Σ_k published[k] × subscribers[k]`.
pub fn expected(published: &[u64], subscribers: &[u64]) -> f64 {
    published
        .iter()
        .zip(subscribers)
        .map(|(&p, &s)| p as f64 * s as f64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_lists_are_distinct_and_skewed() {
        let t = Topics::new("m", 100).with_zipf(2000, 5, 1.0, 7);
        let mut counts = vec![0usize; 100];
        for c in 0..2000 {
            let list = t.of_client(c);
            assert_eq!(list.len(), 5);
            let mut d = list.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 5);
            for k in list {
                counts[k as usize] += 1;
            }
        }
        assert!(counts[0] > 4 * counts[99], "{counts:?}");
        assert_eq!(t.names[3], "mt3");
    }

    #[test]
    fn round_robin_and_expected() {
        let t = Topics::new("x", 3);
        assert_eq!(t.of_client(4), vec![1]);
        assert_eq!(t.of_poller(5), 2);
        assert_eq!(Topics::new("x", 1).names, vec!["x".to_string()]);
        assert_eq!(expected(&[10, 20], &[3, 1]), 50.0);
    }
}
