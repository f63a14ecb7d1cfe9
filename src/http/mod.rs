//! HTTP routes served beside the WebSocket upgrade.
//!
//! The pure HTTP/1.1 layer (RFC 9112): [`request`] parses a request head in
//! place from the read buffer, [`response`] builds the bytes of an answer,
//! and [`error`] is this layer's one error enum with its wire mapping. No
//! sockets here: the `net` layer reads and writes, this layer decides.
//!
//! Everything here reads bytes a client sent, so the layer is held to the
//! lints that keep a panic or a wrapped length from being reachable from the
//! network (tests are exempt).

//!
//! The routes' own pure parts: [`router`] maps paths to routes, [`upgrade`]
//! applies RFC 6455's rules to an upgrade request, [`query`] reads
//! long-poll and SSE requests, [`publish`] reads publish bodies, and
//! [`longpoll`] builds long-poll answers, and [`demo`] holds the embedded
//! demo page and client bundle. [`refusal`] is every refusal's
//! status, text and metrics label, in one place.

pub mod demo;
pub mod error;
pub mod longpoll;
pub mod publish;
pub mod query;
pub mod refusal;
pub mod request;
pub mod response;
pub mod router;
pub mod upgrade;
