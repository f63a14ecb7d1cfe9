//! The WebSocket-only parts of the opening handshake (RFC 6455 §4.2): the
//! version and subprotocol tickfan speaks, what a valid client key is, the
//! `Sec-WebSocket-Accept` value and the bytes of the `101` answer.
//!
//! Applying these rules to an HTTP request is
//! [`crate::http::upgrade`]'s job; this module knows no HTTP types, so the
//! protocol layer imports nothing of the crate.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::deflate::offer::Agreement;

/// The one subprotocol tickfan speaks, selected when a client offers it.
pub const SUBPROTOCOL: &str = "tickfan.v1";

/// The only WebSocket version tickfan speaks (RFC 6455 §4.2.1 item 6).
pub const WEBSOCKET_VERSION: &[u8] = b"13";

/// The GUID appended to the client's key before hashing (RFC 6455 §1.3).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether `key` is a valid `Sec-WebSocket-Key`: RFC 6455 §4.2.1 item 5,
/// "when decoded, is 16 bytes in length".
pub fn is_valid_key(key: &str) -> bool {
    // 16 bytes encode to exactly 24 characters with padding; checking the
    // length first bounds the decode's allocation.
    key.len() == 24 && STANDARD.decode(key).is_ok_and(|bytes| bytes.len() == 16)
}

/// The `Sec-WebSocket-Accept` value: base64(SHA-1(key + GUID)) (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(ACCEPT_GUID.as_bytes());
    STANDARD.encode(sha1.finalize())
}

/// Appends the `101 Switching Protocols` response that completes the
/// handshake (RFC 6455 §4.2.2 item 5) to `out`.
///
/// It has no body and no `Content-Length` (RFC 9110 §8.6); the bytes after it
/// are WebSocket frames. `deflate` is the permessage-deflate offer accepted,
/// if any: declining every offer leaves the extensions header out (RFC 6455
/// §9.1 has no empty list).
pub fn write_switching_protocols(
    out: &mut Vec<u8>,
    accept: &str,
    subprotocol: Option<&str>,
    deflate: Option<&Agreement>,
) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(protocol) = subprotocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(agreement) = deflate {
        agreement.write_header(out);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example_key_and_accept() {
        // RFC 6455 §1.3.
        assert!(is_valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(!is_valid_key("dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!is_valid_key("dGhlIHNhbXBsZSBub25jZQ==dGhl"));
        assert!(!is_valid_key("AAAAAAAAAAAAAAAAAAAAAAAA")); // 18 bytes
    }
}
