//! The client side of the WebSocket wire, as pure functions: the opening
//! handshake (RFC 6455 §4.1), walking server frame headers (§5.2), and
//! encoding masked client frames (§5.3).
//!
//! Kept apart from the event loops so the loops only move bytes; nothing here
//! touches a socket. Server frames are never masked, so walking them is a
//! header read and a skip: this is what lets a sink subscriber cost little.

use tickfan::protocol::frame::{encode_header, OpCode};
use tickfan::protocol::handshake::accept_key;
use tickfan::protocol::mask::apply_mask;

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
    use base64::Engine;
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
        header_len,
        payload_len: payload_len as usize,
    }))
}

/// Appends a masked client frame carrying `payload` to `out`, masking in
/// place so no temporary is allocated per frame.
pub fn push_client_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    let mut header = [0u8; 10];
    let len = encode_header(&mut header, true, opcode, payload.len());
    header[1] |= 0x80;
    out.extend_from_slice(&header[..len]);
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickfan::protocol::frame::{encode_client_frame, write_frame};

    #[test]
    fn client_frame_matches_the_crate_encoder() {
        let payload = vec![7u8; 300];
        let mut out = Vec::new();
        push_client_frame(&mut out, OpCode::Text, &payload, [1, 2, 3, 4]);
        assert_eq!(
            out,
            encode_client_frame(true, OpCode::Text, [1, 2, 3, 4], &payload)
        );
    }

    #[test]
    fn walks_server_frames_of_every_length_form() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let mut buf = Vec::new();
            write_frame(&mut buf, OpCode::Text, &vec![b'x'; len]);
            let frame = server_frame(&buf).unwrap().unwrap();
            assert_eq!(frame.opcode, OP_TEXT);
            assert_eq!(frame.header_len + frame.payload_len, buf.len());
            // Every strict prefix of the header is "need more".
            for cut in 0..frame.header_len {
                assert_eq!(server_frame(&buf[..cut]), Ok(None));
            }
        }
    }

    #[test]
    fn masked_server_frame_is_refused() {
        assert!(server_frame(&[0x81, 0x85, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn handshake_round_trip_against_the_crate_response() {
        let mut rng = Rng::new(42);
        let req = upgrade_request("127.0.0.1:1", "/ws", None, Some("tickfan.v1"), &mut rng);
        let mut response = Vec::new();
        tickfan::protocol::handshake::write_switching_protocols(
            &mut response,
            &req.expected_accept,
            None,
        );
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
    }
}
