//! Test support for `tickfan-load`'s integration tests: finds the `tickfan`
//! broker binary built beside this crate's binary and runs it on an
//! ephemeral port.
//!
//! Cargo gives a test `CARGO_BIN_EXE_<name>` only for its own package's
//! binaries, and depending on another package's binary (an "artifact
//! dependency") is unstable. Every package of the workspace builds into the
//! same `target/<profile>/`, so the broker is looked for next to
//! `CARGO_BIN_EXE_tickfan-load`. `cargo test --workspace` (what
//! `scripts/test.sh` runs) builds both before it runs any test; after
//! `cargo test -p tickfan-load` alone the broker may be missing or stale, and
//! [`broker_bin`] says how to build it.
//!
//! Deliberately small: the broker's own tests (`../tests/common`) hold the
//! full client toolkit; these tests only need a broker to point at.

// Not every test uses every helper.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The load generator under test.
pub const LOAD_BIN: &str = env!("CARGO_BIN_EXE_tickfan-load");

/// How long the broker may take to report its address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The `tickfan` binary of this build: the sibling of [`LOAD_BIN`].
///
/// Panics, naming the command that builds it, if it is not there.
pub fn broker_bin() -> PathBuf {
    let bin =
        PathBuf::from(LOAD_BIN).with_file_name(format!("tickfan{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the broker binary {} is missing: run these tests with \
         `cargo test --workspace`, or build it first with `cargo build -p tickfan` \
         (same profile)",
        bin.display()
    );
    bin
}

/// A running `tickfan` process, killed on drop.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    addr: SocketAddr,
    /// The TLS listener's address, when started with one.
    tls_addr: Option<SocketAddr>,
}

impl Broker {
    /// Starts the broker with `--listen 127.0.0.1:0` and `extra` flags and
    /// waits for its "tickfan listening" line to learn the port.
    pub fn start(extra: &[&str]) -> Broker {
        let mut child = Command::new(broker_bin())
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tickfan");
        let stderr = child.stderr.take().expect("piped stderr");
        let (ready_tx, ready_rx) = mpsc::channel();
        // Drains stderr for the broker's whole life, so it never blocks on a
        // full pipe, and reports the address once it is logged.
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addrs) = listening_addrs(&line) {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(Ok(addrs));
                    }
                }
                if ready_tx.is_some() {
                    seen.push(line);
                }
            }
            if let Some(tx) = ready_tx {
                let _ = tx.send(Err(seen.join("\n")));
            }
        });
        let (addr, tls_addr) = match ready_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(stderr)) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tickfan {extra:?} exited before listening; stderr:\n{stderr}")
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tickfan {extra:?} did not report its address ({e})")
            }
        };
        Broker {
            child,
            addr,
            tls_addr,
        }
    }

    /// The address the broker listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS listener's address; fails the test without one.
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr
            .expect("the broker was started with --tls-listen")
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Child::kill signals exactly the process this Broker spawned.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a `tickfan listening listen=ADDR ...` log line.
fn listening_addrs(line: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let rest = line.split("tickfan listening").nth(1)?;
    let field = |name: &str| {
        rest.split_whitespace()
            .find_map(|word| word.strip_prefix(name))
            .and_then(|value| value.parse().ok())
    };
    Some((field("listen=")?, field("tls=")))
}
