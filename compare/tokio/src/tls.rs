//! `--tls-cert` and `--tls-key` (#15): the rustls configuration of the
//! `wss://` rows of `make compare`, set up as `wsbench server`'s is, so
//! that a comparison measures the I/O model and not two TLS set-ups: the
//! main crate's crypto provider (`wsbench::stream::crypto`: ring, with
//! AES-128-GCM first), rustls's safe default protocol versions (TLS 1.3
//! and 1.2), no client authentication, and stateless TLS 1.3 session
//! tickets (`Ticketer`) for a client that resumes. The handshake itself
//! runs in the connection's task (`main.rs`).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The acceptor for a PEM certificate chain and its key; the error is one
/// line that names the flag and the file.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let chain = load_chain(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read --tls-key {}: {e}", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(wsbench::stream::crypto())
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| format!("cannot use the TLS certificate: {e}"))?;
    // Without a ticketer, rustls 0.23 still issues TLS 1.3 tickets, but
    // stateful ones that point into a 256-entry session cache; ours issues
    // stateless ones, and so does this server.
    config.ticketer =
        ring::Ticketer::new().map_err(|e| format!("cannot make a TLS session ticketer: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let fail = |why: String| format!("cannot read --tls-cert {}: {why}", path.display());
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if chain.is_empty() {
        return Err(fail("no certificate in it".into()));
    }
    Ok(chain)
}
