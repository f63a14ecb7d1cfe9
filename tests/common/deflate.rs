//! permessage-deflate (RFC 7692) from the client's side, for the tests that
//! check compressed bytes by hand: an upgrade that offers the extension, and
//! raw deflate both ways with flate2 (the broker's codec is not used, so a
//! bug in it cannot agree with itself here).

use std::io::Write;
use std::net::TcpStream;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use super::broker::Broker;
use super::http::{parse_head, read_response_head};
use super::ws::{assert_switching_protocols, upgrade_request_with};

/// What Chrome offers.
pub const CHROME_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The full response header value a deflate upgrade gets without a window.
pub const AGREED: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

impl Broker {
    /// A raw connection upgraded at `target` offering `extensions` (if
    /// any); returns it with the `Sec-WebSocket-Extensions` the 101 carried.
    pub fn deflate_handshake(
        &self,
        target: &str,
        extensions: Option<&str>,
    ) -> (TcpStream, Option<String>) {
        let mut stream = self.tcp();
        let headers: Vec<(&str, &str)> = extensions
            .map(|e| ("Sec-WebSocket-Extensions", e))
            .into_iter()
            .collect();
        stream
            .write_all(upgrade_request_with(target, &headers).as_bytes())
            .unwrap();
        let head = read_response_head(&mut stream);
        assert_switching_protocols(&head);
        let (_, response_headers) = parse_head(&head);
        let mut agreed = response_headers
            .iter()
            .filter(|(name, _)| name == "sec-websocket-extensions")
            .map(|(_, value)| value.clone());
        let first = agreed.next();
        assert_eq!(
            agreed.next(),
            None,
            "more than one extensions header:\n{head}"
        );
        (stream, first)
    }
}

/// Inflates one message's payload as a client would (§7.2.2): the four
/// tail bytes appended, raw inflate with the full window.
pub fn inflate_message(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(payload.len() * 8 + 64);
    loop {
        let consumed = inflater.total_in() as usize;
        inflater
            .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            .expect("valid deflate data");
        if inflater.total_in() as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity().max(1024));
    }
}

/// Compresses one message as a client would (§7.2.1): raw deflate, sync
/// flush, the trailing `00 00 ff ff` removed.
pub fn deflate_message(message: &[u8], level: u32) -> Vec<u8> {
    let mut compressor = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(message.len() + 64);
    loop {
        let consumed = compressor.total_in() as usize;
        compressor
            .compress_vec(&message[consumed..], &mut out, FlushCompress::Sync)
            .unwrap();
        if compressor.total_in() as usize == message.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(1024));
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// A masked client frame with RSV1 set: the first (or only) frame of a
/// compressed message.
pub fn compressed_client_frame(fin: bool, opcode: u8, compressed: &[u8]) -> Vec<u8> {
    let mut frame = super::ws::client_frame(fin, opcode, compressed);
    frame[0] |= 0x40;
    frame
}
