//! Reading the kernel's clocks and its NTP status. Nothing here changes any clock: adjtimex is
//! called with `modes = 0`, which only reads.

use std::io;

/// The kernel's NTP state (adjtimex), read-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelNtpStatus {
    /// STA_* bits.
    pub status: i32,
    /// The clock state adjtimex returns: TIME_OK, TIME_INS, TIME_DEL, TIME_OOP, TIME_WAIT or
    /// TIME_ERROR (the last whenever the clock is unsynchronized).
    pub state: i32,
    pub max_error_us: i64,
    pub est_error_us: i64,
    /// CLOCK_REALTIME at the instant of the reading, consistent with `state`.
    pub time: (i64, i64),
}

impl KernelNtpStatus {
    pub fn unsynchronized(&self) -> bool {
        self.status & libc::STA_UNSYNC != 0
    }

    pub fn insert_leap(&self) -> bool {
        self.status & libc::STA_INS != 0
    }

    pub fn delete_leap(&self) -> bool {
        self.status & libc::STA_DEL != 0
    }

    /// The kernel is inserting a leap second right now (23:59:60 shows as a second 23:59:59).
    pub fn in_inserted_second(&self) -> bool {
        self.state == libc::TIME_OOP
    }

    /// The kernel has already applied the announced leap (flags not yet cleared by the daemon).
    pub fn leap_done(&self) -> bool {
        self.state == libc::TIME_WAIT || self.state == libc::TIME_OOP
    }
}

/// Reads the kernel's NTP status without changing anything.
pub fn kernel_ntp_status() -> io::Result<KernelNtpStatus> {
    // SAFETY: timex is a plain C struct; modes = 0 makes adjtimex read-only.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Err(io::Error::last_os_error());
    }
    // With STA_NANO the `usec` field of `time` holds nanoseconds.
    let sub = if tx.status & libc::STA_NANO != 0 {
        tx.time.tv_usec
    } else {
        tx.time.tv_usec * 1000
    };
    Ok(KernelNtpStatus {
        status: tx.status,
        state,
        max_error_us: tx.maxerror,
        est_error_us: tx.esterror,
        time: (tx.time.tv_sec, sub),
    })
}

fn clock_gettime(id: libc::clockid_t) -> (i64, i64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and timespec; cannot fail for these clocks.
    unsafe { libc::clock_gettime(id, &mut ts) };
    (ts.tv_sec, ts.tv_nsec)
}

/// CLOCK_REALTIME as (seconds, nanoseconds) since the Unix epoch.
pub fn realtime() -> (i64, i64) {
    clock_gettime(libc::CLOCK_REALTIME)
}

/// CLOCK_REALTIME in nanoseconds since the Unix epoch.
pub fn realtime_ns() -> i64 {
    let (s, ns) = realtime();
    s * 1_000_000_000 + ns
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let (s, ns) = clock_gettime(libc::CLOCK_MONOTONIC);
    s as u64 * 1_000_000_000 + ns as u64
}

/// CLOCK_MONOTONIC_RAW in nanoseconds: the oscillator, never slewed or stepped by NTP.
pub fn monotonic_raw_ns() -> i64 {
    let (s, ns) = clock_gettime(libc::CLOCK_MONOTONIC_RAW);
    s * 1_000_000_000 + ns
}

/// CLOCK_REALTIME and CLOCK_MONOTONIC_RAW read back to back (realtime first).
pub fn realtime_and_raw() -> ((i64, i64), i64) {
    let real = realtime();
    (real, monotonic_raw_ns())
}

/// Sleeps until CLOCK_REALTIME reaches (secs, nanos), or a signal arrives
/// (`ErrorKind::Interrupted`). An absolute deadline: a late wake-up does not accumulate.
pub fn sleep_until_realtime(secs: i64, nanos: i64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    // SAFETY: valid clock and timespec; no remainder is needed with TIMER_ABSTIME.
    let rc = unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_REALTIME,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Measured precision of CLOCK_REALTIME in nanoseconds: the smallest nonzero step seen between
/// consecutive readings (what chrony calls the clock's precision), at least the resolution.
pub fn realtime_precision_ns() -> i64 {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and timespec.
    unsafe { libc::clock_getres(libc::CLOCK_REALTIME, &mut res) };
    let resolution = res.tv_sec * 1_000_000_000 + res.tv_nsec;
    let mut best = i64::MAX;
    for _ in 0..100 {
        let a = realtime();
        let mut b = realtime();
        while b == a {
            b = realtime();
        }
        best = best.min((b.0 - a.0) * 1_000_000_000 + (b.1 - a.1));
    }
    best.max(resolution).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_status_without_privileges_or_changes() {
        let s = kernel_ntp_status().unwrap();
        assert!(s.max_error_us >= 0);
        let (now, _) = realtime();
        assert!((s.time.0 - now).abs() <= 1);
    }

    #[test]
    fn precision_is_sub_millisecond() {
        let p = realtime_precision_ns();
        assert!((1..1_000_000).contains(&p), "{p} ns");
    }
}
