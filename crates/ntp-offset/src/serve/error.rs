//! What can keep `serve` from starting or a reload from applying. The messages say what to do;
//! `main` prints them as they are.

use std::io;
use std::net::SocketAddr;

use crate::tls::TlsError;
use crate::udp::BindError;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A bound socket's option or address.
    #[error("{context}: {source}")]
    Socket { context: String, source: io::Error },
    #[error("cannot start {what}: {source}")]
    Thread { what: String, source: io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The pulse reference's thread is gone, so it cannot take a reload.
    #[error("the pulse reference thread has stopped")]
    PulseStopped,
    /// A balanced group's view is recorded in the cluster's store with another offset.
    #[error("[cluster]: spread group `{group}`: {what}. Every host of a cluster must give a view name one offset: make this host's config agree (or, if the whole cluster changes that view, give it a new name)")]
    ClusterConflict { group: String, what: String },
}

impl ServeError {
    pub fn socket(context: impl Into<String>) -> impl FnOnce(io::Error) -> ServeError {
        let context = context.into();
        move |source| ServeError::Socket { context, source }
    }

    pub fn thread(what: impl Into<String>) -> impl FnOnce(io::Error) -> ServeError {
        let what = what.into();
        move |source| ServeError::Thread { what, source }
    }

    /// `addr: error`, for the address of a socket just bound.
    pub fn local_addr(addr: SocketAddr) -> impl FnOnce(io::Error) -> ServeError {
        ServeError::socket(addr.to_string())
    }
}

/// Why a reload left the running configuration in place.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not read or check (it names its line).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A setting only a restart can change.
    #[error("{setting} changed{change}: restart the server to {why}")]
    NeedsRestart {
        setting: &'static str,
        /// ` (1 to 2)`, or empty.
        change: String,
        why: &'static str,
    },
    #[error(transparent)]
    Serve(#[from] ServeError),
}

impl ReloadError {
    /// The file this reload read, before what went wrong (a config error names it already).
    pub fn in_file(self, file: &std::path::Path) -> String {
        match self {
            ReloadError::Config(e) => e.to_string(),
            e => format!("{}: {e}", file.display()),
        }
    }
}

impl From<BindError> for ReloadError {
    fn from(e: BindError) -> ReloadError {
        ReloadError::Serve(e.into())
    }
}

impl From<TlsError> for ReloadError {
    fn from(e: TlsError) -> ReloadError {
        ReloadError::Serve(e.into())
    }
}
