//! The real pub/sub session (parsing, `max_hz` rate caps, `since`/`epoch`
//! replay, topic and error limits) on arbitrary sequences of messages: no
//! panic. Messages are separated by newlines; the first byte of each is how
//! many milliseconds pass before it (so rate caps and heartbeats move).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tickfan::net::session_harness::SessionHarness;

fuzz_target!(|data: &[u8]| {
    let mut harness = SessionHarness::new().expect("harness");
    for message in data.split(|&b| b == b'\n').take(64) {
        let Some((&advance, text)) = message.split_first() else {
            continue;
        };
        if harness.on_text(text, Duration::from_millis(u64::from(advance))) {
            break; // closed after too many errors
        }
    }
});
