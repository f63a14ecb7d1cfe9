//! Negotiating permessage-deflate (RFC 7692 §5, §7.1): the client's
//! `Sec-WebSocket-Extensions` offers are read in order and the first valid
//! `permessage-deflate` offer is accepted; the others are declined by
//! leaving them out of the response.
//!
//! An offer is valid when each parameter is one §7.1 defines, appears at
//! most once and has a value of the form §7.1.2 gives. A header that is not
//! a well-formed extension list (RFC 6455 §9.1) is declined from the point
//! where it stops parsing: a client that cannot spell its offer gets no
//! extension rather than a refused connection.
//!
//! The response always carries `server_no_context_takeover` and
//! `client_no_context_takeover` (§7.1.1.1 and §7.1.1.2 allow the server to
//! add both unasked), so neither side keeps a window between messages.
//! `server_max_window_bits` is echoed when offered, and compression then
//! uses that window; an offer of 8 is declined, because zlib cannot make a
//! raw deflate stream with a 256-byte window (it would silently use 512,
//! which a client that asked for 8 need not be able to read).
//! `client_max_window_bits` is never sent: the inflater's full window reads
//! whatever window the client compresses with (§7.1.2.2 lets the server
//! leave it out).

/// The extension's registered name (§8.1).
pub const EXTENSION: &str = "permessage-deflate";

/// The largest LZ77 window deflate has, as a base-2 logarithm (§7.1.2).
pub const MAX_WINDOW_BITS: u8 = 15;

/// The smallest window zlib makes a raw deflate stream with.
pub const MIN_WINDOW_BITS: u8 = 9;

/// An accepted permessage-deflate offer: what the server compresses with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// The client's `server_max_window_bits`, when it offered one (9 to 15).
    pub server_max_window_bits: Option<u8>,
}

impl Agreement {
    /// The window the server's messages must fit (15 unless the client
    /// asked for less).
    pub fn window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS)
    }

    /// Appends the `Sec-WebSocket-Extensions` response header line.
    pub fn write_header(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        out.extend_from_slice(EXTENSION.as_bytes());
        out.extend_from_slice(b"; server_no_context_takeover; client_no_context_takeover");
        if let Some(bits) = self.server_max_window_bits {
            out.extend_from_slice(b"; server_max_window_bits=");
            out.extend_from_slice(bits.to_string().as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Picks the first acceptable permessage-deflate offer from the values of
/// every `Sec-WebSocket-Extensions` header, in order; `None` declines them
/// all (the response then has no extensions header).
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a [u8]>) -> Option<Agreement> {
    header_values.into_iter().find_map(|value| {
        let mut cursor = Cursor { rest: value };
        // A malformed rest of a header ends that header's offers.
        std::iter::from_fn(|| cursor.next_offer()).find_map(|offer| offer)
    })
}

/// The parameters of one permessage-deflate offer, as §7.1 defines them.
#[derive(Debug, Default)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// Offered, with its value if it had one.
    client_max_window_bits: Option<Option<u8>>,
}

impl Params {
    /// Adds one parameter; `Err` makes the offer invalid (§7.1: "A server
    /// MUST decline an extension negotiation offer for this extension if
    /// ... The negotiation offer contains an extension parameter not
    /// defined for use in an offer ... an extension parameter with an
    /// invalid value ... multiple extension parameters with the same name").
    fn add(&mut self, name: &[u8], value: Option<&[u8]>) -> Result<(), ()> {
        fn flag(slot: &mut bool, value: Option<&[u8]>) -> Result<(), ()> {
            if *slot || value.is_some() {
                return Err(());
            }
            *slot = true;
            Ok(())
        }
        match name {
            b"server_no_context_takeover" => flag(&mut self.server_no_context_takeover, value),
            b"client_no_context_takeover" => flag(&mut self.client_no_context_takeover, value),
            b"server_max_window_bits" => {
                let bits = value.and_then(window_bits).ok_or(())?;
                self.server_max_window_bits.replace(bits).map_or(Ok(()), |_| Err(()))
            }
            b"client_max_window_bits" => {
                // §7.1.2.2: this one may come without a value.
                let bits = match value {
                    Some(value) => Some(window_bits(value).ok_or(())?),
                    None => None,
                };
                self.client_max_window_bits.replace(bits).map_or(Ok(()), |_| Err(()))
            }
            _ => Err(()),
        }
    }

    /// The agreement for a valid offer, or `None` where the server cannot
    /// meet it.
    fn agreement(&self) -> Option<Agreement> {
        match self.server_max_window_bits {
            Some(bits) if bits < MIN_WINDOW_BITS => None,
            server_max_window_bits => Some(Agreement {
                server_max_window_bits,
            }),
        }
    }
}

/// A window size as §7.1.2.1 spells it: `%x38-39 / "1" %x30-35`, i.e. 8 to
/// 15 with no leading zero.
fn window_bits(value: &[u8]) -> Option<u8> {
    match value {
        [d @ b'8'..=b'9'] => Some(d.saturating_sub(b'0')),
        [b'1', d @ b'0'..=b'5'] => Some(d.saturating_sub(b'0').saturating_add(10)),
        _ => None,
    }
}

/// Reads an extension list (RFC 6455 §9.1): `1#extension`, where
/// `extension = token *( ";" token [ "=" ( token | quoted-string ) ] )`.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// The next extension of the list: `Some(Some(agreement))` for an
    /// acceptable permessage-deflate offer, `Some(None)` for any other
    /// extension or an offer declined, `None` at the end or where the list
    /// stops being well formed.
    fn next_offer(&mut self) -> Option<Option<Agreement>> {
        // Empty list elements are allowed (RFC 9110 §5.6.1).
        loop {
            self.skip_whitespace();
            if !self.eat(b',') {
                break;
            }
        }
        let name = self.token()?;
        let mut params = Params::default();
        let mut valid = true;
        loop {
            self.skip_whitespace();
            if self.rest.is_empty() || self.eat(b',') {
                break;
            }
            if !self.eat(b';') {
                self.rest = &[];
                return None;
            }
            self.skip_whitespace();
            let param = self.token()?;
            self.skip_whitespace();
            let value = if self.eat(b'=') {
                self.skip_whitespace();
                Some(self.value()?)
            } else {
                None
            };
            // Quoted values must unquote to a token (§9.1), which ours never
            // need escapes for: an escaped value is simply not a valid one.
            let added = match value {
                Some(Value::Plain(value)) => params.add(param, Some(value)),
                Some(Value::Escaped) => Err(()),
                None => params.add(param, None),
            };
            valid = valid && added.is_ok();
        }
        let is_deflate = name.eq_ignore_ascii_case(EXTENSION.as_bytes());
        Some(if is_deflate && valid {
            params.agreement()
        } else {
            None
        })
    }

    fn skip_whitespace(&mut self) {
        while let [b' ' | b'\t', rest @ ..] = self.rest {
            self.rest = rest;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        match self.rest {
            [first, rest @ ..] if *first == byte => {
                self.rest = rest;
                true
            }
            _ => false,
        }
    }

    /// A token (RFC 9110 §5.6.2), or `None` (and the rest dropped) when
    /// none starts here.
    fn token(&mut self) -> Option<&'a [u8]> {
        let len = self.rest.iter().take_while(|b| is_tchar(**b)).count();
        let (token, rest) = self.rest.split_at_checked(len)?;
        if token.is_empty() {
            self.rest = &[];
            return None;
        }
        self.rest = rest;
        Some(token)
    }

    /// A parameter value: a token or a quoted-string without escapes.
    fn value(&mut self) -> Option<Value<'a>> {
        if !self.eat(b'"') {
            return self.token().map(Value::Plain);
        }
        let Some(end) = self.rest.iter().position(|b| *b == b'"' || *b == b'\\') else {
            self.rest = &[];
            return None;
        };
        let (inner, rest) = self.rest.split_at_checked(end)?;
        match rest {
            [b'"', rest @ ..] => {
                self.rest = rest;
                Some(Value::Plain(inner))
            }
            // An escape: skip past the closing quote, keep the offer but
            // treat the value as invalid.
            _ => {
                let mut after = rest;
                loop {
                    match after {
                        [b'\\', _, tail @ ..] => after = tail,
                        [b'"', tail @ ..] => {
                            self.rest = tail;
                            return Some(Value::Escaped);
                        }
                        [_, tail @ ..] => after = tail,
                        [] => {
                            self.rest = &[];
                            return None;
                        }
                    }
                }
            }
        }
    }
}

/// A parameter's value as read.
enum Value<'a> {
    Plain(&'a [u8]),
    /// A quoted-string with a backslash escape: never a valid value here.
    Escaped,
}

/// RFC 9110 §5.6.2's `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
// Tests index and unwrap freely: a panic there is a failed test.
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn decide(headers: &[&str]) -> Option<Agreement> {
        negotiate(headers.iter().map(|h| h.as_bytes()))
    }

    fn response(headers: &[&str]) -> Option<String> {
        decide(headers).map(|a| {
            let mut out = Vec::new();
            a.write_header(&mut out);
            String::from_utf8(out).unwrap()
        })
    }

    const BOTH: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn negotiation_table() {
        let full = |bits: Option<u8>| Some(Agreement {
            server_max_window_bits: bits,
        });
        let table: &[(&[&str], Option<Agreement>)] = &[
            // Chrome.
            (&["permessage-deflate; client_max_window_bits"], full(None)),
            // Firefox: the bare offer.
            (&["permessage-deflate"], full(None)),
            // Python websockets.
            (
                &["permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"],
                full(Some(12)),
            ),
            (&["permessage-deflate; server_max_window_bits=9"], full(Some(9))),
            (&["permessage-deflate; server_max_window_bits=\"10\""], full(Some(10))),
            (&["permessage-deflate; server_max_window_bits=15"], full(Some(15))),
            // zlib cannot make an 8-bit raw window: declined.
            (&["permessage-deflate; server_max_window_bits=8"], None),
            // ...but a fallback offer after it is taken.
            (
                &["permessage-deflate; server_max_window_bits=8, permessage-deflate"],
                full(None),
            ),
            // Out of range, leading zero, missing value.
            (&["permessage-deflate; server_max_window_bits=16"], None),
            (&["permessage-deflate; server_max_window_bits=7"], None),
            (&["permessage-deflate; server_max_window_bits=09"], None),
            (&["permessage-deflate; server_max_window_bits"], None),
            (&["permessage-deflate; client_max_window_bits=16"], None),
            (&["permessage-deflate; client_max_window_bits=8"], full(None)),
            // Duplicates.
            (
                &["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
                None,
            ),
            (
                &["permessage-deflate; client_max_window_bits; client_max_window_bits=10"],
                None,
            ),
            // A flag with a value, an unknown parameter.
            (&["permessage-deflate; client_no_context_takeover=1"], None),
            (&["permessage-deflate; x_extra"], None),
            // Several offers: the first valid one wins.
            (
                &["permessage-deflate; bogus, permessage-deflate; server_max_window_bits=10, permessage-deflate"],
                full(Some(10)),
            ),
            // Over repeated headers, in order.
            (
                &["x-webkit-deflate-frame", "permessage-deflate; server_max_window_bits=11"],
                full(Some(11)),
            ),
            (&["x-webkit-deflate-frame"], None),
            (&["Permessage-Deflate"], full(None)),
            (&[], None),
            (&[""], None),
            (&[" , ,permessage-deflate"], full(None)),
            // Malformed lists are declined from where they break.
            (&["permessage-deflate;; server_max_window_bits=10"], None),
            (&["=, permessage-deflate"], None),
            (&["permessage-deflate; server_max_window_bits=\"1\\0\""], None),
            (&["permessage-deflate; server_max_window_bits=\"10"], None),
            (&["foo bar, permessage-deflate"], None),
        ];
        for (headers, expected) in table {
            assert_eq!(decide(headers), *expected, "{headers:?}");
        }
    }

    #[test]
    fn response_header() {
        assert_eq!(
            response(&["permessage-deflate; client_max_window_bits"]).unwrap(),
            format!("Sec-WebSocket-Extensions: {BOTH}\r\n")
        );
        assert_eq!(
            response(&["permessage-deflate; server_max_window_bits=9"]).unwrap(),
            format!("Sec-WebSocket-Extensions: {BOTH}; server_max_window_bits=9\r\n")
        );
        assert_eq!(response(&["deflate-frame"]), None);
        assert_eq!(decide(&["permessage-deflate"]).unwrap().window_bits(), 15);
        assert_eq!(
            decide(&["permessage-deflate; server_max_window_bits=10"])
                .unwrap()
                .window_bits(),
            10
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(header in "[ -~]{0,80}") {
            let _ = negotiate([header.as_bytes()]);
        }

        #[test]
        fn parameter_soup_never_panics(
            params in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "server_no_context_takeover", "client_no_context_takeover",
                        "server_max_window_bits", "client_max_window_bits", "x",
                    ]),
                    proptest::option::of("[0-9\"]{0,3}"),
                ),
                0..6,
            ),
        ) {
            let mut header = String::from("permessage-deflate");
            for (name, value) in params {
                header.push_str("; ");
                header.push_str(name);
                if let Some(value) = value {
                    header.push('=');
                    header.push_str(&value);
                }
            }
            let _ = negotiate([header.as_bytes()]);
        }
    }
}
