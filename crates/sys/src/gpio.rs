//! A GPIO input line with kernel-timestamped edge events, through the GPIO character device
//! (uAPI v2, Linux 5.10+; CLOCK_REALTIME stamps need 5.11). Used to read a DCF77 module.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

const LINES_MAX: usize = 64;
const NAME_SIZE: usize = 32;
const NUM_ATTRS_MAX: usize = 10;

const FLAG_INPUT: u64 = 1 << 2;
const FLAG_EDGE_RISING: u64 = 1 << 4;
const FLAG_EDGE_FALLING: u64 = 1 << 5;
const FLAG_ACTIVE_LOW: u64 = 1 << 1;
const FLAG_EVENT_CLOCK_REALTIME: u64 = 1 << 11;
const EVENT_RISING: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
struct LineAttribute {
    id: u32,
    padding: u32,
    value: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct LineConfigAttribute {
    attr: LineAttribute,
    mask: u64,
}

#[repr(C)]
struct LineConfig {
    flags: u64,
    num_attrs: u32,
    padding: [u32; 5],
    attrs: [LineConfigAttribute; NUM_ATTRS_MAX],
}

#[repr(C)]
struct LineRequest {
    offsets: [u32; LINES_MAX],
    consumer: [u8; NAME_SIZE],
    config: LineConfig,
    num_lines: u32,
    event_buffer_size: u32,
    padding: [u32; 5],
    fd: i32,
}

#[repr(C)]
#[derive(Default)]
struct LineEvent {
    timestamp_ns: u64,
    id: u32,
    offset: u32,
    seqno: u32,
    line_seqno: u32,
    padding: [u32; 6],
}

/// _IOWR(0xB4, 0x07, struct gpio_v2_line_request).
const GET_LINE_IOCTL: libc::c_ulong =
    (3 << 30) | ((std::mem::size_of::<LineRequest>() as libc::c_ulong) << 16) | (0xB4 << 8) | 0x07;

/// One edge: when (CLOCK_REALTIME, ns) and the level after it (true: active).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub realtime_ns: i64,
    pub active: bool,
}

pub struct EdgeLine {
    events: File,
}

impl EdgeLine {
    /// Requests `line` of `chip` (e.g. /dev/gpiochip0) as an input with both edges reported,
    /// stamped by the kernel on CLOCK_REALTIME. `active_low` inverts the level.
    pub fn open(chip: &Path, line: u32, active_low: bool, consumer: &str) -> io::Result<EdgeLine> {
        let chip = OpenOptions::new().read(true).write(true).open(chip)?;
        let mut flags =
            FLAG_INPUT | FLAG_EDGE_RISING | FLAG_EDGE_FALLING | FLAG_EVENT_CLOCK_REALTIME;
        if active_low {
            flags |= FLAG_ACTIVE_LOW;
        }
        // SAFETY: an all-zero LineRequest is a valid value of this plain-data struct.
        let mut req: LineRequest = unsafe { std::mem::zeroed() };
        req.offsets[0] = line;
        let name = consumer.as_bytes();
        let n = name.len().min(NAME_SIZE - 1);
        req.consumer[..n].copy_from_slice(&name[..n]);
        req.config.flags = flags;
        req.num_lines = 1;
        req.event_buffer_size = 16;
        // SAFETY: the ioctl reads and writes exactly one LineRequest, which outlives the call.
        let rc = unsafe {
            libc::ioctl(
                chip.as_raw_fd(),
                GET_LINE_IOCTL,
                &mut req as *mut LineRequest,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: on success the kernel returns a new file descriptor that we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(req.fd) };
        Ok(EdgeLine {
            events: File::from(fd),
        })
    }

    /// Reads one edge (blocks; use [`crate::poll::wait_readable`] with a timeout first).
    pub fn read(&mut self) -> io::Result<Edge> {
        let mut ev = LineEvent::default();
        // SAFETY: LineEvent is plain data; the kernel writes whole events of exactly its size.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(
                (&mut ev as *mut LineEvent).cast::<u8>(),
                std::mem::size_of::<LineEvent>(),
            )
        };
        self.events.read_exact(buf)?;
        Ok(Edge {
            realtime_ns: ev.timestamp_ns as i64,
            active: ev.id == EVENT_RISING,
        })
    }
}

impl AsRawFd for EdgeLine {
    fn as_raw_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_match_the_kernel_uapi() {
        // Sizes from linux/gpio.h (x86_64): a wrong one would make the ioctl number wrong too.
        assert_eq!(std::mem::size_of::<LineAttribute>(), 16);
        assert_eq!(std::mem::size_of::<LineConfigAttribute>(), 24);
        assert_eq!(std::mem::size_of::<LineConfig>(), 272);
        assert_eq!(std::mem::size_of::<LineRequest>(), 592);
        assert_eq!(std::mem::size_of::<LineEvent>(), 48);
        assert_eq!(GET_LINE_IOCTL, 0xC250_B407);
    }

    #[test]
    fn a_missing_chip_is_a_clear_error() {
        let e = EdgeLine::open(Path::new("/dev/no-such-gpiochip"), 0, false, "test")
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
