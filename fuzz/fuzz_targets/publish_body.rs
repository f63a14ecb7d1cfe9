//! The `POST /publish` body parser (single JSON value or NDJSON batch) on
//! arbitrary bytes: no panic, and every accepted tick has a valid topic and
//! valid JSON data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickfan::topic::validate_topic;
use tickfan::http::publish::parse_publish_body;

fuzz_target!(|data: &[u8]| {
    let (topic, body) = match data.split_first() {
        Some((b'?', rest)) => (Some("T"), rest),
        _ => (None, data),
    };
    if let Ok(items) = parse_publish_body(topic, body) {
        assert!(!items.is_empty());
        for item in items {
            assert!(validate_topic(&item.topic).is_ok());
            // Syntactically valid JSON; numbers beyond f64 (2e400) are valid
            // JSON too, so no typed parse (found by this target).
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(item.data).is_ok());
        }
    }
});
