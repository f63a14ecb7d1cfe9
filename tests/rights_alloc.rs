//! A rights check per `sub` or `pub` allocates nothing (issue: "a sub/pub
//! rights check per op costs no allocation and no lock"): the check runs
//! under a counting global allocator, alone in this test binary so no other
//! test's allocations are counted. No lock is there by construction: the
//! check reads the connection's own `Rights` and its compiled patterns.

use std::alloc::System;

use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tickfan::broker::auth::Auth;
use tickfan::broker::jwt::JwtVerifier;
use tickfan::config::Config;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn a_rights_check_allocates_nothing() {
    let secret = "0123456789abcdef0123456789abcdef";
    let config = Config::from_toml_str(&format!(
        "[jwt]\nalgorithm = \"HS256\"\nhmac_secret = \"{secret}\""
    ))
    .unwrap();
    let jwt = JwtVerifier::from_config(&config.jwt).unwrap();
    // A publish token closes publishing to everyone else.
    let auth = Auth::new(&["service".into()], &[], true).with_jwt(jwt);
    let claims = serde_json::json!({
        "sub": "alice",
        "exp": get_current_timestamp() + 600,
        "tf.sub": ["AAPL", "prices.*.bid", "fx.>"],
        "tf.pub": ["orders.alice.*"],
    });
    let token = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let rights = auth.rights(Some(&token));
    let topics = [
        "AAPL",
        "prices.MSFT.bid",
        "prices.MSFT.ask",
        "fx.EUR.USD",
        "orders.alice.1",
        "orders.bob.1",
        "a..b",
    ];

    let region = Region::new(GLOBAL);
    let mut allowed = 0usize;
    for _ in 0..1000 {
        for topic in topics {
            allowed += usize::from(rights.may_subscribe(topic));
            allowed += usize::from(rights.may_publish(topic));
        }
    }
    let change = region.change();

    assert_eq!(allowed, 4 * 1000, "the checks ran and decided");
    assert_eq!(change.allocations, 0, "{change:?}");
    assert_eq!(change.reallocations, 0, "{change:?}");
}
