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
