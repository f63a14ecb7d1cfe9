//! A real Prometheus server for the tests that check tickfan's metrics as a
//! scraper sees them, and a small HTTP/1.1 GET client to ask it (and
//! tickfan's `/metrics`) questions.
//!
//! Prometheus is an external program (Debian package `prometheus`), so
//! [`prometheus_bin`] decides what a missing binary means: under `CI` the test
//! fails, because the test command installs it
//! (`scripts/install-test-deps.sh`); elsewhere it is skipped with a notice.
//!
//! Each [`Prometheus`] gets its own temporary config and TSDB directory and
//! listens on `127.0.0.1:0`; the port it got is read from its "Listening on"
//! log line, so no port is guessed and nothing is shared with a system
//! service.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{read_sized_body, response_with_head, signal, HttpResponse, IO_TIMEOUT};

/// Where the Debian package puts the server.
pub const DEFAULT_PROMETHEUS_BIN: &str = "/usr/bin/prometheus";

/// How long Prometheus may take to report that it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the tests run under CI, where a missing tool is a failure.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// The Prometheus binary (`$PROMETHEUS_BIN`, else `/usr/bin/prometheus`), or
/// `None` after printing a notice when it is missing outside CI. Fails the
/// test when it is missing under CI.
pub fn prometheus_bin() -> Option<PathBuf> {
    let bin = std::env::var_os("PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PROMETHEUS_BIN));
    required_tool(bin, "prometheus")
}

/// `promtool`, found beside the Prometheus binary; same rules as
/// [`prometheus_bin`].
pub fn promtool_bin() -> Option<PathBuf> {
    let prometheus = std::env::var_os("PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PROMETHEUS_BIN));
    required_tool(prometheus.with_file_name("promtool"), "promtool")
}

fn required_tool(bin: PathBuf, name: &str) -> Option<PathBuf> {
    if bin.is_file() {
        return Some(bin);
    }
    if in_ci() {
        panic!(
            "{name} not found at {} and CI is set: install the Debian package \
             `prometheus` (scripts/install-test-deps.sh does) or point \
             PROMETHEUS_BIN at the server binary",
            bin.display()
        );
    }
    eprintln!(
        "SKIPPED: {name} not found at {}; install the Debian package `prometheus` \
         (or set PROMETHEUS_BIN) to run this test",
        bin.display()
    );
    None
}

/// A directory under the system temp dir, removed with everything in it on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh, uniquely named directory.
    pub fn new(prefix: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the stderr reader reports while Prometheus starts.
enum Startup {
    Listening(SocketAddr),
    Ready,
    Exited,
}

/// A running Prometheus server, stopped on drop if [`Prometheus::stop`] was
/// not called.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    /// Every stderr line so far; a thread keeps appending until EOF.
    log: Arc<Mutex<Vec<String>>>,
    stopped: bool,
    // Dropped after the process is stopped: holds the config and the TSDB.
    _dir: TempDir,
}

impl Prometheus {
    /// Starts `bin` scraping `targets` (job `tickfan`, path `/metrics`) every
    /// `scrape_interval`, and waits until it is ready for queries. With no
    /// targets it scrapes nothing, which is enough to evaluate queries.
    pub fn start(bin: &Path, targets: &[SocketAddr], scrape_interval: Duration) -> Prometheus {
        let dir = TempDir::new("tickfan-prometheus");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, scrape_config(targets, scrape_interval)).expect("write config");
        let storage = dir.path().join("data");

        let mut child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", storage.display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = Arc::clone(&log);
            // Drains stderr for the whole life of the child, so it never
            // blocks on a full pipe, and reports the startup milestones.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = prometheus_listen_addr(&line) {
                        let _ = tx.send(Startup::Listening(addr));
                    }
                    if line.contains("Server is ready to receive web requests") {
                        let _ = tx.send(Startup::Ready);
                    }
                    log.lock().unwrap().push(line);
                }
                let _ = tx.send(Startup::Exited);
            });
        }
        let mut prometheus = Prometheus {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            stopped: false,
            _dir: dir,
        };
        // Both lines, in either order: the web listener logs its address
        // from its own goroutine, sometimes after "ready".
        let (mut listening, mut ready) = (None, false);
        while listening.is_none() || !ready {
            match rx.recv_timeout(START_TIMEOUT) {
                Ok(Startup::Listening(addr)) => listening = Some(addr),
                Ok(Startup::Ready) => ready = true,
                Ok(Startup::Exited) => panic!(
                    "prometheus exited while starting; log:\n{}",
                    prometheus.log_text()
                ),
                Err(e) => panic!(
                    "prometheus not ready within {START_TIMEOUT:?} ({e}); log:\n{}",
                    prometheus.log_text()
                ),
            }
        }
        prometheus.addr = listening.unwrap_or_else(|| {
            panic!(
                "prometheus logged no \"Listening on\" address; log:\n{}",
                prometheus.log_text()
            )
        });
        let ready = http_get(prometheus.addr, "/-/ready").expect("GET /-/ready");
        assert_eq!(
            ready.status,
            200,
            "/-/ready: {}",
            String::from_utf8_lossy(&ready.body)
        );
        prometheus
    }

    /// The address its HTTP API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Evaluates `expr` now (`/api/v1/query`) and returns the whole JSON
    /// answer, whether `"status"` is `"success"` or `"error"`.
    pub fn query(&self, expr: &str) -> serde_json::Value {
        let path = format!("/api/v1/query?query={}", url_encode(expr));
        let response = http_get(self.addr, &path)
            .unwrap_or_else(|e| panic!("GET {path} from prometheus: {e}"));
        serde_json::from_slice(&response.body).unwrap_or_else(|e| {
            panic!(
                "prometheus answered {} with non-JSON ({e}): {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            )
        })
    }

    /// The single value of an instant-vector or scalar `expr`, or `None` when
    /// the result is empty (nothing scraped yet).
    pub fn query_value(&self, expr: &str) -> Option<f64> {
        let answer = self.query(expr);
        assert_eq!(answer["status"], "success", "query {expr}: {answer}");
        let data = &answer["data"];
        let sample = match data["resultType"].as_str() {
            Some("vector") => {
                let result = data["result"].as_array().expect("vector result");
                assert!(result.len() <= 1, "query {expr}: several series: {answer}");
                &result.first()?["value"]
            }
            Some("scalar") => &data["result"],
            _ => panic!("query {expr}: unexpected result: {answer}"),
        };
        let value = sample[1].as_str().expect("sample value is a string");
        Some(value.parse().expect("sample value is a number"))
    }

    /// One line per scrape target: its URL, health and last error.
    pub fn targets_summary(&self) -> String {
        let Ok(response) = http_get(self.addr, "/api/v1/targets") else {
            return "(targets unavailable)".to_owned();
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&response.body) else {
            return String::from_utf8_lossy(&response.body).into_owned();
        };
        json["data"]["activeTargets"]
            .as_array()
            .map(|targets| {
                targets
                    .iter()
                    .map(|t| format!("{} {} {}", t["scrapeUrl"], t["health"], t["lastError"]))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }

    /// Stops the server (SIGTERM to its pid, SIGKILL if it lingers) and reaps it.
    pub fn stop(mut self) {
        self.stop_process();
    }

    fn stop_process(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // Not reaped yet, so the pid is still our child's.
        let _ = signal(self.child.id(), libc::SIGTERM);
        let deadline = std::time::Instant::now() + IO_TIMEOUT;
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            // Polling an exit status: the wait is bounded by the deadline above.
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop_process();
    }
}

/// A Prometheus configuration scraping `targets` as job `tickfan`.
fn scrape_config(targets: &[SocketAddr], interval: Duration) -> String {
    let interval = format!("{}ms", interval.as_millis());
    let mut config = format!(
        "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  \
         evaluation_interval: {interval}\n"
    );
    if !targets.is_empty() {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        config.push_str(&format!(
            "scrape_configs:\n  - job_name: tickfan\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ));
    }
    config
}

/// The address in Prometheus' `msg="Listening on" address=HOST:PORT` line.
fn prometheus_listen_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("msg=\"Listening on\"").nth(1)?;
    let value = rest.split("address=").nth(1)?;
    value.split_whitespace().next()?.parse().ok()
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a
/// query-string value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `GET path` from `addr` over a fresh connection (`Connection: close`),
/// with a `Content-Length`, chunked or read-to-EOF body.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        if reader.read_line(&mut head)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed inside a response head: {head:?}"),
            ));
        }
    }
    let mut response = response_with_head(&head);
    if read_sized_body(&mut reader, &mut response)? {
        return Ok(response);
    }
    if response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        response.body = read_chunked(&mut reader)?;
    } else {
        reader.read_to_end(&mut response.body)?;
    }
    Ok(response)
}

/// Reads a chunked body (RFC 9112 §7.1) up to and including its trailer.
fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let size = line.trim_end().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size.trim(), 16).map_err(io::Error::other)?;
        if size == 0 {
            // Trailer fields, then the blank line.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

/// The broker's `/metrics` page as text; fails the test, saying why, unless
/// it answers 200.
pub fn broker_metrics(broker: &super::Broker) -> String {
    let response = http_get(broker.addr(), "/metrics").expect("GET /metrics from tickfan");
    assert_eq!(
        response.status,
        200,
        "tickfan GET /metrics answered {} (is the metrics endpoint built and \
         http.metrics_path = \"/metrics\"?): {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    String::from_utf8(response.body).expect("/metrics is UTF-8")
}
