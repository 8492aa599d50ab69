//! The NTS-KE server's TLS: the certificate chain and private key (PEM) into a rustls server
//! configuration that speaks only TLS 1.3 (RFC 8915 requires it) and only ALPN `ntske/1`.
//! Loaded by the config's check (so `--check` finds a bad pair) and by the server.

use std::path::Path;
use std::sync::Arc;

use ntp_offset_proto::nts::ke::ALPN;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Certificates and keys come nowhere near this.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Why the pair did not load; `about_key` says which file to blame.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    pub about_key: bool,
    pub message: String,
}

pub fn load(certificate: &Path, private_key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |m: String| TlsError {
        about_key: false,
        message: format!("{}: {m}", certificate.display()),
    };
    let key_err = |m: String| TlsError {
        about_key: true,
        message: format!("{}: {m}", private_key.display()),
    };
    let pem = crate::files::read_capped(certificate, MAX_PEM_BYTES)
        .map_err(|e| cert_err(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err(
            "no certificate in it (PEM, `-----BEGIN CERTIFICATE-----`)".into(),
        ));
    }
    let pem = crate::files::read_secret(private_key, MAX_PEM_BYTES)
        .map_err(|e| key_err(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| key_err(format!("no PEM private key in it: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| cert_err(format!("TLS 1.3: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| key_err(format!("does not go with the certificate: {e}")))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // Each session is one request and one answer: nothing to resume.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}
