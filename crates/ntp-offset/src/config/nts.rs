//! `[nts]`: the NTS key establishment server (RFC 8915): where it listens, its certificate
//! and private key (PEM), which NTP server and port it names, how often the cookie master
//! key rotates, and the limits that keep slow clients from exhausting it. A view's `auth`
//! (views.rs) says whether it needs NTS. The certificate and key are loaded here too, so
//! `serve --check` catches a bad pair; the server loads them again on start and on reload.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ntp_offset_proto::nts::shared_keys::SharedSecret;
use toml::Spanned;

use super::raw::RawNts;
use super::{ConfigError, Context};
use crate::duration;

/// `[nts]`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NtsConfig {
    pub listen: Vec<SocketAddr>,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// Named in a Server record: clients ask this host for time instead of the KE server's.
    pub ntp_server: Option<String>,
    /// Named in a Port record when not 123.
    pub ntp_port: Option<u16>,
    pub key_rotation: Duration,
    /// `key_secret_file`: the file, and the secret read from it. Set: the master keys are
    /// derived from it (alike on every server that has it), not made at random and kept.
    pub key_secret: Option<(PathBuf, SharedSecret)>,
    pub max_connections: usize,
    /// For a whole KE session, handshake included.
    pub timeout: Duration,
}

pub const DEFAULT_KEY_ROTATION: Duration = Duration::from_secs(86_400);
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl Context<'_> {
    pub(super) fn nts(
        &self,
        raw: Option<&Spanned<RawNts>>,
        ntp_listen: &[SocketAddr],
    ) -> Result<Option<NtsConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let r = raw.get_ref();
        // In the order the section's errors are reported.
        let listen = self.nts_listen(r)?;
        let (certificate, private_key) = self.nts_tls(r)?;
        let ntp_server = self.nts_ntp_server(r)?;
        let ntp_port = self.nts_ntp_port(r, ntp_listen)?;
        let (key_rotation, max_connections, timeout) = self.nts_limits(r)?;
        let key_secret = self.nts_key_secret(r)?;
        Ok(Some(NtsConfig {
            listen,
            certificate,
            private_key,
            ntp_server,
            ntp_port,
            key_rotation,
            key_secret,
            max_connections,
            timeout,
        }))
    }

    fn nts_listen(&self, r: &RawNts) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut listen = Vec::new();
        if r.listen.get_ref().is_empty() {
            return self.err(
                r.listen.span(),
                "nts.listen",
                "needs at least one address, e.g. [\"127.0.0.1:4460\"]",
            );
        }
        for l in r.listen.get_ref() {
            match l.get_ref().parse::<SocketAddr>() {
                Ok(a) if !listen.contains(&a) => listen.push(a),
                Ok(a) => return self.err(l.span(), "nts.listen", format!("`{a}` is listed twice")),
                Err(_) => {
                    return self.err(
                        l.span(),
                        "nts.listen",
                        format!("`{}` is not IP:PORT (NTS-KE's port is 4460)", l.get_ref()),
                    )
                }
            }
        }
        Ok(listen)
    }

    /// The certificate and key, loaded as the server will (so `--check` finds a bad pair).
    fn nts_tls(&self, r: &RawNts) -> Result<(PathBuf, PathBuf), ConfigError> {
        let certificate = super::beside(self.file, r.certificate.get_ref());
        let private_key = super::beside(self.file, r.private_key.get_ref());
        if let Err(e) = crate::tls::load(&certificate, &private_key) {
            let span = if e.about_key {
                r.private_key.span()
            } else {
                r.certificate.span()
            };
            let field = if e.about_key {
                "nts.private_key"
            } else {
                "nts.certificate"
            };
            return self.err(span, field, e.message);
        }
        Ok((certificate, private_key))
    }

    /// The cluster's secret, read as the server will (so `--check` finds a bad file): a
    /// secret file, mode 600 or 640 like key files.
    fn nts_key_secret(&self, r: &RawNts) -> Result<Option<(PathBuf, SharedSecret)>, ConfigError> {
        let Some(f) = &r.key_secret_file else {
            return Ok(None);
        };
        let path = super::beside(self.file, f.get_ref());
        match read_key_secret(&path) {
            Ok(secret) => Ok(Some((path, secret))),
            Err(e) => self.err(f.span(), "nts.key_secret_file", e),
        }
    }

    fn nts_ntp_server(&self, r: &RawNts) -> Result<Option<String>, ConfigError> {
        let ntp_server = match &r.ntp_server {
            Some(s) if s.get_ref().is_empty() || s.get_ref().len() > 255 => {
                return self.err(
                    s.span(),
                    "nts.ntp_server",
                    "a host name or address, 1-255 bytes",
                )
            }
            Some(s) if !s.get_ref().is_ascii() || s.get_ref().contains(char::is_whitespace) => {
                return self.err(
                    s.span(),
                    "nts.ntp_server",
                    "an ASCII host name or address, no spaces",
                )
            }
            s => s.as_ref().map(|s| s.get_ref().clone()),
        };
        Ok(ntp_server)
    }

    fn nts_ntp_port(
        &self,
        r: &RawNts,
        ntp_listen: &[SocketAddr],
    ) -> Result<Option<u16>, ConfigError> {
        let ntp_port = match &r.ntp_port {
            Some(p) => match u16::try_from(*p.get_ref()) {
                Ok(p) if p > 0 => Some(p),
                _ => return self.err(p.span(), "nts.ntp_port", "1 to 65535"),
            },
            // Clients assume 123; name the port when every NTP address shares another one.
            None => {
                let first = ntp_listen[0].port();
                (first != 123 && ntp_listen.iter().all(|a| a.port() == first)).then_some(first)
            }
        };
        Ok(ntp_port)
    }

    /// Key rotation, connections at once, and the session timeout.
    fn nts_limits(&self, r: &RawNts) -> Result<(Duration, usize, Duration), ConfigError> {
        let key_rotation = match &r.key_rotation {
            None => DEFAULT_KEY_ROTATION,
            Some(k) => match duration::parse(k.get_ref()) {
                Ok(o) if o.nanos() >= 60_000_000_000 => Duration::from_nanos(o.nanos() as u64),
                Ok(_) => {
                    return self.err(
                        k.span(),
                        "nts.key_rotation",
                        "at least 1 minute (\"1d\" is usual)",
                    )
                }
                Err(e) => return self.err(k.span(), "nts.key_rotation", e.to_string()),
            },
        };
        let max_connections = match &r.max_connections {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(m) => match *m.get_ref() {
                n @ 1..=4096 => n as usize,
                _ => return self.err(m.span(), "nts.max_connections", "1 to 4096"),
            },
        };
        let timeout = match &r.timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) => match duration::parse(t.get_ref()) {
                Ok(o) if (100_000_000..=60_000_000_000).contains(&o.nanos()) => {
                    Duration::from_nanos(o.nanos() as u64)
                }
                Ok(_) => return self.err(t.span(), "nts.timeout", "100ms to 60s"),
                Err(e) => return self.err(t.span(), "nts.timeout", e.to_string()),
            },
        };
        Ok((key_rotation, max_connections, timeout))
    }
}

/// The secret in `path`, or why not (named for the operator).
pub fn read_key_secret(path: &std::path::Path) -> Result<SharedSecret, String> {
    let text = crate::files::read_secret(path, 4096)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    SharedSecret::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}
