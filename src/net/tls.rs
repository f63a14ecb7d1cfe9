//! The TLS listener's configuration: the certificate chain and key (and
//! optionally the CA client certificates must chain to) read from PEM files
//! into a rustls [`ServerConfig`] built with an explicit crypto provider
//! (ring), never the process default, so two providers in the dependency
//! graph cannot make it panic. TLS 1.2 and 1.3; ALPN offers `http/1.1`.
//!
//! [`TlsAcceptor`] keeps the files and the configuration new connections
//! get; [`TlsAcceptor::reload`] (SIGHUP) reads the files again and swaps the
//! configuration only when they are usable, so a bad file keeps the old
//! certificate. Open connections keep the configuration they started with.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Why the TLS listener cannot start; names the config key at fault.
#[derive(Debug)]
pub struct TlsSetupError {
    /// The dotted config key, e.g. `tls.key_file`.
    pub key: &'static str,
    pub reason: String,
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config key `{}`: {}", self.key, self.reason)
    }
}

impl std::error::Error for TlsSetupError {}

fn failed(key: &'static str, reason: impl fmt::Display) -> TlsSetupError {
    TlsSetupError {
        key,
        reason: reason.to_string(),
    }
}

/// The files of the TLS listener's certificate.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
}

/// The configuration new TLS connections get, reloadable from its files.
#[derive(Debug)]
pub struct TlsAcceptor {
    files: TlsFiles,
    current: Mutex<Arc<ServerConfig>>,
}

impl TlsAcceptor {
    /// Reads the files; an unusable one is an error naming its key.
    pub fn load(files: TlsFiles) -> Result<TlsAcceptor, TlsSetupError> {
        let config = server_config(
            &files.cert_file,
            &files.key_file,
            files.client_ca_file.as_deref(),
        )?;
        Ok(TlsAcceptor {
            files,
            current: Mutex::new(config),
        })
    }

    /// The configuration for a connection accepted now.
    pub fn current(&self) -> Arc<ServerConfig> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&current)
    }

    /// Reads the files again; on success new connections get the new
    /// certificate, on failure the old one stays and the error says why.
    pub fn reload(&self) -> Result<(), TlsSetupError> {
        let files = &self.files;
        let config = server_config(
            &files.cert_file,
            &files.key_file,
            files.client_ca_file.as_deref(),
        )?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }
}

/// Builds the listener's rustls configuration from the PEM files of
/// `tls.cert_file`, `tls.key_file` and (optionally) `tls.client_ca_file`.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let chain = read_chain(cert_file, "tls.cert_file")?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        failed(
            "tls.key_file",
            format!("{}: no usable private key: {e}", key_file.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| failed("tls.listen", e))?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in read_chain(ca_file, "tls.client_ca_file")? {
                roots
                    .add(cert)
                    .map_err(|e| failed("tls.client_ca_file", e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| failed("tls.client_ca_file", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        failed(
            "tls.key_file",
            format!("{}: does not fit the certificate: {e}", key_file.display()),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM file, at least one.
fn read_chain(
    path: &Path,
    key: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| failed(key, format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(failed(
            key,
            format!("{}: no certificate in it", path.display()),
        ));
    }
    Ok(certs)
}
