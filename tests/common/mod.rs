//! Shared integration-test support: runs the real `tickfan` binary on an
//! ephemeral port and talks to it as a client would.
//!
//! Every test starts its own [`Broker`], so tests share no state and may run
//! in parallel. The broker is told `--listen 127.0.0.1:0` and a
//! `--ready-file` of its own, and the address it got is read from that file.
//! Normal traffic goes through tungstenite ([`Broker::connect_ws`]);
//! malformed input goes over a raw [`std::net::TcpStream`] upgraded by hand
//! ([`Broker::raw_handshake`]) and the server's replies are read back with
//! [`read_server_frame`].
//!
//! One submodule per area, all re-exported here, so a test file's
//! `use common::*;` sees every helper:
//! - [`broker`]: the process (start, signals, exit, stderr, fds, RSS);
//! - [`http`]: raw HTTP/1.1 requests and responses;
//! - [`ws`]: the WebSocket handshake by hand, raw frames, tungstenite clients;
//! - [`deflate`]: permessage-deflate by hand (offers, raw deflate both ways);
//! - [`clients`]: the Python and Node client programs the test deps install;
//! - [`pubsub`]: the `tickfan.v1` clients ([`PsClient`]) and tick parsing;
//! - [`routes`]: `POST /publish` and long-poll answers;
//! - [`metrics`]: `/metrics` scrapes and waits for a value;
//! - [`prometheus`]: a real Prometheus server, [`nats`]: real `nats-server`
//!   clusters with JetStream, [`proxy`]: a TCP proxy a test pauses (a
//!   partition), and [`pki`]: a test CA and server certificate
//!   for the TLS listener (none re-exported: their names are imported where
//!   they are used).
//!
//! Nothing here sleeps to synchronise: every read has a timeout, and every
//! wait has a deadline after which the test fails with what it saw.

// Each test file uses a different part of this module.
#![allow(dead_code)]

pub mod broker;
pub mod clients;
pub mod deflate;
pub mod http;
pub mod metrics;
pub mod nats;
pub mod pki;
pub mod prometheus;
pub mod proxy;
pub mod pubsub;
pub mod routes;
pub mod ws;

// A test file that uses nothing of a submodule would warn of its re-export.
#[allow(unused_imports)]
pub use {broker::*, clients::*, deflate::*, http::*, metrics::*, pubsub::*, routes::*, ws::*};

/// Joins every thread, re-raising the first panic (after all have ended, so
/// no thread outlives the test's broker).
pub fn join_all<T>(handles: Vec<std::thread::JoinHandle<T>>) -> Vec<T> {
    let results: Vec<std::thread::Result<T>> = handles.into_iter().map(|h| h.join()).collect();
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect()
}
