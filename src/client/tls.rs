//! How every client command speaks TLS (`wss://`, `https://`): one rustls
//! `ClientConfig` per process, trusting the Mozilla roots (webpki-roots)
//! plus `--ca-file`, or verifying nothing with `--insecure`; and the count
//! of handshakes, full and resumed.
//!
//! One config for the whole process on purpose: it holds the session
//! cache, so a connection resumes the TLS session of an earlier one to the
//! same server (a TLS 1.3 ticket), as a browser's connections do. That is
//! what `serial-short`, `parallel` and `load` measure by default;
//! `--no-resume` makes every handshake a full one.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use pki_types::pem::PemObject;
use pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::cli::TlsArgs;
use crate::error::Error;

static CONFIG: RwLock<Option<Arc<ClientConfig>>> = RwLock::new(None);
static FULL: AtomicU64 = AtomicU64::new(0);
static RESUMED: AtomicU64 = AtomicU64::new(0);

/// Sets the TLS config of this process's clients from the flags, trusting
/// `extra` too (the embedded server's self-signed certificate).
pub fn install(args: &TlsArgs, extra: &[CertificateDer<'static>]) -> Result<(), Error> {
    let config = build(args, extra)?;
    *CONFIG.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(config));
    Ok(())
}

/// The config clients connect with: what [`install`] set, else the Mozilla
/// roots alone.
pub fn config() -> Result<Arc<ClientConfig>, Error> {
    if let Some(config) = &*CONFIG.read().unwrap_or_else(|p| p.into_inner()) {
        return Ok(Arc::clone(config));
    }
    let config = Arc::new(build(&TlsArgs::default(), &[])?);
    let mut slot = CONFIG.write().unwrap_or_else(|p| p.into_inner());
    Ok(Arc::clone(slot.get_or_insert(config)))
}

fn provider() -> Arc<CryptoProvider> {
    crate::stream::crypto()
}

fn build(args: &TlsArgs, extra: &[CertificateDer<'static>]) -> Result<ClientConfig, Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Other(format!("cannot set up TLS: {e}")))?;
    let mut config = if args.insecure {
        eprintln!("warning: --insecure: server certificates are not verified");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(
                provider().signature_verification_algorithms,
            )))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for path in &args.ca_files {
            for cert in read_pem(path)? {
                roots.add(cert).map_err(|e| Error::Input {
                    path: path.display().to_string(),
                    cause: format!("not a usable CA certificate: {e}"),
                })?;
            }
        }
        for cert in extra {
            roots
                .add(cert.clone())
                .map_err(|e| Error::Other(format!("cannot trust the embedded server: {e}")))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    if args.no_resume {
        config.resumption = Resumption::disabled();
    }
    Ok(config)
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let fail = |cause: String| Error::Input {
        path: path.display().to_string(),
        cause,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// Counts one completed handshake.
pub fn count(resumed: bool) {
    if resumed {
        RESUMED.fetch_add(1, Ordering::Relaxed);
    } else {
        FULL.fetch_add(1, Ordering::Relaxed);
    }
}

/// TLS handshakes completed by this process so far: (full, resumed).
pub fn handshakes() -> (u64, u64) {
    (
        FULL.load(Ordering::Relaxed),
        RESUMED.load(Ordering::Relaxed),
    )
}

/// The line a summary prints for the handshakes since `before` (a value of
/// [`handshakes`]), or `None` when there were none (plain ws://).
pub fn summary_since(before: (u64, u64)) -> Option<(u64, u64)> {
    let (full, resumed) = handshakes();
    let (full, resumed) = (full - before.0, resumed - before.1);
    (full + resumed > 0).then_some((full + resumed, resumed))
}

/// `--insecure`: any certificate for any name, but the handshake's
/// signatures are still checked (the peer holds the key it presented).
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
