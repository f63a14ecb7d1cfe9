//! A certificate authority made at test time (rcgen) and a server
//! certificate it signed, for the tests of the TLS listener; and the rustls
//! client that trusts only that CA.

use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::broker::{Broker, IO_TIMEOUT};

/// The PEM files of one test's certificate authority and server certificate.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub ca: rcgen::Certificate,
    pub ca_key: KeyPair,
}

impl Pki {
    /// A CA, and a certificate for `localhost` and 127.0.0.1 signed by it.
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("tickfan-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tickfan test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        // A key of another certificate, for the mismatch case.
        std::fs::write(
            dir.join("other-key.pem"),
            KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        Pki {
            dir,
            ca_pem: ca.pem(),
            ca,
            ca_key,
        }
    }

    /// Replaces cert.pem and key.pem with a new certificate from the same
    /// CA; returns its DER, to recognise it.
    pub fn renew(&self) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        std::fs::write(self.dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(self.dir.join("key.pem"), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    /// The DER of the certificate the broker presents to a new connection.
    pub fn presented(&self, broker: &Broker) -> Vec<u8> {
        let mut stream = self.connect(broker);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        let certs = stream.conn.peer_certificates().unwrap();
        certs[0].to_vec()
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).to_str().unwrap().to_owned()
    }

    /// A broker with a TLS listener using this certificate.
    pub fn broker(&self) -> Broker {
        self.broker_with(&[])
    }

    /// [`Self::broker`] with `extra` flags.
    pub fn broker_with(&self, extra: &[&str]) -> Broker {
        let (cert, key) = (self.path("cert.pem"), self.path("key.pem"));
        let mut args = vec![
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ];
        args.extend_from_slice(extra);
        Broker::start(&args)
    }

    /// A rustls client that trusts only this CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client_config_with(rustls::DEFAULT_VERSIONS, &[])
    }

    /// A rustls client that trusts only this CA, speaks only `versions`
    /// and offers the ALPN protocols `alpn`.
    pub fn client_config_with(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        let ca = rustls::pki_types::CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap();
        roots.add(ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A verified TLS connection to the broker's TLS listener.
    pub fn connect(&self, broker: &Broker) -> StreamOwned<ClientConnection, TcpStream> {
        let tcp = TcpStream::connect(broker.tls_addr()).unwrap();
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let connection = ClientConnection::new(self.client_config(), name).unwrap();
        StreamOwned::new(connection, tcp)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
