//! What the NTP daemons' refclock drivers read, encoded from a [`TickSample`]:
//! - chrony's SOCK refclock: a 40-byte `struct sock_sample` datagram;
//! - the NTP shared-memory refclock (ntpd, ntpsec, chrony): the fields of a mode-1 `shmTime`
//!   (96 bytes; the IO edge writes them with the count/valid protocol).
//!
//! Both layouts are x86_64/aarch64 Linux, native endian, as the C structs are.

use crate::tick::{Leap, SourceState};
use crate::tick_receiver::TickSample;
use crate::time::{Offset, Time, NANOS_PER_SEC};

/// chrony's `SOCK_MAGIC`.
pub const SOCK_MAGIC: i32 = 0x534f_434b;
pub const SOCK_SAMPLE_LEN: usize = 40;

/// One chrony SOCK sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SockSample {
    /// System time of the event.
    pub tv_sec: i64,
    pub tv_usec: i64,
    /// pulse = false: true time − system time. pulse = true: chrony reads this field with the
    /// opposite sign, as (system time − true time) modulo 1 s.
    pub offset: f64,
    pub pulse: bool,
    /// 0 none, 1 insert, 2 delete.
    pub leap: i32,
}

impl SockSample {
    /// The sample chrony should get for `s`. A legacy pulse (no second number) becomes a pulse
    /// sample, which chrony combines with another time source (`lock` or a synchronized clock).
    pub fn from_tick(s: &TickSample) -> SockSample {
        let (tv_sec, ns) = s.rx.real.unix_secs_nanos();
        // The event is the arrival instant: express the offset relative to the microsecond tv
        // chrony sees, so truncating tv loses nothing.
        let tv_ns = i64::from(ns / 1000 * 1000);
        let event = Time::from_timespec(tv_sec, tv_ns);
        let true_minus_system =
            s.reference.since(s.rx.real).nanos() + (s.rx.real.since(event)).nanos();
        let (offset, pulse) = if s.legacy {
            let system_minus_true = (-true_minus_system).rem_euclid(NANOS_PER_SEC);
            (system_minus_true as f64 / 1e9, true)
        } else {
            (true_minus_system as f64 / 1e9, false)
        };
        SockSample {
            tv_sec,
            tv_usec: tv_ns / 1000,
            offset,
            pulse,
            // 3 makes chronyd drop the sample: an unsynchronized source must not steer it.
            leap: if s.state == SourceState::Unsynchronized {
                3
            } else {
                leap_code(s.leap)
            },
        }
    }

    /// `struct sock_sample`: tv_sec@0, tv_usec@8, offset@16, pulse@24, leap@28, _pad@32,
    /// magic@36.
    pub fn encode(&self) -> [u8; SOCK_SAMPLE_LEN] {
        let mut b = [0; SOCK_SAMPLE_LEN];
        b[0..8].copy_from_slice(&self.tv_sec.to_ne_bytes());
        b[8..16].copy_from_slice(&self.tv_usec.to_ne_bytes());
        b[16..24].copy_from_slice(&self.offset.to_ne_bytes());
        b[24..28].copy_from_slice(&i32::from(self.pulse).to_ne_bytes());
        b[28..32].copy_from_slice(&self.leap.to_ne_bytes());
        b[36..40].copy_from_slice(&SOCK_MAGIC.to_ne_bytes());
        b
    }
}

fn leap_code(l: Leap) -> i32 {
    match l {
        Leap::None => 0,
        Leap::Insert => 1,
        Leap::Delete => 2,
    }
}

/// Key of SHM unit `u`: "NTP0" + u.
pub const SHM_KEY_BASE: i32 = 0x4e54_5030;
pub const SHM_SIZE: usize = 96;

/// The `shmTime` fields a mode-1 writer sets ("clock" is true time, "receive" is system time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShmSample {
    pub clock_sec: i64,
    pub clock_usec: i32,
    pub clock_nsec: u32,
    pub receive_sec: i64,
    pub receive_usec: i32,
    pub receive_nsec: u32,
    /// NTP leap indicator: 0 none, 1 insert, 2 delete, 3 unsynchronized.
    pub leap: i32,
    /// log2 seconds.
    pub precision: i32,
}

/// How far SHM samples are moved back in time (see [`ShmSample::from_tick`]).
pub const SHM_SHIFT_NS: i64 = 20_000_000;

/// Byte offsets in `struct shmTime` (x86_64).
pub mod shm_layout {
    pub const MODE: usize = 0;
    pub const COUNT: usize = 4;
    pub const CLOCK_SEC: usize = 8;
    pub const CLOCK_USEC: usize = 16;
    pub const RECEIVE_SEC: usize = 24;
    pub const RECEIVE_USEC: usize = 32;
    pub const LEAP: usize = 36;
    pub const PRECISION: usize = 40;
    pub const NSAMPLES: usize = 44;
    pub const VALID: usize = 48;
    pub const CLOCK_NSEC: usize = 52;
    pub const RECEIVE_NSEC: usize = 56;
}

impl ShmSample {
    /// The SHM sample for `s`. A legacy pulse carries the local clock's guess of the second
    /// (the SHM protocol has no pulse samples), which is right while the local clock is within
    /// half a second.
    pub fn from_tick(s: &TickSample, precision_log2: i32) -> ShmSample {
        // ntpd/ntpsec drop a sample whose receive second is later than time(), a coarse clock
        // that lags by up to a jiffy: ticks arrive microseconds after the second, so a read in
        // the first milliseconds of a second sees them "in the future" (delay=-1s). The pair
        // (true, system) stays valid when both move together, so both move back by 20 ms;
        // the cost is 20 ms times the system clock's rate error: 2 us for a clock 100 ppm
        // off, 10 us while a daemon slews at its 500 ppm maximum.
        let shift = Offset::from_nanos(-SHM_SHIFT_NS);
        let (clock_sec, clock_nsec) = s.reference.add(shift).unix_secs_nanos();
        let (receive_sec, receive_nsec) = s.rx.real.add(shift).unix_secs_nanos();
        ShmSample {
            clock_sec,
            // chrony uses the nanoseconds only when nsec / 1000 == usec: keep them consistent.
            clock_usec: (clock_nsec / 1000) as i32,
            clock_nsec,
            receive_sec,
            receive_usec: (receive_nsec / 1000) as i32,
            receive_nsec,
            leap: if s.state == SourceState::Unsynchronized {
                3
            } else {
                leap_code(s.leap)
            },
            precision: precision_log2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::Source;
    use crate::tick_receiver::RxStamp;

    fn sample(rx_ns: i64, reference_ns: i64, legacy: bool) -> TickSample {
        TickSample {
            transmitter: Some(1),
            second: reference_ns / NANOS_PER_SEC,
            rx: RxStamp {
                real: Time::from_unix_nanos(rx_ns),
                mono_ns: 0,
            },
            tx_offset_ns: None,
            reference: Time::from_unix_nanos(reference_ns),
            leap: Leap::Insert,
            state: SourceState::Synchronized,
            source: Source::SystemClock,
            stratum: 1,
            error_bound_us: 0,
            legacy,
        }
    }

    #[test]
    fn sock_sample_layout_matches_chronys_struct() {
        // System time 1700000000.123456789, true time 0.25 s later.
        let rx = 1_700_000_000_123_456_789;
        let s = SockSample::from_tick(&sample(rx, rx + 250_000_000, false));
        assert_eq!(
            (s.tv_sec, s.tv_usec, s.pulse, s.leap),
            (1_700_000_000, 123_456, false, 1)
        );
        // tv lost 789 ns: the offset gains them back, so tv + offset is still the true time.
        assert!((s.offset - 0.250_000_789).abs() < 1e-12, "{}", s.offset);
        let b = s.encode();
        assert_eq!(b.len(), 40);
        assert_eq!(&b[0..8], &1_700_000_000i64.to_ne_bytes());
        assert_eq!(&b[8..16], &123_456i64.to_ne_bytes());
        assert_eq!(&b[16..24], &s.offset.to_ne_bytes());
        assert_eq!(&b[24..28], &0i32.to_ne_bytes());
        assert_eq!(&b[28..32], &1i32.to_ne_bytes());
        assert_eq!(&b[32..36], &[0; 4]);
        assert_eq!(&b[36..40], &0x534f434bi32.to_ne_bytes());
    }

    #[test]
    fn unsynchronized_sources_give_samples_chrony_drops() {
        let mut t = sample(1_700_000_000_000_000_000, 1_700_000_000_000_000_000, false);
        t.state = SourceState::Unsynchronized;
        assert_eq!(SockSample::from_tick(&t).leap, 3);
    }

    #[test]
    fn legacy_pulses_use_the_opposite_sign_modulo_one_second() {
        // The local clock is 15.2 s ahead of the view's true time at the pulse.
        let rx = 1_700_000_015_200_000_000;
        let s = SockSample::from_tick(&sample(rx, rx - 15_200_000_000, true));
        assert!(s.pulse);
        // system − true = +15.2 s, modulo 1 s = 0.2 s.
        assert!((s.offset - 0.2).abs() < 1e-9, "{}", s.offset);
        let behind = SockSample::from_tick(&sample(rx, rx + 100_000_000, true));
        assert!((behind.offset - 0.9).abs() < 1e-9, "{}", behind.offset);
    }

    #[test]
    fn shm_sample_keeps_usec_and_nsec_consistent() {
        let rx = 1_700_000_000_000_001_999;
        let mut t = sample(rx, rx + Offset::from_secs(15).nanos() + 500, false);
        let s = ShmSample::from_tick(&t, -20);
        // Both stamps 20 ms earlier: the receive second is the one before the tick's.
        assert_eq!(
            (s.clock_sec, s.clock_usec, s.clock_nsec),
            (1_700_000_014, 980_002, 980_002_499)
        );
        assert_eq!(
            (s.receive_sec, s.receive_usec, s.receive_nsec),
            (1_699_999_999, 980_001, 980_001_999)
        );
        let offset = (s.clock_sec - s.receive_sec) * 1_000_000_000 + i64::from(s.clock_nsec)
            - i64::from(s.receive_nsec);
        assert_eq!(offset, 15_000_000_500, "the offset is unchanged");
        assert_eq!((s.leap, s.precision), (1, -20));
        t.state = SourceState::Unsynchronized;
        assert_eq!(ShmSample::from_tick(&t, -20).leap, 3);
    }
}
