//! Incremental UTF-8 validation of text messages (RFC 6455 §5.6, §8.1).
//!
//! A text message may arrive in many frames, and a code point may be split
//! between them; the connection must still fail as soon as an invalid byte
//! arrives, not when the message ends. The standard library's validator does
//! the bulk work (it has a word-at-a-time ASCII fast path); this module only
//! carries the at most three bytes of an unfinished code point across calls.

/// The bytes seen so far do not start a valid UTF-8 sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Validates a stream of byte chunks as one UTF-8 text.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    /// The start of a code point whose remaining bytes have not arrived yet.
    pending: [u8; 4],
    pending_len: usize,
}

impl Utf8Validator {
    /// A validator at the start of a text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next chunk; fails as soon as any byte makes the text invalid,
    /// even when the code point it belongs to is not complete yet.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            // The pending bytes are a valid prefix, shorter than the sequence
            // their lead byte starts, so `needed` is 1 to 3.
            let needed = sequence_len(self.pending[0]).saturating_sub(self.pending_len);
            let (head, rest) = chunk.split_at(needed.min(chunk.len()));
            let mut joined = self.pending;
            // At most sequence_len (≤ 4 = joined.len()): `head` is at most `needed`.
            let joined_len = self.pending_len.saturating_add(head.len());
            let Some(room) = joined.get_mut(self.pending_len..joined_len) else {
                return Err(InvalidUtf8);
            };
            room.copy_from_slice(head);
            let (candidate, _) = joined.split_at(joined_len);
            match std::str::from_utf8(candidate) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix; the chunk ended before the code point did.
                    self.pending = joined;
                    self.pending_len = joined_len;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
            chunk = rest;
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                // An unfinished code point: at most 3 bytes, after the valid
                // prefix std reported, so neither lookup fails.
                let Some((_, tail)) = chunk.split_at_checked(e.valid_up_to()) else {
                    return Err(InvalidUtf8);
                };
                let Some(pending) = self.pending.get_mut(..tail.len()) else {
                    return Err(InvalidUtf8);
                };
                pending.copy_from_slice(tail);
                self.pending_len = tail.len();
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Checks that the text does not end inside a code point.
    pub fn finish(&self) -> Result<(), InvalidUtf8> {
        if self.pending_len == 0 {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }

    /// Forgets any state, ready for the next text.
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

/// The length of the sequence a (valid) lead byte starts.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
// Tests index and unwrap freely: a panic there is a failed test.
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed_all(chunks: &[&[u8]]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        for c in chunks {
            v.feed(c)?;
        }
        v.finish()
    }

    #[test]
    fn code_point_split_across_chunks() {
        let euro = "€".as_bytes(); // e2 82 ac
        assert_eq!(feed_all(&[&euro[..1], &euro[1..2], &euro[2..]]), Ok(()));
        assert_eq!(feed_all(&[b"a", &euro[..2]]), Err(InvalidUtf8));
    }

    #[test]
    fn fails_at_the_first_invalid_byte() {
        let mut v = Utf8Validator::new();
        v.feed(b"hello \xce\xba").unwrap();
        // 0xED 0xA0 starts a UTF-16 surrogate: invalid before the sequence completes.
        v.feed(b"\xed").unwrap();
        assert_eq!(v.feed(b"\xa0"), Err(InvalidUtf8));
    }

    #[test]
    fn rejects_overlong_and_out_of_range() {
        assert_eq!(feed_all(&[b"\xc0\xaf"]), Err(InvalidUtf8));
        assert_eq!(feed_all(&[b"\xf4\x90\x80\x80"]), Err(InvalidUtf8));
        assert_eq!(feed_all(&[b"\xf4"]), Err(InvalidUtf8));
    }

    proptest! {
        #[test]
        fn any_split_agrees_with_std(data in proptest::collection::vec(any::<u8>(), 0..64),
                                     cuts in proptest::collection::vec(0usize..64, 0..6)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut v = Utf8Validator::new();
            let mut start = 0;
            let mut result = Ok(());
            for cut in cuts.into_iter().chain([data.len()]) {
                result = result.and_then(|()| v.feed(&data[start..cut]));
                start = cut;
            }
            let result = result.and_then(|()| v.finish());
            prop_assert_eq!(result.is_ok(), std::str::from_utf8(&data).is_ok());
        }

        #[test]
        fn valid_text_in_single_bytes(text in "\\PC{0,40}") {
            let mut v = Utf8Validator::new();
            for b in text.as_bytes() {
                prop_assert_eq!(v.feed(std::slice::from_ref(b)), Ok(()));
            }
            prop_assert_eq!(v.finish(), Ok(()));
        }
    }
}
