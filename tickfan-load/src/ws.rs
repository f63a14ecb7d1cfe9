//! The client side of the WebSocket wire, as pure functions: the opening
//! handshake (RFC 6455 §4.1), walking server frame headers (§5.2), and
//! encoding masked client frames (§5.3).
//!
//! Kept apart from the event loops so the loops only move bytes; nothing here
//! touches a socket. Server frames are never masked, so walking them is a
//! header read and a skip: this is what lets a sink subscriber cost little.
//!
//! Written from the RFC, not taken from the broker: the frame encoding, the
//! masking and the `Sec-WebSocket-Accept` check are this crate's own (the
//! tests hold them to the RFC's byte examples), so a bug in the broker's
//! protocol code cannot be agreed with here and go unmeasured.

use base64::Engine;
use sha1::{Digest, Sha1};

/// The GUID a server appends to the client's key (RFC 6455 §1.3).
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A cheap xorshift64* generator for handshake keys and mask keys.
///
/// RFC 6455 §5.3 asks for unpredictable masks to protect intermediaries;
/// on loopback against our own broker a fast PRNG is enough.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed` (any value; zero is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A fresh 4-byte mask key.
    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
}

/// The GET request that opens a WebSocket, with the key it carries.
#[derive(Debug)]
pub struct UpgradeRequest {
    pub bytes: Vec<u8>,
    /// The `Sec-WebSocket-Accept` value a genuine server answers with.
    pub expected_accept: String,
}

/// Builds the opening handshake request for `path` on `host` (§4.1),
/// offering `protocol` (tickfan's `tickfan.v1`; the peers take none) and a
/// bearer token if given.
pub fn upgrade_request(
    host: &str,
    path: &str,
    token: Option<&str>,
    protocol: Option<&str>,
    rng: &mut Rng,
) -> UpgradeRequest {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&rng.next_u64().to_ne_bytes());
    nonce[8..].copy_from_slice(&rng.next_u64().to_ne_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let mut text = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(protocol) = protocol {
        text.push_str("Sec-WebSocket-Protocol: ");
        text.push_str(protocol);
        text.push_str("\r\n");
    }
    if let Some(token) = token {
        text.push_str("Authorization: Bearer ");
        text.push_str(token);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    UpgradeRequest {
        bytes: text.into_bytes(),
        expected_accept: accept_key(&key),
    }
}

/// What the fleet offers with `--deflate`: Chrome's permessage-deflate offer
/// (RFC 7692 §7.1).
pub const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Adds the permessage-deflate offer to an upgrade request.
pub fn offer_deflate(req: &mut UpgradeRequest) {
    // The request ends with the blank line: the header goes before it.
    req.bytes.truncate(req.bytes.len() - 2);
    req.bytes.extend_from_slice(b"Sec-WebSocket-Extensions: ");
    req.bytes.extend_from_slice(DEFLATE_OFFER.as_bytes());
    req.bytes.extend_from_slice(b"\r\n\r\n");
}

/// What a 101 agreed of permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deflate {
    /// Not agreed: every frame comes plain.
    Off,
    /// Agreed with `server_no_context_takeover`: every message inflates alone.
    NoContext,
    /// Agreed with the server keeping its window (uWebSockets' dedicated
    /// compressors): messages must be inflated in order, window kept.
    Context,
}

/// What a complete 101 response head agreed of permessage-deflate.
pub fn deflate_agreed(head: &[u8]) -> Deflate {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    if response.parse(head).is_err() {
        return Deflate::Off;
    }
    let agreed = response.headers.iter().find(|h| {
        h.name.eq_ignore_ascii_case("sec-websocket-extensions")
            && h.value.starts_with(b"permessage-deflate")
    });
    match agreed {
        None => Deflate::Off,
        Some(h)
            if h.value
                .windows(26)
                .any(|w| w == b"server_no_context_takeover") =>
        {
            Deflate::NoContext
        }
        Some(_) => Deflate::Context,
    }
}

/// The `Sec-WebSocket-Accept` value a server must answer `key` with: the
/// base64 of the SHA-1 of the key followed by the GUID (RFC 6455 §4.2.2,
/// step 5.4; the client checks it per §4.1).
pub fn accept_key(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(WEBSOCKET_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// What the bytes received so far say about the handshake response.
#[derive(Debug, PartialEq, Eq)]
pub enum UpgradeStatus {
    /// The response head is not complete yet.
    Partial,
    /// `101` with the right accept key; frames start at this offset.
    Accepted(usize),
    /// Anything else, with a short reason.
    Refused(String),
}

/// Checks a server's handshake response (§4.1, the client's obligations:
/// status 101 and a `Sec-WebSocket-Accept` matching the key sent).
pub fn check_upgrade_response(buf: &[u8], expected_accept: &str) -> UpgradeStatus {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Partial) => UpgradeStatus::Partial,
        Err(e) => UpgradeStatus::Refused(format!("bad response: {e}")),
        Ok(httparse::Status::Complete(head_len)) => {
            if response.code != Some(101) {
                return UpgradeStatus::Refused(format!(
                    "status {} {}",
                    response.code.unwrap_or(0),
                    response.reason.unwrap_or("")
                ));
            }
            let accept = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                .map(|h| h.value);
            if accept != Some(expected_accept.as_bytes()) {
                return UpgradeStatus::Refused("wrong Sec-WebSocket-Accept".into());
            }
            UpgradeStatus::Accepted(head_len)
        }
    }
}

/// The header of one server frame: unmasked, so only opcode and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFrame {
    /// The 4-bit opcode as sent (text 0x1, close 0x8, ping 0x9, ...).
    pub opcode: u8,
    /// RSV1: a permessage-deflate compressed message (RFC 7692 §6).
    pub compressed: bool,
    pub header_len: usize,
    pub payload_len: usize,
}

/// Opcode bits of the frames the fleet acts on.
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;

/// Reads a server frame header from the start of `buf`; `None` until the
/// whole header is there. A masked or oversized frame is reported as `Err`:
/// a server MUST NOT mask (§5.1).
pub fn server_frame(buf: &[u8]) -> Result<Option<ServerFrame>, &'static str> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err("server sent a masked frame");
    }
    let (payload_len, header_len) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut word = [0u8; 8];
                word.copy_from_slice(b);
                (u64::from_be_bytes(word), 10)
            }
            None => return Ok(None),
        },
        len => (len as u64, 2),
    };
    // Ticks are small; anything near this is a broken stream, not a tick.
    if payload_len > 1 << 30 {
        return Err("server frame over 1 GiB");
    }
    Ok(Some(ServerFrame {
        opcode: b0 & 0x0F,
        compressed: b0 & 0x40 != 0,
        header_len,
        payload_len: payload_len as usize,
    }))
}

/// The opcodes of the frames this client sends (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Pong = 0xA,
}

/// Appends a whole (FIN) masked client frame carrying `payload` to `out`
/// (§5.2: a client MUST mask every frame it sends, §5.3), masking in place
/// so no temporary is allocated per frame.
pub fn push_client_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    const FIN: u8 = 0x80;
    const MASKED: u8 = 0x80;
    out.push(FIN | opcode as u8);
    // §5.2: the minimal length form: 7 bits, then 16, then 64.
    match payload.len() {
        len @ 0..=125 => out.push(MASKED | len as u8),
        len @ 126..=0xFFFF => {
            out.push(MASKED | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(MASKED | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    // §5.3: byte i is XORed with mask[i % 4]. Whole words first, which the
    // compiler vectorises; client frames are small, so nothing cleverer.
    let mut words = out[start..].chunks_exact_mut(4);
    for word in &mut words {
        for (byte, key) in word.iter_mut().zip(mask) {
            *byte ^= key;
        }
    }
    for (byte, key) in words.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 §5.7: "A single-frame masked text message" ("Hello").
    #[test]
    fn masked_hello_is_the_rfc_example() {
        let mut out = Vec::new();
        push_client_frame(&mut out, OpCode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    /// RFC 6455 §5.7: a masked pong carrying "Hello" (0x8a 0x85 ...).
    #[test]
    fn masked_pong_is_the_rfc_example() {
        let mut out = vec![0xAB];
        push_client_frame(&mut out, OpCode::Pong, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            out,
            [0xAB, 0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58],
            "appends after what is already in the buffer"
        );
    }

    /// The 16- and 64-bit length forms (§5.7's 256-byte and 64 KiB examples,
    /// masked here), and masking that round-trips at every tail length.
    #[test]
    fn client_frames_of_every_length_form() {
        let mask = [1, 2, 3, 4];
        for (len, head) in [
            (0usize, &[0x82, 0x80][..]),
            (125, &[0x82, 0x80 | 125][..]),
            (126, &[0x82, 0xFE, 0x00, 0x7E][..]),
            (256, &[0x82, 0xFE, 0x01, 0x00][..]),
            (65_535, &[0x82, 0xFE, 0xFF, 0xFF][..]),
            (65_536, &[0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0][..]),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            push_client_frame(&mut out, OpCode::Binary, &payload, mask);
            assert_eq!(&out[..head.len()], head, "len {len}");
            assert_eq!(&out[head.len()..head.len() + 4], mask);
            let body = &out[head.len() + 4..];
            assert_eq!(body.len(), len);
            let unmasked: Vec<u8> = body
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(unmasked, payload, "len {len}");
        }
    }

    /// A server frame header in each length form, built by hand (§5.2).
    fn server_frame_bytes(opcode: u8, len: usize) -> Vec<u8> {
        let mut buf = vec![0x80 | opcode];
        match len {
            0..=125 => buf.push(len as u8),
            126..=0xFFFF => {
                buf.push(126);
                buf.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                buf.push(127);
                buf.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        buf.resize(buf.len() + len, b'x');
        buf
    }

    #[test]
    fn walks_server_frames_of_every_length_form() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let buf = server_frame_bytes(OP_TEXT, len);
            let frame = server_frame(&buf).unwrap().unwrap();
            assert_eq!(frame.opcode, OP_TEXT);
            assert_eq!(frame.payload_len, len);
            assert_eq!(frame.header_len + frame.payload_len, buf.len());
            // Every strict prefix of the header is "need more".
            for cut in 0..frame.header_len {
                assert_eq!(server_frame(&buf[..cut]), Ok(None));
            }
        }
        // §5.7's unmasked "Hello".
        let hello = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(
            server_frame(&hello),
            Ok(Some(ServerFrame {
                opcode: OP_TEXT,
                compressed: false,
                header_len: 2,
                payload_len: 5
            }))
        );
    }

    #[test]
    fn masked_server_frame_is_refused() {
        assert!(server_frame(&[0x81, 0x85, 0, 0, 0, 0]).is_err());
    }

    /// RFC 6455 §1.3's worked example of the accept key.
    #[test]
    fn accept_key_is_the_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn handshake_round_trip() {
        let mut rng = Rng::new(42);
        let req = upgrade_request("127.0.0.1:1", "/ws", None, Some("tickfan.v1"), &mut rng);
        let text = String::from_utf8(req.bytes.clone()).unwrap();
        let key = text
            .lines()
            .find_map(|line| line.strip_prefix("Sec-WebSocket-Key: "))
            .expect("a key header");
        assert_eq!(req.expected_accept, accept_key(key));
        assert!(text.contains("Sec-WebSocket-Protocol: tickfan.v1\r\n"));
        assert!(text.ends_with("\r\n\r\n"));

        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\
             Sec-WebSocket-Protocol: tickfan.v1\r\n\r\n",
            req.expected_accept
        )
        .into_bytes();
        let head = response.len();
        response.extend_from_slice(b"\x81\x00");
        assert_eq!(
            check_upgrade_response(&response[..head - 1], &req.expected_accept),
            UpgradeStatus::Partial
        );
        assert_eq!(
            check_upgrade_response(&response, &req.expected_accept),
            UpgradeStatus::Accepted(head)
        );
        assert!(matches!(
            check_upgrade_response(&response, "nope"),
            UpgradeStatus::Refused(_)
        ));
        assert!(matches!(
            check_upgrade_response(b"HTTP/1.1 400 Bad Request\r\n\r\n", &req.expected_accept),
            UpgradeStatus::Refused(_)
        ));
    }
}
