//! A serial port's DCD (carrier detect) line as an edge source, for a DCF77 module wired to
//! it (through a level shifter, as for an RS-232 port or a USB adapter with modem lines).
//!
//! The kernel reports DCD changes through TIOCMIWAIT but does not stamp them, so the stamp is
//! taken right after the wait returns: tens of microseconds late on a quiet machine, which
//! is well inside DCF77's own millisecond jitter. The kernel's DCD transition counter
//! (TIOCGICOUNT) shows when a change came and went before we woke: such a pulse is dropped
//! and counted, as a glitch.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::gpio::Edge;

/// struct serial_icounter_struct (linux/serial.h).
#[repr(C)]
#[derive(Default)]
struct ICounter {
    cts: i32,
    dsr: i32,
    rng: i32,
    dcd: i32,
    rx: i32,
    tx: i32,
    frame: i32,
    overrun: i32,
    parity: i32,
    brk: i32,
    buf_overrun: i32,
    reserved: [i32; 9],
}

pub struct DcdLine {
    tty: File,
    active_low: bool,
    /// The kernel's DCD transition count at the last edge we reported.
    count: i32,
    /// DCD changes that came and went between two wake-ups.
    pub missed: u64,
}

impl DcdLine {
    /// Opens `path` (e.g. /dev/ttyS0, /dev/ttyUSB0) to watch DCD. Sets CLOCAL: without it, a
    /// carrier drop would hang the port up, and every DCF77 pulse drops the carrier.
    pub fn open(path: &Path, active_low: bool) -> io::Result<DcdLine> {
        // O_NONBLOCK: do not wait for carrier on open (CLOCAL is not set yet).
        let tty = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(path)?;
        let fd = tty.as_raw_fd();
        // SAFETY: termios is plain data, filled by tcgetattr before it is read.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is open for the duration of both calls; `t` outlives them.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        t.c_cflag |= libc::CLOCAL;
        t.c_cflag &= !libc::HUPCL;
        // SAFETY: as above.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut line = DcdLine {
            tty,
            active_low,
            count: 0,
            missed: 0,
        };
        line.count = line.counters()?.dcd;
        Ok(line)
    }

    fn counters(&self) -> io::Result<ICounter> {
        let mut c = ICounter::default();
        // SAFETY: TIOCGICOUNT writes one serial_icounter_struct, which `c` is.
        if unsafe { libc::ioctl(self.tty.as_raw_fd(), libc::TIOCGICOUNT, &mut c) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(c)
    }

    fn carrier(&self) -> io::Result<bool> {
        let mut bits: libc::c_int = 0;
        // SAFETY: TIOCMGET writes one int.
        if unsafe { libc::ioctl(self.tty.as_raw_fd(), libc::TIOCMGET, &mut bits) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(bits & libc::TIOCM_CD != 0)
    }

    /// Blocks until DCD changes; returns the edge, or None when the change was undone before
    /// we woke (a spike: nothing to stamp). Blocks without a timeout: call it from a thread
    /// of its own.
    pub fn wait(&mut self) -> io::Result<Option<Edge>> {
        // TIOCMIWAIT waits for a change after the call, so one since the last edge is taken
        // as it is (stamped late by the time spent since).
        if self.counters()?.dcd == self.count {
            // SAFETY: TIOCMIWAIT takes the mask of lines by value and writes nothing.
            let rc = unsafe { libc::ioctl(self.tty.as_raw_fd(), libc::TIOCMIWAIT, libc::TIOCM_CD) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let realtime_ns = crate::clock::realtime_ns();
        let count = self.counters()?.dcd;
        let changes = count.wrapping_sub(self.count);
        self.count = count;
        if changes % 2 == 0 {
            self.missed += 1;
            return Ok(None);
        }
        Ok(Some(Edge {
            realtime_ns,
            active: self.carrier()? != self.active_low,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icounter_matches_the_kernel_uapi() {
        assert_eq!(std::mem::size_of::<ICounter>(), 80);
    }

    #[test]
    fn a_missing_port_is_a_clear_error() {
        let e = DcdLine::open(Path::new("/dev/no-such-tty"), false)
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_file_that_is_not_a_tty_is_refused() {
        let e = DcdLine::open(Path::new("/dev/null"), false).err().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
    }
}
