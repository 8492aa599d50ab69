//! What stops a `pulse` subcommand. `pulse::run` logs it and exits with failure; each message
//! names the flag, file or device to look at.

use std::io;

use super::dcf77_input::Dcf77Error;
use crate::config::ConfigError;
use crate::monitor::MonitorError;
use crate::ticks::keys::{EntropyError, KeyLoadError};
use crate::ticks::transmit::TransmitError;
use crate::udp::BindError;

#[derive(Debug, thiserror::Error)]
pub enum PulseError {
    /// Flags that do not go together.
    #[error("{0}")]
    Usage(&'static str),
    /// Times given as flags (`--offset`, `--delay`, ...), checked as the config checks them.
    #[error(transparent)]
    Flags(#[from] ConfigError),
    #[error(transparent)]
    Keys(#[from] KeyLoadError),
    #[error(transparent)]
    Entropy(#[from] EntropyError),
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Transmit(#[from] TransmitError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    /// The PPS device, opened or read.
    #[error("{device}: {source}")]
    Pps { device: String, source: io::Error },
    #[error(transparent)]
    Dcf77(#[from] Dcf77Error),
    /// The socket that feeds chronyd's SOCK refclock.
    #[error("unix socket: {0}")]
    Sock(io::Error),
    /// The SHM refclock segment.
    #[error(transparent)]
    Shm(io::Error),
    #[error("--status-file {path}: {source}")]
    StatusFile { path: String, source: io::Error },
    /// Waiting for ticks.
    #[error("poll: {0}")]
    Poll(io::Error),
}
