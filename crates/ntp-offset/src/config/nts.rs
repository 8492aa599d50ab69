//! `[nts]`: the NTS key establishment server (RFC 8915): where it listens, its certificate
//! and private key (PEM), which NTP server and port it names, how often the cookie master
//! key rotates, and the limits that keep slow clients from exhausting it. A view's `auth`
//! (views.rs) says whether it needs NTS. The certificate and key are loaded here too, so
//! `serve --check` catches a bad pair; the server loads them again on start and on reload.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Context};
use crate::duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNts {
    pub listen: Spanned<Vec<Spanned<String>>>,
    pub certificate: Spanned<String>,
    pub private_key: Spanned<String>,
    pub ntp_server: Option<Spanned<String>>,
    pub ntp_port: Option<Spanned<i64>>,
    pub key_rotation: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub timeout: Option<Spanned<String>>,
}

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
        let certificate = super::reference::beside(self.file, r.certificate.get_ref());
        let private_key = super::reference::beside(self.file, r.private_key.get_ref());
        if let Err(e) = crate::serve::nts::tls::load(&certificate, &private_key) {
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
                Err(e) => return self.err(k.span(), "nts.key_rotation", e),
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
                Err(e) => return self.err(t.span(), "nts.timeout", e),
            },
        };
        Ok(Some(NtsConfig {
            listen,
            certificate,
            private_key,
            ntp_server,
            ntp_port,
            key_rotation,
            max_connections,
            timeout,
        }))
    }
}
