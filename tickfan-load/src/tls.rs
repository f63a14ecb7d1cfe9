//! The load generator's connections over TLS (`--tls-ca FILE`): a rustls
//! client session on the same non-blocking mio socket the plain runs use,
//! so a wss run differs from a ws run by the encryption alone.
//!
//! [`Stream`] reads and writes plaintext like a socket: `WouldBlock` when
//! the socket has nothing (or takes nothing) more, `Ok(0)` at the peer's
//! end. Handshake records are answered as they arrive; records the socket
//! would not take stay in the session until [`Stream::send_pending`].
//! The code is the load generator's own, not the broker's (its TLS layer
//! is what is being measured).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// How the run's connections reach the broker over TLS: whom to trust and
/// the name to verify.
#[derive(Debug, Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsClient {
    /// Trusts the certificates in the PEM file `ca_file` (for a broker with
    /// a self-signed certificate: the certificate itself) and verifies the
    /// broker as `server_name`.
    pub fn new(ca_file: &Path, server_name: &str) -> Result<TlsClient, String> {
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| format!("--tls-ca {}: {e}", ca_file.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("--tls-ca {}: {e}", ca_file.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("--tls-ca {}: {e}", ca_file.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("--tls-ca {}: no certificate", ca_file.display()));
        }
        // An explicit provider, never the process default.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| format!("--tls-server-name {server_name}: {e}"))?;
        Ok(TlsClient {
            config: Arc::new(config),
            server_name,
        })
    }

    /// A new client session (its ClientHello is written with the first bytes).
    pub fn session(&self) -> io::Result<ClientConnection> {
        ClientConnection::new(Arc::clone(&self.config), self.server_name.clone())
            .map_err(io::Error::other)
    }
}

/// A connection to the broker: a plain socket, or a TLS session over one.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls {
        socket: TcpStream,
        session: Box<ClientConnection>,
    },
}

impl Stream {
    /// `socket`, over TLS when `tls` is given.
    pub fn new(socket: TcpStream, tls: Option<&TlsClient>) -> io::Result<Stream> {
        Ok(match tls {
            None => Stream::Plain(socket),
            Some(tls) => Stream::Tls {
                socket,
                session: Box::new(tls.session()?),
            },
        })
    }

    fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(socket) | Stream::Tls { socket, .. } => socket,
        }
    }

    /// The socket, for (de)registration with a poll.
    fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(socket) | Stream::Tls { socket, .. } => socket,
        }
    }

    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.socket().take_error()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket().peer_addr()
    }

    /// Writes the TLS records the session holds, as far as the socket
    /// takes them now (`Ok` when it would block: the rest waits for the
    /// next writable edge). Nothing to do on a plain socket.
    pub fn send_pending(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls { socket, session } => match write_records(session, socket) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                other => other,
            },
        }
    }

    /// Whether a read that returned less than asked for emptied the
    /// socket: true of a plain socket; over TLS the bytes may have come
    /// from the session's buffer with more records still in the socket.
    pub fn short_read_drains(&self) -> bool {
        matches!(self, Stream::Plain(_))
    }

    /// Whether TLS records wait for the socket to take them.
    pub fn has_pending(&self) -> bool {
        matches!(self, Stream::Tls { session, .. } if session.wants_write())
    }

    /// Shuts the write side; over TLS after a close_notify, best effort.
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if let Stream::Tls { socket, session } = self {
            session.send_close_notify();
            let _ = write_records(session, socket);
        }
        self.socket().shutdown(how)
    }
}

/// Writes the session's records until it holds none, or the socket would
/// block (`WouldBlock`).
fn write_records(session: &mut ClientConnection, socket: &mut TcpStream) -> io::Result<()> {
    while session.wants_write() {
        match session.write_tls(socket) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (socket, session) = match self {
            Stream::Plain(socket) => return socket.read(buf),
            Stream::Tls { socket, session } => (socket, session),
        };
        loop {
            match session.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP ended without close_notify: the end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if session.read_tls(socket)? == 0 {
                return Ok(0);
            }
            let state = session
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if state.peer_has_closed() && state.plaintext_bytes_to_read() == 0 {
                return Ok(0);
            }
            // The handshake's next flight (and any plaintext held for it).
            match write_records(session, socket) {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (socket, session) = match self {
            Stream::Plain(socket) => return socket.write(buf),
            Stream::Tls { socket, session } => (socket, session),
        };
        if buf.is_empty() {
            return Ok(0);
        }
        // rustls takes plaintext until its buffer is full (held back until
        // the handshake is done); the records then go as far as the socket
        // takes them. Nothing taken and nothing written: would block.
        let mut taken = session.writer().write(buf)?;
        match write_records(session, socket) {
            Ok(()) if taken == 0 => {
                taken = session.writer().write(buf)?;
                let _ = write_records(session, socket);
            }
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if taken == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket_mut().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.socket_mut().deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A TLS server on a blocking loopback socket that sends `bytes` of
    /// application data right after the handshake; returns its address and
    /// the CA file that trusts it.
    fn server_sending(bytes: usize) -> (SocketAddr, std::path::PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let ca =
            std::env::temp_dir().join(format!("tickfan-load-tls-unit-{}.pem", std::process::id()));
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            let session = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut tls = rustls::StreamOwned::new(session, socket);
            tls.write_all(&vec![b'x'; bytes]).unwrap();
            tls.flush().unwrap();
            // Keep the connection open until the client is done.
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest);
        });
        (addr, ca)
    }

    /// The contract the fleet's read loop relies on: over TLS a read that
    /// returns less than the buffer holds does not mean the socket is empty
    /// (the session hands out what it decrypted of one socket read), so the
    /// loop must read on to `WouldBlock` — no new readiness edge would come.
    #[test]
    fn a_short_tls_read_leaves_more_to_read_without_a_new_edge() {
        const SENT: usize = 60 * 1024;
        let (addr, ca) = server_sending(SENT);
        let client = TlsClient::new(&ca, "localhost").unwrap();
        let _ = std::fs::remove_file(&ca);
        let socket = TcpStream::connect(addr).unwrap();
        let mut stream = Stream::new(socket, Some(&client)).unwrap();
        assert!(!stream.short_read_drains());
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(8);
        poll.registry()
            .register(
                &mut stream,
                Token(0),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut received = 0;
        let mut short_reads_with_more = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while received < SENT {
            assert!(Instant::now() < deadline, "{received} of {SENT} bytes");
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            stream.send_pending().unwrap();
            // Read to WouldBlock, noting short reads that had a successor.
            let mut last_was_short = false;
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => panic!("the server closed after {received} bytes"),
                    Ok(n) => {
                        short_reads_with_more += usize::from(last_was_short);
                        last_was_short = n < buf.len();
                        received += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
        assert_eq!(received, SENT);
        assert!(
            short_reads_with_more > 0,
            "every short read emptied the socket: the property is not exercised"
        );
    }
}
