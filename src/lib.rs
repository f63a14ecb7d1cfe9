//! tickfan: a WebSocket (RFC 6455) pub/sub broker for market-tick feeds.
//!
//! The modules, lowest layer first (an import only ever points down, and
//! `tests/layers.rs` fails on one that does not; DESIGN.md, "Layers"):
//! - [`protocol`]: WebSocket framing, masking, UTF-8, close codes, the
//!   accept key — pure RFC 6455, importing nothing of the crate.
//! - Leaf types every layer may use: [`topic`] (a checked [`topic::TopicName`]),
//!   [`tick`] (a published tick, encoded once) and [`wire`] (the built-in
//!   route paths, bearer-token syntax).
//! - [`config`] (the TOML schema and its checks) and [`metrics`] (the
//!   Prometheus registry and the workers' counters): read by all.
//! - [`http`]: pure HTTP/1.1 — requests, responses, routes, the upgrade's
//!   checks, long-poll and publish bodies, and every refusal's answer.
//! - [`broker`]: the only code that knows topics — the sharded topic table,
//!   mailboxes, client ops, rights, each worker's subscriber lists.
//! - [`cluster`]: cluster mode's engine — the one thread that owns the
//!   NATS client, bridged to the topic table by its link.
//! - [`net`]: the only code that touches sockets — listeners, workers,
//!   connections and their phases, fan-out, and [`net::conn_io`], the one
//!   type that reads and writes a client's socket.
//! - [`server`] wires them; [`cli`] and the binary sit on top.
//!
//! The path of a tick: a publisher's frame is read by its connection's
//! [`net::conn_io::ConnIo`], decoded in place by [`protocol::decoder`] and
//! parsed as an op by [`broker::client_op`]; [`broker::topic_table`]
//! assigns the seq, encodes the [`tick::Tick`] once and posts it to every
//! worker with subscribers ([`broker::mailbox`]); each worker's
//! [`net::fanout`] queues a reference to it in its subscribers'
//! [`net::out_queue`]s, and one sweep per loop turn writes each connection
//! once ([`net::conn_io::write_out`]).

/// Declares modules that read what clients send, holding each (outside
/// tests) to the lints that keep a panic or a silently wrapped length from
/// being reachable from the network. The one list of those lints; a site
/// that must do otherwise carries an `allow` saying why it is safe.
macro_rules! network_facing {
    ($($(#[$meta:meta])* pub mod $name:ident;)*) => {
        $(
            $(#[$meta])*
            #[cfg_attr(
                not(test),
                deny(
                    clippy::arithmetic_side_effects,
                    clippy::cast_possible_truncation,
                    clippy::indexing_slicing,
                    clippy::unwrap_used,
                    clippy::expect_used
                )
            )]
            pub mod $name;
        )*
    };
}

network_facing! {
    pub mod broker;
    pub mod http;
    pub mod protocol;
    pub mod tick;
    pub mod topic;
    pub mod wire;
}
pub mod cli;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod net;
pub mod server;
