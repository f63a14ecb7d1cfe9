//! Real `nats-server` processes with JetStream for the cluster tests: a
//! cluster of them on 127.0.0.1 ports found free, each with its own store
//! under a fresh directory, killed on drop.
//!
//! The binary is `$NATS_SERVER`, else `nats-server` on the PATH, else
//! `/usr/sbin/nats-server` (Debian's package). [`NatsCluster::start`]
//! returns `None` when it is missing and `CI` is unset, after printing why
//! the test is skipped; under CI (where `scripts/install-test-deps.sh`
//! installs it) a missing binary fails the test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster may take to elect its JetStream meta leader.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Fresh clusters tried before a test gives up.
const START_ATTEMPTS: usize = 3;

/// One `nats-server` process.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    pub name: String,
    pub client_port: u16,
    pub cluster_port: u16,
    pub monitor_port: u16,
    args: Vec<String>,
}

/// A JetStream cluster of `nats-server`s on loopback.
#[derive(Debug)]
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
    dir: PathBuf,
}

/// The `nats-server` binary, if there is one.
pub fn nats_server_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let debian = PathBuf::from("/usr/sbin/nats-server");
        debian.is_file().then_some(debian)
    })
}

/// A port nobody listens on now (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` on 127.0.0.1:`port`; the status and body, or `None` when
/// nothing answers.
pub fn http_get_local(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_owned()))
}

impl NatsCluster {
    /// Starts `n` clustered servers with JetStream and waits until every
    /// one reports healthy (JetStream ready); `None` (test skipped) only
    /// outside CI when the binary is missing.
    pub fn start(n: usize) -> Option<NatsCluster> {
        let Some(binary) = nats_server_binary() else {
            if std::env::var_os("CI").is_some() {
                panic!("nats-server is not installed (scripts/install-test-deps.sh installs it)");
            }
            eprintln!(
                "SKIPPED: nats-server not found (set NATS_SERVER or install Debian's nats-server); \
                 the cluster tests need it and fail without it under CI"
            );
            return None;
        };
        // A JetStream meta group that does not form in time (a route that
        // never connected, a port taken meanwhile by someone else) is not
        // waited on for ever: a fresh cluster on fresh ports is started.
        for attempt in 1..=START_ATTEMPTS {
            let cluster = Self::launch(n, &binary);
            if cluster.ready_within(READY_WITHIN) {
                return Some(cluster);
            }
            eprintln!(
                "nats cluster, attempt {attempt}: not ready within {READY_WITHIN:?} \
                 (healthz and a meta leader over all {n} peers); starting a fresh one"
            );
        }
        panic!("no nats cluster of {n} formed in {START_ATTEMPTS} attempts");
    }

    /// Starts `n` servers clustered on fresh ports, without waiting.
    fn launch(n: usize, binary: &PathBuf) -> NatsCluster {
        let dir = std::env::temp_dir().join(format!(
            "tickfan-nats-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("nats store dir");
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster, _)| format!("nats://127.0.0.1:{cluster}"))
            .collect();
        let mut servers = Vec::new();
        for (i, &(client_port, cluster_port, monitor_port)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let mut args = vec![
                "-a".to_owned(),
                "127.0.0.1".to_owned(),
                "-p".to_owned(),
                client_port.to_string(),
                "-m".to_owned(),
                monitor_port.to_string(),
                "-js".to_owned(),
                "-sd".to_owned(),
                dir.join(&name).display().to_string(),
                "-n".to_owned(),
                name.clone(),
            ];
            if n > 1 {
                args.extend([
                    "--cluster_name".to_owned(),
                    "tickfan-test".to_owned(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{cluster_port}"),
                    "--routes".to_owned(),
                    routes.join(","),
                ]);
            }
            let mut server = NatsServer {
                child: None,
                name,
                client_port,
                cluster_port,
                monitor_port,
                args,
            };
            server.spawn(binary);
            servers.push(server);
        }
        NatsCluster { servers, dir }
    }

    /// Whether, within `limit`, every running server answers `/healthz`
    /// with 200 and (clustered) names a JetStream meta leader of a group of
    /// all the servers: before that an R3 stream finds no peers to place.
    fn ready_within(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let running: Vec<&NatsServer> = self.servers.iter().filter(|s| s.child.is_some()).collect();
        let clustered = self.servers.len() > 1;
        for server in running {
            loop {
                let healthy =
                    http_get_local(server.monitor_port, "/healthz").is_some_and(|(s, _)| s == 200);
                if healthy && (!clustered || self.has_meta_leader(server)) {
                    break;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                // Polling the server's own report; bounded by the deadline.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        true
    }

    /// Whether `server` knows a meta leader of a group of every server.
    fn has_meta_leader(&self, server: &NatsServer) -> bool {
        let Some((200, body)) = http_get_local(server.monitor_port, "/jsz") else {
            return false;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else {
            return false;
        };
        let meta = &json["meta_cluster"];
        meta["leader"].as_str().is_some_and(|l| !l.is_empty())
            && meta["cluster_size"].as_u64() >= Some(self.servers.len() as u64)
    }

    /// The client URL of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].client_port)
    }

    /// Every server's client URL, comma-free, for `--cluster-nats` flags.
    pub fn urls(&self) -> Vec<String> {
        (0..self.servers.len()).map(|i| self.url(i)).collect()
    }

    /// SIGKILLs server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The name of the server leading `stream`, as the servers report it.
    pub fn stream_leader(&self, stream: &str) -> Option<String> {
        for server in self.servers.iter().filter(|s| s.child.is_some()) {
            let Some((200, body)) =
                http_get_local(server.monitor_port, "/jsz?accounts=true&streams=true")
            else {
                continue;
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            for account in json["account_details"].as_array().into_iter().flatten() {
                for detail in account["stream_detail"].as_array().into_iter().flatten() {
                    if detail["name"] == stream {
                        if let Some(leader) = detail["cluster"]["leader"].as_str() {
                            return Some(leader.to_owned());
                        }
                    }
                }
            }
        }
        None
    }

    /// The index of the server named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }
}

impl NatsServer {
    fn spawn(&mut self, binary: &PathBuf) {
        let child = Command::new(binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} failed: {e}", binary.display()));
        self.child = Some(child);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One message of the stream, as a full read of it returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    pub subject: String,
    pub payload: String,
}

/// Reads the whole of `stream` through the server at `url` (an ordered
/// consumer from the first message to the last the stream had when the
/// read began): the audit that the subscribers' feeds are checked against.
pub fn read_stream(url: &str, stream: &str) -> Vec<Stored> {
    use futures_util::StreamExt;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let client = async_nats::connect(url).await.expect("connect to NATS");
        let js = async_nats::jetstream::new(client);
        // Just after a server died the cluster may still be electing
        // leaders: each request is retried until a deadline.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (last, consumer) = loop {
            let attempt = async {
                let handle = js.get_stream(stream).await.map_err(|e| e.to_string())?;
                let info = handle.get_info().await.map_err(|e| e.to_string())?;
                let consumer = handle
                    .create_consumer(
                        async_nats::jetstream::consumer::pull::OrderedConfig::default(),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((info.state.last_sequence, consumer))
            };
            match attempt.await {
                Ok(done) => break done,
                Err(e) => {
                    assert!(Instant::now() < deadline, "reading stream {stream}: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let mut out = Vec::new();
        if last == 0 {
            return out;
        }
        let mut messages = consumer.messages().await.expect("messages");
        let read = async {
            while let Some(message) = messages.next().await {
                let message = message.expect("a stream message");
                let seq = message.info().expect("message info").stream_sequence;
                out.push(Stored {
                    seq,
                    subject: message.subject.to_string(),
                    payload: String::from_utf8(message.payload.to_vec()).expect("UTF-8 payload"),
                });
                if seq >= last {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the stream read within 30 s");
        out
    })
}
