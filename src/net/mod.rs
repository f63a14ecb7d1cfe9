//! The only code that touches sockets: listeners, worker event loops and
//! connections. Decisions about bytes are delegated to `protocol`, `http`
//! and `broker`.
//!
//! - [`listener`]: the listening sockets (one per worker, `SO_REUSEPORT`).
//! - [`worker`]: a worker's event loop; [`slab`] its connections,
//!   [`timer`] its one timer heap, [`context`] what it lends a connection.
//! - [`connection`]: one client through its phases (HTTP request,
//!   WebSocket, SSE, held long-poll, draining); [`session`] a pub/sub
//!   client's subscriptions and ops; [`rate_limit`] its message budget;
//!   [`token_expiry`] when its token ends.
//! - [`conn_io`]: the one type that reads, writes and shuts a client's
//!   socket, with its [`read_buf`] and [`out_queue`] ([`buffer_pool`]
//!   recycles the queues' buffers).
//! - [`fanout`]: ticks to local subscribers, `max_hz`, queue pressure and
//!   the slow-consumer policy; [`pacer`]: when the next write sweep may
//!   start, so that writes carry more ticks as load grows.
//! - [`tls`]: the TLS listener's certificate and its reload;
//!   [`tls_session`]: a connection's TLS session and its record buffers;
//!   [`tls_outcome`]: how each TLS handshake ended, for the metrics.
//! - [`peer_limit`]: connections per client address; [`settings`]: the
//!   configuration as the network layer runs on it (the one place it is read).
//! - [`session_harness`]: a session outside a worker, for the fuzzer.

pub mod buffer_pool;
network_facing! {
    pub mod conn_io;
    pub mod out_queue;
    pub mod read_buf;
    pub mod session;
    pub mod tls_outcome;
    pub mod tls_session;
}
pub mod connection;
pub mod context;
pub mod fanout;
pub mod listener;
pub mod pacer;
pub mod peer_limit;
pub mod rate_limit;
pub mod session_harness;
pub mod settings;
pub mod slab;
pub mod timer;
pub mod tls;
pub mod token_expiry;
pub mod worker;
