//! Whether the server that answered a stream info request can still reach
//! a quorum of the stream's replicas.
//!
//! A stream leader cut off from its peers keeps answering stream info for
//! as long as its RAFT group takes to notice the lost quorum (about twenty
//! seconds in nats-server 2.9), and its answers are stale: the other
//! nodes publish on without it. Its answer says when it last heard from
//! each peer, so the engine counts an answer as "the stream answers" only
//! when the leader and enough peers seen lately make a majority.

use std::time::Duration;

use async_nats::jetstream::stream::ClusterInfo;

/// True when the leader plus the replicas it heard from within
/// `seen_within` (and does not hold offline) are a majority of the group.
/// A stream with no cluster information (one server, R1) always is.
pub(super) fn leader_has_quorum(cluster: Option<&ClusterInfo>, seen_within: Duration) -> bool {
    let Some(cluster) = cluster else {
        return true;
    };
    let group = cluster.replicas.len() + 1;
    let seen = cluster
        .replicas
        .iter()
        .filter(|peer| !peer.offline && peer.active < seen_within)
        .count();
    (seen + 1) * 2 > group
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `cluster` part of a stream info answer, as nats-server sends it.
    fn cluster(peers: &[(u64, bool)]) -> ClusterInfo {
        let replicas: Vec<_> = peers
            .iter()
            .enumerate()
            .map(|(i, (active_ms, offline))| {
                serde_json::json!({
                    "name": format!("host{}", i + 1),
                    "current": true,
                    "active": active_ms * 1_000_000,
                    "offline": offline,
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "name": "tickfan",
            "leader": "host0",
            "replicas": replicas,
        }))
        .expect("a stream info cluster part")
    }

    const WITHIN: Duration = Duration::from_secs(3);

    #[test]
    fn a_single_server_stream_always_has_quorum() {
        assert!(leader_has_quorum(None, WITHIN));
        assert!(leader_has_quorum(Some(&cluster(&[])), WITHIN));
    }

    #[test]
    fn an_r3_leader_needs_one_peer_seen_lately() {
        assert!(leader_has_quorum(
            Some(&cluster(&[(400, false), (900, false)])),
            WITHIN
        ));
        assert!(leader_has_quorum(
            Some(&cluster(&[(400, false), (9_000, false)])),
            WITHIN
        ));
        assert!(!leader_has_quorum(
            Some(&cluster(&[(3_000, false), (9_000, false)])),
            WITHIN
        ));
    }

    #[test]
    fn a_peer_held_offline_does_not_count_however_recent() {
        assert!(!leader_has_quorum(
            Some(&cluster(&[(100, true), (9_000, false)])),
            WITHIN
        ));
    }

    #[test]
    fn an_r5_leader_needs_two_peers_seen_lately() {
        let two = cluster(&[(100, false), (200, false), (9_000, false), (9_000, false)]);
        let one = cluster(&[(100, false), (9_000, false), (9_000, false), (9_000, false)]);
        assert!(leader_has_quorum(Some(&two), WITHIN));
        assert!(!leader_has_quorum(Some(&one), WITHIN));
    }
}
