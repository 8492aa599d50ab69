//! The NTP shared-memory refclock segment (`struct shmTime`, key "NTP0" + unit), written with
//! the mode-1 protocol ntpd, ntpsec and chrony read: valid = 0; count++; fields; count++;
//! valid = 1, with barriers between, so a reader that sees the same count before and after its
//! copy knows the copy is whole.

use std::io;
use std::sync::atomic::{fence, Ordering};

use ntp_offset_proto::refclock::{shm_layout as at, ShmSample, SHM_KEY_BASE, SHM_SIZE};

/// An attached SHM refclock segment.
pub struct ShmSegment {
    base: *mut u8,
    unit: u32,
}

// The segment is only written through &mut self.
unsafe impl Send for ShmSegment {}

impl ShmSegment {
    /// Attaches to unit `unit`'s segment, creating it with `mode` (e.g. 0o600) if absent. An
    /// existing segment keeps the permissions its creator (often ntpd) gave it.
    pub fn attach(unit: u32, mode: u32) -> io::Result<ShmSegment> {
        let key = SHM_KEY_BASE.wrapping_add(unit as i32);
        // SAFETY: plain System V calls; the size matches struct shmTime.
        let id = unsafe { libc::shmget(key, SHM_SIZE, libc::IPC_CREAT | (mode & 0o777) as i32) };
        if id < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("SHM unit {unit} (key {key:#x}): shmget: {e}"),
            ));
        }
        let p = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if p as isize == -1 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("SHM unit {unit} (key {key:#x}): shmat: {e}"),
            ));
        }
        let mut seg = ShmSegment {
            base: p.cast(),
            unit,
        };
        seg.put_i32(at::MODE, 1);
        Ok(seg)
    }

    pub fn unit(&self) -> u32 {
        self.unit
    }

    fn put_i32(&mut self, offset: usize, v: i32) {
        debug_assert!(offset + 4 <= SHM_SIZE && offset.is_multiple_of(4));
        // SAFETY: inside the 96-byte segment, 4-aligned (the segment is page-aligned).
        unsafe { std::ptr::write_volatile(self.base.add(offset).cast::<i32>(), v) }
    }

    fn get_i32(&self, offset: usize) -> i32 {
        // SAFETY: as put_i32.
        unsafe { std::ptr::read_volatile(self.base.add(offset).cast::<i32>()) }
    }

    fn put_i64(&mut self, offset: usize, v: i64) {
        debug_assert!(offset + 8 <= SHM_SIZE && offset.is_multiple_of(8));
        // SAFETY: inside the segment, 8-aligned.
        unsafe { std::ptr::write_volatile(self.base.add(offset).cast::<i64>(), v) }
    }

    /// Publishes one sample with the mode-1 protocol.
    pub fn write(&mut self, s: &ShmSample) {
        self.put_i32(at::MODE, 1);
        self.put_i32(at::VALID, 0);
        let count = self.get_i32(at::COUNT);
        self.put_i32(at::COUNT, count.wrapping_add(1));
        fence(Ordering::SeqCst);
        self.put_i64(at::CLOCK_SEC, s.clock_sec);
        self.put_i32(at::CLOCK_USEC, s.clock_usec);
        self.put_i32(at::CLOCK_NSEC, s.clock_nsec as i32);
        self.put_i64(at::RECEIVE_SEC, s.receive_sec);
        self.put_i32(at::RECEIVE_USEC, s.receive_usec);
        self.put_i32(at::RECEIVE_NSEC, s.receive_nsec as i32);
        self.put_i32(at::LEAP, s.leap);
        self.put_i32(at::PRECISION, s.precision);
        self.put_i32(at::NSAMPLES, 3);
        fence(Ordering::SeqCst);
        self.put_i32(at::COUNT, count.wrapping_add(2));
        self.put_i32(at::VALID, 1);
    }

    /// The segment as a reader sees it: (count, valid, 96 raw bytes). For tests and `status`.
    pub fn snapshot(&self) -> (i32, i32, [u8; SHM_SIZE]) {
        let mut b = [0u8; SHM_SIZE];
        for (i, byte) in b.iter_mut().enumerate() {
            // SAFETY: inside the segment.
            *byte = unsafe { std::ptr::read_volatile(self.base.add(i)) };
        }
        (self.get_i32(at::COUNT), self.get_i32(at::VALID), b)
    }
}

impl Drop for ShmSegment {
    fn drop(&mut self) {
        // SAFETY: base came from shmat and is detached once. The segment itself stays, as
        // ntpd's does, for the reader.
        unsafe { libc::shmdt(self.base.cast()) };
    }
}

/// Permissions of SHM unit `unit`'s segment, or None if it does not exist.
pub fn segment_mode(unit: u32) -> io::Result<Option<u32>> {
    let key = SHM_KEY_BASE.wrapping_add(unit as i32);
    // SAFETY: shmget without IPC_CREAT only looks the key up.
    let id = unsafe { libc::shmget(key, 0, 0) };
    if id < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    // SAFETY: shmid_ds is a plain C struct; IPC_STAT fills it.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(ds.shm_perm.mode as u32 & 0o777))
}

/// Removes unit `unit`'s segment (tests clean up with it).
pub fn remove_segment(unit: u32) -> io::Result<()> {
    let key = SHM_KEY_BASE.wrapping_add(unit as i32);
    // SAFETY: as segment_mode; IPC_RMID takes no buffer.
    let id = unsafe { libc::shmget(key, 0, 0) };
    if id < 0 {
        return Ok(());
    }
    if unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_1_write_is_framed_by_count_and_valid() {
        // A unit far above what NTP daemons use, unique per run, removed afterwards.
        let unit = 40_000 + std::process::id() % 10_000;
        let mut seg = ShmSegment::attach(unit, 0o600).unwrap();
        assert_eq!(segment_mode(unit).unwrap(), Some(0o600));
        let (c0, _, _) = seg.snapshot();
        let s = ShmSample {
            clock_sec: 1_700_000_015,
            clock_usec: 2,
            clock_nsec: 2_499,
            receive_sec: 1_700_000_000,
            receive_usec: 1,
            receive_nsec: 1_999,
            leap: 0,
            precision: -20,
        };
        seg.write(&s);
        let (c1, valid, b) = seg.snapshot();
        remove_segment(unit).unwrap();
        assert_eq!((c1.wrapping_sub(c0), valid), (2, 1));
        let i32_at = |o: usize| i32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
        let i64_at = |o: usize| i64::from_ne_bytes(b[o..o + 8].try_into().unwrap());
        assert_eq!(i32_at(at::MODE), 1);
        assert_eq!(i64_at(at::CLOCK_SEC), 1_700_000_015);
        assert_eq!(i32_at(at::CLOCK_USEC), 2);
        assert_eq!(i32_at(at::CLOCK_NSEC), 2_499);
        assert_eq!(i64_at(at::RECEIVE_SEC), 1_700_000_000);
        assert_eq!(i32_at(at::RECEIVE_USEC), 1);
        assert_eq!(i32_at(at::RECEIVE_NSEC), 1_999);
        assert_eq!(i32_at(at::PRECISION), -20);
        drop(seg);
        assert_eq!(segment_mode(unit).unwrap(), None);
    }
}
