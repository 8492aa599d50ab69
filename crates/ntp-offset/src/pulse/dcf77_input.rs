//! Where a DCF77 module's edges come from: a GPIO line (stamped by the kernel) or a serial
//! port's DCD line (stamped when the wait returns, by a thread of its own, since that wait
//! cannot time out).

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

pub enum Edges {
    Gpio(EdgeLine),
    SerialDcd(mpsc::Receiver<Result<Edge, String>>),
}

impl Edges {
    pub fn open(input: &Dcf77Input, active_low: bool) -> Result<Edges, String> {
        match input {
            Dcf77Input::Gpio { chip, line } => {
                EdgeLine::open(chip, *line, active_low, "ntp-offset dcf77")
                    .map(Edges::Gpio)
                    .map_err(|e| {
                        format!(
                            "cannot request {input} for edge events: {e} (is the chip right, and the line free? `gpioinfo` lists both)"
                        )
                    })
            }
            Dcf77Input::SerialDcd { tty } => {
                let mut dcd = DcdLine::open(tty, active_low)
                    .map_err(|e| format!("cannot watch {input}: {e} (a serial port with modem lines?)"))?;
                let (tx, rx) = mpsc::sync_channel(64);
                std::thread::Builder::new()
                    .name("dcd".into())
                    .spawn(move || loop {
                        let edge = match dcd.wait() {
                            Ok(Some(edge)) => Ok(edge),
                            Ok(None) => {
                                debug!(missed = dcd.missed, "DCD pulse came and went before the wake-up");
                                continue;
                            }
                            Err(e) => Err(format!("waiting for DCD: {e}")),
                        };
                        let failed = edge.is_err();
                        if tx.send(edge).is_err() || failed {
                            return;
                        }
                    })
                    .map_err(|e| format!("starting the DCD thread: {e}"))?;
                Ok(Edges::SerialDcd(rx))
            }
        }
    }

    /// The next edge, or None if there was none within `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Edge>, String> {
        match self {
            Edges::Gpio(line) => {
                let ready =
                    ntp_offset_sys::poll::wait_readable(std::slice::from_ref(line), Some(timeout))
                        .map_err(|e| format!("poll: {e}"))?;
                if ready & 1 == 0 {
                    return Ok(None);
                }
                line.read()
                    .map(Some)
                    .map_err(|e| format!("reading GPIO events: {e}"))
            }
            Edges::SerialDcd(rx) => match rx.recv_timeout(timeout) {
                Ok(edge) => edge.map(Some),
                Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => Err("the DCD thread stopped".into()),
            },
        }
    }
}
