//! Where a daemon's control socket is: what the daemons bind (`monitor`) and where `status`
//! and `clients` look for it (`client`).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPath {
    pub path: PathBuf,
    /// Given in the config or on the command line: failing to bind it is an error. The
    /// default only warns, so `serve` still runs for a user who may not write to /run.
    pub explicit: bool,
}

/// Where root's daemons, and the packaged services (RuntimeDirectory=ntp-offset), keep their
/// control sockets.
pub const SYSTEM_DIR: &str = "/run/ntp-offset";

impl ControlPath {
    /// The control socket `role` (serve, pulse-listen, pulse-send) uses unless told otherwise:
    /// in systemd's RuntimeDirectory= when set; else /run/ntp-offset/ for root and
    /// $XDG_RUNTIME_DIR/ntp-offset/ for other users (who may not write to /run).
    pub fn default_for(role: &str) -> ControlPath {
        let env_dir = |name: &str| {
            std::env::var_os(name)
                .and_then(|d| {
                    d.to_str()
                        .and_then(|s| s.split(':').next().map(PathBuf::from))
                })
                .filter(|d| !d.as_os_str().is_empty())
        };
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let dir = env_dir("RUNTIME_DIRECTORY")
            .or_else(|| {
                if root {
                    None
                } else {
                    env_dir("XDG_RUNTIME_DIR").map(|d| d.join("ntp-offset"))
                }
            })
            .unwrap_or_else(|| PathBuf::from(SYSTEM_DIR));
        ControlPath {
            path: dir.join(format!("{role}.sock")),
            explicit: false,
        }
    }

    /// `--control-socket`: a path, or "none".
    pub fn from_flag(flag: Option<&str>, role: &str) -> Option<ControlPath> {
        match flag {
            None => Some(ControlPath::default_for(role)),
            Some("none") | Some("") => None,
            Some(p) => Some(ControlPath {
                path: PathBuf::from(p),
                explicit: true,
            }),
        }
    }
}
