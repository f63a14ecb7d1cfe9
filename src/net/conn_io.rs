//! A connection's I/O: the one owner of its socket, the input kept between
//! reads, the outbound queue, and the write side's shutdown.
//!
//! This module alone calls `read`, `write`/`writev` and `shutdown` on a
//! client's socket; the phases of
//! a connection (HTTP request, WebSocket, SSE, held poll, draining) only
//! queue bytes and consume input. So the transport can change in one place:
//! a TLS stream replacing the plain socket changes this type and nothing
//! that decides what to send.
//!
//! Held to the panic-class lints (tests exempt): it handles what a client sends.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::ServerConfig;

use super::out_queue::{OutQueue, Written, MAX_IOVECS};
use super::read_buf::ReadBuf;
use super::tls_session::TlsSession;

/// A connection's socket and buffers.
#[derive(Debug)]
pub struct ConnIo {
    socket: TcpStream,
    /// The TLS session on a connection of the TLS listener: records are
    /// read and written on `socket`, plaintext goes through it.
    tls: Option<Box<TlsSession>>,
    /// Input kept between reads: an incomplete request head or frame, or
    /// requests not acted on yet.
    pub pending: ReadBuf,
    /// What is to be sent, in order.
    pub out: OutQueue,
    write_shut: bool,
}

impl ConnIo {
    pub fn new(socket: TcpStream) -> Self {
        ConnIo {
            socket,
            tls: None,
            pending: ReadBuf::default(),
            out: OutQueue::default(),
            write_shut: false,
        }
    }

    /// A connection accepted on the TLS listener, its handshake to come.
    pub fn new_tls(socket: TcpStream, config: Arc<ServerConfig>) -> io::Result<Self> {
        Ok(ConnIo {
            tls: Some(Box::new(TlsSession::new(config)?)),
            ..ConnIo::new(socket)
        })
    }

    /// Whether a TLS handshake is under way (not done, not failed).
    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.is_handshaking())
    }

    /// Whether this connection came in over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether everything queued has reached the socket (with TLS, the
    /// records rustls holds too).
    pub fn is_drained(&self) -> bool {
        self.out.is_empty() && self.tls.as_ref().is_none_or(|tls| !tls.wants_write())
    }

    /// The socket, for (de)registration with the worker's poll only.
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        &mut self.socket
    }

    /// Reads what the socket has into `input`, making room for at least
    /// 4 KiB and for `size_hint` bytes in all; 0 is the peer's EOF.
    pub fn receive(&mut self, input: &mut ReadBuf, size_hint: usize) -> io::Result<usize> {
        let spare = input.spare_mut(4096, size_hint);
        let n = match self.tls.as_deref_mut() {
            None => self.socket.read(spare)?,
            Some(tls) => tls.receive(&mut self.socket, spare)?,
        };
        input.commit(n);
        Ok(n)
    }

    /// Writes as much of the queue as the socket takes.
    pub fn flush(&mut self) -> io::Result<Written> {
        match self.tls.as_deref_mut() {
            None => write_out(&mut self.out, &mut self.socket),
            Some(tls) => flush_tls(tls, &mut self.out, &mut self.socket),
        }
    }

    /// Shuts the write side, once: what was queued has gone, and the peer
    /// sees EOF after it (linger: reads go on until the peer closes).
    /// `Ok(false)` when it was already shut.
    pub fn shut_write(&mut self) -> io::Result<bool> {
        if self.write_shut {
            return Ok(false);
        }
        self.write_shut = true;
        if let Some(tls) = self.tls.as_deref_mut() {
            // close_notify, then the TCP FIN (RFC 8446 §6.1).
            tls.queue_close_notify();
            tls.write_pending(&mut self.socket)?;
        }
        self.socket.shutdown(Shutdown::Write)?;
        Ok(true)
    }
}

/// Encrypts the queue's front slices into records (many ticks per record)
/// and writes them to the socket, until both are empty or the socket would
/// block; the session takes plaintext only while the records waiting stay
/// under [`super::tls_session::TLS_BUFFER_BYTES`].
fn flush_tls(
    tls: &mut TlsSession,
    out: &mut OutQueue,
    socket: &mut TcpStream,
) -> io::Result<Written> {
    let mut written = Written::default();
    loop {
        // Records waiting first: they hold older bytes than the queue.
        match tls.write_pending(socket) {
            Ok(calls) => written.syscalls = written.syscalls.saturating_add(calls),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(written),
            Err(e) => return Err(e),
        }
        if out.is_empty() || tls.is_handshaking() {
            break;
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let count = out.front_slices(&mut slices);
        let taken = tls.encrypt(slices.get(..count).unwrap_or_default())?;
        if taken == 0 {
            break;
        }
        written.bytes = written.bytes.saturating_add(taken);
        out.advance(taken, &mut written);
    }
    if out.is_empty() {
        written.oldest_tick_ts = out.take_oldest_tick_ts();
    }
    Ok(written)
}

/// Writes `out` into `writer` until the queue is empty or the writer would
/// block: one `write` when one buffer is queued (the common case once small
/// ticks are copied), else one `writev` of up to [`MAX_IOVECS`] slices per
/// call, so a burst of ticks costs one syscall per connection.
pub fn write_out(out: &mut OutQueue, writer: &mut impl Write) -> io::Result<Written> {
    let mut written = Written::default();
    loop {
        let result = if let Some(only) = out.only_chunk() {
            writer.write(only)
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            match out.front_slices(&mut slices) {
                0 => break,
                count => writer.write_vectored(slices.get(..count).unwrap_or_default()),
            }
        };
        written.syscalls = written.syscalls.saturating_add(1);
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written.bytes = written.bytes.saturating_add(n);
                out.advance(n, &mut written);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    written.oldest_tick_ts = out.take_oldest_tick_ts();
    Ok(written)
}
