//! The WebSocket protocol (RFC 6455), with no I/O: the opening handshake,
//! frame parsing and encoding, masking, UTF-8 validation and close codes.
//!
//! - [`handshake`]: the server's half of the opening handshake (RFC 6455
//!   §4.2) — whether a parsed request is an acceptable upgrade, the
//!   `Sec-WebSocket-Accept` key, and the `101` response.

pub mod handshake;
