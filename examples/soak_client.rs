//! The load of `scripts/soak.sh`: connection churn plus steady publishing
//! against a running tickfan, for a bounded time.
//!
//! `CLIENTS` threads each connect to `/ws`, subscribe to one to three random
//! topics out of `TOPICS`, read ticks for a random short time, and leave —
//! with a closing handshake, by dropping the socket (FIN), or by resetting
//! it (RST) — then start over, until the time is up. One more thread
//! publishes `RATE` ticks per second round-robin across the topics. At the
//! end it prints what it did, one `name: value` line each, and exits 1 if
//! anything went wrong that should not (a refused handshake, a close the
//! client did not ask for, a publish that failed).
//!
//! Usage: `soak_client ADDR SECONDS [--clients K] [--topics N] [--rate R]`.
//! Every loop is bounded by the deadline, and every socket has read and
//! write timeouts, so the program ends a few seconds after SECONDS.

use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tungstenite::{Message, WebSocket};

/// How long any one read or write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the publisher wakes to send the ticks that are due.
const PUBLISH_EVERY: Duration = Duration::from_millis(10);

/// Errors kept for the report (the count covers them all).
const KEPT_ERRORS: usize = 10;

#[derive(Debug, Clone)]
struct Options {
    addr: String,
    duration: Duration,
    clients: usize,
    topics: usize,
    rate: u64,
}

fn usage() -> ! {
    eprintln!("usage: soak_client ADDR SECONDS [--clients K] [--topics N] [--rate TICKS_PER_SEC]");
    std::process::exit(2);
}

fn parse_options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        usage();
    }
    let number = |s: &str| s.parse::<u64>().unwrap_or_else(|_| usage());
    let mut options = Options {
        addr: args[0].clone(),
        duration: Duration::from_secs(number(&args[1])),
        clients: 200,
        topics: 50,
        rate: 2000,
    };
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        let value = number(rest.next().unwrap_or_else(|| usage()));
        match flag.as_str() {
            "--clients" => options.clients = value as usize,
            "--topics" => options.topics = value.max(1) as usize,
            "--rate" => options.rate = value,
            _ => usage(),
        }
    }
    options
}

/// What every thread adds to.
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    clean_closes: AtomicU64,
    drops: AtomicU64,
    resets: AtomicU64,
    subscriptions: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
    kept_errors: Mutex<Vec<String>>,
}

impl Counters {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.kept_errors.lock().unwrap();
        if kept.len() < KEPT_ERRORS {
            kept.push(what);
        }
    }
}

/// xorshift64*: enough randomness for choosing topics and times.
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn topic(i: u64) -> String {
    format!("soak.{i}")
}

/// Opens a pub/sub WebSocket with timeouts on its socket.
fn connect(addr: &str) -> Result<WebSocket<TcpStream>, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let (ws, _response) = tungstenite::client(format!("ws://{addr}/ws"), stream)
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

fn is_timeout(error: &tungstenite::Error) -> bool {
    matches!(error, tungstenite::Error::Io(e)
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

/// Publishes `options.rate` ticks per second round-robin over the topics
/// until `deadline`; catches up after a stall, but at most one second's
/// worth at once.
fn publish(options: &Options, counters: &Counters, deadline: Instant) {
    let mut ws = match connect(&options.addr) {
        Ok(ws) => ws,
        Err(e) => return counters.error(format!("publisher: {e}")),
    };
    let start = Instant::now();
    let mut sent: u64 = 0;
    while Instant::now() < deadline {
        let due = (start.elapsed().as_secs_f64() * options.rate as f64) as u64;
        let batch = due.saturating_sub(sent).min(options.rate.max(1));
        for _ in 0..batch {
            let op = format!(
                r#"{{"op":"pub","topic":"{}","data":{{"n":{sent}}}}}"#,
                topic(sent % options.topics as u64)
            );
            if let Err(e) = ws.write(Message::text(op)) {
                return counters.error(format!("publisher write: {e}"));
            }
            sent += 1;
        }
        if let Err(e) = ws.flush() {
            return counters.error(format!("publisher flush: {e}"));
        }
        counters.published.store(sent, Ordering::Relaxed);
        // The publisher's fixed rate: it sleeps between batches.
        thread::sleep(PUBLISH_EVERY);
    }
    let _ = ws.close(None);
    let _ = ws.flush();
}

/// One churning client: connect, subscribe, read a while, leave; again
/// until `deadline`.
fn churn(id: u64, options: &Options, counters: &Counters, deadline: Instant) {
    let mut rng = Rng::seeded(id + 1);
    while Instant::now() < deadline {
        if let Err(e) = one_connection(&mut rng, options, counters, deadline) {
            counters.error(format!("client {id}: {e}"));
            // A failing broker must not turn this into a busy loop.
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn one_connection(
    rng: &mut Rng,
    options: &Options,
    counters: &Counters,
    deadline: Instant,
) -> Result<(), String> {
    let mut ws = connect(&options.addr)?;
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let wanted = 1 + rng.below(3);
    let mut topics = Vec::new();
    while (topics.len() as u64) < wanted {
        let t = rng.below(options.topics as u64);
        if !topics.contains(&t) {
            topics.push(t);
        }
    }
    for t in &topics {
        let op = format!(r#"{{"op":"sub","topic":"{}"}}"#, topic(*t));
        ws.send(Message::text(op))
            .map_err(|e| format!("subscribe: {e}"))?;
        counters.subscriptions.fetch_add(1, Ordering::Relaxed);
    }
    let stay = Duration::from_millis(100 + rng.below(1900));
    let leave_at = (Instant::now() + stay).min(deadline);
    let mut delivered = 0;
    let result = loop {
        let left = leave_at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Ok(());
        }
        ws.get_ref().set_read_timeout(Some(left)).unwrap();
        match ws.read() {
            Ok(Message::Text(text)) if text.starts_with(r#"{"topic":"#) => delivered += 1,
            Ok(Message::Text(text)) if text.contains(r#""event":"error""#) => {
                break Err(format!("error event: {text}"))
            }
            Ok(Message::Close(frame)) => break Err(format!("closed by the broker: {frame:?}")),
            Ok(_) => {} // events, pings (answered by tungstenite)
            Err(e) if is_timeout(&e) => break Ok(()),
            Err(e) => break Err(format!("read: {e}")),
        }
    };
    counters.delivered.fetch_add(delivered, Ordering::Relaxed);
    result?;
    match rng.below(3) {
        0 => {
            ws.get_ref().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            ws.close(None).map_err(|e| format!("close: {e}"))?;
            // Ticks may still arrive before the broker's close answer.
            let close_by = Instant::now() + IO_TIMEOUT;
            loop {
                if Instant::now() >= close_by {
                    return Err("no answer to the close".into());
                }
                match ws.read() {
                    Ok(_) => {}
                    Err(tungstenite::Error::ConnectionClosed) => break,
                    Err(e) => return Err(format!("closing: {e}")),
                }
            }
            counters.clean_closes.fetch_add(1, Ordering::Relaxed);
        }
        1 => {
            drop(ws);
            counters.drops.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            socket2::SockRef::from(ws.get_ref())
                .set_linger(Some(Duration::ZERO))
                .map_err(|e| format!("SO_LINGER: {e}"))?;
            drop(ws);
            counters.resets.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

fn main() {
    let options = parse_options();
    let counters = Arc::new(Counters::default());
    let deadline = Instant::now() + options.duration;
    let mut threads = Vec::with_capacity(options.clients + 1);
    {
        let (options, counters) = (options.clone(), Arc::clone(&counters));
        threads.push(thread::spawn(move || {
            publish(&options, &counters, deadline)
        }));
    }
    for id in 0..options.clients {
        let (options, counters) = (options.clone(), Arc::clone(&counters));
        threads.push(thread::spawn(move || {
            churn(id as u64, &options, &counters, deadline)
        }));
    }
    for thread in threads {
        if thread.join().is_err() {
            counters.error("a client thread panicked".into());
        }
    }
    let c = &counters;
    let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
    println!("clients: {}", options.clients);
    println!("seconds: {}", options.duration.as_secs());
    println!("connections served: {}", get(&c.connections));
    println!(
        "  left by close handshake / drop / reset: {} / {} / {}",
        get(&c.clean_closes),
        get(&c.drops),
        get(&c.resets)
    );
    println!("subscriptions: {}", get(&c.subscriptions));
    println!("ticks published: {}", get(&c.published));
    println!("ticks delivered: {}", get(&c.delivered));
    println!("errors: {}", get(&c.errors));
    for error in c.kept_errors.lock().unwrap().iter() {
        println!("  error: {error}");
    }
    if get(&c.errors) > 0 || get(&c.delivered) == 0 {
        std::process::exit(1);
    }
}
