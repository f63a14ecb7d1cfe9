//! The real client programs scripts/install-test-deps.sh installs for the
//! tests to run against the broker: Python's `websockets` in a virtualenv
//! and Node's `ws` next to tests/clients/node's lock file. A test skips
//! (saying why) when its client is not installed.

use std::path::PathBuf;

/// The Python of the clients' virtualenv (with the `websockets` library);
/// `None` when it was not made.
pub fn clients_python() -> Option<PathBuf> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/clients/bin/python");
    python.exists().then_some(python)
}

/// The folder whose `node_modules` holds `ws` (run `node` there); `None`
/// when it was not installed.
pub fn node_clients() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/node");
    dir.join("node_modules/ws").exists().then_some(dir)
}
