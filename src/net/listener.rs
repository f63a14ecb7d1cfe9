//! Listening sockets, made with socket2 so that every worker can have its own
//! (`SO_REUSEPORT`): the kernel then spreads new connections over the
//! workers and no accept lock or hand-off between threads is needed.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `count` listeners to one address, one per worker.
///
/// When the configured port is 0 the first bind picks the port and the
/// others bind to that same port, so tests can ask for an ephemeral port.
pub fn bind_listeners(
    addr: SocketAddr,
    backlog: u32,
    count: usize,
) -> io::Result<Vec<mio::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count.max(1) {
        let socket = bind_one(bound, backlog)?;
        bound = socket.local_addr()?.as_socket().unwrap_or(bound);
        listeners.push(mio::net::TcpListener::from_std(socket.into()));
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr, backlog: u32) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket)
}

/// Prepares an accepted socket: ticks are small and latency-sensitive, so
/// Nagle's algorithm only delays them (batching is done by the worker).
pub fn configure_accepted(stream: &mio::net::TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}
