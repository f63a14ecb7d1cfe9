//! Counting the broker's write-family syscalls with `perf stat` over the
//! measured window.
//!
//! `/proc/PID/io` `syscw` counts `write` and `writev` but not `send`/`sendto`,
//! and Rust's `TcpStream::write` is `send(MSG_NOSIGNAL)`: a broker that copies
//! small ticks into one buffer and writes it with `write` shows ~0 there. The
//! syscall tracepoints see every call. `perf stat -p PID -- sleep D` counts
//! the broker for exactly D seconds and exits by itself, so nothing needs
//! signalling. Needs tracefs mounted (`/sys/kernel/tracing`) and root (or a
//! permissive `perf_event_paranoid`); without them the report falls back to
//! `syscw` and says so.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The syscalls that write to a socket.
const EVENTS: [&str; 4] = [
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_sendmsg",
];

/// A running `perf stat` on the broker.
#[derive(Debug)]
pub struct PerfCount {
    child: Child,
}

/// Per-syscall counts over the window.
#[derive(Debug, Clone, Default)]
pub struct SyscallCounts {
    pub write: u64,
    pub writev: u64,
    pub sendto: u64,
    pub sendmsg: u64,
}

impl SyscallCounts {
    /// All write-family calls.
    pub fn total(&self) -> u64 {
        self.write + self.writev + self.sendto + self.sendmsg
    }
}

impl PerfCount {
    /// Starts counting `pid` for `window`; `None` if perf cannot start.
    pub fn start(perf: &str, pid: u32, window: Duration) -> Option<PerfCount> {
        let child = Command::new(perf)
            .args(["stat", "-x", ",", "-e", &EVENTS.join(","), "-p"])
            .arg(pid.to_string())
            .args(["--", "sleep"])
            .arg(format!("{:.3}", window.as_secs_f64()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        Some(PerfCount { child })
    }

    /// Waits for perf to finish (it ends with its `sleep`) and parses its
    /// counts; `Err` says why there are none.
    pub fn finish(self) -> Result<SyscallCounts, String> {
        let output = self
            .child
            .wait_with_output()
            .map_err(|e| format!("perf: {e}"))?;
        let text = String::from_utf8_lossy(&output.stderr);
        parse(&text).ok_or_else(|| {
            format!(
                "perf gave no syscall counts (tracefs mounted? root?): {}",
                text.lines().next().unwrap_or("")
            )
        })
    }
}

/// Parses `perf stat -x,` lines: `COUNT,UNIT,EVENT,...`.
fn parse(text: &str) -> Option<SyscallCounts> {
    let mut counts = SyscallCounts::default();
    let mut seen = 0;
    for line in text.lines() {
        let mut fields = line.split(',');
        let (Some(count), Some(_unit), Some(event)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(count) = count.trim().parse::<u64>() else {
            continue;
        };
        let slot = match event.trim() {
            "syscalls:sys_enter_write" => &mut counts.write,
            "syscalls:sys_enter_writev" => &mut counts.writev,
            "syscalls:sys_enter_sendto" => &mut counts.sendto,
            "syscalls:sys_enter_sendmsg" => &mut counts.sendmsg,
            _ => continue,
        };
        *slot = count;
        seen += 1;
    }
    (seen > 0).then_some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_csv_counts() {
        let text = "\n12,,syscalls:sys_enter_write,1000,100.00,,\n\
                    3,,syscalls:sys_enter_writev,1000,100.00,,\n\
                    4567,,syscalls:sys_enter_sendto,1000,100.00,,\n\
                    0,,syscalls:sys_enter_sendmsg,1000,100.00,,\n";
        let c = parse(text).unwrap();
        assert_eq!((c.write, c.writev, c.sendto, c.sendmsg), (12, 3, 4567, 0));
        assert_eq!(c.total(), 4582);
        assert!(parse("event syntax error").is_none());
    }
}
