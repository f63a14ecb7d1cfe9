//! Framing on an open connection (RFC 6455 §5, §7, §8): the echo route
//! returns every message whole and with its type, and each violation fails
//! the connection with the close code §7.4.1 assigns to it.

mod common;

use std::io::Write;
use std::net::Shutdown;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

/// A masked frame whose first byte is `b0` verbatim (RSV bits, reserved
/// opcodes): `client_frame` only knows the legal opcodes.
fn frame_with_first_byte(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = client_frame(true, OP_BINARY, payload);
    frame[0] = b0;
    frame
}

/// Mask key used for hand-built headers below.
const MASK: [u8; 4] = [1, 2, 3, 4];

// ---------------------------------------------------------------- echo

#[test]
fn text_and_binary_are_echoed_with_their_type() {
    let broker = Broker::start(&[]);
    let mut ws = broker.connect_ws(ECHO);
    let messages = [
        Message::text("hello"),
        Message::text(""),
        Message::text("héllo wörld €𝄞"),
        Message::binary(vec![0u8, 255, 1, 254]),
        Message::binary(Vec::new()),
    ];
    for message in messages {
        ws.send(message.clone()).unwrap();
        assert_eq!(ws.read().unwrap(), message);
    }
}

#[test]
fn large_messages_with_16_and_64_bit_lengths_are_echoed() {
    let broker = Broker::start(&[]);
    let mut ws = broker.connect_ws(ECHO);
    let binary: Vec<u8> = (0..70_000u32).map(|i| (i * 31 % 251) as u8).collect();
    ws.send(Message::binary(binary.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(binary));
    let text: String = "tick→".repeat(14_000); // 98 000 bytes
    ws.send(Message::text(text.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(text));
    let medium = vec![7u8; 300];
    ws.send(Message::binary(medium.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(medium));
}

#[test]
fn server_answers_a_70kb_frame_with_a_64_bit_length() {
    let broker = Broker::start(&[]);
    let mut stream = broker.raw_handshake(ECHO);
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 256) as u8).collect();
    stream
        .write_all(&client_frame(true, OP_BINARY, &payload))
        .unwrap();
    let mut head = [0u8; 10];
    std::io::Read::read_exact(&mut stream, &mut head).unwrap();
    assert_eq!(head[0], 0x82, "FIN + binary");
    assert_eq!(head[1], 127, "64-bit length, unmasked");
    assert_eq!(u64::from_be_bytes(head[2..10].try_into().unwrap()), 70_000);
    let mut echoed = vec![0u8; 70_000];
    std::io::Read::read_exact(&mut stream, &mut echoed).unwrap();
    assert_eq!(echoed, payload);
}

#[test]
fn many_messages_in_one_write_are_echoed_in_order() {
    let broker = Broker::start(&[]);
    let mut stream = broker.raw_handshake(ECHO);
    let mut bytes = Vec::new();
    for i in 0..200 {
        bytes.extend(client_frame(true, OP_TEXT, format!("tick {i}").as_bytes()));
    }
    stream.write_all(&bytes).unwrap();
    for i in 0..200 {
        assert_eq!(
            read_server_frame(&mut stream),
            (OP_TEXT, format!("tick {i}").into_bytes())
        );
    }
}

#[test]
fn frames_in_single_byte_writes_are_echoed() {
    let broker = Broker::start(&[]);
    let mut stream = broker.raw_handshake(ECHO);
    let mut bytes = client_frame(true, OP_TEXT, "slow €".as_bytes());
    bytes.extend(client_frame(true, OP_BINARY, &[9u8; 200]));
    for byte in &bytes {
        stream.write_all(std::slice::from_ref(byte)).unwrap();
    }
    assert_eq!(
        read_server_frame(&mut stream),
        (OP_TEXT, "slow €".as_bytes().to_vec())
    );
    assert_eq!(read_server_frame(&mut stream), (OP_BINARY, vec![9u8; 200]));
}

#[test]
fn fragmented_text_with_a_split_code_point_is_echoed_whole() {
    let broker = Broker::start(&[]);
    let mut stream = broker.raw_handshake(ECHO);
    let text = "price €42 𝄞".as_bytes();
    // "€" is E2 82 AC; split after its first byte, and "𝄞" (4 bytes) in the middle.
    let euro = text.iter().position(|&b| b == 0xE2).unwrap();
    let clef = text.iter().position(|&b| b == 0xF0).unwrap();
    let mut bytes = client_frame(false, OP_TEXT, &text[..euro + 1]);
    bytes.extend(client_frame(
        false,
        OP_CONTINUATION,
        &text[euro + 1..clef + 2],
    ));
    bytes.extend(client_frame(false, OP_CONTINUATION, b""));
    bytes.extend(client_frame(true, OP_CONTINUATION, &text[clef + 2..]));
    stream.write_all(&bytes).unwrap();
    assert_eq!(read_server_frame(&mut stream), (OP_TEXT, text.to_vec()));
}

#[test]
fn fragmented_binary_is_echoed_whole_and_the_next_message_is_separate() {
    let broker = Broker::start(&[]);
    let mut stream = broker.raw_handshake(ECHO);
    let mut bytes = client_frame(false, OP_BINARY, &[1, 2]);
    bytes.extend(client_frame(true, OP_CONTINUATION, &[3]));
    bytes.extend(client_frame(true, OP_BINARY, &[4]));
    stream.write_all(&bytes).unwrap();
    assert_eq!(read_server_frame(&mut stream), (OP_BINARY, vec![1, 2, 3]));
    assert_eq!(read_server_frame(&mut stream), (OP_BINARY, vec![4]));
}

// ------------------------------------------------------------ control frames

#[test]
fn ping_is_answered_with_a_pong_carrying_the_same_payload() {
    let broker = Broker::start(&[]);
    let mut stream = broker.raw_handshake(ECHO);
    for payload in [&b""[..], b"heartbeat", &[0xAB; 125]] {
        stream
            .write_all(&client_frame(true, OP_PING, payload))
            .unwrap();
        assert_eq!(read_server_frame(&mut stream), (OP_PONG, payload.to_vec()));
    }
    // An unsolicited pong gets no answer: the next frame is the echo.
    let mut bytes = client_frame(true, OP_PONG, b"unsolicited");
    bytes.extend(client_frame(true, OP_TEXT, b"next"));
    stream.write_all(&bytes).unwrap();
    assert_eq!(read_server_frame(&mut stream), (OP_TEXT, b"next".to_vec()));
}

#[test]
fn tungstenite_ping_gets_pong() {
    let broker = Broker::start(&[]);
    let mut ws = broker.connect_ws(ECHO);
    ws.send(Message::Ping(b"are you there".to_vec())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"are you there".to_vec()));
}

#[test]
fn control_frames_interleaved_in_a_fragmented_message() {
    let broker = Broker::start(&[]);
    let mut stream = broker.raw_handshake(ECHO);
    let mut bytes = client_frame(false, OP_TEXT, b"Hel");
    bytes.extend(client_frame(true, OP_PING, b"p1"));
    bytes.extend(client_frame(false, OP_CONTINUATION, b"lo "));
    bytes.extend(client_frame(true, OP_PONG, b"ignored"));
    bytes.extend(client_frame(true, OP_PING, b"p2"));
    bytes.extend(client_frame(true, OP_CONTINUATION, b"world"));
    stream.write_all(&bytes).unwrap();
    assert_eq!(read_server_frame(&mut stream), (OP_PONG, b"p1".to_vec()));
    assert_eq!(read_server_frame(&mut stream), (OP_PONG, b"p2".to_vec()));
    assert_eq!(
        read_server_frame(&mut stream),
        (OP_TEXT, b"Hello world".to_vec())
    );
}

#[test]
fn close_inside_a_fragmented_message_is_echoed() {
    let broker = Broker::start(&[]);
    let mut stream = broker.raw_handshake(ECHO);
    let mut bytes = client_frame(false, OP_TEXT, b"never finished");
    bytes.extend(client_close(1000, b""));
    stream.write_all(&bytes).unwrap();
    assert_eq!(read_close(&mut stream).0, 1000);
    expect_eof(&mut stream);
}

// ------------------------------------------------------------ closing

#[test]
fn valid_close_codes_are_echoed_then_tcp_closes() {
    let broker = Broker::start(&[]);
    for code in [1000u16, 1001, 1003, 1011, 3000, 4000, 4999] {
        let mut stream = broker.raw_handshake(ECHO);
        stream
            .write_all(&client_close(code, "bye ✓".as_bytes()))
            .unwrap();
        let (echoed, _reason) = read_close(&mut stream);
        assert_eq!(echoed, code);
        expect_eof(&mut stream);
    }
}

#[test]
fn empty_close_is_answered_with_an_empty_close() {
    let broker = Broker::start(&[]);
    let mut stream = broker.raw_handshake(ECHO);
    stream
        .write_all(&client_frame(true, OP_CLOSE, b""))
        .unwrap();
    assert_eq!(read_server_frame(&mut stream), (OP_CLOSE, Vec::new()));
    expect_eof(&mut stream);
}

#[test]
fn tungstenite_close_handshake_completes() {
    let broker = Broker::start(&[]);
    let mut ws = broker.connect_ws(ECHO);
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => {
                // tungstenite's close(None) sends an empty close; the echo is empty too.
                assert_eq!(frame, None);
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("close handshake failed: {e:?}"),
        }
    }
}

/// A client may half-close TCP right after its close frame; the server's
/// echo must still be sent. Today it is lost whenever the FIN is read in the
/// same turn as the close frame (most of the time on loopback).
#[test]
fn close_followed_by_half_close_is_still_echoed() {
    let broker = Broker::start(&[]);
    for round in 0..20 {
        let mut stream = broker.raw_handshake(ECHO);
        stream.write_all(&client_close(1000, b"")).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        match try_read_server_frame(&mut stream) {
            Ok((opcode, payload)) => {
                assert_eq!(
                    (opcode, payload),
                    (OP_CLOSE, vec![0x03, 0xE8]),
                    "round {round}"
                )
            }
            Err(e) => panic!("round {round}: no close echo before the stream ended ({e})"),
        }
    }
}

#[test]
fn invalid_close_codes_are_1002() {
    let broker = Broker::start(&[]);
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        let reason = expect_failure(&broker, &client_close(code, b""), 1002);
        assert_eq!(reason, "invalid close code", "code {code}");
    }
}

#[test]
fn one_byte_close_payload_is_1002() {
    let broker = Broker::start(&[]);
    expect_failure(&broker, &client_frame(true, OP_CLOSE, &[0x03]), 1002);
}

#[test]
fn close_reason_with_invalid_utf8_is_1007() {
    let broker = Broker::start(&[]);
    expect_failure(&broker, &client_close(1000, b"bad \xff reason"), 1007);
}

// ------------------------------------------------------------ UTF-8

#[test]
fn invalid_utf8_in_a_single_frame_is_1007() {
    let broker = Broker::start(&[]);
    for bad in [
        &b"ab\xff"[..],
        b"\xc3\x28",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xe2\x82",
    ] {
        let reason = expect_failure(&broker, &client_frame(true, OP_TEXT, bad), 1007);
        assert_eq!(reason, "invalid UTF-8 in text", "payload {bad:?}");
    }
}

#[test]
fn invalid_utf8_in_a_later_fragment_is_1007_and_nothing_is_echoed() {
    let broker = Broker::start(&[]);
    let mut bytes = client_frame(false, OP_TEXT, b"valid start ");
    bytes.extend(client_frame(false, OP_CONTINUATION, "€".as_bytes()));
    bytes.extend(client_frame(true, OP_CONTINUATION, b"then \xc0\xaf"));
    // expect_failure checks that the first frame back is the close.
    expect_failure(&broker, &bytes, 1007);
}

#[test]
fn code_point_left_unfinished_at_the_end_of_a_fragmented_message_is_1007() {
    let broker = Broker::start(&[]);
    let mut bytes = client_frame(false, OP_TEXT, b"ok");
    bytes.extend(client_frame(true, OP_CONTINUATION, &"€".as_bytes()[..2]));
    expect_failure(&broker, &bytes, 1007);
}

#[test]
fn invalid_utf8_in_binary_is_echoed() {
    let broker = Broker::start(&[]);
    let mut stream = broker.raw_handshake(ECHO);
    stream
        .write_all(&client_frame(true, OP_BINARY, b"\xff\xfe"))
        .unwrap();
    assert_eq!(
        read_server_frame(&mut stream),
        (OP_BINARY, b"\xff\xfe".to_vec())
    );
}

// ------------------------------------------------------------ 1002 rules

#[test]
fn unmasked_frame_is_1002() {
    let broker = Broker::start(&[]);
    let reason = expect_failure(&broker, &[0x81, 0x02, b'h', b'i'], 1002);
    assert_eq!(reason, "client frames must be masked");
}

#[test]
fn rsv_bits_are_1002() {
    let broker = Broker::start(&[]);
    for b0 in [0xC1u8, 0xA1, 0x91, 0xF2] {
        let reason = expect_failure(&broker, &frame_with_first_byte(b0, b"x"), 1002);
        assert_eq!(reason, "reserved bits set without an extension", "{b0:#x}");
    }
}

#[test]
fn reserved_opcodes_are_1002() {
    let broker = Broker::start(&[]);
    for opcode in [0x3u8, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let reason = expect_failure(&broker, &frame_with_first_byte(0x80 | opcode, b""), 1002);
        assert_eq!(reason, "reserved opcode", "opcode {opcode:#x}");
    }
}

#[test]
fn control_frame_over_125_bytes_is_1002() {
    let broker = Broker::start(&[]);
    for opcode in [OP_PING, OP_PONG, OP_CLOSE] {
        let frame = client_frame(true, opcode, &[b'a'; 126]);
        let reason = expect_failure(&broker, &frame, 1002);
        assert_eq!(reason, "control frame payload over 125 bytes");
    }
}

#[test]
fn fragmented_control_frame_is_1002() {
    let broker = Broker::start(&[]);
    for opcode in [OP_PING, OP_PONG, OP_CLOSE] {
        let frame = client_frame(false, opcode, b"");
        let reason = expect_failure(&broker, &frame, 1002);
        assert_eq!(reason, "fragmented control frame");
    }
}

#[test]
fn continuation_without_a_message_is_1002() {
    let broker = Broker::start(&[]);
    for fin in [true, false] {
        let frame = client_frame(fin, OP_CONTINUATION, b"orphan");
        expect_failure(&broker, &frame, 1002);
    }
    // Also right after a complete fragmented message.
    let mut bytes = client_frame(false, OP_TEXT, b"a");
    bytes.extend(client_frame(true, OP_CONTINUATION, b"b"));
    bytes.extend(client_frame(true, OP_CONTINUATION, b"c"));
    let mut stream = broker.raw_handshake(ECHO);
    stream.write_all(&bytes).unwrap();
    assert_eq!(read_server_frame(&mut stream), (OP_TEXT, b"ab".to_vec()));
    assert_eq!(read_close(&mut stream).0, 1002);
}

#[test]
fn new_data_frame_inside_a_fragmented_message_is_1002() {
    let broker = Broker::start(&[]);
    for (first, second) in [
        (OP_TEXT, OP_TEXT),
        (OP_TEXT, OP_BINARY),
        (OP_BINARY, OP_TEXT),
    ] {
        let mut bytes = client_frame(false, first, b"start");
        bytes.extend(client_frame(true, second, b"intruder"));
        let reason = expect_failure(&broker, &bytes, 1002);
        assert_eq!(reason, "new message inside a fragmented message");
    }
}

#[test]
fn length_with_top_bit_set_is_1002() {
    let broker = Broker::start(&[]);
    let mut frame = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0x10];
    frame.extend(MASK);
    let reason = expect_failure(&broker, &frame, 1002);
    assert_eq!(reason, "64-bit payload length with its top bit set");
}

#[test]
fn non_minimal_lengths_are_1002() {
    let broker = Broker::start(&[]);
    // 16-bit length for 5 bytes.
    let mut frame = vec![0x82, 0xFE, 0x00, 0x05];
    frame.extend(MASK);
    frame.extend([0u8; 5]);
    expect_failure(&broker, &frame, 1002);
    // 64-bit length for 200 bytes.
    let mut frame = vec![0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0, 200];
    frame.extend(MASK);
    frame.extend([0u8; 200]);
    expect_failure(&broker, &frame, 1002);
}

#[test]
fn frames_after_a_protocol_error_are_ignored() {
    let broker = Broker::start(&[]);
    let mut bytes = frame_with_first_byte(0x83, b"");
    bytes.extend(client_frame(true, OP_TEXT, b"must not be echoed"));
    bytes.extend(client_frame(true, OP_PING, b"nor answered"));
    // expect_failure reads the close, then requires EOF with no other bytes.
    expect_failure(&broker, &bytes, 1002);
}

// ------------------------------------------------------------ limits (1009)

#[test]
fn frame_over_max_frame_bytes_is_1009() {
    let broker = Broker::start(&["--max-frame-bytes", "1024"]);
    let mut stream = broker.raw_handshake(ECHO);
    stream
        .write_all(&client_frame(true, OP_BINARY, &[5u8; 1024]))
        .unwrap();
    assert_eq!(read_server_frame(&mut stream), (OP_BINARY, vec![5u8; 1024]));
    let reason = expect_failure(&broker, &client_frame(true, OP_BINARY, &[5u8; 1025]), 1009);
    assert_eq!(reason, "frame too large");
    // The header alone is enough: the payload need not arrive.
    let mut header = vec![0x82, 0xFF, 0, 0, 0, 0, 0x40, 0, 0, 0];
    header.extend(MASK);
    expect_failure(&broker, &header, 1009);
}

#[test]
fn message_over_max_message_bytes_is_1009() {
    let broker = Broker::start(&[
        "--max-frame-bytes",
        "1024",
        "--max-message-bytes",
        "2048",
        "--max-fragments-per-message",
        "100",
    ]);
    let mut stream = broker.raw_handshake(ECHO);
    let mut ok = client_frame(false, OP_BINARY, &[1u8; 1024]);
    ok.extend(client_frame(true, OP_CONTINUATION, &[2u8; 1024]));
    stream.write_all(&ok).unwrap();
    let (opcode, payload) = read_server_frame(&mut stream);
    assert_eq!((opcode, payload.len()), (OP_BINARY, 2048));

    let mut too_big = client_frame(false, OP_TEXT, &[b'a'; 1000]);
    too_big.extend(client_frame(false, OP_CONTINUATION, &[b'b'; 1000]));
    too_big.extend(client_frame(true, OP_CONTINUATION, &[b'c'; 49]));
    let reason = expect_failure(&broker, &too_big, 1009);
    assert_eq!(reason, "message too large");
}

#[test]
fn too_many_fragments_is_1009() {
    let broker = Broker::start(&["--max-fragments-per-message", "3"]);
    let message = |fragments: usize| {
        let mut bytes = client_frame(false, OP_TEXT, b"f");
        for i in 1..fragments {
            bytes.extend(client_frame(i + 1 == fragments, OP_CONTINUATION, b"f"));
        }
        bytes
    };
    let mut stream = broker.raw_handshake(ECHO);
    stream.write_all(&message(3)).unwrap();
    assert_eq!(read_server_frame(&mut stream), (OP_TEXT, b"fff".to_vec()));
    let reason = expect_failure(&broker, &message(4), 1009);
    assert_eq!(reason, "too many fragments in one message");
}

#[test]
fn tungstenite_client_sees_1009_for_an_oversized_message() {
    let broker = Broker::start(&["--max-message-bytes", "4096", "--max-frame-bytes", "4096"]);
    let mut ws = broker.connect_ws(ECHO);
    ws.send(Message::binary(vec![0u8; 4096])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8; 4096]));
    ws.send(Message::binary(vec![0u8; 4097])).unwrap();
    match ws.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected close 1009, got {other:?}"),
    }
}

// ------------------------------------------------------------ flow control

#[test]
fn sixteen_megabytes_echo_while_writing_and_reading_concurrently() {
    let broker = Broker::start(&[]);
    let mut stream = broker.raw_handshake(ECHO);
    let mut writer = stream.try_clone().unwrap();
    const MESSAGES: usize = 256;
    const SIZE: usize = 64 * 1024;
    let sender = std::thread::spawn(move || {
        for i in 0..MESSAGES {
            let payload = vec![(i % 251) as u8; SIZE];
            writer
                .write_all(&client_frame(true, OP_BINARY, &payload))
                .unwrap();
        }
    });
    for i in 0..MESSAGES {
        let (opcode, payload) = read_server_frame(&mut stream);
        assert_eq!((opcode, payload.len()), (OP_BINARY, SIZE), "message {i}");
        assert!(payload.iter().all(|&b| b == (i % 251) as u8), "message {i}");
    }
    sender.join().unwrap();
}

#[test]
fn one_mebibyte_message_at_the_default_limit_is_echoed() {
    let broker = Broker::start(&[]);
    let mut ws = broker.connect_ws(ECHO);
    let payload: Vec<u8> = (0..1_048_576u32).map(|i| (i >> 3) as u8).collect();
    ws.send(Message::binary(payload.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(payload));
}

// ------------------------------------------------------------ arbitrary splits

/// Cuts `bytes` at the given indices (sorted, possibly repeated).
fn cut(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for point in points.into_iter().chain([bytes.len()]) {
        pieces.push(bytes[start..point].to_vec());
        start = point;
    }
    pieces
}

/// However messages are fragmented (even inside a code point) and however
/// the byte stream is cut into writes, each message comes back whole.
#[test]
fn echo_survives_arbitrary_fragmentation_and_write_splits() {
    let broker = Broker::start(&[]);
    let message = (
        any::<bool>(),
        "(?s).{0,60}",
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    );
    let strategy = (
        prop::collection::vec(message, 1..5),
        prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    );
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&strategy, |(messages, write_cuts)| {
        let mut stream = broker.raw_handshake(ECHO);
        let mut bytes = Vec::new();
        for (is_text, text, fragment_cuts) in &messages {
            let opcode = if *is_text { OP_TEXT } else { OP_BINARY };
            let fragments = cut(text.as_bytes(), fragment_cuts);
            let last = fragments.len() - 1;
            for (i, fragment) in fragments.iter().enumerate() {
                let op = if i == 0 { opcode } else { OP_CONTINUATION };
                bytes.extend(client_frame(i == last, op, fragment));
            }
        }
        for piece in cut(&bytes, &write_cuts) {
            stream.write_all(&piece).unwrap();
        }
        for (is_text, text, _) in &messages {
            let opcode = if *is_text { OP_TEXT } else { OP_BINARY };
            prop_assert_eq!(
                read_server_frame(&mut stream),
                (opcode, text.as_bytes().to_vec())
            );
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
