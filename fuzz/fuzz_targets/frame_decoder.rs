//! The WebSocket decoder fed arbitrary bytes, split into reads at arbitrary
//! points: it must never panic, and the split must not change what it finds
//! (the same messages, then the same error or none). Half the inputs run
//! with permessage-deflate agreed, where RSV1 marks a compressed message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickfan::protocol::decoder::{Decoder, Limits, Message};

const LIMITS: Limits = Limits {
    max_frame_bytes: 4096,
    max_message_bytes: 8192,
    max_fragments_per_message: 16,
};

/// What the decoder found, owned so two runs can be compared.
#[derive(Debug, PartialEq)]
enum Found {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Compressed(bool, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
    Error(String),
}

fn run(stream: &[u8], cuts: &[usize], deflate: bool) -> Vec<Found> {
    let mut decoder = Decoder::with_deflate(LIMITS, deflate);
    let mut buf: Vec<u8> = Vec::new();
    let mut found = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        let end = end.clamp(start, stream.len());
        buf.extend_from_slice(&stream[start..end]);
        start = end;
        loop {
            match decoder.decode(&mut buf) {
                Err(error) => {
                    found.push(Found::Error(error.to_string()));
                    return found;
                }
                Ok(decoded) if decoded.needs_more() => break,
                Ok(decoded) => {
                    let consumed = decoded.consumed;
                    if let Some(message) = decoded.message {
                        found.push(match message {
                            Message::Text(p) => {
                                assert!(std::str::from_utf8(p).is_ok(), "text must be UTF-8");
                                Found::Text(p.to_vec())
                            }
                            Message::Binary(p) => Found::Binary(p.to_vec()),
                            Message::CompressedText(p) => Found::Compressed(true, p.to_vec()),
                            Message::CompressedBinary(p) => Found::Compressed(false, p.to_vec()),
                            Message::Ping(p) => Found::Ping(p.to_vec()),
                            Message::Pong(p) => Found::Pong(p.to_vec()),
                            Message::Close(c) => Found::Close(c.code.map(|c| c.0), c.reason.to_owned()),
                        });
                    }
                    buf.drain(..consumed);
                }
            }
        }
    }
    found
}

fuzz_target!(|data: &[u8]| {
    // The first byte says how many cut points follow (as u16 offsets).
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let deflate = count & 0x80 != 0;
    let count = usize::from(count % 8).min(rest.len() / 2);
    let (cut_bytes, stream) = rest.split_at(count * 2);
    let mut cuts: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let whole = run(stream, &[], deflate);
    let split = run(stream, &cuts, deflate);
    assert_eq!(whole, split);
});
