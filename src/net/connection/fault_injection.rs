//! A way for the integration tests to kill a worker, so that what happens
//! when one dies (`Server::join`, `/healthz`) is tested on the real binary.
//!
//! Compiled into debug builds only, and even there inert unless the
//! environment variable `TICKFAN_FAULT_INJECTION` is `1`: then a request
//! for the path [`PANIC_PATH`] panics the worker that reads it. Release
//! builds have no such path at all.

/// The request path that panics the worker when fault injection is on.
#[cfg(debug_assertions)]
pub const PANIC_PATH: &str = "/__fault/panic";

/// Panics when fault injection is on and `path` asks for it.
#[cfg(debug_assertions)]
pub fn on_request(path: &str) {
    use std::sync::OnceLock;
    static ENABLED: OnceLock<bool> = OnceLock::new();
    let enabled = *ENABLED
        .get_or_init(|| std::env::var_os("TICKFAN_FAULT_INJECTION").is_some_and(|v| v == "1"));
    if enabled && path == PANIC_PATH {
        panic!("fault injection: {PANIC_PATH} was requested");
    }
}

/// Release builds: nothing to inject.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn on_request(_path: &str) {}
