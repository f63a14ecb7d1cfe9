//! The WebSocket protocol (RFC 6455), with no I/O: the opening handshake,
//! frame parsing and encoding, masking, UTF-8 validation and close codes.

pub mod handshake;
