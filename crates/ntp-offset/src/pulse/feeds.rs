//! The outputs of `pulse listen`: chrony's SOCK refclock and the NTP SHM refclock. Both only
//! ever get a sample per accepted tick; when ticks stop, they get nothing, and the daemon sees
//! the source go unreachable.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use ntp_offset_proto::refclock::{ShmSample, SockSample};
use ntp_offset_proto::tick_receiver::TickSample;
use ntp_offset_sys::shm::ShmSegment;
use tracing::{info, warn};

use super::error::PulseError;

/// chrony's SOCK refclock: chronyd owns the socket at `path`; we send datagrams to it. chronyd
/// re-creates the socket when it restarts, so every sample is simply sent again by path.
pub struct SockFeed {
    path: PathBuf,
    socket: UnixDatagram,
    reaching: Option<bool>,
    pub sent: u64,
    pub failed: u64,
}

impl SockFeed {
    pub fn new(path: PathBuf) -> Result<SockFeed, PulseError> {
        let socket = UnixDatagram::unbound().map_err(PulseError::Sock)?;
        socket.set_nonblocking(true).map_err(PulseError::Sock)?;
        Ok(SockFeed {
            path,
            socket,
            reaching: None,
            sent: 0,
            failed: 0,
        })
    }

    pub fn send(&mut self, s: &TickSample) {
        let bytes = SockSample::from_tick(s).encode();
        match self.socket.send_to(&bytes, &self.path) {
            Ok(_) => {
                self.sent += 1;
                if self.reaching != Some(true) {
                    info!(socket = %self.path.display(), "feeding chronyd's SOCK refclock");
                }
                self.reaching = Some(true);
            }
            Err(e) => {
                self.failed += 1;
                if self.reaching != Some(false) {
                    warn!(
                        socket = %self.path.display(),
                        "cannot reach chronyd ({e}); is `refclock SOCK {}` in chrony.conf and chronyd running? Retrying with every tick",
                        self.path.display()
                    );
                }
                self.reaching = Some(false);
            }
        }
    }
}

/// The NTP shared-memory refclock, unit N.
pub struct ShmFeed {
    segment: ShmSegment,
    precision_log2: i32,
    pub written: u64,
}

impl ShmFeed {
    /// Unit 0 and 1 are created root-only (0600), higher units 0666, as ntpd does; `mode`
    /// overrides. An existing segment is used as its creator made it.
    pub fn new(unit: u32, mode: Option<u32>) -> Result<ShmFeed, PulseError> {
        let mode = mode.unwrap_or(if unit < 2 { 0o600 } else { 0o666 });
        let segment = ShmSegment::attach(unit, mode).map_err(PulseError::Shm)?;
        let precision_ns = ntp_offset_sys::clock::realtime_precision_ns();
        info!(unit, "writing the NTP SHM refclock (ntpd: `refclock shm unit {unit}`, chrony: `refclock SHM {unit}`)");
        Ok(ShmFeed {
            segment,
            precision_log2: ntp_offset_proto::system::precision_log2(
                ntp_offset_proto::time::Offset::from_nanos(precision_ns),
            ) as i32,
            written: 0,
        })
    }

    pub fn send(&mut self, s: &TickSample) {
        self.segment
            .write(&ShmSample::from_tick(s, self.precision_log2));
        self.written += 1;
    }
}
