//! Opening the fleet's non-blocking client connections, and choosing which
//! clients are parsing samples; shared by the WebSocket and long-poll fleets.

use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

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
