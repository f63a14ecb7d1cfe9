//! Frame-layer throughput (RFC 6455 §5): what every inbound byte costs to
//! parse, unmask and (for text) validate, and what every outbound frame costs
//! to encode. Throughput is in bytes so criterion reports GB/s.
//!
//! Groups:
//! - `decode`: masked client frames through the real [`Decoder`], as a
//!   connection's read buffer sees them.
//! - `unmask`: [`apply_mask`] (u64 words) against [`apply_mask_reference`]
//!   (the RFC's byte loop), the ratio that justifies the word loop.
//! - `encode`: [`write_frame`] of server frames into a reused `Vec`.
//!
//! Run: `cargo bench --bench frame -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tickfan::protocol::decoder::{Decoder, Limits, Message};
use tickfan::protocol::frame::{encode_client_frame, write_frame, OpCode};
use tickfan::protocol::mask::{apply_mask, apply_mask_reference};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const TICK_BYTES: usize = 100;
const TICKS_PER_READ: usize = 64;
const LARGE_BYTES: usize = 64 * 1024;

/// Generous enough that no benchmarked frame is refused.
const LIMITS: Limits = Limits {
    max_frame_bytes: 16 * 1024 * 1024,
    max_message_bytes: 16 * 1024 * 1024,
    max_fragments_per_message: 1024,
};

/// `len` bytes of ASCII that look like market ticks (JSON objects).
fn tick_text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut seq = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!(r#"{{"topic":"AAPL","seq":{seq},"bid":187.25,"ask":187.27,"size":300}}"#)
                .as_bytes(),
        );
        seq += 1;
    }
    out.truncate(len);
    out
}

/// `len` bytes of valid UTF-8 mixing 1- to 4-byte sequences, so the
/// validator cannot stay on an ASCII fast path.
fn mixed_text(len: usize) -> Vec<u8> {
    let pattern = "tick é € 𝄞 Ünïcödé 東京 ";
    let mut text = String::with_capacity(len + pattern.len());
    while text.len() < len {
        text.push_str(pattern);
    }
    let mut end = len;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.into_bytes()
}

fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Decodes every frame in `buf`, returning how many messages came out.
fn decode_all(decoder: &mut Decoder, buf: &mut [u8]) -> usize {
    let mut offset = 0;
    let mut messages = 0;
    while offset < buf.len() {
        let decoded = decoder
            .decode(&mut buf[offset..])
            .expect("benchmark frames are valid");
        assert!(!decoded.needs_more(), "benchmark frames are complete");
        offset += decoded.consumed;
        if let Some(message) = decoded.message {
            black_box(message);
            messages += 1;
        }
    }
    messages
}

fn bench_decode(c: &mut Criterion) {
    let tick = encode_client_frame(true, OpCode::Text, MASK, &tick_text(TICK_BYTES));
    let ticks: Vec<u8> = (0..TICKS_PER_READ).flat_map(|_| tick.clone()).collect();
    let cases: [(&str, Vec<u8>, usize); 6] = [
        ("text_100B", tick, 1),
        // The same size without UTF-8 validation: the per-frame fixed cost.
        (
            "binary_100B",
            encode_client_frame(true, OpCode::Binary, MASK, &binary(TICK_BYTES)),
            1,
        ),
        ("text_64x100B", ticks, TICKS_PER_READ),
        (
            "binary_64KiB",
            encode_client_frame(true, OpCode::Binary, MASK, &binary(LARGE_BYTES)),
            1,
        ),
        (
            "text_64KiB_ascii",
            encode_client_frame(true, OpCode::Text, MASK, &tick_text(LARGE_BYTES)),
            1,
        ),
        (
            "text_64KiB_multibyte",
            encode_client_frame(true, OpCode::Text, MASK, &mixed_text(LARGE_BYTES)),
            1,
        ),
    ];

    let copy_sizes: Vec<(&str, usize)> = cases
        .iter()
        .filter(|(name, ..)| !name.ends_with("multibyte") && *name != "binary_100B")
        .map(|(name, frames, _)| (*name, frames.len()))
        .collect();

    let mut group = c.benchmark_group("decode");
    for (name, pristine, expected_messages) in cases {
        // Check once, outside the timing, that the decoder really produces
        // the messages (not an early "need more" or an error).
        let mut decoder = Decoder::new(LIMITS);
        let mut check = pristine.clone();
        assert_eq!(decode_all(&mut decoder, &mut check), expected_messages);
        let mut again = pristine.clone();
        let decoded = decoder.decode(&mut again).unwrap();
        if name.starts_with("binary") {
            assert!(matches!(decoded.message, Some(Message::Binary(_))));
        } else {
            assert!(matches!(decoded.message, Some(Message::Text(_))));
        }

        // Throughput counts whole frames, headers included: what the read
        // buffer holds.
        group.throughput(Throughput::Bytes(pristine.len() as u64));
        // Small frames are timed in batches, since a timer read costs about
        // as much as decoding one. A batch of 64 KiB copies would overflow
        // the cache, though, and a connection decodes bytes it has just
        // read, so large frames are timed one at a time, each right after
        // its copy (timer overhead is ~1% at these sizes).
        let batch_size = if pristine.len() > 16 * 1024 {
            BatchSize::PerIteration
        } else {
            BatchSize::SmallInput
        };
        // The decoder unmasks in place, so every iteration needs the masked
        // bytes again. `iter_batched_ref` copies them in its setup, which is
        // NOT timed; `copy_only/*` below measures that copy on its own.
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || pristine.clone(),
                |buf| decode_all(&mut decoder, buf),
                batch_size,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("copy_only");
    for (name, len) in copy_sizes {
        let pristine = binary(len);
        let mut buf = vec![0u8; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.copy_from_slice(black_box(&pristine));
                black_box(&mut buf);
            })
        });
    }
    group.finish();
}

fn bench_unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for (label, len) in [("100B", 100), ("4KiB", 4096), ("64KiB", LARGE_BYTES)] {
        let mut buf = binary(len);
        group.throughput(Throughput::Bytes(len as u64));
        // XOR is its own inverse: unmasking the same buffer over and over
        // needs no fresh copy.
        group.bench_function(format!("word/{label}"), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(MASK), 0))
        });
        group.bench_function(format!("reference/{label}"), |b| {
            b.iter(|| apply_mask_reference(black_box(&mut buf), black_box(MASK), 0))
        });
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (label, len) in [("100B", TICK_BYTES), ("64KiB", LARGE_BYTES)] {
        let payload = tick_text(len);
        let mut out = Vec::with_capacity(len + 14);
        // Payload bytes, as a subscriber's share of a published message.
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("text/{label}"), |b| {
            b.iter(|| {
                out.clear();
                write_frame(&mut out, OpCode::Text, black_box(&payload));
                black_box(&out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decode, bench_unmask, bench_encode);
criterion_main!(benches);
