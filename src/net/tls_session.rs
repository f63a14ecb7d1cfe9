//! A connection's TLS session on rustls's unbuffered API: the records
//! received and the records to send live in buffers of this type, sized to
//! what is in flight and released when empty, instead of in rustls's own.
//!
//! Why not rustls's buffered `ServerConnection`: it keeps a 4 KiB receive
//! buffer for the life of every connection, and allocates each record it
//! encrypts. With 15,000 idle wss subscribers that buffer was half of the
//! broker's memory per connection (8.4 KiB, against 0.9 KiB for plain ws),
//! and on the fan-out path every record cost an allocation. Here an idle
//! connection holds only rustls's keys and state; records are encrypted
//! straight into one outgoing buffer, many ticks per record, and the buffer
//! goes back to the worker's [`buffer_pool`] once written (a fresh 64 KiB
//! per flush cost page faults at saturation).
//!
//! [`TlsSession`] knows nothing of HTTP or WebSocket: [`super::conn_io`]
//! hands it the socket and the plaintext to send, and takes the plaintext
//! it read. rustls's contract for this API is followed to the letter: after
//! each `process_tls_records` its state is handled and then `discard` bytes
//! are dropped from the front of the received records, before the next call.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};
use rustls::ServerConfig;

use super::buffer_pool;

/// Bytes asked of the socket per read: a full record (16 KiB of payload and
/// its header and tag) fits, so a burst of records is read in few calls.
const READ_BYTES: usize = 16 * 1024 + 256;

/// Plaintext gathered into one record from small queued slices; larger
/// slices are encrypted as they are (rustls splits anything over 16 KiB).
const RECORD_PLAINTEXT_BYTES: usize = 16 * 1024;

/// Slices shorter than this are gathered with their neighbours into one
/// record (a copy), so a backlog of small shared ticks is not sent as a
/// record per tick; longer ones are encrypted in place of a copy.
const GATHER_BELOW_BYTES: usize = 1024;

/// Encrypted bytes held for the socket before the queue stops handing
/// plaintext over: the backlog stays in the `OutQueue`, where the
/// slow-consumer policy can see and conflate it.
pub const TLS_BUFFER_BYTES: usize = 64 * 1024;

/// Bytes a record adds to its plaintext at most (header, explicit nonce or
/// content type, tag), for sizing the outgoing buffer before encrypting.
const RECORD_OVERHEAD_BYTES: usize = 64;

/// Where the session stands after processing what it has received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Nothing more can be done without more records from the peer.
    NeedRecords,
    /// Both sides sent close_notify: nothing more will come or go.
    Closed,
}

/// One connection's TLS session and its record buffers.
pub struct TlsSession {
    conn: UnbufferedServerConnection,
    /// Records received and not yet consumed (a partial record, or a
    /// handshake message rustls is joining); empty, unallocated, when idle.
    incoming: Vec<u8>,
    /// Plaintext decrypted but not yet taken by the reader.
    plaintext: Vec<u8>,
    /// Encrypted records to write, from `sent` on.
    outgoing: Vec<u8>,
    sent: usize,
    /// Small slices gathered into one record (kept, its size is bounded).
    staging: Vec<u8>,
    /// The peer sent close_notify.
    peer_closed: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("incoming", &self.incoming.len())
            .field("plaintext", &self.plaintext.len())
            .field("outgoing", &self.outgoing.len().saturating_sub(self.sent))
            .field("peer_closed", &self.peer_closed)
            .finish()
    }
}

impl TlsSession {
    pub fn new(config: Arc<ServerConfig>) -> io::Result<Self> {
        Ok(TlsSession {
            conn: UnbufferedServerConnection::new(config).map_err(io::Error::other)?,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            staging: Vec::new(),
            peer_closed: false,
        })
    }

    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether encrypted records wait for the socket.
    pub fn wants_write(&self) -> bool {
        self.sent < self.outgoing.len()
    }

    /// Reads plaintext into `spare`: what was decrypted before first, then
    /// records from the socket (the handshake's answers are written as they
    /// come). 0 is the peer's end, with or without close_notify;
    /// `WouldBlock` means nothing more to read now. A TLS failure is an
    /// `InvalidData` error holding the `rustls::Error`, after the alert
    /// rustls made for it was sent (best effort).
    pub fn receive(&mut self, socket: &mut TcpStream, spare: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.plaintext.is_empty() {
                return Ok(self.take_plaintext(spare));
            }
            if self.peer_closed {
                return Ok(0);
            }
            match self.process() {
                Ok(Progress::Closed) => return Ok(0),
                Ok(Progress::NeedRecords) => {}
                Err(error) => {
                    self.queue_alert();
                    let _ = self.write_pending(socket);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, error));
                }
            }
            if !self.plaintext.is_empty() || self.peer_closed {
                continue;
            }
            // The handshake's next flight before waiting for the peer's.
            match self.write_pending(socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.read_records(socket)? == 0 {
                return Ok(0);
            }
        }
    }

    /// Encrypts from the front of `slices` (the `OutQueue`'s) into records
    /// while fewer than [`TLS_BUFFER_BYTES`] wait for the socket; returns
    /// how many plaintext bytes it took (0 during the handshake or when
    /// full). Nothing is written here: [`Self::write_pending`] does that.
    pub fn encrypt(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        // What was sent of the buffer goes before more is appended.
        if self.sent > 0 {
            self.outgoing.drain(..self.sent);
            self.sent = 0;
        }
        let mut taken = 0usize;
        let mut iter = slices.iter().peekable();
        while self.outgoing.len().saturating_sub(self.sent) < TLS_BUFFER_BYTES {
            let Some(first) = iter.next() else {
                break;
            };
            if first.len() >= GATHER_BELOW_BYTES {
                if !self.encrypt_one(first)? {
                    break;
                }
                taken = taken.saturating_add(first.len());
                continue;
            }
            // A run of small slices becomes one record.
            self.staging.clear();
            self.staging.extend_from_slice(first);
            while let Some(next) = iter.peek() {
                let room = RECORD_PLAINTEXT_BYTES.saturating_sub(self.staging.len());
                if next.len() >= GATHER_BELOW_BYTES || next.len() > room {
                    break;
                }
                self.staging.extend_from_slice(next);
                iter.next();
            }
            let staging = std::mem::take(&mut self.staging);
            let encrypted = self.encrypt_one(&staging);
            self.staging = staging;
            if !encrypted? {
                break;
            }
            taken = taken.saturating_add(self.staging.len());
        }
        Ok(taken)
    }

    /// Queues a close_notify (after whatever is queued); written by the
    /// next [`Self::write_pending`].
    pub fn queue_close_notify(&mut self) {
        let _ = self.with_write_traffic(|traffic, outgoing| {
            let start = outgoing.len();
            outgoing.resize(start.saturating_add(RECORD_OVERHEAD_BYTES), 0);
            let written = traffic
                .queue_close_notify(outgoing.get_mut(start..).unwrap_or_default())
                .unwrap_or(0);
            outgoing.truncate(start.saturating_add(written));
        });
    }

    /// Writes the records waiting, until none wait (`Ok` with the number of
    /// write calls) or the socket would block (`WouldBlock`).
    pub fn write_pending(&mut self, socket: &mut TcpStream) -> io::Result<usize> {
        let mut calls = 0usize;
        while let Some(unsent) = self.outgoing.get(self.sent..).filter(|rest| !rest.is_empty()) {
            match socket.write(unsent) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    calls = calls.saturating_add(1);
                    self.sent = self.sent.saturating_add(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // All sent: an idle connection holds no buffer; the worker's pool
        // keeps it for the next connection's records (as for the queues).
        buffer_pool::give(std::mem::take(&mut self.outgoing));
        self.sent = 0;
        Ok(calls)
    }

    /// Moves decrypted plaintext into `spare`.
    fn take_plaintext(&mut self, spare: &mut [u8]) -> usize {
        let n = spare.len().min(self.plaintext.len());
        if let (Some(to), Some(from)) = (spare.get_mut(..n), self.plaintext.get(..n)) {
            to.copy_from_slice(from);
        }
        self.plaintext.drain(..n);
        if self.plaintext.is_empty() {
            self.plaintext = Vec::new();
        }
        n
    }

    /// Reads what the socket has (up to [`READ_BYTES`]) after the records
    /// kept; 0 at the peer's EOF. The bytes land on the stack first, so
    /// `incoming` holds what arrived and no more (amortised growth): a
    /// handshake trickling in a byte at a time costs its own size, not a
    /// full read buffer, and no copy of what was kept per byte.
    fn read_records(&mut self, socket: &mut TcpStream) -> io::Result<usize> {
        let mut chunk = [0u8; READ_BYTES];
        let n = loop {
            match socket.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.incoming
            .extend_from_slice(chunk.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn release_incoming_if_empty(&mut self) {
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
    }

    /// Runs rustls over the records received until it needs more of them:
    /// handshake messages are answered into `outgoing`, application data
    /// is decrypted into `plaintext`.
    fn process(&mut self) -> Result<Progress, rustls::Error> {
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let outcome: Result<Option<Progress>, rustls::Error> = match state {
                Err(error) => Err(error),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    let mut outcome = Ok(None);
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(record) => {
                                discard = discard.saturating_add(record.discard);
                                self.plaintext.extend_from_slice(record.payload);
                            }
                            Err(error) => {
                                outcome = Err(error);
                                break;
                            }
                        }
                    }
                    outcome
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut self.outgoing, |buf| encode.encode(buf)).map(|()| None)
                }
                // The records are in `outgoing`, which the caller writes
                // (exactly once) before anything encrypted later.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    Ok(None)
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => Ok(Some(Progress::Closed)),
                Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => {
                    Ok(Some(Progress::NeedRecords))
                }
                // Early data is not enabled; anything newer is refused.
                Ok(_) => Err(rustls::Error::General(
                    "unexpected TLS connection state".into(),
                )),
            };
            self.discard(discard);
            if let Some(progress) = outcome? {
                return Ok(progress);
            }
        }
    }

    /// Drops `n` processed bytes from the front of `incoming`.
    fn discard(&mut self, n: usize) {
        let n = n.min(self.incoming.len());
        self.incoming.drain(..n);
        self.release_incoming_if_empty();
    }

    /// After a failure: the alert rustls queued for it, into `outgoing`.
    fn queue_alert(&mut self) {
        // Bounded: an alert is one record; a failed session yields it first.
        for _ in 0..4 {
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
            match state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    if encode_into(&mut self.outgoing, |buf| encode.encode(buf)).is_err() {
                        return;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return,
            }
        }
    }

    /// Runs `f` with rustls's permission to send application data and the
    /// outgoing buffer, after handling what comes before it (records to
    /// encode or hand over); `None` while the handshake is under way.
    fn with_write_traffic<R>(
        &mut self,
        f: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> R,
    ) -> Option<R> {
        // Bounded: each turn settles one pending record at most.
        for _ in 0..16 {
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
            match state {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    return Some(f(&mut traffic, &mut self.outgoing));
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut self.outgoing, |buf| encode.encode(buf)).ok()?;
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    // Not expected (reads drain every record); kept, not lost.
                    while let Some(Ok(record)) = traffic.next_record() {
                        self.plaintext.extend_from_slice(record.payload);
                    }
                }
                Ok(ConnectionState::PeerClosed) => self.peer_closed = true,
                _ => return None,
            }
        }
        None
    }

    /// Encrypts `plaintext` into records at the end of `outgoing`; `false`
    /// when application data cannot be sent yet (the handshake).
    fn encrypt_one(&mut self, plaintext: &[u8]) -> io::Result<bool> {
        let records = (plaintext.len() / RECORD_PLAINTEXT_BYTES).saturating_add(1);
        let room = plaintext
            .len()
            .saturating_add(records.saturating_mul(RECORD_OVERHEAD_BYTES));
        if self.outgoing.capacity() == 0 {
            self.outgoing = buffer_pool::take(room);
        }
        let done = self.with_write_traffic(|traffic, outgoing| {
            append_growing(
                outgoing,
                room,
                |buf| traffic.encrypt(plaintext, buf),
                |error| match error {
                    EncryptError::InsufficientSize(needed) => Some(needed.required_size),
                    _ => None,
                },
            )
            .map_err(|error| io::Error::other(error.to_string()))
        });
        match done {
            None => Ok(false),
            Some(result) => result.map(|()| true),
        }
    }
}

/// Appends what `encode` writes (a handshake record) to `outgoing`,
/// growing it to the size rustls asks for; an empty `outgoing` is taken
/// from the worker's pool, where [`TlsSession::write_pending`] returns it.
fn encode_into(
    outgoing: &mut Vec<u8>,
    encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), rustls::Error> {
    const ROOM: usize = 4096;
    if outgoing.capacity() == 0 {
        *outgoing = buffer_pool::take(ROOM);
    }
    append_growing(outgoing, ROOM, encode, |error| match error {
        EncodeError::InsufficientSize(needed) => Some(needed.required_size),
        _ => None,
    })
    .map_err(|error| rustls::Error::General(error.to_string()))
}

/// Appends what `write` puts into `room` spare bytes at the end of
/// `outgoing`; when rustls answers that it needs more (`needed` reads the
/// size from its error), tries once more with that much. On an error
/// `outgoing` is as it was.
fn append_growing<E>(
    outgoing: &mut Vec<u8>,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needed: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    loop {
        let start = outgoing.len();
        outgoing.resize(start.saturating_add(room), 0);
        let result = write(outgoing.get_mut(start..).unwrap_or_default());
        match result {
            Ok(written) => {
                outgoing.truncate(start.saturating_add(written));
                return Ok(());
            }
            Err(error) => {
                outgoing.truncate(start);
                match needed(&error) {
                    Some(size) if size > room => room = size,
                    _ => return Err(error),
                }
            }
        }
    }
}
