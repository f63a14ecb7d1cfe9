//! Opening the fleet's non-blocking client connections, pacing how many
//! are being set up at once, and choosing which clients are parsing
//! samples; shared by the WebSocket and long-poll fleets.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

/// Which of a loop's clients connects next, and how many are between
/// connect and ready: at most `concurrency` at once, so a large fleet does
/// not flood the broker's accept queue.
#[derive(Debug)]
pub struct Ramp {
    next: usize,
    end: usize,
    concurrency: usize,
    /// Clients connected but not yet ready (subscribed, or first request sent).
    pub in_setup: usize,
}

impl Ramp {
    /// A ramp over the global client indices `clients`.
    pub fn new(clients: Range<usize>, concurrency: usize) -> Self {
        Ramp {
            next: clients.start,
            end: clients.end,
            concurrency,
            in_setup: 0,
        }
    }

    /// The next client to connect, while setup has room for one.
    pub fn next_client(&mut self) -> Option<usize> {
        if self.next >= self.end || self.in_setup >= self.concurrency {
            return None;
        }
        self.next += 1;
        Some(self.next - 1)
    }

    /// Gives up on the clients not started yet (the setup deadline has
    /// passed) and returns how many there were.
    pub fn abandon_rest(&mut self) -> usize {
        std::mem::replace(&mut self.next, self.end).abs_diff(self.end)
    }
}

/// Registers a fleet connection for reads and writes under `token`.
pub fn register<S: mio::event::Source>(poll: &Poll, token: Token, mut stream: S) -> io::Result<S> {
    poll.registry()
        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
    Ok(stream)
}

/// Starts a non-blocking connect to `addr`, from `127.0.0.<source>` when a
/// source is given: each source address has its own ephemeral port range,
/// so a fleet is not capped at ~28k ports.
pub fn dial(addr: SocketAddr, source: Option<u32>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    if let Some(n) = source {
        let ip = IpAddr::from((0x7F00_0000u32 + n).to_be_bytes());
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Whether client `global` is one of the `count` samples, taken every
/// `stride` clients.
pub fn is_sample(global: usize, stride: usize, count: usize) -> bool {
    global % stride == 0 && global / stride < count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramp_keeps_to_its_concurrency_and_range() {
        let mut ramp = Ramp::new(10..15, 2);
        assert_eq!(ramp.next_client(), Some(10));
        ramp.in_setup += 1;
        assert_eq!(ramp.next_client(), Some(11));
        ramp.in_setup += 1;
        assert_eq!(ramp.next_client(), None, "two are in setup");
        ramp.in_setup -= 1;
        assert_eq!(ramp.next_client(), Some(12));
        assert_eq!(ramp.abandon_rest(), 2, "13 and 14 never started");
        ramp.in_setup = 0;
        assert_eq!(ramp.next_client(), None);
        assert_eq!(ramp.abandon_rest(), 0);
    }
}
