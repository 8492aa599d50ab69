//! NTS helpers for tests and the load generator: a throwaway PKI made with `openssl` (a CA and
//! a server certificate for 127.0.0.1 and localhost), and a minimal NTS client (key
//! establishment over rustls, then requests built with `proto::nts`), so tests can do what
//! chronyd will not, such as send a tampered cookie.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ntp_offset_proto::nts::extension as ef;
use ntp_offset_proto::nts::ke;
use ntp_offset_proto::nts::{Aead, SessionKeys, NONCE_LEN};
use ntp_offset_proto::packet::{Header, HEADER_LEN};
use ntp_offset_proto::time::NtpTimestamp;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A CA and a server certificate it signed, in PEM; the key is mode 0600.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "openssl is needed for the NTS tests' certificates ({e}): apt-get install openssl"
            )
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh CA named `tag` and a certificate for 127.0.0.1, 198.18.0.1 (the server side of a
/// `NetnsPair`) and localhost, in `dir`.
pub fn make_pki(dir: &Path, tag: &str) -> Pki {
    let p = |s: &str| dir.join(format!("{tag}-{s}"));
    let (ca_key, ca) = (p("ca.key"), p("ca.pem"));
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    let (ca_key_s, ca_s) = (s(&ca_key), s(&ca));
    let subj = format!("/CN=ntp-offset test CA {tag}");
    a.extend([
        "-keyout",
        &ca_key_s,
        "-out",
        &ca_s,
        "-days",
        "2",
        "-subj",
        &subj,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(dir, &a);
    let (cert, key) = issue_cert(
        dir,
        tag,
        "server",
        "subjectAltName=IP:127.0.0.1,IP:198.18.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    Pki { ca, cert, key }
}

/// A certificate (`{tag}-{name}.pem`) and its key (mode 0600), signed by `make_pki`'s CA
/// `tag` in `dir`, with the X.509v3 extensions `ext` (openssl's extfile syntax).
pub fn issue_cert(dir: &Path, tag: &str, name: &str, ext: &str) -> (PathBuf, PathBuf) {
    let p = |s: &str| dir.join(format!("{tag}-{s}"));
    let (ca_key, ca) = (p("ca.key"), p("ca.pem"));
    let (key, csr, cert, extfile) = (
        p(&format!("{name}.key")),
        p(&format!("{name}.csr")),
        p(&format!("{name}.pem")),
        p(&format!("{name}-ext.cnf")),
    );
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let (key_s, csr_s, cert_s, ext_s) = (s(&key), s(&csr), s(&cert), s(&extfile));
    let subj = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key_s,
            "-out",
            &csr_s,
            "-subj",
            &subj,
        ],
    );
    std::fs::write(&extfile, ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr_s,
            "-CA",
            &s(&ca),
            "-CAkey",
            &s(&ca_key),
            "-CAcreateserial",
            "-out",
            &cert_s,
            "-days",
            "2",
            "-extfile",
            &ext_s,
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert, key)
}

/// What a KE session gave.
#[derive(Clone, Debug)]
pub struct NtsSession {
    pub keys: SessionKeys,
    pub cookies: Vec<Vec<u8>>,
    pub server: Option<String>,
    pub port: Option<u16>,
}

/// Key establishment with the server at `addr`, trusting only the CA in `ca`, offering
/// AES-128-GCM-SIV then AES-SIV-CMAC-256 and asking for RFC 8915's exporter context (as
/// chrony clients that know of its exporter bug do).
pub fn key_exchange(addr: SocketAddr, ca: &Path) -> Result<NtsSession, String> {
    key_exchange_offering(addr, ca, &[Aead::Aes128GcmSiv, Aead::AesSivCmac256], true)
}

/// The same, offering `aeads` in this order of preference, with or without chrony's
/// Compliant AES-128-GCM-SIV Exporter Context record.
pub fn key_exchange_offering(
    addr: SocketAddr,
    ca: &Path,
    aeads: &[Aead],
    compliant_128gcm: bool,
) -> Result<NtsSession, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ke::ALPN.to_vec()];
    let name = ServerName::from(addr.ip());
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let offer: Vec<u16> = aeads.iter().map(|a| a.id()).collect();
    tls.write_all(&ke::client_request_with(&offer, compliant_128gcm))
        .map_err(|e| format!("KE request: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let r = loop {
        match tls.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if let Some(r) = ke::read_server_response(&answer) {
                    break Some(r);
                }
            }
            Err(e) => return Err(format!("KE answer: {e}")),
        }
    };
    let r = r.ok_or("the KE answer ended early")?;
    if let Some(e) = r.error {
        return Err(format!("KE error record {e}"));
    }
    let aead = r
        .aead
        .and_then(Aead::from_id)
        .ok_or("no AEAD in the KE answer")?;
    // The compliant context only when both asked for it.
    let session = ke::Session {
        aead,
        compliant_128gcm: compliant_128gcm && r.compliant_128gcm,
    };
    let keys = SessionKeys::export(aead, |out, s2c| {
        tls.conn
            .export_keying_material(
                out,
                ke::EXPORTER_LABEL,
                Some(&session.exporter_context(s2c)[..]),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    })?;
    Ok(NtsSession {
        keys,
        cookies: r.cookies,
        server: r.server,
        port: r.port,
    })
}

impl NtsSession {
    /// A client request with `cookie` (and enough placeholders to keep 8 cookies in hand),
    /// identified by `uid`.
    pub fn request(&self, cookie: &[u8], uid: &[u8; 32], transmit: NtpTimestamp) -> Vec<u8> {
        let header: [u8; HEADER_LEN] = Header::client_request(4, transmit).encode();
        let placeholders = 8usize.saturating_sub(self.cookies.len() + 1);
        let nonce = &[0x5a; NONCE_LEN][..self.keys.aead().nonce_len()];
        ef::client_request(&header, uid, cookie, placeholders, &self.keys, nonce)
    }
}
