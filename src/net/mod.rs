//! The only code that touches sockets: listeners, worker event loops and
//! connections. Decisions about bytes are delegated to `protocol` and `http`.

pub mod connection;
pub mod listener;
pub mod read_buf;
pub mod settings;
pub mod slab;
pub mod timer;
pub mod worker;
