//! Output that outlives its reader. Rust's `println!` panics when stdout is a closed pipe,
//! and tracing's writer reports a failed write with `eprintln!`, which panics too: `serve
//! 2>&1 | head -1` used to end the server. Logs, reports and one-shot output go through here
//! instead, and a closed reader only ends that output.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::warn;
use tracing_subscriber::fmt::MakeWriter;

/// Set once stderr has failed: later log lines are dropped without trying.
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

/// The log's writer: stderr, where a failed write drops the line (and all later ones) rather
/// than failing the program. Nobody is left to tell.
pub struct Stderr;

pub struct StderrLine;

impl Write for StderrLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !STDERR_GONE.load(Ordering::Relaxed) && io::stderr().write_all(buf).is_err() {
            STDERR_GONE.store(true, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = StderrLine;

    fn make_writer(&'a self) -> StderrLine {
        StderrLine
    }
}

/// A line on stdout for a one-shot command (`query`, `--check`, `keygen`): a closed reader
/// ends nothing but the output.
pub fn out(line: fmt::Arguments) {
    let _ = writeln!(io::stdout().lock(), "{line}");
}

/// A line on stderr outside the log (a usage error before anything starts).
pub fn err(line: fmt::Arguments) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// `--report`: one line per event on stdout, for scripts. When the reader goes away the
/// report stops, once, with a log line, and the program goes on.
pub struct Report {
    on: bool,
}

impl Report {
    pub fn new(on: bool) -> Report {
        Report { on }
    }

    pub fn line(&mut self, line: fmt::Arguments) {
        if !self.on {
            return;
        }
        let mut out = io::stdout().lock();
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            self.on = false;
            warn!("--report: stdout is closed ({e}); the report stops, the rest goes on");
        }
    }
}
