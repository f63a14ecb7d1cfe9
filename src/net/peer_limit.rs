//! `server.max_connections_per_ip`: open connections per client address,
//! shared by every worker, so that one client cannot take every place of
//! `server.max_connections` from the others.
//!
//! A mutex over a map is touched once per accept and once per close, and
//! not at all when the limit is off (the default).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

/// Open connections per client address.
#[derive(Debug)]
pub struct PeerLimit {
    /// 0 = no limit: nothing is counted.
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PeerLimit {
    pub fn new(limit: usize) -> Self {
        PeerLimit {
            limit,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a connection from `ip`; `None` when the limit is off (nothing
    /// to release later), else whether it is within the limit. A
    /// connection over the limit is counted too (it is open until it has
    /// heard its 503), and must be released like any other.
    pub fn admit(&self, ip: IpAddr) -> Option<bool> {
        if self.limit == 0 {
            return None;
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        *count = count.saturating_add(1);
        Some(*count <= self.limit)
    }

    /// A connection counted by [`Self::admit`] closed.
    pub fn release(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_forgets_closed_ones() {
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let limit = PeerLimit::new(2);
        assert_eq!(limit.admit(a), Some(true));
        assert_eq!(limit.admit(a), Some(true));
        assert_eq!(limit.admit(a), Some(false));
        assert_eq!(limit.admit(b), Some(true));
        limit.release(a);
        limit.release(a);
        assert_eq!(limit.admit(a), Some(true));
        limit.release(a);
        limit.release(a);
        limit.release(b);
        assert!(limit.open.lock().unwrap().is_empty());
        assert_eq!(PeerLimit::new(0).admit(a), None);
    }
}
