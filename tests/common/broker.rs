//! The broker process: starting the real `tickfan` binary on an ephemeral
//! port, signalling it, waiting for its exit, and what it holds (open file
//! descriptors, resident memory).
//!
//! The harness learns the port without reading the log: every broker is
//! started with `--listen 127.0.0.1:0` and `--ready-file` naming a path of
//! its own, and [`Broker::start`] returns once the broker has renamed its
//! bound address into that file. Its stderr is still captured, line by line,
//! for the tests that read the log.

use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tickfan");

/// How long any single read, startup or exit may take before the test fails.
/// Generous: the suite must pass on a loaded two-core machine.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Generous bound for anything that should happen "soon".
pub const PROMPTLY: Duration = Duration::from_secs(10);

/// The echo route every broker here serves unless told otherwise.
pub const ECHO: &str = "/echo";

/// A running `tickfan` process, killed on drop if it has not exited.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    /// The plain listener's address; `None` when started with `--listen ""`.
    addr: Option<SocketAddr>,
    /// The TLS listener's address, when the broker has one.
    tls_addr: Option<SocketAddr>,
    /// Where the broker writes its address once it listens; removed on drop.
    ready_file: PathBuf,
    /// Every stderr line so far; a thread keeps appending until EOF.
    stderr: Arc<Mutex<Vec<String>>>,
    /// Disconnected once the stderr thread has read EOF (in a mutex so
    /// that a `&Broker` can cross threads).
    stderr_eof: Mutex<Option<mpsc::Receiver<()>>>,
    exit: Option<ExitStatus>,
}

impl Broker {
    /// Starts the binary with a `--ready-file` of its own and `extra` flags,
    /// plus `--listen 127.0.0.1:0`, `--echo-path /echo` and `--workers 2`
    /// unless `extra` sets them, and waits for the ready file.
    pub fn start(extra: &[&str]) -> Broker {
        Broker::spawn(Command::new(BIN), extra)
    }

    /// [`Broker::start`] for a broker that may take up to `ready_within`
    /// to listen (a cluster node binds its stream and catches up first).
    pub fn start_within(extra: &[&str], ready_within: Duration) -> Broker {
        Broker::spawn_within(Command::new(BIN), extra, ready_within)
    }

    /// Starts the binary as [`Broker::start`] does, with its open-files
    /// limit (soft and hard) set to `limit` first, so accepts run out of
    /// descriptors after a few connections.
    pub fn start_with_open_files(limit: u32, extra: &[&str]) -> Broker {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
            BIN,
        ]);
        Broker::spawn(command, extra)
    }

    /// Starts the binary as [`Broker::start`] does, with `env` added to
    /// its environment.
    pub fn start_with_env(env: &[(&str, &str)], extra: &[&str]) -> Broker {
        let mut command = Command::new(BIN);
        command.envs(env.iter().copied());
        Broker::spawn(command, extra)
    }

    fn spawn(command: Command, extra: &[&str]) -> Broker {
        Broker::spawn_within(command, extra, IO_TIMEOUT)
    }

    fn spawn_within(mut command: Command, extra: &[&str], ready_within: Duration) -> Broker {
        let ready_file = unique_ready_file();
        let ready_arg = ready_file
            .to_str()
            .expect("temp dir path is UTF-8")
            .to_owned();
        let mut args: Vec<&str> = vec!["--ready-file", &ready_arg];
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--echo-path") {
            args.extend(["--echo-path", ECHO]);
        }
        if !extra.contains(&"--workers") {
            args.extend(["--workers", "2"]);
        }
        args.extend_from_slice(extra);

        let mut child = command
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tickfan");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (eof_tx, eof_rx) = mpsc::channel::<()>();
        {
            let lines = Arc::clone(&lines);
            // Drains stderr for the whole life of the child, so it never
            // blocks on a full pipe; `eof_tx` is dropped at EOF.
            std::thread::spawn(move || {
                let _eof_tx = eof_tx;
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let mut broker = Broker {
            child,
            addr: None,
            tls_addr: None,
            ready_file,
            stderr: lines,
            stderr_eof: Mutex::new(Some(eof_rx)),
            exit: None,
        };
        (broker.addr, broker.tls_addr) = broker.wait_ready(&args, ready_within);
        broker
    }

    /// Waits for the ready file the broker writes once it listens and
    /// returns the address in it; fails the test, with the broker's stderr,
    /// if the broker exits first or `ready_within` passes.
    fn wait_ready(
        &mut self,
        args: &[&str],
        ready_within: Duration,
    ) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let deadline = Instant::now() + ready_within;
        loop {
            // The broker renames the file into place whole: a file that
            // exists holds the whole address.
            match std::fs::read_to_string(&self.ready_file) {
                Ok(text) => {
                    let mut lines = text.lines();
                    // Line 1: the plain listener's address, or `off`.
                    let addr = lines.next().and_then(|addr| match addr {
                        "off" => Some(None),
                        addr => addr.parse().ok().map(Some),
                    });
                    let tls = lines
                        .next()
                        .and_then(|line| line.strip_prefix("tls="))
                        .and_then(|addr| addr.parse().ok());
                    let Some(addr) = addr.filter(|_| text.ends_with('\n')) else {
                        panic!("ready file {:?} holds {text:?}", self.ready_file)
                    };
                    return (addr, tls);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => panic!("reading the ready file {:?} failed: {e}", self.ready_file),
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                self.wait_stderr_eof();
                panic!(
                    "tickfan {args:?} exited ({status}) before it was ready; stderr:\n{}",
                    self.stderr_text()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "tickfan {args:?} wrote no ready file within {ready_within:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            // Polling for a file the broker writes on its own time; bounded
            // by the deadline above.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (at most [`IO_TIMEOUT`]) until the stderr thread has read
    /// everything the exited broker wrote.
    fn wait_stderr_eof(&mut self) {
        if let Some(eof) = self.stderr_eof.lock().unwrap().take() {
            // Disconnected once the thread ends; a timeout leaves what was read.
            let _ = eof.recv_timeout(IO_TIMEOUT);
        }
    }

    /// The address the broker's plain listener is bound to; fails the
    /// test when it was started without one.
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .expect("the broker was started with a plain listener")
    }

    /// The plain listener's address, `None` when started with `--listen ""`.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The address of the broker's TLS listener; fails the test when it
    /// was started without one.
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr
            .expect("the broker was started with --tls-listen")
    }

    /// The ready file the broker wrote its address to (removed on drop).
    pub fn ready_file(&self) -> &Path {
        &self.ready_file
    }

    /// The process id of the broker.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr())
    }

    /// Everything the broker wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// A TCP connection to the broker with read and write timeouts set.
    pub fn tcp(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr()).expect("connect to tickfan");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// A TCP connection whose receive buffer was set to `bytes` before it
    /// connected, so that it can hold little that the broker sends (a client
    /// that stops reading then backs up into the broker's queue at once,
    /// instead of into megabytes of kernel buffers).
    pub fn tcp_small_rcvbuf(&self, bytes: usize) -> TcpStream {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        socket
            .connect(&self.addr().into())
            .expect("connect to tickfan");
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// Sends SIGTERM to the broker process (and to nothing else).
    pub fn send_sigterm(&self) {
        signal(self.child.id(), libc::SIGTERM).expect("kill(SIGTERM)");
    }

    /// Sends SIGHUP to the broker process (and to nothing else).
    pub fn send_sighup(&self) {
        signal(self.child.id(), libc::SIGHUP).expect("kill(SIGHUP)");
    }

    /// SIGKILLs the broker process (and nothing else) and reaps it: a node
    /// dying mid-stream, for the cluster's chaos tests.
    pub fn kill_now(&mut self) {
        if self.exit.is_none() {
            // Child::kill signals exactly the process this Broker spawned.
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    /// Sends SIGINT to the broker process (and to nothing else).
    pub fn send_sigint(&self) {
        signal(self.child.id(), libc::SIGINT).expect("kill(SIGINT)");
    }

    /// Waits up to `timeout` for the broker to exit and returns its status;
    /// fails the test if it is still running then. Once it has exited,
    /// [`Self::stderr_text`] holds every line it wrote.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                self.wait_stderr_eof();
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "tickfan still running {timeout:?} later; stderr:\n{}",
                    self.stderr_text()
                );
            }
            // Polling an exit status: the wait is bounded by the deadline above.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            // Child::kill signals exactly the process this Broker spawned.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // tickfan never removes its ready file; the harness that named it does.
        let _ = std::fs::remove_file(&self.ready_file);
        let mut tmp = self.ready_file.clone().into_os_string();
        tmp.push(".tmp");
        let _ = std::fs::remove_file(tmp);
    }
}

/// A ready-file path no other broker uses: the temp dir, this test
/// process's pid and a counter.
fn unique_ready_file() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "tickfan-test-{}-{}.ready",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    // One left by a killed earlier process of the same pid would read as ready at once.
    let _ = std::fs::remove_file(&path);
    path
}

/// Sends `sig` to the process `pid`, one this test suite spawned and has
/// not reaped yet (so the pid cannot name a reused process).
pub(super) fn signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).map_err(io::Error::other)?);
    let sig = nix::sys::signal::Signal::try_from(sig).map_err(io::Error::other)?;
    nix::sys::signal::kill(pid, sig).map_err(io::Error::other)
}

/// Runs the binary with `args` to completion (at most [`IO_TIMEOUT`]) and
/// returns what it printed.
pub fn run_cli(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tickfan");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(IO_TIMEOUT) {
        Ok(output) => output.expect("wait for tickfan"),
        Err(_) => {
            // Not reaped yet (wait_with_output has not returned), so the pid is still ours.
            let _ = signal(pid, libc::SIGKILL);
            panic!("tickfan {args:?} did not exit within {IO_TIMEOUT:?}");
        }
    }
}

/// The number of file descriptors process `pid` has open (the entries of
/// `/proc/PID/fd`): the listener, the workers' polls, and one per connection.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc fd directory")
        .count()
}

/// The local ports of the TCP sockets process `pid` holds in the LISTEN
/// state (one per worker and listener, as SO_REUSEPORT binds one each),
/// read from `/proc/PID/net/tcp{,6}` and matched to the process's own
/// descriptors by socket inode.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let own_inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc fd directory")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?.to_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT, st 0A is LISTEN, field 9 the inode.
            let (Some(local), Some(&"0A"), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if own_inodes.iter().any(|own| own == inode) {
                let port = local.rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports.sort_unstable();
    ports
}

/// Polls [`fd_count`] until `ok` accepts it or `timeout` passes; returns
/// the last count seen and whether `ok` accepted it.
pub fn wait_for_fd_count(pid: u32, timeout: Duration, ok: impl Fn(usize) -> bool) -> (usize, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let count = fd_count(pid);
        if ok(count) {
            return (count, true);
        }
        if Instant::now() >= deadline {
            return (count, false);
        }
        // Polling a count the broker changes on its own time; bounded above.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The resident set size of process `pid`, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}
