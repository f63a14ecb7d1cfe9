//! The real client programs scripts/install-test-deps.sh installs for the
//! tests to run against the broker: Python's `websockets` in a virtualenv
//! and Node's `ws` next to tests/clients/node's lock file. A test skips
//! (saying why) when its client is not installed.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};

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

/// A client program running with its output piped, its first line read
/// (the line a client script prints once it is subscribed).
pub struct ClientRun {
    child: Child,
    stdout: BufReader<ChildStdout>,
    pub first_line: String,
}

impl ClientRun {
    /// Starts `command` and reads its first line of output.
    pub fn start(command: &mut Command) -> ClientRun {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the client");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first_line = String::new();
        stdout.read_line(&mut first_line).unwrap();
        ClientRun {
            child,
            stdout,
            first_line,
        }
    }

    /// Fails the test with the client's first line and its stderr.
    pub fn fail(mut self) -> ! {
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        panic!("client said {:?}; stderr:\n{err}", self.first_line);
    }

    /// Waits for the client to exit successfully (failing the test with
    /// its stderr otherwise) and returns what it printed after the first line.
    pub fn finish(mut self) -> String {
        let output = self.child.wait_with_output().unwrap();
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        rest
    }
}
