//! The HTTP request-head parser and the WebSocket upgrade decision on
//! arbitrary bytes: no panic, and a complete head parses the same from a
//! buffer cut right after it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickfan::http::request::{parse_request, Parsed};
use tickfan::http::upgrade::upgrade_request;

fuzz_target!(|data: &[u8]| {
    let Ok(Parsed::Complete(request)) = parse_request(data, 4096) else {
        return;
    };
    let head_len = request.head_len;
    assert!(head_len <= data.len());
    let _ = upgrade_request(&request);
    let _ = request.content_length();
    let _ = request.keep_alive();
    let _ = request.bearer_token();
    for (key, value) in request.query_params() {
        let _ = (key.len(), value.len());
    }
    match parse_request(&data[..head_len], 4096) {
        Ok(Parsed::Complete(again)) => assert_eq!(again.head_len, head_len),
        other => panic!("the head alone must parse the same: {other:?}"),
    }
});
