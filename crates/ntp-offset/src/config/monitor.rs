//! `[control]` and `[metrics]`: where `serve` answers `ntp-offset status` and Prometheus.

use std::net::SocketAddr;

use toml::Spanned;

use super::raw::{RawControl, RawMetrics};
use super::{ConfigError, Context};
use crate::monitor::{ControlPath, Endpoints};

/// The longest path a Unix socket address holds (sun_path, with its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

impl Context<'_> {
    pub(super) fn endpoints(
        &self,
        control: Option<&Spanned<RawControl>>,
        metrics: Option<&Spanned<RawMetrics>>,
        warnings: &mut Vec<ConfigError>,
    ) -> Result<Endpoints, ConfigError> {
        let control_socket = match control.and_then(|c| c.get_ref().socket.as_ref()) {
            None => Some(ControlPath::default_for("serve")),
            Some(s) if matches!(s.get_ref().as_str(), "none" | "") => None,
            Some(s) => {
                let path = super::beside(self.file, s.get_ref());
                if path.as_os_str().len() > MAX_SOCKET_PATH {
                    return self.err(
                        s.span(),
                        "control.socket",
                        format!("`{}` is longer than a Unix socket path may be ({MAX_SOCKET_PATH} bytes)", path.display()),
                    );
                }
                Some(ControlPath {
                    path,
                    explicit: true,
                })
            }
        };
        let metrics = match metrics {
            None => None,
            Some(m) => {
                let l = &m.get_ref().listen;
                let Ok(addr) = l.get_ref().parse::<SocketAddr>() else {
                    return self.err(
                        l.span(),
                        "metrics.listen",
                        format!("`{}` is not IP:PORT (e.g. 127.0.0.1:9123)", l.get_ref()),
                    );
                };
                if !addr.ip().is_loopback() {
                    warnings.push(self.error_at(
                        l.span(),
                        "metrics.listen",
                        format!("{addr} is not loopback: the metrics and status page have no authentication; expose them only to a management network"),
                    ));
                }
                Some(addr)
            }
        };
        Ok(Endpoints {
            control_socket,
            metrics,
        })
    }
}
