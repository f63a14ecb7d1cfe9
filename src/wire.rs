//! Facts of the wire that the configuration and the protocol layers share:
//! the paths of the built-in HTTP routes (configured paths must not collide
//! with them) and the syntax of a bearer token (configured tokens must be
//! presentable). A leaf: it imports nothing of the crate, so `config` can
//! check against it without importing the `http` layer.
//!
//! Held to the panic-class lints (tests exempt).

/// Liveness.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Readiness.
pub const READYZ_PATH: &str = "/readyz";
/// `POST /publish`.
pub const PUBLISH_PATH: &str = "/publish";
/// Long-polling.
pub const POLL_PATH: &str = "/poll";
/// Server-Sent Events.
pub const SSE_PATH: &str = "/sse";

/// The fastest rate a subscription may ask for with `max_hz` that still
/// means a cap; higher values are the same as no cap. Here, with the other
/// facts of the wire, because the WebSocket op (`broker`) and the SSE query
/// (`http`) both read `max_hz`.
pub const MAX_HZ_LIMIT: f64 = 1_000_000.0;

/// The slowest rate `max_hz` may ask for: one tick per 1,000 s. Below it the
/// interval between ticks would leave any range a timer can meaningfully
/// hold (and `1 / max_hz` stops fitting a `Duration` near 1e-19), so such
/// values are refused rather than clamped.
pub const MIN_MAX_HZ: f64 = 0.001;

/// `max_hz` as a subscription takes it: `Ok(None)` for no cap (1,000,000 and
/// above), `Err(())` for what is refused (below 0.001, NaN, infinite).
#[allow(clippy::result_unit_err)] // each caller words its own refusal
pub fn checked_max_hz(hz: f64) -> Result<Option<f64>, ()> {
    // Written so that NaN falls into the refusal too.
    if !(hz >= MIN_MAX_HZ && hz.is_finite()) {
        return Err(());
    }
    Ok((hz < MAX_HZ_LIMIT).then_some(hz))
}

/// Every path a built-in route owns.
pub const BUILT_IN_PATHS: [&str; 5] =
    [HEALTHZ_PATH, READYZ_PATH, PUBLISH_PATH, POLL_PATH, SSE_PATH];

/// Whether `token` is an RFC 6750 §2.1 `b64token`, the only form an
/// `Authorization: Bearer` credential can take:
/// `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
pub fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}
