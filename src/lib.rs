//! tickfan: a WebSocket (RFC 6455) pub/sub broker for market-tick feeds.
//!
//! The crate is layered so that everything that decides is pure and testable
//! without sockets:
//! - [`protocol`]: WebSocket framing, masking, UTF-8 validation, close codes
//!   and the opening handshake — bytes in, decisions out.
//! - [`http`]: the plain HTTP routes served on the same port.
//! - [`net`]: the only code that touches sockets: listeners, workers, connections.
//! - [`config`] and [`cli`]: the TOML configuration and its command-line overrides.

pub mod broker;
pub mod cli;
pub mod config;
pub mod http;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod server;
pub mod tick;
pub mod topic;
pub mod wire;
