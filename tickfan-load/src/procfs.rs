//! Reading a process's cost from Linux `/proc`: CPU time (`stat`), per-thread
//! CPU (`task/*/stat`), resident memory (`status` VmRSS) and write syscalls
//! (`io` syscw).
//!
//! Separate because it is the only code that knows `/proc`'s formats.

use std::fs;
use std::io;

/// Clock ticks per second, the unit of `utime`/`stime` in `/proc/PID/stat`.
pub fn clock_ticks_per_sec() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        // Linux's USER_HZ is 100 on every architecture it supports.
        _ => 100.0,
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
    /// Nanoseconds its threads spent runnable but waiting for a CPU, summed
    /// (`task/*/schedstat`, second field): on a shared machine, the time
    /// other processes took from it.
    pub runqueue_wait_ns: u64,
}

/// Reads `pid`'s counters (`"self"` for this process).
pub fn sample(pid: &str) -> io::Result<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let cpu_ticks = cpu_ticks_from_stat(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable stat"))?;
    let mut threads = Vec::new();
    let mut runqueue_wait_ns = 0;
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let path = entry.path();
            runqueue_wait_ns += fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| s.split_ascii_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap_or(0);
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
        runqueue_wait_ns,
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
    /// Seconds its threads waited, runnable, for a CPU (summed over threads).
    pub runqueue_wait_secs: f64,
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
        runqueue_wait_secs: after
            .runqueue_wait_ns
            .saturating_sub(before.runqueue_wait_ns) as f64
            / 1e9,
        write_syscalls: match (before.syscw, after.syscw) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b)),
            _ => None,
        },
    }
}

/// One CPU's time counters from `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Default)]
pub struct CpuTimes {
    /// `cpu0`, `cpu1`, ...
    pub name: String,
    pub user: u64,
    pub system: u64,
    pub idle: u64,
    pub softirq: u64,
    pub steal: u64,
    /// Every field summed (user nice system idle iowait irq softirq steal).
    pub total: u64,
}

/// Per-CPU counters: together with per-thread CPU they show whether a core
/// is saturated by a process, by softirq (loopback TCP delivery runs there,
/// charged to no task), or by the hypervisor (steal).
pub fn cpu_times() -> Vec<CpuTimes> {
    let Ok(text) = fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let name = fields.next()?.to_string();
            let v: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
            let [user, nice, system, idle, iowait, irq, softirq, steal] = v[..] else {
                return None;
            };
            Some(CpuTimes {
                name,
                user: user + nice,
                system: system + irq,
                idle: idle + iowait,
                softirq,
                steal,
                total: user + nice + system + idle + iowait + irq + softirq + steal,
            })
        })
        .collect()
}

/// What each CPU did between two readings, in percent of the interval.
#[derive(Debug, Clone)]
pub struct CpuShare {
    pub name: String,
    pub busy_pct: f64,
    pub user_pct: f64,
    pub system_pct: f64,
    pub softirq_pct: f64,
    pub steal_pct: f64,
}

/// Per-CPU shares between `before` and `after`, matched by name.
pub fn cpu_shares(before: &[CpuTimes], after: &[CpuTimes]) -> Vec<CpuShare> {
    after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| b.name == a.name)?;
            let total = a.total.saturating_sub(b.total) as f64;
            if total <= 0.0 {
                return None;
            }
            let pct = |x: u64, y: u64| x.saturating_sub(y) as f64 / total * 100.0;
            Some(CpuShare {
                name: a.name.clone(),
                busy_pct: 100.0 - pct(a.idle, b.idle),
                user_pct: pct(a.user, b.user),
                system_pct: pct(a.system, b.system),
                softirq_pct: pct(a.softirq, b.softirq),
                steal_pct: pct(a.steal, b.steal),
            })
        })
        .collect()
}

/// Pages of kernel memory held by TCP sockets machine-wide (`mem` on the
/// `TCP:` line of `/proc/net/sockstat`): with nothing else opening
/// sockets, its growth over a run is the kernel's cost of the connections.
pub fn tcp_mem_pages() -> Option<u64> {
    let text = fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut fields = line.split_ascii_whitespace();
    while let Some(f) = fields.next() {
        if f == "mem" {
            return fields.next()?.parse().ok();
        }
    }
    None
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
        assert!(tcp_mem_pages().is_some());
        let cpus = cpu_times();
        assert!(!cpus.is_empty());
        assert!(cpus
            .iter()
            .all(|c| c.name.starts_with("cpu") && c.total > 0));
    }
}
