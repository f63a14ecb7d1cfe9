use super::*;
use crate::protocol::close::CloseCode;
use crate::protocol::frame::encode_client_frame;
use proptest::prelude::*;

const LIMITS: Limits = Limits {
    max_frame_bytes: 1 << 20,
    max_message_bytes: 1 << 20,
    max_fragments_per_message: 64,
};
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// An owned copy of a [`Message`], so tests can collect them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    /// Still compressed: text (true) or binary.
    Compressed(bool, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

fn own(message: Message<'_>) -> Owned {
    match message {
        Message::Text(p) => Owned::Text(p.to_vec()),
        Message::Binary(p) => Owned::Binary(p.to_vec()),
        Message::CompressedText(p) => Owned::Compressed(true, p.to_vec()),
        Message::CompressedBinary(p) => Owned::Compressed(false, p.to_vec()),
        Message::Ping(p) => Owned::Ping(p.to_vec()),
        Message::Pong(p) => Owned::Pong(p.to_vec()),
        Message::Close(c) => Owned::Close(c.code.map(|c| c.0), c.reason.to_string()),
    }
}

/// Feeds `chunks` as successive reads into one read buffer, the way a
/// connection does, and collects every message until the first error.
fn drive(limits: Limits, chunks: &[&[u8]]) -> (Vec<Owned>, Option<ProtocolError>) {
    drive_with(Decoder::new(limits), chunks)
}

/// [`drive`] with a given decoder (one that agreed permessage-deflate).
fn drive_with(mut decoder: Decoder, chunks: &[&[u8]]) -> (Vec<Owned>, Option<ProtocolError>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Err(e) => return (out, Some(e)),
                Ok(decoded) if decoded.needs_more() => break,
                Ok(decoded) => {
                    let consumed = decoded.consumed;
                    if let Some(message) = decoded.message {
                        out.push(own(message));
                    }
                    buf.drain(..consumed);
                }
            }
        }
    }
    (out, None)
}

fn frame(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
    encode_client_frame(fin, op, KEY, payload)
}

fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

#[test]
fn rfc_examples() {
    // §5.7: masked "Hello", a fragmented "Hel"+"lo", and a masked ping.
    let hello = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(
        drive(LIMITS, &[&hello]),
        (vec![Owned::Text(b"Hello".to_vec())], None)
    );
    let fragmented = concat(&[
        frame(false, OpCode::Text, b"Hel"),
        frame(true, OpCode::Continuation, b"lo"),
    ]);
    assert_eq!(
        drive(LIMITS, &[&fragmented]),
        (vec![Owned::Text(b"Hello".to_vec())], None)
    );
    let ping = frame(true, OpCode::Ping, b"Hello");
    assert_eq!(
        drive(LIMITS, &[&ping]),
        (vec![Owned::Ping(b"Hello".to_vec())], None)
    );
}

#[test]
fn control_frames_interleave_with_fragments() {
    let bytes = concat(&[
        frame(false, OpCode::Binary, b"ab"),
        frame(true, OpCode::Ping, b"p"),
        frame(false, OpCode::Continuation, b"cd"),
        frame(true, OpCode::Pong, b""),
        frame(true, OpCode::Continuation, b"ef"),
    ]);
    let (messages, error) = drive(LIMITS, &[&bytes]);
    assert_eq!(error, None);
    assert_eq!(
        messages,
        vec![
            Owned::Ping(b"p".to_vec()),
            Owned::Pong(vec![]),
            Owned::Binary(b"abcdef".to_vec())
        ]
    );
}

#[test]
fn fragment_sequence_rules() {
    let orphan = frame(true, OpCode::Continuation, b"x");
    assert_eq!(
        drive(LIMITS, &[&orphan]).1,
        Some(ProtocolError::UnexpectedContinuation)
    );
    let nested = concat(&[
        frame(false, OpCode::Text, b"a"),
        frame(true, OpCode::Text, b"b"),
    ]);
    assert_eq!(
        drive(LIMITS, &[&nested]).1,
        Some(ProtocolError::ExpectedContinuation)
    );
}

#[test]
fn code_point_split_across_fragments() {
    let text = "κόσμε".as_bytes();
    let bytes = concat(&[
        frame(false, OpCode::Text, &text[..1]),
        frame(false, OpCode::Continuation, &text[1..4]),
        frame(true, OpCode::Continuation, &text[4..]),
    ]);
    assert_eq!(
        drive(LIMITS, &[&bytes]),
        (vec![Owned::Text(text.to_vec())], None)
    );
}

#[test]
fn invalid_utf8_fails_at_the_fragment_that_carries_it() {
    // The second fragment is invalid; the third never needs to arrive.
    let first = frame(false, OpCode::Text, b"hello");
    let second = frame(
        false,
        OpCode::Continuation,
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80",
    );
    let (messages, error) = drive(LIMITS, &[&first, &second]);
    assert!(messages.is_empty());
    assert_eq!(error, Some(ProtocolError::InvalidUtf8));
    assert_eq!(
        ProtocolError::InvalidUtf8.close_code(),
        CloseCode::INVALID_PAYLOAD
    );
}

#[test]
fn invalid_utf8_fails_before_the_frame_is_complete() {
    let mut payload = b"valid text, then ".to_vec();
    payload.extend_from_slice(b"\xf4\x90\x80\x80");
    payload.extend_from_slice(&[b'x'; 100]);
    let whole = frame(true, OpCode::Text, &payload);
    // Only the header and the first 21 payload bytes have arrived.
    let (_, error) = drive(LIMITS, &[&whole[..8 + 21]]);
    assert_eq!(error, Some(ProtocolError::InvalidUtf8));
}

#[test]
fn text_ending_inside_a_code_point_fails() {
    let bytes = frame(true, OpCode::Text, b"abc\xe2\x82");
    assert_eq!(drive(LIMITS, &[&bytes]).1, Some(ProtocolError::InvalidUtf8));
}

#[test]
fn limits() {
    let small = Limits {
        max_frame_bytes: 100,
        max_message_bytes: 150,
        max_fragments_per_message: 3,
    };
    let big_frame = frame(true, OpCode::Binary, &[0; 101]);
    assert_eq!(
        drive(small, &[&big_frame]).1,
        Some(ProtocolError::FrameTooLarge)
    );
    let big_message = concat(&[
        frame(false, OpCode::Binary, &[0; 100]),
        frame(true, OpCode::Continuation, &[0; 51]),
    ]);
    assert_eq!(
        drive(small, &[&big_message]).1,
        Some(ProtocolError::MessageTooLarge)
    );
    let many = concat(&[
        frame(false, OpCode::Binary, b"a"),
        frame(false, OpCode::Continuation, b"b"),
        frame(false, OpCode::Continuation, b"c"),
        frame(true, OpCode::Continuation, b"d"),
    ]);
    assert_eq!(
        drive(small, &[&many]).1,
        Some(ProtocolError::TooManyFragments)
    );
    assert_eq!(
        ProtocolError::TooManyFragments.close_code(),
        CloseCode::MESSAGE_TOO_BIG
    );
}

#[test]
fn close_frames() {
    let close = frame(true, OpCode::Close, b"\x03\xe8done");
    assert_eq!(
        drive(LIMITS, &[&close]).0,
        vec![Owned::Close(Some(1000), "done".into())]
    );
    let empty = frame(true, OpCode::Close, b"");
    assert_eq!(
        drive(LIMITS, &[&empty]).0,
        vec![Owned::Close(None, String::new())]
    );
    let bad_code = frame(true, OpCode::Close, b"\x03\xee");
    assert_eq!(
        drive(LIMITS, &[&bad_code]).1,
        Some(ProtocolError::InvalidCloseCode(1006))
    );
    let bad_reason = frame(true, OpCode::Close, b"\x03\xe8\xff");
    assert_eq!(
        drive(LIMITS, &[&bad_reason]).1,
        Some(ProtocolError::InvalidUtf8)
    );
}

#[test]
fn assembly_buffer_is_reused_between_messages() {
    let bytes = concat(&[
        frame(false, OpCode::Text, b"one"),
        frame(true, OpCode::Continuation, b"!"),
        frame(false, OpCode::Binary, b"two"),
        frame(true, OpCode::Continuation, b"?"),
    ]);
    assert_eq!(
        drive(LIMITS, &[&bytes]).0,
        vec![
            Owned::Text(b"one!".to_vec()),
            Owned::Binary(b"two?".to_vec())
        ]
    );
}

/// A message a client might send, before framing.
#[derive(Debug, Clone)]
enum Sent {
    Text(String, Vec<usize>),
    Binary(Vec<u8>, Vec<usize>),
    Ping(Vec<u8>),
}

fn sent_strategy() -> impl Strategy<Value = Sent> {
    let cuts = proptest::collection::vec(0usize..64, 0..4);
    prop_oneof![
        ("\\PC{0,40}", cuts.clone()).prop_map(|(t, c)| Sent::Text(t, c)),
        (proptest::collection::vec(any::<u8>(), 0..300), cuts)
            .prop_map(|(b, c)| Sent::Binary(b, c)),
        proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Sent::Ping),
    ]
}

/// Frames `payload` as a message fragmented at `cuts` (byte offsets, which
/// may split a code point), with a ping between fragments.
fn fragment(op: OpCode, payload: &[u8], cuts: &[usize], key: [u8; 4]) -> (Vec<u8>, Vec<Owned>) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (payload.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut bytes = Vec::new();
    let mut interleaved = Vec::new();
    let mut start = 0;
    let mut first = true;
    for end in cuts.into_iter().chain([payload.len()]) {
        if end < start {
            continue;
        }
        let fin = end == payload.len();
        let frame_op = if first { op } else { OpCode::Continuation };
        bytes.extend(encode_client_frame(
            fin,
            frame_op,
            key,
            &payload[start..end],
        ));
        if !fin {
            bytes.extend(encode_client_frame(true, OpCode::Ping, key, b"between"));
            interleaved.push(Owned::Ping(b"between".to_vec()));
        }
        first = false;
        start = end;
        if fin {
            break;
        }
    }
    (bytes, interleaved)
}

proptest! {
    #[test]
    fn any_split_of_a_valid_stream_yields_the_same_messages(
        sent in proptest::collection::vec(sent_strategy(), 1..8),
        key in any::<[u8; 4]>(),
        splits in proptest::collection::vec(1usize..97, 1..40),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for message in &sent {
            let (bytes, mut control, whole) = match message {
                Sent::Text(t, cuts) => {
                    let (b, c) = fragment(OpCode::Text, t.as_bytes(), cuts, key);
                    (b, c, Owned::Text(t.as_bytes().to_vec()))
                }
                Sent::Binary(p, cuts) => {
                    let (b, c) = fragment(OpCode::Binary, p, cuts, key);
                    (b, c, Owned::Binary(p.clone()))
                }
                Sent::Ping(p) => (encode_client_frame(true, OpCode::Ping, key, p), vec![], Owned::Ping(p.clone())),
            };
            stream.extend(bytes);
            expected.append(&mut control);
            expected.push(whole);
        }
        // Cut the stream into reads of the generated sizes, cycling.
        let mut chunks = Vec::new();
        let mut at = 0;
        for size in splits.iter().cycle() {
            if at >= stream.len() {
                break;
            }
            let end = (at + size).min(stream.len());
            chunks.push(&stream[at..end]);
            at = end;
        }
        let (messages, error) = drive(LIMITS, &chunks);
        prop_assert_eq!(error, None);
        prop_assert_eq!(messages, expected);
    }

    #[test]
    fn encode_then_parse_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..70_000usize),
                                     key in any::<[u8; 4]>()) {
        let bytes = encode_client_frame(true, OpCode::Binary, key, &payload);
        let (messages, error) = drive(LIMITS, &[&bytes]);
        prop_assert_eq!(error, None);
        prop_assert_eq!(messages, vec![Owned::Binary(payload)]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                                   split in 0usize..200) {
        let split = split.min(bytes.len());
        let _ = drive(LIMITS, &[&bytes[..split], &bytes[split..]]);
    }
}

/// A masked client frame with RSV1 set (a compressed message's first frame).
fn compressed_frame(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut bytes = frame(fin, op, payload);
    bytes[0] |= crate::protocol::frame::RSV1;
    bytes
}

fn deflate_decoder() -> Decoder {
    Decoder::with_deflate(LIMITS, true)
}

#[test]
fn rfc_7692_compressed_frames() {
    use crate::protocol::deflate::codec::Inflater;
    // §7.2.3.1: "Hello" compressed, in one frame (0xc1 0x07 ...), masked.
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let (messages, error) = drive_with(deflate_decoder(), &[&compressed_frame(true, OpCode::Text, &hello)]);
    assert_eq!(error, None);
    assert_eq!(messages, vec![Owned::Compressed(true, hello.to_vec())]);
    // §7.2.3.1 again, fragmented: 0x41 0x03 f2 48 cd, then 0x80 0x04 c9 c9 07 00.
    let fragmented = concat(&[
        compressed_frame(false, OpCode::Text, &hello[..3]),
        frame(true, OpCode::Continuation, &hello[3..]),
    ]);
    let (messages, error) = drive_with(deflate_decoder(), &[&fragmented]);
    assert_eq!(error, None);
    assert_eq!(messages, vec![Owned::Compressed(true, hello.to_vec())]);
    let Owned::Compressed(_, payload) = &messages[0] else {
        unreachable!()
    };
    assert_eq!(Inflater::new().inflate(payload, 100).unwrap(), b"Hello");
    // Compressed bytes are not UTF-8, and are not checked as such; a plain
    // text message on the same connection still is.
    let (messages, error) = drive_with(
        deflate_decoder(),
        &[&concat(&[
            compressed_frame(true, OpCode::Text, &[0xff, 0xfe]),
            frame(true, OpCode::Text, &[0xff]),
        ])],
    );
    assert_eq!(messages, vec![Owned::Compressed(true, vec![0xff, 0xfe])]);
    assert_eq!(error, Some(ProtocolError::InvalidUtf8));
    // Binary, and a plain message after a compressed fragmented one.
    let (messages, error) = drive_with(
        deflate_decoder(),
        &[&concat(&[
            compressed_frame(false, OpCode::Binary, &[1]),
            frame(true, OpCode::Ping, b"p"),
            frame(true, OpCode::Continuation, &[2]),
            frame(true, OpCode::Text, b"plain"),
        ])],
    );
    assert_eq!(error, None);
    assert_eq!(
        messages,
        vec![
            Owned::Ping(b"p".to_vec()),
            Owned::Compressed(false, vec![1, 2]),
            Owned::Text(b"plain".to_vec()),
        ]
    );
}

#[test]
fn rsv1_rules() {
    let rsv1_on = |bytes: Vec<u8>| {
        let mut bytes = bytes;
        bytes[0] |= crate::protocol::frame::RSV1;
        bytes
    };
    let cases = [
        (
            rsv1_on(frame(true, OpCode::Ping, b"")),
            ProtocolError::CompressedControlFrame,
        ),
        (
            concat(&[
                compressed_frame(false, OpCode::Text, b"a"),
                rsv1_on(frame(true, OpCode::Continuation, b"b")),
            ]),
            ProtocolError::CompressedContinuation,
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(drive_with(deflate_decoder(), &[&bytes]).1, Some(expected));
        assert_eq!(expected.close_code(), CloseCode::PROTOCOL_ERROR);
    }
    // Without deflate agreed, RSV1 is a reserved bit (1002).
    let (_, error) = drive(LIMITS, &[&compressed_frame(true, OpCode::Text, b"x")]);
    assert_eq!(error, Some(ProtocolError::ReservedBits));
    assert_eq!(ProtocolError::BadDeflateData.close_code(), CloseCode::PROTOCOL_ERROR);
}

proptest! {
    /// inflate(compress(x)) == x, however the compressed frames are split
    /// into reads and fragmented.
    #[test]
    fn compressed_message_survives_any_split(
        text in "[a-z{}\":,0-9 é€]{0,600}",
        cuts in proptest::collection::vec(0usize..64, 0..4),
        splits in proptest::collection::vec(1usize..97, 1..40),
        window_bits in 9u8..=15,
    ) {
        use crate::protocol::deflate::codec::{Deflater, Inflater};
        let mut compressed = Vec::new();
        Deflater::new(1, window_bits).unwrap().compress(text.as_bytes(), &mut compressed).unwrap();
        // Fragments at `cuts`; RSV1 on the first only.
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c * compressed.len() / 64).collect();
        bounds.sort_unstable();
        bounds.dedup();
        bounds.retain(|b| *b > 0 && *b < compressed.len());
        let mut pieces = Vec::new();
        let mut start = 0;
        for end in bounds.into_iter().chain([compressed.len()]) {
            pieces.push(&compressed[start..end]);
            start = end;
        }
        let mut wire = Vec::new();
        let last = pieces.len() - 1;
        for (i, piece) in pieces.iter().enumerate() {
            let op = if i == 0 { OpCode::Text } else { OpCode::Continuation };
            if i == 0 {
                wire.extend(compressed_frame(i == last, op, piece));
            } else {
                wire.extend(frame(i == last, op, piece));
            }
        }
        let mut chunks = Vec::new();
        let mut at = 0;
        for split in splits.iter().cycle() {
            if at >= wire.len() {
                break;
            }
            let end = (at + split).min(wire.len());
            chunks.push(&wire[at..end]);
            at = end;
        }
        let (messages, error) = drive_with(deflate_decoder(), &chunks);
        prop_assert_eq!(error, None);
        prop_assert_eq!(messages.len(), 1);
        let Owned::Compressed(true, payload) = &messages[0] else {
            return Err(TestCaseError::fail("not a compressed text message"));
        };
        let inflated = Inflater::new().inflate(payload, 1 << 20).unwrap();
        prop_assert_eq!(inflated, text.as_bytes());
    }
}

/// The compressed "Hello" of RFC 7692 §7.2.3.1, whole and fragmented,
/// split into two reads at every byte: always the same compressed message.
#[test]
fn compressed_hello_at_every_split() {
    use crate::protocol::deflate::codec::Inflater;
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let whole = compressed_frame(true, OpCode::Text, &hello);
    let fragmented = concat(&[
        compressed_frame(false, OpCode::Text, &hello[..3]),
        frame(true, OpCode::Continuation, &hello[3..]),
    ]);
    for wire in [whole, fragmented] {
        for cut in 0..=wire.len() {
            let (messages, error) = drive_with(deflate_decoder(), &[&wire[..cut], &wire[cut..]]);
            assert_eq!(error, None, "cut {cut}");
            assert_eq!(messages, vec![Owned::Compressed(true, hello.to_vec())], "cut {cut}");
        }
    }
    assert_eq!(Inflater::new().inflate(&hello, 5).unwrap(), b"Hello");
}
