//! `--tls-cert` and `--tls-key` (#15): the `wss://` rows of `make
//! compare` serve with `wsbench server`'s own rustls configuration
//! (`wsbench::server::tls::from_pem`: ring with AES-128-GCM first, TLS 1.3
//! and 1.2, stateless session tickets), so that a comparison measures the
//! I/O model and not two TLS set-ups. The handshake itself runs in the
//! connection's task (`main.rs`).

use std::path::Path;

use tokio_rustls::TlsAcceptor;

/// The acceptor for a PEM certificate chain and its key; the error is one
/// line that names the flag and the file.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    wsbench::server::tls::from_pem(cert, key)
        .map(TlsAcceptor::from)
        .map_err(|e| e.to_string())
}
