//! Reading a process's cost from Linux `/proc`: CPU time (`stat`), per-thread
//! CPU (`task/*/stat`), resident memory (`status` VmRSS) and write syscalls
//! (`io` syscw).
//!
//! Separate because it is the only code that knows `/proc`'s formats, and the
//! only place the load generator needs `unsafe` (one `sysconf` call).

use std::fs;
use std::io;

/// Clock ticks per second, the unit of `utime`/`stime` in `/proc/PID/stat`.
#[allow(unsafe_code)]
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf takes an integer name and reads static configuration;
    // it has no pointer arguments and no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime, in clock ticks, from the text of a `stat` file.
///
/// The command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`: utime and stime are fields 14 and 15.
pub fn cpu_ticks_from_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ")" come field 3 (state) onward: utime is the 12th of those.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A process's counters at one instant.
#[derive(Debug, Clone, Default)]
pub struct ProcSample {
    /// utime + stime of the whole process, in clock ticks.
    pub cpu_ticks: u64,
    /// Per thread: (tid, name, utime + stime in clock ticks).
    pub threads: Vec<(u32, String, u64)>,
    /// VmRSS in KiB.
    pub rss_kib: Option<u64>,
    /// `syscw` from `/proc/PID/io`: write-family syscalls so far.
    pub syscw: Option<u64>,
}

/// Reads `pid`'s counters (`"self"` for this process).
pub fn sample(pid: &str) -> io::Result<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let cpu_ticks = cpu_ticks_from_stat(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable stat"))?;
    let mut threads = Vec::new();
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let path = entry.path();
            let Ok(stat) = fs::read_to_string(path.join("stat")) else {
                continue;
            };
            let name = fs::read_to_string(path.join("comm")).unwrap_or_default();
            if let Some(ticks) = cpu_ticks_from_stat(&stat) {
                threads.push((tid, name.trim().to_string(), ticks));
            }
        }
    }
    let rss_kib = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| field(&s, "VmRSS:"));
    let syscw = fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| field(&s, "syscw:"));
    Ok(ProcSample {
        cpu_ticks,
        threads,
        rss_kib,
        syscw,
    })
}

/// The first number after `key` on its line, e.g. `VmRSS:  1234 kB`.
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_ascii_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// What a process spent between two samples.
#[derive(Debug, Clone)]
pub struct ProcDelta {
    pub cpu_secs: f64,
    /// The busiest thread: name and its CPU seconds.
    pub busiest_thread: Option<(String, f64)>,
    pub rss_kib: Option<u64>,
    pub write_syscalls: Option<u64>,
}

/// The difference `after - before`, with per-thread time matched by tid.
pub fn delta(before: &ProcSample, after: &ProcSample, ticks_per_sec: f64) -> ProcDelta {
    let busiest_thread = after
        .threads
        .iter()
        .map(|(tid, name, ticks)| {
            let start = before
                .threads
                .iter()
                .find(|(t, _, _)| t == tid)
                .map_or(0, |(_, _, b)| *b);
            (
                name.clone(),
                ticks.saturating_sub(start) as f64 / ticks_per_sec,
            )
        })
        .max_by(|a, b| a.1.total_cmp(&b.1));
    ProcDelta {
        cpu_secs: after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / ticks_per_sec,
        busiest_thread,
        rss_kib: after.rss_kib,
        write_syscalls: match (before.syscw, after.syscw) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b)),
            _ => None,
        },
    }
}

/// The most open files this process may hold (`Max open files`, soft limit).
pub fn open_files_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_counted_after_the_command_name() {
        let stat = "1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15";
        assert_eq!(cpu_ticks_from_stat(stat), Some(333));
    }

    #[test]
    fn own_process_is_readable() {
        let s = sample("self").unwrap();
        assert!(s.rss_kib.unwrap() > 0);
        assert!(!s.threads.is_empty());
        assert!(clock_ticks_per_sec() > 0.0);
    }
}
