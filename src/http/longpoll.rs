//! The body of a long-poll answer: the ticks (in the same envelope as on a
//! WebSocket, embedded byte for byte), any gaps, and the cursor to send as
//! `since` next time.
//!
//! `{"ticks":[{"topic":..,"seq":..,...}],"gaps":[{"topic":..,"from":..,"to":..}],"cursor":"A:42,B:7","epochs":{"A":"..","B":".."}}`
//!
//! `epochs` gives each topic's numbering, to send back as `epoch=A:..,B:..`
//! with the cursor: a client that sees a topic's epoch change knows the
//! broker restarted (or reclaimed the topic) and its seqs start over.

use crate::tick::Tick;

/// Ticks `from..=to` of `topic` that can no longer be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub topic: String,
    pub from: u64,
    pub to: u64,
}

/// Builds the JSON body of a long-poll answer.
pub fn poll_body(ticks: &[Tick], gaps: &[Gap], cursor: &str, epochs: &[(&str, &str)]) -> Vec<u8> {
    // A capacity estimate only: saturating, as it can never be exact anyway.
    let size = ticks
        .iter()
        .fold(48usize, |n, t| {
            n.saturating_add(t.envelope().len()).saturating_add(1)
        })
        .saturating_add(gaps.len().saturating_mul(64))
        .saturating_add(cursor.len());
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(b"{\"ticks\":[");
    for (i, tick) in ticks.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(tick.envelope());
    }
    body.extend_from_slice(b"],\"gaps\":");
    let gaps: Vec<serde_json::Value> = gaps
        .iter()
        .map(|g| serde_json::json!({"topic": g.topic, "from": g.from, "to": g.to}))
        .collect();
    body.extend_from_slice(serde_json::Value::from(gaps).to_string().as_bytes());
    body.extend_from_slice(b",\"cursor\":");
    body.extend_from_slice(serde_json::Value::from(cursor).to_string().as_bytes());
    let epochs: serde_json::Map<String, serde_json::Value> = epochs
        .iter()
        .map(|(topic, epoch)| ((*topic).to_owned(), (*epoch).into()))
        .collect();
    body.extend_from_slice(b",\"epochs\":");
    body.extend_from_slice(serde_json::Value::from(epochs).to_string().as_bytes());
    body.push(b'}');
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::TopicId;
    use crate::topic::TopicName;

    #[test]
    fn body_is_json_with_envelopes_verbatim() {
        let ticks = [
            Tick::encode(
                TopicId(1),
                &TopicName::new("A").unwrap(),
                41,
                7,
                br#"{"b": 1.50}"#,
            ),
            Tick::encode(TopicId(1), &TopicName::new("A").unwrap(), 42, 8, b"2"),
        ];
        let gaps = [Gap {
            topic: "B".into(),
            from: 1,
            to: 3,
        }];
        let body = poll_body(&ticks, &gaps, "A:42,B:9", &[("A", "e1"), ("B", "e2")]);
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.contains(r#""data":{"b": 1.50}"#));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["ticks"][1]["seq"], 42);
        assert_eq!(v["gaps"][0]["to"], 3);
        assert_eq!(v["cursor"], "A:42,B:9");
        assert_eq!(v["epochs"]["B"], "e2");
    }
}
