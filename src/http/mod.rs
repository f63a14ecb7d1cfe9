//! HTTP routes served beside the WebSocket upgrade.
//!
//! The pure HTTP/1.1 layer (RFC 9112): [`request`] parses a request head in
//! place from the read buffer, [`response`] builds the bytes of an answer,
//! and [`error`] is this layer's one error enum with its wire mapping. No
//! sockets here: the `net` layer reads and writes, this layer decides.

pub mod error;
pub mod request;
pub mod response;
pub mod router;
