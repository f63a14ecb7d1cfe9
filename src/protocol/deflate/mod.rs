//! permessage-deflate (RFC 7692): the extension's negotiation and its
//! per-message codec, with no I/O.
//!
//! tickfan agrees the extension only with no context takeover in either
//! direction (§7.1.1.1, §7.1.1.2 let the server add both unasked), so every
//! message is a deflate stream of its own. That is what lets one compression
//! of a tick serve every subscriber, and one inflater per worker serve every
//! connection: no connection keeps a compressor or a sliding window
//! (DESIGN.md measures 250–380 KB per connection for those).
//!
//! - [`offer`]: parsing `Sec-WebSocket-Extensions` offers (§5, §7.1) and the
//!   response to the one accepted.
//! - [`codec`]: raw deflate of one message with the trailing `00 00 ff ff`
//!   removed (§7.2.1), and its bounded inverse (§7.2.2).

pub mod codec;
pub mod offer;
