//! A TCP proxy on 127.0.0.1 that a test can pause: while paused it moves no
//! byte in either direction and opens no connection upstream, but closes
//! nothing, so the peers see a link gone silent (a partition) rather than
//! a refused or reset connection; resumed, it carries on where it stopped.
//!
//! Threads and blocking sockets with short read timeouts: every loop looks
//! at the pause and stop flags at least every 20 ms.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(20);

/// A running proxy to one upstream address; stopped on drop.
#[derive(Debug)]
pub struct PausableProxy {
    addr: SocketAddr,
    paused: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
}

impl PausableProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> PausableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let paused = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let (p, s) = (Arc::clone(&paused), Arc::clone(&stopped));
        thread::spawn(move || accept_loop(listener, upstream, p, s));
        PausableProxy {
            addr,
            paused,
            stopped,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops moving bytes (the link goes silent).
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Moves bytes again.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

impl Drop for PausableProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    paused: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
) {
    while !stopped.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let (paused, stopped) = (Arc::clone(&paused), Arc::clone(&stopped));
                thread::spawn(move || connect_and_pump(client, upstream, paused, stopped));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

fn connect_and_pump(
    client: TcpStream,
    upstream: SocketAddr,
    paused: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
) {
    // No connection upstream while paused: the client's connect hangs
    // as it would across a partition.
    while paused.load(Ordering::SeqCst) {
        if stopped.load(Ordering::SeqCst) {
            return;
        }
        thread::sleep(POLL);
    }
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (p, s) = (Arc::clone(&paused), Arc::clone(&stopped));
    thread::spawn(move || pump(client2, server2, p, s));
    pump(server, client, paused, stopped);
}

/// Copies `from` to `to` until EOF, an error or the stop flag, moving
/// nothing while paused.
fn pump(mut from: TcpStream, mut to: TcpStream, paused: Arc<AtomicBool>, stopped: Arc<AtomicBool>) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 * 1024];
    while !stopped.load(Ordering::SeqCst) {
        if paused.load(Ordering::SeqCst) {
            thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Bytes read just as the pause began wait for the resume.
                while paused.load(Ordering::SeqCst) && !stopped.load(Ordering::SeqCst) {
                    thread::sleep(POLL);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
