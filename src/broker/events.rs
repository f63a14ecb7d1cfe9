//! Server → client events other than ticks (`subscribed`, `gap`, `error`,
//! `heartbeat`, `unsubscribed`), as JSON text. These are rare next to ticks,
//! so they are built per connection with serde_json.

use serde_json::json;

/// `{"event":"subscribed","topic":..,"seq":..,"epoch":..}`
pub fn subscribed(topic: &str, seq: u64, epoch: &str) -> Vec<u8> {
    json!({"event": "subscribed", "topic": topic, "seq": seq, "epoch": epoch})
        .to_string()
        .into_bytes()
}

/// `{"event":"unsubscribed","topic":..}`
pub fn unsubscribed(topic: &str) -> Vec<u8> {
    json!({"event": "unsubscribed", "topic": topic})
        .to_string()
        .into_bytes()
}

/// `{"event":"gap","topic":..,"from":..,"to":..}`: ticks `from..=to` cannot be replayed.
pub fn gap(topic: &str, from: u64, to: u64) -> Vec<u8> {
    json!({"event": "gap", "topic": topic, "from": from, "to": to})
        .to_string()
        .into_bytes()
}

/// `{"event":"error","code":..,"message":..}`, naming the topic when there is one.
pub fn error(code: &str, message: &str, topic: Option<&str>) -> Vec<u8> {
    let mut event = json!({"event": "error", "code": code, "message": message});
    // `event` is an object, so `as_object_mut` always gives its map (and,
    // unlike `event["topic"]`, has no panicking case).
    if let (Some(topic), Some(fields)) = (topic, event.as_object_mut()) {
        fields.insert("topic".to_owned(), topic.into());
    }
    event.to_string().into_bytes()
}

/// `{"event":"authenticated","sub":..,"exp":..}`: an in-band `auth` was
/// accepted; `exp` (seconds since the epoch) when the token has one.
pub fn authenticated(sub: Option<&str>, exp: Option<u64>) -> Vec<u8> {
    json!({"event": "authenticated", "sub": sub, "exp": exp})
        .to_string()
        .into_bytes()
}

/// `{"event":"token_expiring","exp":..,"expires_in_ms":..}`: send a fresh
/// token with `{"op":"auth"}` before then, or the connection is closed.
pub fn token_expiring(exp: u64, expires_in_ms: u64) -> Vec<u8> {
    json!({"event": "token_expiring", "exp": exp, "expires_in_ms": expires_in_ms})
        .to_string()
        .into_bytes()
}

/// `{"event":"heartbeat","seqs":{"AAPL":57,...}}`
pub fn heartbeat<'a>(seqs: impl Iterator<Item = (&'a str, u64)>) -> Vec<u8> {
    let seqs: serde_json::Map<String, serde_json::Value> = seqs
        .map(|(topic, seq)| (topic.to_string(), seq.into()))
        .collect();
    json!({"event": "heartbeat", "seqs": seqs})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
// Tests unwrap freely: a panic there is a failed test.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn error_names_the_topic_only_when_there_is_one() {
        let parse = |bytes: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&bytes).unwrap();
        assert_eq!(
            parse(error("bad_topic", "no", Some("A"))),
            json!({"event": "error", "code": "bad_topic", "message": "no", "topic": "A"})
        );
        assert_eq!(
            parse(error("bad_json", "no", None)),
            json!({"event": "error", "code": "bad_json", "message": "no"})
        );
    }
}
