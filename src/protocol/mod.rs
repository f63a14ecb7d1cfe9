//! The WebSocket protocol (RFC 6455), with no I/O: the opening handshake,
//! frame parsing and encoding, masking, UTF-8 validation and close codes.
//! Bytes go in, decisions come out; `net` owns the sockets.

pub mod close;
pub mod decoder;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;
