//! Inflating permessage-deflate messages (RFC 7692 §7.2.2) on the sampled
//! subscribers: the four tail bytes the sender removed are put back and the
//! payload is inflated with a fresh window (the broker agrees no context
//! takeover), by one inflater per fleet loop. Sinks never inflate: they only
//! count, so a compressed tick costs them what a plain one does.

use flate2::{Decompress, FlushDecompress, Status};

/// A raw inflater and its output buffer, reused for every message.
#[derive(Debug)]
pub struct Inflater {
    decompress: Decompress,
    out: Vec<u8>,
}

impl Inflater {
    pub fn new() -> Self {
        Inflater {
            decompress: Decompress::new(false),
            out: Vec::new(),
        }
    }

    /// The inflated message, borrowed until the next call; `Err` for data
    /// that is not deflate. `fresh`: the message starts a new stream (no
    /// context takeover); otherwise the window of the messages before it
    /// is kept (this inflater then serves one connection).
    pub fn inflate(&mut self, payload: &[u8], fresh: bool) -> Result<&[u8], String> {
        if fresh {
            self.decompress.reset(false);
        }
        self.out.clear();
        for piece in [payload, &[0, 0, 0xff, 0xff][..]] {
            let start = self.decompress.total_in();
            loop {
                let used = (self.decompress.total_in() - start) as usize;
                if self.out.len() == self.out.capacity() {
                    self.out.reserve(self.out.capacity().max(4096));
                }
                let out_before = self.out.len();
                let status = self
                    .decompress
                    .decompress_vec(&piece[used..], &mut self.out, FlushDecompress::Sync)
                    .map_err(|e| format!("inflate: {e}"))?;
                if status == Status::StreamEnd {
                    // A final block: nothing after it belongs to the message.
                    return Ok(&self.out);
                }
                let now_used = (self.decompress.total_in() - start) as usize;
                let room = self.out.len() < self.out.capacity();
                if now_used == piece.len() && room {
                    break;
                }
                if now_used == used && self.out.len() == out_before && room {
                    return Err("inflate: input that is not deflate".into());
                }
            }
        }
        Ok(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7692_hello() {
        let mut inflater = Inflater::new();
        // §7.2.3.1 and §7.2.3.4 (BFINAL set).
        assert_eq!(
            inflater
                .inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], true)
                .unwrap(),
            b"Hello"
        );
        assert_eq!(
            inflater
                .inflate(&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00], true)
                .unwrap(),
            b"Hello"
        );
        assert!(inflater.inflate(&[0xff, 0xff], true).is_err());
        // §7.2.3.2: the second "Hello" refers back into the first's window.
        let mut kept = Inflater::new();
        let first = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(kept.inflate(&first, true).unwrap(), b"Hello");
        assert_eq!(
            kept.inflate(&[0xf2, 0x00, 0x11, 0x00, 0x00], false)
                .unwrap(),
            b"Hello"
        );
    }
}
