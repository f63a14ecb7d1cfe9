//! The only code that touches sockets: listeners, worker event loops and
//! connections. Decisions about bytes are delegated to `protocol`, `http`
//! and `broker`.

pub mod buffer_pool;
pub mod conn_io;
pub mod connection;
pub mod context;
pub mod fanout;
pub mod listener;
pub mod out_queue;
pub mod peer_limit;
pub mod rate_limit;
pub mod read_buf;
pub mod session;
pub mod session_harness;
pub mod settings;
pub mod slab;
pub mod timer;
pub mod worker;
