//! A PPS device (RFC 2783's API as Linux gives it, /dev/ppsN): the kernel's timestamp of each
//! pulse's assert or clear edge, waited for with PPS_FETCH. Used by `pulse send --source pps`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

/// struct pps_ktime (linux/pps.h).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct KTime {
    sec: i64,
    nsec: i32,
    flags: u32,
}

/// struct pps_kinfo.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct KInfo {
    assert_sequence: u32,
    clear_sequence: u32,
    assert_tu: KTime,
    clear_tu: KTime,
    current_mode: i32,
}

/// struct pps_kparams.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct KParams {
    api_version: i32,
    mode: i32,
    assert_off_tu: KTime,
    clear_off_tu: KTime,
}

/// struct pps_fdata.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FData {
    info: KInfo,
    timeout: KTime,
}

const CAPTURE_ASSERT: i32 = 0x01;
const CAPTURE_CLEAR: i32 = 0x02;
const CAN_WAIT: i32 = 0x100;
const TSFMT_TSPEC: i32 = 0x1000;
const TIME_INVALID: u32 = 1;

// The uapi declares these with pointer types as the size (_IOR('p', 0xa1, struct pps_kparams
// *)), so the size field is 8 on 64-bit targets.
const fn ioc(dir: u64, nr: u64) -> u64 {
    (dir << 30) | ((std::mem::size_of::<usize>() as u64) << 16) | ((b'p' as u64) << 8) | nr
}
const GETPARAMS: u64 = ioc(2, 0xa1);
const SETPARAMS: u64 = ioc(1, 0xa2);
const GETCAP: u64 = ioc(2, 0xa3);
const FETCH: u64 = ioc(3, 0xa4);

/// Which edge marks the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    Assert,
    Clear,
}

/// One captured edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pulse {
    /// The device's count of this edge.
    pub sequence: u32,
    /// CLOCK_REALTIME (seconds, nanoseconds).
    pub time: (i64, i64),
}

pub struct PpsDevice {
    file: File,
    edge: Edge,
    /// The edge's count at the last fetch: a fetch returns at any captured event, so only a
    /// changed count is a new pulse of ours.
    last_sequence: u32,
}

impl PpsDevice {
    /// Opens `path` and makes it capture `edge`. Changing what a device captures needs
    /// CAP_SYS_TIME; a device that already captures it (most capture the assert edge by
    /// default) is left as it is.
    pub fn open(path: &Path, edge: Edge) -> io::Result<PpsDevice> {
        let file = File::open(path)?;
        let fd = file.as_raw_fd();
        let mut caps: i32 = 0;
        // SAFETY: GETCAP writes one int.
        if unsafe { libc::ioctl(fd, GETCAP as _, &mut caps) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("not a PPS device ({e})")));
        }
        let want = match edge {
            Edge::Assert => CAPTURE_ASSERT,
            Edge::Clear => CAPTURE_CLEAR,
        };
        if caps & want == 0 || caps & CAN_WAIT == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the device cannot capture the {edge:?} edge and wait for it (capabilities {caps:#x})"),
            ));
        }
        let mut params = KParams::default();
        // SAFETY: GETPARAMS fills one pps_kparams.
        if unsafe { libc::ioctl(fd, GETPARAMS as _, &mut params) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // Linux stamps in timespecs whatever the format bits say: only the edge matters.
        if params.mode & want == 0 {
            params.mode = (params.mode & !(CAPTURE_ASSERT | CAPTURE_CLEAR)) | want | TSFMT_TSPEC;
            // SAFETY: SETPARAMS reads one pps_kparams.
            if unsafe { libc::ioctl(fd, SETPARAMS as _, &params) } != 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot make the device capture the {edge:?} edge ({e}; that needs CAP_SYS_TIME)"),
                ));
            }
        }
        let mut device = PpsDevice {
            file,
            edge,
            last_sequence: 0,
        };
        // A zero timeout does not wait: the counts as they are now.
        let now = device.fetch(Duration::ZERO)?;
        device.last_sequence = now.map_or(0, |(sequence, _)| sequence);
        Ok(device)
    }

    /// PPS_FETCH: waits up to `timeout` for any captured event (not at all for zero), then
    /// gives the chosen edge's count and stamp. Ok(None): the wait timed out or was
    /// interrupted.
    fn fetch(&self, timeout: Duration) -> io::Result<Option<(u32, KTime)>> {
        let mut data = FData {
            timeout: KTime {
                sec: timeout.as_secs() as i64,
                nsec: timeout.subsec_nanos() as i32,
                flags: 0,
            },
            ..FData::default()
        };
        // SAFETY: FETCH reads the timeout and fills the info of one pps_fdata.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), FETCH as _, &mut data) } != 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ETIMEDOUT) | Some(libc::EINTR) => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(match self.edge {
            Edge::Assert => (data.info.assert_sequence, data.info.assert_tu),
            Edge::Clear => (data.info.clear_sequence, data.info.clear_tu),
        }))
    }

    /// Waits up to `timeout` for the next pulse of the chosen edge. Ok(None): none came (or
    /// a signal interrupted the wait).
    pub fn next(&mut self, timeout: Duration) -> io::Result<Option<Pulse>> {
        // At least one kernel tick: a shorter timeout would not wait at all.
        let Some((sequence, t)) = self.fetch(timeout.max(Duration::from_millis(10)))? else {
            return Ok(None);
        };
        if sequence == self.last_sequence || t.flags & TIME_INVALID != 0 {
            return Ok(None);
        }
        self.last_sequence = sequence;
        Ok(Some(Pulse {
            sequence,
            time: (t.sec, i64::from(t.nsec)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_and_ioctls_match_the_kernel_uapi() {
        // linux/pps.h on x86_64.
        assert_eq!(std::mem::size_of::<KTime>(), 16);
        assert_eq!(std::mem::size_of::<KInfo>(), 48);
        assert_eq!(std::mem::size_of::<KParams>(), 40);
        assert_eq!(std::mem::size_of::<FData>(), 64);
        assert_eq!(
            (GETPARAMS, SETPARAMS, GETCAP, FETCH),
            (0x8008_70a1, 0x4008_70a2, 0x8008_70a3, 0xc008_70a4)
        );
    }

    #[test]
    fn a_file_that_is_not_a_pps_device_is_a_clear_error() {
        let e = PpsDevice::open(Path::new("/dev/null"), Edge::Assert)
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a PPS device"), "{e}");
        let e = PpsDevice::open(Path::new("/dev/no-such-pps"), Edge::Assert)
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
