//! The certificate of the `wss` rows (#15): one CA and one leaf for
//! `localhost` and `127.0.0.1`, made with rcgen at the start of each run and
//! given to every server (`--tls-cert`, `--tls-key`), so that all of them
//! sign handshakes with the same key type (ECDSA P-256, rcgen's default)
//! and our client trusts them all through one `--ca-file`. A server's own
//! `--tls-self-signed` would not do: tokio and Python have none, and the
//! client would need a different CA per server.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// PEM files of one run.
#[derive(Debug, Clone)]
pub struct Certificates {
    /// The CA: what the client is given with `--ca-file`.
    pub ca: PathBuf,
    /// The leaf the CA signed, and its key: what every server is given.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certificates {
    /// The servers' flags.
    pub fn server_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

/// Makes the CA and the leaf in `dir`; the error is one line for the
/// summary, and the wss rows then fail with it.
pub fn make(dir: &Path) -> Result<Certificates, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("cannot make the {what}: {e}");
    fs::create_dir_all(dir).map_err(|e| fail("certificate directory", &e))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA", &e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wsbench compare CA");
    let ca_key = KeyPair::generate().map_err(|e| fail("CA key", &e))?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| fail("CA", &e))?;
    let leaf_key = KeyPair::generate().map_err(|e| fail("server key", &e))?;
    let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .and_then(|params| params.signed_by(&leaf_key, &ca))
        .map_err(|e| fail("server certificate", &e))?;
    let certificates = Certificates {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    for (path, pem) in [
        (&certificates.ca, ca.pem()),
        (&certificates.cert, leaf.pem()),
        (&certificates.key, leaf_key.serialize_pem()),
    ] {
        fs::write(path, pem).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(certificates)
}
