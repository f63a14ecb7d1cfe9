//! The WebSocket protocol (RFC 6455), with no I/O: the opening handshake,
//! frame parsing and encoding, masking, UTF-8 validation and close codes.
//! Bytes go in, decisions come out; `net` owns the sockets.
//!
//! - [`handshake`]: the WebSocket-only parts of the opening handshake
//!   (§4.2): the accept key, the `101`, the version and key rules.
//! - [`frame`]: frame headers (§5.2), parsed from and encoded to bytes.
//! - [`decoder`]: frames into messages, with fragmentation (§5.4) and
//!   UTF-8 validation (§8.1); [`mask`] and [`utf8`] are its fast paths.
//! - [`close`] and [`error`]: close codes (§7.4) and why a connection fails.
//! - [`deflate`]: the permessage-deflate extension (RFC 7692): its
//!   negotiation and the per-message codec.
//!
//! Every byte here came from a client, so the layer is held to the lints
//! that keep a panic or a wrapped length from being reachable from the
//! network (tests are exempt); any `allow` says why its site is safe.

pub mod close;
pub mod decoder;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;
