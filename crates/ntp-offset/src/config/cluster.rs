//! `[cluster]`: the hosts of a cluster share their balanced spread groups' assignments through
//! etcd (docs/clusters.md). Where etcd is (client URLs), how to trust it (CA, and this host's
//! certificate when etcd asks for one), this host's name, the keys' prefix, and what a new
//! client gets while etcd is out of reach. The TLS files are loaded here too, so
//! `serve --check` catches a bad set.

use std::path::PathBuf;
use std::sync::Arc;

use ntp_offset_proto::view::valid_name;
use toml::Spanned;

use super::raw::RawCluster;
use super::{ConfigError, Context};
use crate::tls::ClientFile;

/// `[cluster]`, checked.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// etcd's client URLs, `http://HOST:PORT` or `https://HOST:PORT`, tried in turn.
    pub endpoints: Vec<String>,
    /// This host's name in logs and in the store (default: the kernel's host name).
    pub host: String,
    pub prefix: String,
    /// Set when an endpoint is `https`: the CA file, and this host's certificate and key.
    pub tls: Option<ClusterTls>,
    pub on_unavailable: OnUnavailable,
}

#[derive(Clone, Debug)]
pub struct ClusterTls {
    pub ca_file: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
    pub config: Arc<rustls::ClientConfig>,
}

/// A new client, while the store cannot record its view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Not answered with time (answered unsynchronised, as a VM being placed): no client is
    /// ever served a view that may later change. The default.
    Refuse,
    /// The group's keyed hash picks its view, not recorded: the same on every host, but
    /// perhaps not the view the store gives it later.
    Hash,
}

impl PartialEq for ClusterConfig {
    fn eq(&self, o: &Self) -> bool {
        self.endpoints == o.endpoints
            && self.host == o.host
            && self.prefix == o.prefix
            && self.on_unavailable == o.on_unavailable
            && self.tls.as_ref().map(|t| (&t.ca_file, &t.identity))
                == o.tls.as_ref().map(|t| (&t.ca_file, &t.identity))
    }
}

pub const DEFAULT_PREFIX: &str = "/ntp-offset";

impl Context<'_> {
    pub(super) fn cluster(
        &self,
        raw: Option<&Spanned<RawCluster>>,
    ) -> Result<Option<ClusterConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let r = raw.get_ref();
        let endpoints = self.cluster_endpoints(r)?;
        let host = match &r.host {
            Some(h) if valid_name(h.get_ref()) => h.get_ref().clone(),
            Some(h) => {
                return self.err(
                    h.span(),
                    "cluster.host",
                    "letters, digits, '-', '_' and '.' (not first)",
                )
            }
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .ok()
                .filter(|h| valid_name(h))
                .unwrap_or_else(|| "localhost".into()),
        };
        let prefix = match &r.prefix {
            None => DEFAULT_PREFIX.to_string(),
            Some(p) => {
                let s = p.get_ref();
                let ok = s.starts_with('/')
                    && s.len() > 1
                    && s.trim_end_matches('/').split('/').skip(1).all(valid_name);
                if !ok {
                    return self.err(
                        p.span(),
                        "cluster.prefix",
                        "a key path such as \"/ntp-offset\" or \"/site-a/ntp\" (names of letters, digits, '-', '_', '.')",
                    );
                }
                s.trim_end_matches('/').to_string()
            }
        };
        let tls = self.cluster_tls(r, &endpoints)?;
        let on_unavailable = match r.on_store_unavailable.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "refuse")) => OnUnavailable::Refuse,
            Some((_, "hash")) => OnUnavailable::Hash,
            Some((s, _)) => {
                return self.err(
                    s.span(),
                    "cluster.on_store_unavailable",
                    "\"refuse\" (new clients wait for etcd) or \"hash\" (they get the keyed hash's view, unrecorded)",
                )
            }
        };
        Ok(Some(ClusterConfig {
            endpoints,
            host,
            prefix,
            tls,
            on_unavailable,
        }))
    }

    fn cluster_endpoints(&self, r: &RawCluster) -> Result<Vec<String>, ConfigError> {
        if r.endpoints.get_ref().is_empty() {
            return self.err(
                r.endpoints.span(),
                "cluster.endpoints",
                "needs etcd's client URLs, e.g. [\"https://10.0.0.1:2379\", \"https://10.0.0.2:2379\"]",
            );
        }
        let mut out = Vec::new();
        for e in r.endpoints.get_ref() {
            let s = e.get_ref().trim_end_matches('/');
            let rest = s
                .strip_prefix("http://")
                .or_else(|| s.strip_prefix("https://"));
            let ok = rest.is_some_and(|hp| {
                hp.rsplit_once(':').is_some_and(|(h, p)| {
                    !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok_and(|p| p > 0)
                })
            });
            if !ok {
                return self.err(
                    e.span(),
                    "cluster.endpoints",
                    format!(
                        "`{}` is not http(s)://HOST:PORT (etcd's client port is 2379)",
                        e.get_ref()
                    ),
                );
            }
            if out.iter().any(|o| o == s) {
                return self.err(
                    e.span(),
                    "cluster.endpoints",
                    format!("`{s}` is listed twice"),
                );
            }
            out.push(s.to_string());
        }
        Ok(out)
    }

    /// The CA and this host's certificate, loaded as the server will.
    fn cluster_tls(
        &self,
        r: &RawCluster,
        endpoints: &[String],
    ) -> Result<Option<ClusterTls>, ConfigError> {
        let https = endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if https != 0 && https != endpoints.len() {
            return self.err(
                r.endpoints.span(),
                "cluster.endpoints",
                "all https or all http: one etcd cluster speaks one",
            );
        }
        let Some(ca) = &r.ca_file else {
            if https > 0 {
                return self.err(
                    r.endpoints.span(),
                    "cluster.ca_file",
                    "https endpoints need the CA that signed etcd's certificates (ca_file)",
                );
            }
            if let Some(c) = r.certificate.as_ref().or(r.private_key.as_ref()) {
                return self.err(c.span(), "cluster.certificate", "is for https endpoints");
            }
            return Ok(None);
        };
        if https == 0 {
            return self.err(ca.span(), "cluster.ca_file", "is for https endpoints");
        }
        let ca_file = super::beside(self.file, ca.get_ref());
        let identity = match (&r.certificate, &r.private_key) {
            (Some(c), Some(k)) => Some((
                super::beside(self.file, c.get_ref()),
                super::beside(self.file, k.get_ref()),
            )),
            (None, None) => None,
            (Some(s), None) | (None, Some(s)) => {
                return self.err(
                    s.span(),
                    "cluster.certificate",
                    "certificate and private_key go together",
                )
            }
        };
        let id = identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        match crate::tls::client(&ca_file, id) {
            Ok(config) => Ok(Some(ClusterTls {
                ca_file,
                identity,
                config,
            })),
            Err((which, message)) => {
                let (span, field) = match which {
                    ClientFile::Ca => (ca.span(), "cluster.ca_file"),
                    ClientFile::Certificate => (
                        r.certificate.as_ref().map_or(ca.span(), |c| c.span()),
                        "cluster.certificate",
                    ),
                    ClientFile::PrivateKey => (
                        r.private_key.as_ref().map_or(ca.span(), |c| c.span()),
                        "cluster.private_key",
                    ),
                };
                self.err(span, field, message)
            }
        }
    }
}
