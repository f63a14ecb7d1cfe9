//! permessage-deflate (RFC 7692) end to end: what the 101 agrees, compressed
//! ticks on the wire (RSV1 and the bytes), compressed client messages and
//! the close codes of bad ones, the compression bomb, one compression per
//! publish however many subscribers share it, and real clients that
//! compress by default (Python `websockets`, Node `ws`).

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::process::Command;

use common::*;

/// An order-book snapshot of `levels` rows a side, about 16 bytes a row.
fn book(levels: usize) -> String {
    let rows: Vec<String> = (0..levels)
        .map(|i| format!("[{}.{:02},{}]", 100 + i, (i * 7) % 100, 1000 + i * 13))
        .collect();
    format!(
        r#"{{"bids":[{}],"asks":[{}]}}"#,
        rows.join(","),
        rows.join(",")
    )
}

/// Reads server frames until a text one; returns (RSV1, payload inflated).
fn next_message(stream: &mut TcpStream) -> (bool, Vec<u8>) {
    loop {
        let (rsv1, opcode, payload) = read_server_frame_rsv1(stream);
        match opcode {
            OP_TEXT if rsv1 => return (true, inflate_message(&payload)),
            OP_TEXT => return (false, payload),
            OP_PING => {}
            other => panic!("unexpected opcode {other:#x}: {payload:?}"),
        }
    }
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

#[test]
fn negotiation_answers() {
    let broker = Broker::start(&[]);
    let cases: &[(Option<&str>, Option<String>)] = &[
        (None, None),
        (Some(CHROME_OFFER), Some(AGREED.to_owned())),
        (Some("permessage-deflate"), Some(AGREED.to_owned())),
        (
            Some("permessage-deflate; server_max_window_bits=9"),
            Some(format!("{AGREED}; server_max_window_bits=9")),
        ),
        // zlib has no raw 8-bit window: declined, and the fallback taken.
        (Some("permessage-deflate; server_max_window_bits=8"), None),
        (
            Some("permessage-deflate; server_max_window_bits=8, permessage-deflate"),
            Some(AGREED.to_owned()),
        ),
        (
            Some("permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
            None,
        ),
        (Some("permessage-deflate; mystery=1"), None),
        (Some("x-webkit-deflate-frame"), None),
    ];
    for path in [WS, ECHO] {
        for (offer, expected) in cases {
            let (_stream, agreed) = broker.deflate_handshake(path, *offer);
            assert_eq!(&agreed, expected, "{path} offered {offer:?}");
        }
    }
    // Configured off: every offer declined, no header at all.
    let off = Broker::start(&["--set", "websocket.deflate=false"]);
    let (_stream, agreed) = off.deflate_handshake(WS, Some(CHROME_OFFER));
    assert_eq!(agreed, None);
}

#[test]
fn raw_subscriber_gets_compressed_ticks_and_plain_events() {
    let broker = Broker::start(&[]);
    let (mut sub, agreed) = broker.deflate_handshake(WS, Some(CHROME_OFFER));
    assert_eq!(agreed.as_deref(), Some(AGREED));
    sub.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sub.write_all(&client_frame(
        true,
        OP_TEXT,
        br#"{"op":"sub","topic":"BOOK"}"#,
    ))
    .unwrap();
    let (compressed, event) = next_message(&mut sub);
    assert!(!compressed, "events go plain");
    assert_eq!(json(&event)["event"], "subscribed");

    let mut publisher = broker.pubsub();
    let snapshot = book(60);
    publisher.publish("BOOK", &snapshot);
    // Under deflate_min_bytes (128): plain.
    publisher.publish("BOOK", "1");

    let (rsv1, opcode, payload) = read_server_frame_rsv1(&mut sub);
    assert!(rsv1 && opcode == OP_TEXT, "a compressed text frame");
    let envelope = inflate_message(&payload);
    let tick = json(&envelope);
    assert_eq!(tick["seq"], 1);
    assert_eq!(tick["data"], json(snapshot.as_bytes()));
    assert!(
        payload.len() * 2 < envelope.len(),
        "{} of {}",
        payload.len(),
        envelope.len()
    );
    // The bytes are level-1 raw deflate of the envelope, tail removed.
    assert_eq!(payload, deflate_message(&envelope, 1));
    assert!(!payload.ends_with(&[0, 0, 0xff, 0xff]));

    let (compressed, small) = next_message(&mut sub);
    assert!(!compressed, "a tick under deflate_min_bytes goes plain");
    assert_eq!(json(&small)["data"], 1);

    // A late subscriber gets the snapshot compressed too: the last value
    // holds the same compressed frame.
    let (mut late, _) = broker.deflate_handshake(WS, Some("permessage-deflate"));
    late.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    late.write_all(&client_frame(
        true,
        OP_TEXT,
        br#"{"op":"sub","topic":"BOOK","since":0}"#,
    ))
    .unwrap();
    assert_eq!(json(&next_message(&mut late).1)["event"], "subscribed");
    let (rsv1, _, replayed) = read_server_frame_rsv1(&mut late);
    assert!(rsv1);
    assert_eq!(replayed, payload, "the replay shares the compressed frame");
}

#[test]
fn small_window_clients_get_frames_they_can_inflate() {
    let broker = Broker::start(&[]);
    let (mut sub, agreed) =
        broker.deflate_handshake(WS, Some("permessage-deflate; server_max_window_bits=9"));
    assert_eq!(agreed, Some(format!("{AGREED}; server_max_window_bits=9")));
    sub.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sub.write_all(&client_frame(
        true,
        OP_TEXT,
        br#"{"op":"sub","topic":"W9"}"#,
    ))
    .unwrap();
    next_message(&mut sub);
    let mut publisher = broker.pubsub();
    let big = book(150);
    assert!(big.len() > 2048);
    publisher.publish("W9", &big);
    let (rsv1, _, payload) = read_server_frame_rsv1(&mut sub);
    assert!(rsv1);
    // A 512-byte window inflater reads it.
    let mut input = payload.clone();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut inflater = flate2::Decompress::new_with_window_bits(false, 9);
    let mut out = Vec::with_capacity(big.len() * 2);
    inflater
        .decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync)
        .expect("inflates with a 9-bit window");
    assert_eq!(json(&out)["data"], json(big.as_bytes()));
}

#[test]
fn compressed_publishes_reach_subscribers() {
    let broker = Broker::start(&[]);
    let mut subscriber = broker.pubsub();
    subscriber.subscribe("OPS");
    let (mut publisher, _) = broker.deflate_handshake(WS, Some(CHROME_OFFER));
    let op = |i: usize| {
        format!(
            r#"{{"op":"pub","topic":"OPS","data":{{"i":{i},"book":{}}}}}"#,
            book(10)
        )
    };
    // One frame, then a message fragmented over three frames (RSV1 on the first only).
    publisher
        .write_all(&compressed_client_frame(
            true,
            OP_TEXT,
            &deflate_message(op(1).as_bytes(), 6),
        ))
        .unwrap();
    let compressed = deflate_message(op(2).as_bytes(), 1);
    let third = compressed.len() / 3;
    let mut frames = compressed_client_frame(false, OP_TEXT, &compressed[..third]);
    frames.extend(client_frame(
        false,
        OP_CONTINUATION,
        &compressed[third..2 * third],
    ));
    frames.extend(client_frame(true, OP_PING, b"between"));
    frames.extend(client_frame(
        true,
        OP_CONTINUATION,
        &compressed[2 * third..],
    ));
    publisher.write_all(&frames).unwrap();
    for i in 1..=2 {
        let tick = subscriber.expect_tick("a compressed publish");
        assert_eq!(tick.seq, i);
        assert!(tick.data.contains(&format!(r#""i":{i}"#)), "{}", tick.data);
    }
    wait_for_metrics(&broker, "two inflated messages", |text| {
        metric_sum(text, "tickfan_inflated_messages_total") == 2.0
    });
}

#[test]
fn bad_compressed_frames_close_with_their_codes() {
    let broker = Broker::start(&[]);
    let fail = |frames: Vec<u8>, code: u16| {
        let (mut stream, agreed) = broker.deflate_handshake(ECHO, Some("permessage-deflate"));
        assert!(agreed.is_some());
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.write_all(&frames).unwrap();
        let (got, reason) = read_close(&mut stream);
        assert_eq!(got, code, "{reason}");
        let _ = stream.write_all(&client_close(code, b""));
        let _ = stream.shutdown(Shutdown::Write);
        expect_eof(&mut stream);
        reason
    };
    let mut ping = client_frame(true, OP_PING, b"x");
    ping[0] |= 0x40;
    assert!(fail(ping, 1002).contains("control"));
    let mut continuation = client_frame(true, OP_CONTINUATION, b"b");
    continuation[0] |= 0x40;
    let mut frames = compressed_client_frame(false, OP_TEXT, &deflate_message(b"a", 1));
    frames.extend(continuation);
    assert!(fail(frames, 1002).contains("continuation"));
    assert!(fail(
        compressed_client_frame(true, OP_TEXT, &[0xff, 0xff, 0xff]),
        1002
    )
    .contains("deflate"));
    let bad_utf8 = deflate_message(&[b'a', 0xff, b'b'], 1);
    assert!(fail(compressed_client_frame(true, OP_TEXT, &bad_utf8), 1007).contains("UTF-8"));
    // RSV2 stays reserved.
    let mut rsv2 = client_frame(true, OP_TEXT, b"x");
    rsv2[0] |= 0x20;
    fail(rsv2, 1002);

    // Without the extension agreed, RSV1 is a reserved bit.
    let frames = compressed_client_frame(true, OP_TEXT, &deflate_message(b"hi", 1));
    expect_failure(&broker, &frames, 1002);

    // The echo route answers in kind: compressed for compressed, plain for plain.
    let (mut stream, _) = broker.deflate_handshake(ECHO, Some(CHROME_OFFER));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let text = "échos ".repeat(50);
    stream
        .write_all(&compressed_client_frame(
            true,
            OP_TEXT,
            &deflate_message(text.as_bytes(), 9),
        ))
        .unwrap();
    let (rsv1, opcode, payload) = read_server_frame_rsv1(&mut stream);
    assert!(rsv1 && opcode == OP_TEXT);
    assert_eq!(inflate_message(&payload), text.as_bytes());
    stream
        .write_all(&client_frame(true, OP_TEXT, b"plain"))
        .unwrap();
    let (rsv1, _, payload) = read_server_frame_rsv1(&mut stream);
    assert!(!rsv1);
    assert_eq!(payload, b"plain");
}

/// The compressed form of `copies` MiB of zeros: one MiB compressed once,
/// repeated (each copy is sync-flushed, so they chain into one stream).
fn zero_bomb(copies: usize) -> Vec<u8> {
    let mut one = deflate_message(&vec![0u8; 1 << 20], 9);
    one.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut bomb = one.repeat(copies);
    bomb.truncate(bomb.len() - 4);
    bomb
}

#[test]
fn compression_bombs_close_1009_with_flat_memory() {
    let broker = Broker::start(&[
        "--max-frame-bytes",
        "2097152",
        "--max-message-bytes",
        "2097152",
    ]);
    let before = rss_kib(broker.pid());
    // ~10 KB that inflates to 10 MiB, and ~1 MB that inflates to 1 GiB.
    for copies in [10, 1024] {
        let bomb = zero_bomb(copies);
        assert!(bomb.len() < copies * 1100, "{} bytes", bomb.len());
        let (mut stream, _) = broker.deflate_handshake(ECHO, Some("permessage-deflate"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
            .write_all(&compressed_client_frame(true, OP_BINARY, &bomb))
            .unwrap();
        let (code, reason) = read_close(&mut stream);
        assert_eq!(code, 1009, "{reason}");
    }
    let after = rss_kib(broker.pid());
    // The inflate buffer never passed max_message_bytes (2 MiB); the 1 MB
    // bomb itself sat in a read buffer. Far from the 1 GiB it asked for.
    assert!(
        after < before + 16 * 1024,
        "RSS {before} KiB -> {after} KiB"
    );
    // A message inflating to just the bound is fine.
    let (mut stream, _) = broker.deflate_handshake(ECHO, Some("permessage-deflate"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let exact = vec![b'z'; 2_097_152];
    stream
        .write_all(&compressed_client_frame(
            true,
            OP_BINARY,
            &deflate_message(&exact, 1),
        ))
        .unwrap();
    let (rsv1, opcode, payload) = read_server_frame_rsv1(&mut stream);
    assert!(rsv1 && opcode == OP_BINARY);
    assert_eq!(inflate_message(&payload), exact);
}

#[test]
fn one_compression_per_publish_for_every_subscriber() {
    let broker = Broker::start(&[]);
    let subscribers: Vec<TcpStream> = (0..24)
        .map(|i| {
            // Every third asks for a 9-bit window: ticks of ~300 bytes fit
            // it, so they share the one compressed form.
            let offer = if i % 3 == 0 {
                "permessage-deflate; server_max_window_bits=9"
            } else {
                CHROME_OFFER
            };
            let (mut stream, agreed) = broker.deflate_handshake(WS, Some(offer));
            assert!(agreed.is_some());
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            stream
                .write_all(&client_frame(true, OP_TEXT, br#"{"op":"sub","topic":"Q"}"#))
                .unwrap();
            assert_eq!(json(&next_message(&mut stream).1)["event"], "subscribed");
            stream
        })
        .collect();
    let mut plain = broker.pubsub();
    plain.subscribe("Q");
    let mut publisher = broker.pubsub();
    let publishes = 40;
    for i in 0..publishes {
        publisher.publish(
            "Q",
            &format!(r#"{{"bid":{i}.25,"ask":{i}.5,"bid_size":100,"ask_size":200,"venue":"XNAS","quote_id":"q-{i}","flags":["regular","firm"],"padding":"{}"}}"#, "ab".repeat(60)),
        );
    }
    for mut stream in subscribers {
        for i in 0..publishes {
            let (compressed, tick) = next_message(&mut stream);
            assert!(compressed);
            assert_eq!(json(&tick)["seq"], i + 1);
        }
    }
    for i in 0..publishes {
        assert_eq!(plain.expect_tick("plain").seq, i + 1);
    }
    wait_for_metrics(&broker, "one compression per publish", |text| {
        metric_sum(text, "tickfan_deflate_compressions_total") == publishes as f64
    });
    let text = scrape_metrics(&broker);
    let bytes_in = metric_sum(&text, "tickfan_deflate_bytes_total{stage=\"in\"");
    let bytes_out = metric_sum(&text, "tickfan_deflate_bytes_total{stage=\"out\"");
    assert!(
        bytes_out > 0.0 && bytes_out < bytes_in,
        "{bytes_in} -> {bytes_out}"
    );
}

/// Runs a client script that prints "ready" once subscribed, publishes
/// `count` order books for it, and returns what else it printed.
fn run_client(mut command: Command, broker: &Broker, topic: &str, count: usize) -> String {
    let client = ClientRun::start(&mut command);
    if client.first_line.trim() != "ready" {
        client.fail();
    }
    let mut publisher = broker.pubsub();
    for i in 1..=count {
        publisher.publish(topic, &format!(r#"{{"i":{i},"book":{}}}"#, book(40)));
    }
    client.finish()
}

#[test]
fn python_websockets_negotiates_and_compresses_both_ways() {
    let Some(python) = clients_python() else {
        eprintln!("skipped: no .venv/clients (scripts/install-test-deps.sh makes it)");
        return;
    };
    let broker = Broker::start(&[]);
    let script = r#"
import asyncio, json, sys
import websockets

async def main(port):
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=2**22) as ws:
        ext = ws.protocol.extensions
        assert len(ext) == 1 and ext[0].name == "permessage-deflate", ext
        assert ext[0].remote_no_context_takeover and ext[0].local_no_context_takeover, vars(ext[0])
        await ws.send(json.dumps({"op": "sub", "topic": "PYZ"}))
        assert json.loads(await ws.recv())["event"] == "subscribed"
        print("ready", flush=True)
        for _ in range(10):
            tick = json.loads(await ws.recv())
            print(tick["seq"], tick["data"]["i"], flush=True)
        # A compressed publish of our own (websockets compresses every message).
        await ws.send(json.dumps({"op": "pub", "topic": "PYZ", "data": {"i": 11, "pad": "x" * 500}}))
        tick = json.loads(await ws.recv())
        print(tick["seq"], tick["data"]["i"], flush=True)

asyncio.run(main(int(sys.argv[1])))
"#;
    let mut command = Command::new(&python);
    command.args(["-c", script, &broker.addr().port().to_string()]);
    let printed = run_client(command, &broker, "PYZ", 10);
    let expected: String = (1..=11).map(|i| format!("{i} {i}\n")).collect();
    assert_eq!(printed, expected);
    wait_for_metrics(&broker, "the Python publish inflated", |text| {
        metric_sum(text, "tickfan_inflated_messages_total") >= 1.0
            && metric_sum(text, "tickfan_deflate_compressions_total") == 11.0
    });
}

#[test]
fn node_ws_offers_by_default_and_compresses_both_ways() {
    let Some(dir) = node_clients() else {
        eprintln!("skipped: no tests/clients/node/node_modules (scripts/install-test-deps.sh installs ws)");
        return;
    };
    let broker = Broker::start(&[]);
    let script = r#"
const WebSocket = require('ws');
const port = process.argv[1];
const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
let seen = 0;
ws.on('open', () => {
  if (!ws.extensions.includes('permessage-deflate')) {
    console.error('no deflate agreed: ' + ws.extensions);
    process.exit(2);
  }
  ws.send(JSON.stringify({op: 'sub', topic: 'NODEZ'}));
});
ws.on('message', (data, isBinary) => {
  const msg = JSON.parse(data.toString());
  if (msg.event === 'subscribed') { console.log('ready'); return; }
  seen += 1;
  console.log(`${msg.seq} ${msg.data.i}`);
  if (seen === 10) {
    // Over ws's 1 KiB threshold, so it goes compressed.
    ws.send(JSON.stringify({op: 'pub', topic: 'NODEZ', data: {i: 11, pad: 'y'.repeat(2000)}}));
  }
  if (seen === 11) ws.close(1000);
});
ws.on('close', () => process.exit(seen === 11 ? 0 : 3));
ws.on('error', (e) => { console.error(e); process.exit(4); });
"#;
    let mut command = Command::new("node");
    command
        .current_dir(&dir)
        .args(["-e", script, &broker.addr().port().to_string()]);
    let printed = run_client(command, &broker, "NODEZ", 10);
    let expected: String = (1..=11).map(|i| format!("{i} {i}\n")).collect();
    assert_eq!(printed, expected);
    wait_for_metrics(&broker, "the Node publish inflated", |text| {
        metric_sum(text, "tickfan_inflated_messages_total") >= 1.0
            && metric_sum(text, "tickfan_deflate_compressions_total") == 11.0
    });
}
