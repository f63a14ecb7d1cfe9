//! The `tickfan.v1` client-operation parser on arbitrary messages: no panic,
//! valid topic names only, and a publish's data is always valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickfan::broker::client_op::{parse_op, ClientOp, MIN_MAX_HZ};
use tickfan::topic::validate_topic;

fuzz_target!(|data: &[u8]| {
    match parse_op(data) {
        Ok(ClientOp::Publish { topic, data }) => {
            assert!(validate_topic(&topic).is_ok());
            // Syntactically valid JSON; numbers beyond f64 (2e400) are valid
            // JSON too, so no typed parse (found by this target).
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(data.get()).is_ok());
        }
        Ok(ClientOp::Subscribe { topic, max_hz, .. }) => {
            assert!(validate_topic(&topic).is_ok());
            assert!(max_hz.is_none_or(|hz| hz >= MIN_MAX_HZ && hz.is_finite()));
        }
        Ok(ClientOp::Unsubscribe { topic }) => assert!(validate_topic(&topic).is_ok()),
        // The token is verified later, by the broker; here it is only carried.
        Ok(ClientOp::Auth { .. }) => {}
        Err(error) => {
            let _ = (error.code(), error.message());
        }
    }
});
