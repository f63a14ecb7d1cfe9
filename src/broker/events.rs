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
    if let Some(topic) = topic {
        event["topic"] = topic.into();
    }
    event.to_string().into_bytes()
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
