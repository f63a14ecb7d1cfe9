//! The long-poll / SSE query and cursor parser on arbitrary query strings
//! and `Last-Event-ID` values: no panic, limits hold, and the cursors it
//! accepts format back into a string it accepts again.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tickfan::http::query::{format_cursor, parse_stream_request, QueryLimits};
use tickfan::http::request::{parse_request, Parsed};

const LIMITS: QueryLimits = QueryLimits {
    max_topics: 8,
    default_timeout: Duration::from_secs(25),
    max_timeout: Duration::from_secs(60),
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (query, last_event_id) = text.split_once('\n').unwrap_or((&text, ""));
    // Only bytes a request target may hold reach the parser through HTTP.
    if query.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return;
    }
    let raw = format!("GET /poll?{query} HTTP/1.1\r\nHost: x\r\n\r\n");
    let Ok(Parsed::Complete(request)) = parse_request(raw.as_bytes(), 1 << 16) else {
        return;
    };
    let last_event_id = Some(last_event_id).filter(|id| !id.is_empty());
    let Ok(stream) = parse_stream_request(&request, last_event_id, LIMITS) else {
        return;
    };
    assert!(!stream.topics.is_empty() && stream.topics.len() <= LIMITS.max_topics);
    assert!(stream.timeout <= LIMITS.max_timeout);
    let cursors: Vec<(&str, u64)> = stream
        .topics
        .iter()
        .filter_map(|t| t.since.map(|s| (t.topic.as_str(), s)))
        .collect();
    if cursors.is_empty() {
        return;
    }
    let topics: Vec<String> = stream.topics.iter().map(|t| format!("topic={}", t.topic)).collect();
    let again = format!(
        "GET /poll?{}&since={} HTTP/1.1\r\nHost: x\r\n\r\n",
        topics.join("&"),
        format_cursor(cursors.iter().copied())
    );
    let Ok(Parsed::Complete(request)) = parse_request(again.as_bytes(), 1 << 16) else {
        panic!("a formatted query must parse");
    };
    let reparsed = parse_stream_request(&request, None, LIMITS).expect("formatted cursors parse");
    for (topic, seq) in cursors {
        let found = reparsed.topics.iter().find(|t| t.topic == topic).expect("topic kept");
        assert_eq!(found.since, Some(seq));
    }
});
