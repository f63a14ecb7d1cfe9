//! How a TLS handshake ended, for `tickfan_tls_handshakes_total` and
//! `tickfan_tls_handshake_failures_total{reason}`: an operator facing a
//! wave of failed handshakes needs to tell a port scanner or a plain-HTTP
//! client on the TLS port (`not_tls`) from clients that distrust the
//! certificate (`peer_alert`), refused client certificates
//! (`client_certificate`), old clients (`incompatible`), and clients that
//! stall (`timeout`) or vanish (`closed`) mid-handshake.
//!
//! The decision is made once per connection, at the read that ends the
//! handshake ([`count_read`]) or at its deadline; [`ConnIo`] only reports
//! what happened.

use std::io;

use crate::metrics::worker_stats::WorkerStats;

use super::conn_io::ConnIo;

/// The label of a TLS handshake that failed with `error`: rustls's own
/// error when the session refused the bytes, `closed` for a socket error.
pub fn failure_reason(error: &io::Error) -> &'static str {
    let Some(tls_error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "closed";
    };
    match tls_error {
        rustls::Error::InvalidMessage(_) => "not_tls",
        rustls::Error::PeerIncompatible(_) => "incompatible",
        rustls::Error::AlertReceived(_) => "peer_alert",
        rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_) => {
            "client_certificate"
        }
        _ => "protocol",
    }
}

/// Counts how a read on a connection whose TLS handshake was under way
/// left it: completed, failed (and why), or still under way (nothing).
/// Called only for such reads, so each handshake is counted once.
pub fn count_read(io: &ConnIo, result: &io::Result<usize>, stats: &mut WorkerStats) {
    match result {
        // The peer's EOF before the handshake was done.
        Ok(0) => stats.count_tls_failure("closed"),
        Err(e)
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            stats.count_tls_failure(failure_reason(e));
        }
        // Data, or nothing more for now: the handshake may have finished in it.
        _ if !io.is_handshaking() => stats.count_tls_handshake(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(error: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    #[test]
    fn rustls_errors_get_their_reason() {
        use rustls::{AlertDescription, InvalidMessage, PeerIncompatible};
        let cases = [
            (
                wrapped(rustls::Error::InvalidMessage(
                    InvalidMessage::InvalidContentType,
                )),
                "not_tls",
            ),
            (
                wrapped(rustls::Error::PeerIncompatible(
                    PeerIncompatible::Tls12NotOfferedOrEnabled,
                )),
                "incompatible",
            ),
            (
                wrapped(rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
                "peer_alert",
            ),
            (
                wrapped(rustls::Error::NoCertificatesPresented),
                "client_certificate",
            ),
            (wrapped(rustls::Error::DecryptError), "protocol"),
            (io::ErrorKind::ConnectionReset.into(), "closed"),
        ];
        for (error, reason) in cases {
            assert_eq!(failure_reason(&error), reason, "{error}");
        }
    }
}
