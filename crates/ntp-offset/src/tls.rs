//! The NTS-KE server's TLS: the certificate chain and private key (PEM) into a rustls server
//! configuration that speaks only TLS 1.3 (RFC 8915 requires it) and only ALPN `ntske/1`.
//! Loaded by the config's check (so `--check` finds a bad pair) and by the server. Also the
//! cluster store's client TLS (`[cluster]`): a CA to trust, and this host's certificate.

use std::path::Path;
use std::sync::Arc;

use ntp_offset_proto::nts::ke::ALPN;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

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
    let chain = read_chain(certificate).map_err(cert_err)?;
    let key = read_key(private_key).map_err(key_err)?;
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

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = crate::files::read_capped(path, MAX_PEM_BYTES).map_err(|e| e.to_string())?;
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in it (PEM, `-----BEGIN CERTIFICATE-----`)".into());
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = crate::files::read_secret(path, MAX_PEM_BYTES).map_err(|e| e.to_string())?;
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("no PEM private key in it: {e}"))
}

/// Which file of a client's TLS set did not load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFile {
    Ca,
    Certificate,
    PrivateKey,
}

/// A TLS client trusting only the certificates in `ca` (the cluster's own CA), presenting
/// `identity` (certificate chain, private key) when the server asks for one.
pub fn client(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, (ClientFile, String)> {
    fn at(f: ClientFile, p: &Path) -> impl Fn(String) -> (ClientFile, String) + '_ {
        move |m| (f, format!("{}: {m}", p.display()))
    }
    let mut roots = RootCertStore::empty();
    for c in read_chain(ca).map_err(at(ClientFile::Ca, ca))? {
        roots
            .add(c)
            .map_err(|e| at(ClientFile::Ca, ca)(format!("not a CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| at(ClientFile::Ca, ca)(e.to_string()))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_chain(cert).map_err(at(ClientFile::Certificate, cert))?;
            let k = read_key(key).map_err(at(ClientFile::PrivateKey, key))?;
            builder.with_client_auth_cert(chain, k).map_err(|e| {
                at(ClientFile::PrivateKey, key)(format!("does not go with the certificate: {e}"))
            })?
        }
    };
    Ok(Arc::new(config))
}
