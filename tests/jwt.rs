//! Per-user access with JWTs, against the broker binary: the token passed
//! as `Authorization: Bearer`, `?token=`, a `tickfan.token.<jwt>`
//! subprotocol entry and in-band `{"op":"auth"}`; topics outside the
//! token's `tf.sub` / `tf.pub` refused with the `forbidden` event over
//! WebSocket and 403 over SSE, long-poll and `POST /publish`; the
//! expiry warning, an in-band refresh that keeps the stream going with no
//! gap, and close 4001 at expiry without one; the metrics; and no token in
//! the broker's log (captured stderr at `debug`).
//!
//! Tokens are made here with an HMAC secret the broker is given with
//! `--set`. WebSocket clients are tungstenite and the hand-written
//! [`PsClient`]; HTTP is a plain `TcpStream`. Reads have timeouts and waits
//! have deadlines.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::Message;

const SECRET: &str = "integration-test-secret-0123456789abcdef";
const SERVICE: &str = "service-token";

/// A broker with JWTs on (HS256, no leeway), a static publish token for
/// services, subscribing only with a token, and `extra` flags.
fn jwt_broker(extra: &[&str]) -> Broker {
    let secret = format!("jwt.hmac_secret={SECRET}");
    let mut args = vec![
        "--set",
        "jwt.algorithm=HS256",
        "--set",
        &secret,
        "--set",
        "jwt.leeway_secs=0",
        "--set",
        "auth.subscribe_requires_token=true",
        "--set",
        "log.level=debug",
        "--publish-token",
        SERVICE,
    ];
    args.extend_from_slice(extra);
    Broker::start(&args)
}

/// A token for `sub` valid `ttl_secs` from now (past, when negative),
/// granting `tf.sub` / `tf.pub`.
fn token(sub: &str, ttl_secs: i64, subscribe: &[&str], publish: &[&str]) -> String {
    let claims = json!({
        "sub": sub,
        "exp": get_current_timestamp() as i64 + ttl_secs,
        "tf.sub": subscribe,
        "tf.pub": publish,
    });
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Fails if any of `tokens` (or the secret) appears in the broker's stderr.
fn assert_no_token_logged(broker: &Broker, tokens: &[&str]) {
    let log = broker.stderr_text();
    assert!(
        log.contains("token presented"),
        "debug log lines were captured: {log}"
    );
    for secret in tokens.iter().chain([&SECRET, &SERVICE]) {
        // The signature alone is secret enough to look for.
        let tail = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(tail), "a token appears in the log:\n{log}");
    }
}

/// Subscribing to `allowed` works and to `denied` gets `forbidden`.
fn assert_topic_rights(client: &mut PsClient, allowed: &str, denied: &str) {
    client.subscribe(allowed);
    client.send_text(&json!({"op": "sub", "topic": denied}).to_string());
    let error = client.expect_event("error");
    assert_eq!(error["code"], "forbidden", "{error}");
    assert_eq!(error["topic"], denied, "{error}");
}

#[test]
fn websocket_takes_the_token_by_header_query_subprotocol_and_in_band() {
    let broker = jwt_broker(&[]);
    let alice = token("alice", 600, &["prices.>"], &[]);

    let bearer = format!("Bearer {alice}");
    let mut by_header = broker.pubsub_with(WS, &[("Authorization", &bearer)]);
    assert_topic_rights(&mut by_header, "prices.AAPL", "news.AAPL");

    let mut by_query = broker.pubsub_with(&format!("{WS}?token={alice}"), &[]);
    assert_topic_rights(&mut by_query, "prices.MSFT", "prices");

    // A browser's way: the token as a subprotocol entry next to tickfan.v1,
    // with a real client; only tickfan.v1 is echoed.
    let mut request = broker.ws_url(WS).into_client_request().unwrap();
    let offer = format!("tickfan.v1, tickfan.token.{alice}");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(&offer).unwrap(),
    );
    let (mut ws, response) = tungstenite::client(request, broker.tcp()).unwrap();
    assert_eq!(
        response.headers()["Sec-WebSocket-Protocol"],
        "tickfan.v1",
        "only the real subprotocol is echoed"
    );
    ws.send(Message::text(r#"{"op":"sub","topic":"prices.IBM"}"#))
        .unwrap();
    let event: Value = serde_json::from_str(&next_ws_text(&mut ws)).unwrap();
    assert_eq!(event["event"], "subscribed", "{event}");
    ws.send(Message::text(r#"{"op":"sub","topic":"news.IBM"}"#))
        .unwrap();
    let event: Value = serde_json::from_str(&next_ws_text(&mut ws)).unwrap();
    assert_eq!(event["code"], "forbidden", "{event}");

    // No token at the upgrade: only `auth` is accepted, then the token's rights hold.
    let mut in_band = broker.pubsub();
    in_band.send_text(r#"{"op":"sub","topic":"prices.AAPL"}"#);
    assert_eq!(in_band.expect_event("error")["code"], "forbidden");
    in_band.send_text(&json!({"op": "auth", "token": alice}).to_string());
    let authenticated = in_band.expect_event("authenticated");
    assert_eq!(authenticated["sub"], "alice", "{authenticated}");
    assert_topic_rights(&mut in_band, "prices.AAPL", "news.AAPL");

    // The static publish token still works for services, on every topic.
    let mut service = broker.pubsub_with(&format!("{WS}?token={SERVICE}"), &[]);
    service.publish("prices.AAPL", "1");
    service.publish("news.AAPL", "2");
    assert_eq!(by_header.expect_tick("a tick").seq, 1);
    assert_eq!(in_band.expect_tick("a tick").seq, 1);

    // Bad tokens are refused at the upgrade (401), counted by result.
    let expired = token("alice", -5, &["prices.>"], &[]);
    let (body, signature) = alice.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{body}.{flipped}{}", &signature[1..]);
    for bad in [&expired, &forged] {
        let refused = PsClient::upgrade(broker.tcp(), &format!("{WS}?token={bad}"), &[]);
        assert_eq!(refused.err().map(|r| r.status), Some(401));
    }
    wait_for_metrics(&broker, "auth results", |text| {
        let count = |result: &str| {
            metric_sum(
                text,
                &format!(
                    "tickfan_authentications_total{{result=\"{result}\",transport=\"websocket\"}}"
                ),
            )
        };
        count("ok") >= 3.0 && count("forbidden_topic") >= 3.0 && count("expired") >= 1.0
    });
    assert_no_token_logged(&broker, &[&alice, &expired, &forged]);
}

#[test]
fn a_client_without_a_token_must_authenticate_in_band_in_time() {
    let broker = jwt_broker(&["--set", "websocket.handshake_timeout_ms=500"]);
    let mut idle = broker.pubsub();
    assert_eq!(
        idle.read_until_close(),
        Some((4003, "authentication required".to_owned()))
    );
    let mut wrong = broker.pubsub();
    wrong.send_text(r#"{"op":"auth","token":"not.a.jwt"}"#);
    assert_eq!(
        wrong.read_until_close(),
        Some((4003, "authentication failed".to_owned()))
    );
}

#[test]
fn forbidden_topics_are_403_over_sse_long_poll_and_publish() {
    let broker = jwt_broker(&[]);
    let bob = token("bob", 600, &["prices.*"], &["orders.bob"]);

    // Long-poll: the token as `?token=`, as EventSource and polls send it.
    let allowed = get_once(
        &broker,
        &format!("/poll?topic=prices.AAPL&timeout=0&token={bob}"),
    );
    assert!(matches!(allowed.status, 200 | 204), "{}", allowed.text());
    for query in [
        format!("/poll?topic=prices.A.B&timeout=0&token={bob}"),
        format!("/poll?topic=prices.AAPL&topic=news&timeout=0&token={bob}"),
    ] {
        let denied = get_once(&broker, &query);
        assert_eq!(denied.status, 403, "{}", denied.text());
    }
    assert_eq!(
        get_once(&broker, "/poll?topic=prices.AAPL&timeout=0").status,
        401
    );

    // SSE.
    let mut sse = SseReader::open(&broker, &format!("/sse?topic=prices.AAPL&token={bob}"));
    assert_eq!(sse.next_json()["event"], "subscribed");
    let denied = get_once(&broker, &format!("/sse?topic=news.AAPL&token={bob}"));
    assert_eq!(denied.status, 403, "{}", denied.text());

    // POST /publish with the token as a Bearer header.
    let bearer = format!("Authorization: Bearer {bob}\r\n");
    let mut publisher = broker.tcp();
    let ok = http_post(
        &mut publisher,
        "/publish?topic=orders.bob",
        &bearer,
        b"{\"qty\":1}",
    );
    assert_eq!(ok.status, 202, "{}", ok.text());
    let (denied, _) = http_exchange_bytes(
        &broker,
        &post_request("/publish?topic=orders.eve", &bearer, b"1"),
    );
    assert_eq!(denied.status, 403, "{}", denied.text());
    // A batch with one forbidden topic publishes nothing.
    let batch = b"{\"topic\":\"orders.bob\",\"data\":2}\n{\"topic\":\"prices.AAPL\",\"data\":3}\n";
    let (denied, _) = http_exchange_bytes(&broker, &post_request("/publish", &bearer, batch));
    assert_eq!(denied.status, 403, "{}", denied.text());
    // A token without tf.pub cannot publish at all (401), like no token.
    let reader = token("carol", 600, &["prices.*"], &[]);
    let (refused, _) = http_exchange_bytes(
        &broker,
        &post_request(
            "/publish?topic=orders.bob",
            &format!("Authorization: Bearer {reader}\r\n"),
            b"1",
        ),
    );
    assert_eq!(refused.status, 401, "{}", refused.text());

    // The service publishes to prices.AAPL; bob's SSE stream gets it.
    let mut service = broker.tcp();
    let sent = http_post(
        &mut service,
        "/publish?topic=prices.AAPL",
        &format!("Authorization: Bearer {SERVICE}\r\n"),
        b"7",
    );
    assert_eq!(sent.status, 202, "{}", sent.text());
    assert_eq!(sse.next_json()["data"], 7);
    let orders = get_once(
        &broker,
        &format!("/poll?topic=orders.bob&since=orders.bob:0&timeout=0&token={SERVICE}"),
    );
    assert_eq!(
        orders.json()["ticks"].as_array().map(Vec::len),
        Some(1),
        "{}",
        orders.text()
    );

    wait_for_metrics(&broker, "forbidden topics by transport", |text| {
        ["longpoll", "sse", "http_publish"].iter().all(|transport| {
            metric_sum(
                text,
                &format!(
                    "tickfan_authentications_total{{result=\"forbidden_topic\",transport=\"{transport}\"}}"
                ),
            ) >= 1.0
        })
    });
    assert_no_token_logged(&broker, &[&bob, &reader]);
}

#[test]
fn a_refresh_before_expiry_keeps_the_stream_going_with_no_gap() {
    let broker = jwt_broker(&["--set", "jwt.expiry_warning_secs=2"]);
    let first = token("dave", 3, &["prices.>"], &[]);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut subscriber = broker.pubsub_with(&format!("{WS}?token={first}"), &[]);
    subscriber.subscribe("prices.AAPL");
    let mut service = broker.pubsub_with(&format!("{WS}?token={SERVICE}"), &[]);

    // Tick by tick, past the first token's expiry: every seq arrives once,
    // in order, while the token is refreshed in-band on the warning.
    let fresh = token("dave", 600, &["prices.>"], &[]);
    let (mut published, mut received, mut refreshed) = (0u64, 0u64, false);
    let mut events = Vec::new();
    while Instant::now() < deadline + Duration::from_secs(2) && published < 100_000 {
        published += 1;
        service.publish("prices.AAPL", &published.to_string());
        loop {
            match subscriber.recv() {
                Msg::Tick(tick) => {
                    assert_eq!(tick.seq, received + 1, "no gap, no repeat");
                    received = tick.seq;
                    break;
                }
                Msg::Event(event) => {
                    if event["event"] == "token_expiring" {
                        assert!(event["expires_in_ms"].as_u64().unwrap() <= 3000, "{event}");
                        subscriber.send_text(&json!({"op": "auth", "token": fresh}).to_string());
                    } else if event["event"] == "authenticated" {
                        assert_eq!(event["sub"], "dave");
                        refreshed = true;
                    }
                    events.push(event["event"].as_str().unwrap().to_owned());
                }
            }
        }
    }
    assert!(refreshed, "the refresh was accepted: {events:?}");
    assert_eq!(received, published);
    assert!(
        Instant::now() > deadline,
        "the stream outlived the first token"
    );

    // A refresh for another user is refused, and the connection stays.
    let eve = token("eve", 600, &["prices.>"], &[]);
    subscriber.send_text(&json!({"op": "auth", "token": eve}).to_string());
    assert_eq!(subscriber.expect_event("error")["code"], "auth_failed");
    service.publish("prices.AAPL", "0");
    assert_eq!(
        subscriber.expect_tick("after the refused refresh").seq,
        published + 1
    );

    // A refresh with narrower topics ends the subscriptions it no longer grants.
    let narrower = token("dave", 600, &["news.>"], &[]);
    subscriber.send_text(&json!({"op": "auth", "token": narrower}).to_string());
    assert_eq!(
        subscriber.expect_event("unsubscribed")["topic"],
        "prices.AAPL"
    );
    subscriber.expect_event("authenticated");

    wait_for_metrics(&broker, "refreshes", |text| {
        metric_sum(text, "tickfan_token_refreshes_total{result=\"ok\"}") >= 2.0
            && metric_sum(text, "tickfan_token_refreshes_total{result=\"refused\"}") >= 1.0
    });
    assert_no_token_logged(&broker, &[&first, &fresh, &eve, &narrower]);
}

#[test]
fn without_a_refresh_the_connection_is_closed_with_4001_at_expiry() {
    let broker = jwt_broker(&["--set", "jwt.expiry_warning_secs=1"]);
    let short = token("frank", 2, &["prices.>"], &[]);
    let opened = Instant::now();
    let mut subscriber = broker.pubsub_with(&format!("{WS}?token={short}"), &[]);
    subscriber.subscribe("prices.AAPL");
    let warning = subscriber.expect_event("token_expiring");
    assert!(warning["exp"].as_u64().is_some(), "{warning}");
    let (code, reason) = subscriber.read_until_close().expect("a close frame");
    assert_eq!(code, 4001);
    assert!(reason.contains("token expired"), "{reason}");
    // The token ends 1-2 s after the open (exp is in whole seconds); the
    // bound is loose for a loaded machine: the point is that the close comes.
    assert!(
        opened.elapsed() <= Duration::from_secs(6),
        "closed at expiry"
    );

    // SSE has no close frame: an `error` event, then the stream ends.
    let mut sse = SseReader::open(
        &broker,
        &format!(
            "/sse?topic=prices.AAPL&token={}",
            token("frank", 2, &["prices.>"], &[])
        ),
    );
    let mut seen = HashSet::new();
    loop {
        let event = sse.next_json();
        let name = event["event"].as_str().unwrap_or("tick").to_owned();
        if name == "error" {
            assert_eq!(event["code"], "token_expired", "{event}");
            break;
        }
        seen.insert(name);
    }
    assert!(seen.contains("token_expiring"), "{seen:?}");
    sse.expect_end();

    wait_for_metrics(&broker, "expiry closes", |text| {
        metric_sum(text, "tickfan_token_expiry_closes_total") >= 2.0
    });
    assert_no_token_logged(&broker, &[&short]);
}

/// A `GET /sse` stream read as `data:` lines of JSON.
struct SseReader {
    reader: BufReader<std::net::TcpStream>,
}

impl SseReader {
    fn open(broker: &Broker, target: &str) -> SseReader {
        let mut stream = broker.tcp();
        stream.write_all(get_request(target).as_bytes()).unwrap();
        let head = read_head_only(&mut stream);
        assert_eq!(head.status, 200, "{head:?}");
        SseReader {
            reader: BufReader::new(stream),
        }
    }

    /// The JSON of the next `data:` line.
    fn next_json(&mut self) -> Value {
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .expect("read the SSE stream");
            assert!(n > 0, "the SSE stream ended");
            if let Some(data) = line.trim_end().strip_prefix("data:") {
                return serde_json::from_str(data.trim_start()).unwrap();
            }
        }
    }

    /// The stream ends (EOF) without more events.
    fn expect_end(&mut self) {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.reader, &mut rest);
        assert!(
            !rest.contains("data:"),
            "more events after the end: {rest:?}"
        );
    }
}

/// An EdDSA token for `sub` signed by the fixture key `private_pem`, naming `kid`.
fn eddsa_token(kid: &str, private_pem: &str) -> String {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/");
    let pem = std::fs::read(format!("{fixtures}{private_pem}")).unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    let claims = json!({"sub": "gina", "exp": get_current_timestamp() + 600, "tf.sub": [">"]});
    encode(&header, &claims, &EncodingKey::from_ed_pem(&pem).unwrap()).unwrap()
}

#[test]
fn sighup_rereads_the_jwks_file_and_a_bad_one_keeps_the_keys() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/");
    let jwks_text = std::fs::read_to_string(format!("{fixtures}jwks.json")).unwrap();
    let jwks: Value = serde_json::from_str(&jwks_text).unwrap();
    let path = std::env::temp_dir().join(format!("tickfan-jwks-{}.json", std::process::id()));
    std::fs::write(&path, &jwks_text).unwrap();
    let jwks_file = format!("jwt.jwks_file={}", path.display());
    let broker = Broker::start(&[
        "--set",
        "jwt.algorithm=EdDSA",
        "--set",
        &jwks_file,
        "--set",
        "auth.subscribe_requires_token=true",
    ]);
    let k1 = eddsa_token("k1", "ed25519_private.pem");
    let k2 = eddsa_token("k2", "ed25519_other_private.pem");
    let admitted =
        |token: &str| PsClient::upgrade(broker.tcp(), &format!("{WS}?token={token}"), &[]).is_ok();
    assert!(admitted(&k1) && admitted(&k2));

    // k1 rotated out.
    let only_k2 = json!({"keys": [jwks["keys"][1]]});
    std::fs::write(&path, only_k2.to_string()).unwrap();
    broker.send_sighup();
    let deadline = Instant::now() + IO_TIMEOUT;
    while admitted(&k1) {
        assert!(Instant::now() < deadline, "the JWK Set was not reread");
        std::thread::sleep(Duration::from_millis(20)); // polling a deadline, not synchronising
    }
    assert!(admitted(&k2));

    // A broken file: the reload fails and the keys in use stay.
    std::fs::write(&path, "not json").unwrap();
    broker.send_sighup();
    let deadline = Instant::now() + IO_TIMEOUT;
    while !broker.stderr_text().contains("JWT key reload failed") {
        assert!(
            Instant::now() < deadline,
            "the failed reload was not logged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(admitted(&k2) && !admitted(&k1));
    let _ = std::fs::remove_file(&path);
}
