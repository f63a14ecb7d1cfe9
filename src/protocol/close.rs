//! Close codes (RFC 6455 §7.4) and the close frame payload (§5.5.1).

use super::error::ProtocolError;

/// A WebSocket close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// Never on the wire: "no status code was present" (§7.4.1).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// tickfan's (an application code, §7.4.2): the connection's token
    /// expired; get a new token before reconnecting.
    pub const TOKEN_EXPIRED: CloseCode = CloseCode(4001);
    /// tickfan's: a connection admitted without a token did not
    /// authenticate in-band in time, or its in-band token was refused.
    pub const AUTH_REQUIRED: CloseCode = CloseCode(4003);
    /// tickfan's own (the application range, §7.4.2): this node cannot
    /// serve now (a cluster node cut off from its stream); reconnect to
    /// another node and resume with `since` + `epoch`.
    pub const RECONNECT_ELSEWHERE: CloseCode = CloseCode(4000);

    /// Whether a peer may send this code in a close frame: the codes that
    /// §7.4.1 defines for the wire (1000–1003, 1007–1011) and the ranges for
    /// libraries and applications (3000–4999). 1004, 1005, 1006 and 1015 are
    /// reserved and never sent; the later IANA registrations 1012–1014 are
    /// refused too, as RFC 6455 itself leaves them unassigned.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }
}

/// A parsed close frame payload: an optional code and a UTF-8 reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosePayload<'a> {
    /// `None` when the close frame carried no payload at all.
    pub code: Option<CloseCode>,
    pub reason: &'a str,
}

impl<'a> ClosePayload<'a> {
    /// Parses and validates an (unmasked) close frame payload.
    pub fn parse(payload: &'a [u8]) -> Result<Self, ProtocolError> {
        match payload {
            [] => Ok(ClosePayload {
                code: None,
                reason: "",
            }),
            [_] => Err(ProtocolError::CloseFrameTooShort),
            [hi, lo, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                if !code.is_valid_on_wire() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
                Ok(ClosePayload {
                    code: Some(code),
                    reason,
                })
            }
        }
    }
}

#[cfg(test)]
// Tests unwrap freely: a panic there is a failed test.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_codes() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
        ] {
            assert!(CloseCode(code).is_valid_on_wire(), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(code).is_valid_on_wire(), "{code}");
        }
    }

    #[test]
    fn parse_payloads() {
        assert_eq!(ClosePayload::parse(&[]).unwrap().code, None);
        assert_eq!(
            ClosePayload::parse(&[0x03]),
            Err(ProtocolError::CloseFrameTooShort)
        );
        let ok = ClosePayload::parse(b"\x03\xe8bye").unwrap();
        assert_eq!(ok.code, Some(CloseCode::NORMAL));
        assert_eq!(ok.reason, "bye");
        assert_eq!(
            ClosePayload::parse(b"\x03\xed"),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            ClosePayload::parse(b"\x03\xe8\xff"),
            Err(ProtocolError::InvalidUtf8)
        );
    }
}
