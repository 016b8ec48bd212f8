//! The server's TLS configuration (#15): a certificate from PEM files
//! (`--tls-cert`, `--tls-key`) or one made at start (`--tls-self-signed`),
//! turned into a rustls `ServerConfig` with the ring provider. The session
//! itself lives in `stream.rs`; the handshake runs on the connection's
//! thread (`mod.rs`).

use std::path::Path;
use std::sync::Arc;

use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::cli::ServerArgs;
use crate::error::Error;

/// The TLS configuration the flags ask for and the certificate it
/// presents (an embedded server's clients trust it), or `None` for plain
/// ws://.
pub fn config(
    args: &ServerArgs,
) -> Result<Option<(Arc<ServerConfig>, CertificateDer<'static>)>, Error> {
    let (chain, key) = match (&args.tls_cert, &args.tls_key, args.tls_self_signed) {
        (Some(cert), Some(key), _) => (load_chain(cert)?, load_key(key)?),
        (_, _, true) => self_signed()?,
        _ => return Ok(None),
    };
    let leaf = chain[0].clone();
    Ok(Some((build(chain, key)?, leaf)))
}

/// The configuration for a PEM certificate chain and its key, as
/// `--tls-cert` and `--tls-key` give them; `make compare`'s tokio server
/// takes it too, so the comparison measures I/O models, not TLS set-ups.
pub fn from_pem(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Error> {
    build(load_chain(cert)?, load_key(key)?)
}

fn build(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, Error> {
    let mut config = ServerConfig::builder_with_provider(crate::stream::crypto())
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| Error::Other(format!("cannot use the TLS certificate: {e}")))?;
    // Stateless tickets: a returning client resumes its session (no
    // certificate, no key exchange signature) without the server keeping
    // a per-client cache that a thousand short connections would churn.
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| Error::Other(format!("cannot set up TLS session tickets: {e}")))?;
    Ok(Arc::new(config))
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let fail =
        |why: String| Error::Other(format!("cannot read --tls-cert {}: {why}", path.display()));
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if chain.is_empty() {
        return Err(fail("no certificate in it".into()));
    }
    Ok(chain)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| Error::Other(format!("cannot read --tls-key {}: {e}", path.display())))
}

/// A certificate for `localhost` and `127.0.0.1`, logged by fingerprint so
/// a client can pin it.
fn self_signed() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| Error::Other(format!("cannot make a self-signed certificate: {e}")))?;
    let der = made.cert.der().clone();
    log::info!(
        "self-signed certificate for localhost, 127.0.0.1: SHA-256 fingerprint {}",
        fingerprint(&der)
    );
    let key = PrivateKeyDer::try_from(made.signing_key.serialize_der())
        .map_err(|e| Error::Other(format!("cannot use the self-signed key: {e}")))?;
    Ok((vec![der], key))
}

/// `AB:CD:...`, as browsers and `openssl x509 -fingerprint -sha256` show it.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_as_openssl_prints_them() {
        // SHA-256 of the empty input.
        assert!(fingerprint(b"").starts_with("E3:B0:C4:42:98:FC:1C:14"));
        assert_eq!(fingerprint(b"").len(), 32 * 3 - 1);
    }
}
