//! Where a DCF77 module's edges come from: a GPIO line (stamped by the kernel) or a serial
//! port's DCD line (stamped when the wait returns, by a thread of its own, since that wait
//! cannot time out).

use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use ntp_offset_sys::gpio::{Edge, EdgeLine};
use ntp_offset_sys::serial::DcdLine;
use tracing::debug;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dcf77Input {
    Gpio { chip: PathBuf, line: u32 },
    SerialDcd { tty: PathBuf },
}

impl std::fmt::Display for Dcf77Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dcf77Input::Gpio { chip, line } => write!(f, "line {line} of {}", chip.display()),
            Dcf77Input::SerialDcd { tty } => write!(f, "DCD of {}", tty.display()),
        }
    }
}

/// Why the DCF77 receiver's edges stopped coming (or never came).
#[derive(Debug, thiserror::Error)]
pub enum Dcf77Error {
    #[error("cannot request {input} for edge events: {source} (is the chip right, and the line free? `gpioinfo` lists both)")]
    Request { input: String, source: io::Error },
    #[error("cannot watch {input}: {source} (a serial port with modem lines?)")]
    Watch { input: String, source: io::Error },
    #[error("starting the DCD thread: {0}")]
    Thread(io::Error),
    #[error("waiting for DCD: {0}")]
    Wait(io::Error),
    #[error("poll: {0}")]
    Poll(io::Error),
    #[error("reading GPIO events: {0}")]
    Read(io::Error),
    #[error("the DCD thread stopped")]
    ThreadStopped,
}

pub enum Edges {
    Gpio(EdgeLine),
    SerialDcd(mpsc::Receiver<io::Result<Edge>>),
}

impl Edges {
    pub fn open(input: &Dcf77Input, active_low: bool) -> Result<Edges, Dcf77Error> {
        match input {
            Dcf77Input::Gpio { chip, line } => {
                EdgeLine::open(chip, *line, active_low, "ntp-offset dcf77")
                    .map(Edges::Gpio)
                    .map_err(|source| Dcf77Error::Request {
                        input: input.to_string(),
                        source,
                    })
            }
            Dcf77Input::SerialDcd { tty } => {
                let mut dcd =
                    DcdLine::open(tty, active_low).map_err(|source| Dcf77Error::Watch {
                        input: input.to_string(),
                        source,
                    })?;
                let (tx, rx) = mpsc::sync_channel(64);
                std::thread::Builder::new()
                    .name("dcd".into())
                    .spawn(move || loop {
                        let edge = match dcd.wait() {
                            Ok(Some(edge)) => Ok(edge),
                            Ok(None) => {
                                debug!(
                                    missed = dcd.missed,
                                    "DCD pulse came and went before the wake-up"
                                );
                                continue;
                            }
                            Err(e) => Err(e),
                        };
                        let failed = edge.is_err();
                        if tx.send(edge).is_err() || failed {
                            return;
                        }
                    })
                    .map_err(Dcf77Error::Thread)?;
                Ok(Edges::SerialDcd(rx))
            }
        }
    }

    /// The next edge, or None if there was none within `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Edge>, Dcf77Error> {
        match self {
            Edges::Gpio(line) => {
                let ready =
                    ntp_offset_sys::poll::wait_readable(std::slice::from_ref(line), Some(timeout))
                        .map_err(Dcf77Error::Poll)?;
                if ready & 1 == 0 {
                    return Ok(None);
                }
                line.read().map(Some).map_err(Dcf77Error::Read)
            }
            Edges::SerialDcd(rx) => match rx.recv_timeout(timeout) {
                Ok(edge) => edge.map(Some).map_err(Dcf77Error::Wait),
                Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(Dcf77Error::ThreadStopped),
            },
        }
    }
}
