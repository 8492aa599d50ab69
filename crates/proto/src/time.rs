//! Time as the server handles it, and as NTP puts it on the wire.
//!
//! [`Time`] is nanoseconds since the Unix epoch in a signed 64-bit integer (years 1678..2262),
//! which holds every instant a view can serve: views are limited to offsets below
//! [`MAX_OFFSET`], because NTP timestamps repeat every 2^32 s (136 years) and a client resolves
//! the era relative to its own clock, so a larger shift cannot be told apart from its wrap.
//!
//! [`NtpTimestamp`] is the 32.32 fixed-point wire format. Converting *to* it drops the era, which
//! is exactly what the wire does (2036-02-07 06:28:16 UTC is era 1, second 0); converting *from*
//! it needs a pivot instant that says which era is meant.

use core::fmt;

pub const NANOS_PER_SEC: i64 = 1_000_000_000;
/// Seconds from the NTP prime epoch (1900-01-01 00:00 UTC) to the Unix epoch.
pub const NTP_UNIX_DELTA_SECS: i64 = 2_208_988_800;
/// The largest magnitude of a view offset: half an NTP era, less one second, so the served time
/// is always within ±68 years of true time and a client's era resolution cannot go wrong.
pub const MAX_OFFSET: Offset = Offset((i32::MAX as i64 - 1) * NANOS_PER_SEC);

/// An instant: nanoseconds since 1970-01-01 00:00:00 UTC, leap seconds not counted (POSIX time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(i64);

/// A signed span of time in nanoseconds: a view's offset, a measured clock offset, a delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(i64);

/// The NTP 64-bit timestamp: seconds since the start of its era in the high 32 bits, binary
/// fraction of a second in the low 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NtpTimestamp(u64);

/// The NTP 32-bit short format (16.16 seconds), used for root delay and root dispersion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NtpShort(u32);

impl Time {
    pub const fn from_unix_nanos(nanos: i64) -> Self {
        Time(nanos)
    }

    /// From a `timespec` as the kernel gives it (`tv_nsec` below one second).
    pub const fn from_timespec(secs: i64, nanos: i64) -> Self {
        Time(secs * NANOS_PER_SEC + nanos)
    }

    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// Whole seconds (rounded towards minus infinity) and nanoseconds in that second.
    pub const fn unix_secs_nanos(self) -> (i64, u32) {
        (
            self.0.div_euclid(NANOS_PER_SEC),
            self.0.rem_euclid(NANOS_PER_SEC) as u32,
        )
    }

    /// This instant shifted by `offset`. Saturates at the ends of the representable range, which
    /// lie centuries beyond any instant a valid view can reach.
    pub const fn add(self, offset: Offset) -> Self {
        Time(self.0.saturating_add(offset.0))
    }

    /// `self - earlier`, saturating.
    pub const fn since(self, earlier: Time) -> Offset {
        Offset(self.0.saturating_sub(earlier.0))
    }

    /// The NTP timestamp of this instant, in whatever era it falls (the era is not on the wire).
    pub const fn to_ntp(self) -> NtpTimestamp {
        let (secs, nanos) = self.unix_secs_nanos();
        let ntp_secs = (secs + NTP_UNIX_DELTA_SECS) as u64 & 0xffff_ffff;
        // Truncating: the error is below 0.25 ns, far under any clock's precision.
        let frac = ((nanos as u64) << 32) / NANOS_PER_SEC as u64;
        NtpTimestamp(ntp_secs << 32 | frac)
    }
}

impl NtpTimestamp {
    pub const ZERO: NtpTimestamp = NtpTimestamp(0);

    pub const fn from_bits(bits: u64) -> Self {
        NtpTimestamp(bits)
    }

    pub const fn to_bits(self) -> u64 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The instant this timestamp names that lies closest to `pivot` (within ±68 years of it).
    pub const fn to_time_near(self, pivot: Time) -> Time {
        pivot.add(self.wrapping_sub(pivot.to_ntp()))
    }

    /// `self - other` as a signed span, correct whenever the true difference is below 68 years,
    /// whatever the eras of the two timestamps (RFC 5905's difference arithmetic).
    pub const fn wrapping_sub(self, other: NtpTimestamp) -> Offset {
        Offset::from_ntp_fixed(self.0.wrapping_sub(other.0) as i64)
    }
}

impl Offset {
    pub const ZERO: Offset = Offset(0);

    pub const fn from_nanos(nanos: i64) -> Self {
        Offset(nanos)
    }

    pub const fn from_secs(secs: i64) -> Self {
        Offset(secs.saturating_mul(NANOS_PER_SEC))
    }

    pub const fn from_micros(micros: i64) -> Self {
        Offset(micros.saturating_mul(1000))
    }

    pub const fn nanos(self) -> i64 {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / NANOS_PER_SEC as f64
    }

    pub const fn abs(self) -> Offset {
        Offset(self.0.saturating_abs())
    }

    pub const fn neg(self) -> Offset {
        Offset(self.0.saturating_neg())
    }

    pub const fn add(self, other: Offset) -> Offset {
        Offset(self.0.saturating_add(other.0))
    }

    /// A signed 32.32 fixed-point number of seconds, rounded to the nearest nanosecond.
    const fn from_ntp_fixed(fixed: i64) -> Offset {
        let nanos = (fixed as i128 * NANOS_PER_SEC as i128 + (1 << 31)) >> 32;
        Offset(nanos as i64)
    }
}

impl NtpShort {
    pub const fn from_bits(bits: u32) -> Self {
        NtpShort(bits)
    }

    pub const fn to_bits(self) -> u32 {
        self.0
    }

    /// A non-negative span in 16.16 seconds, rounded up (an error bound must never shrink) and
    /// saturating at 65536 s; negative spans become zero.
    pub const fn from_offset(offset: Offset) -> Self {
        if offset.0 <= 0 {
            return NtpShort(0);
        }
        let fixed = ((offset.0 as u128) << 16).div_ceil(NANOS_PER_SEC as u128);
        if fixed > u32::MAX as u128 {
            NtpShort(u32::MAX)
        } else {
            NtpShort(fixed as u32)
        }
    }

    pub const fn to_offset(self) -> Offset {
        Offset(((self.0 as i64) * NANOS_PER_SEC) >> 16)
    }
}

impl fmt::Display for Offset {
    /// Seconds with nine decimals and an explicit sign: `+15.000000000`, `-0.250000000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { '-' } else { '+' };
        let abs = self.0.unsigned_abs();
        let secs = abs / NANOS_PER_SEC as u64;
        let nanos = abs % NANOS_PER_SEC as u64;
        match f.precision() {
            Some(p) if p < 9 => {
                let scaled = nanos / 10u64.pow(9 - p as u32);
                if p == 0 {
                    write!(f, "{sign}{secs}")
                } else {
                    write!(f, "{sign}{secs}.{scaled:0p$}")
                }
            }
            _ => write!(f, "{sign}{secs}.{nanos:09}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ERA1_START_UNIX: i64 = (1 << 32) - NTP_UNIX_DELTA_SECS; // 2036-02-07T06:28:16Z

    #[test]
    fn unix_epoch_is_ntp_second_2208988800() {
        assert_eq!(
            Time::from_unix_nanos(0).to_ntp().to_bits(),
            2_208_988_800u64 << 32
        );
    }

    #[test]
    fn half_second_is_half_the_fraction() {
        let t = Time::from_timespec(0, 500_000_000);
        assert_eq!(t.to_ntp().to_bits() & 0xffff_ffff, 0x8000_0000);
    }

    #[test]
    fn era_rollover_2036_wraps_to_second_zero() {
        let last = Time::from_timespec(ERA1_START_UNIX - 1, 0);
        let first = Time::from_timespec(ERA1_START_UNIX, 0);
        assert_eq!(last.to_ntp().to_bits(), 0xffff_ffffu64 << 32);
        assert_eq!(first.to_ntp().to_bits(), 0);
        // The wrap is invisible to difference arithmetic.
        assert_eq!(
            first.to_ntp().wrapping_sub(last.to_ntp()),
            Offset::from_secs(1)
        );
        // And a pivot in era 0 resolves an era-1 timestamp forward, not 136 years back.
        assert_eq!(first.to_ntp().to_time_near(last), first);
        assert_eq!(last.to_ntp().to_time_near(first), last);
    }

    #[test]
    fn decades_of_offset_resolve_to_the_right_era() {
        let now = Time::from_timespec(1_795_000_000, 123_456_789); // 2026-11
        for years in [-60i64, -10, 10, 30, 60] {
            let shifted = now.add(Offset::from_secs(years * 365 * 86_400));
            let back = shifted.to_ntp().to_time_near(now);
            assert!((back.since(shifted)).abs().nanos() <= 1, "{years} years");
        }
    }

    #[test]
    fn short_format_rounds_up_and_saturates() {
        assert_eq!(
            NtpShort::from_offset(Offset::from_secs(1)).to_bits(),
            0x0001_0000
        );
        assert_eq!(NtpShort::from_offset(Offset::from_nanos(1)).to_bits(), 1);
        assert_eq!(NtpShort::from_offset(Offset::from_secs(-5)).to_bits(), 0);
        assert_eq!(
            NtpShort::from_offset(Offset::from_secs(1 << 20)).to_bits(),
            u32::MAX
        );
        assert_eq!(
            NtpShort::from_bits(0x0000_8000).to_offset(),
            Offset::from_nanos(500_000_000)
        );
    }

    #[test]
    fn offsets_display_with_sign_and_precision() {
        assert_eq!(Offset::from_secs(15).to_string(), "+15.000000000");
        assert_eq!(Offset::from_nanos(-250_000_000).to_string(), "-0.250000000");
        assert_eq!(
            format!("{:.6}", Offset::from_nanos(1_234_567_891)),
            "+1.234567"
        );
        assert_eq!(format!("{:.0}", Offset::from_secs(-3)), "-3");
    }

    proptest! {
        #[test]
        fn ntp_round_trip_within_a_nanosecond(
            nanos in -2_208_988_800i64 * NANOS_PER_SEC..4_000_000_000i64 * NANOS_PER_SEC,
            pivot_shift in -(1i64 << 31) + 1..(1i64 << 31) - 1,
        ) {
            let t = Time::from_unix_nanos(nanos);
            let pivot = t.add(Offset::from_secs(pivot_shift));
            let back = t.to_ntp().to_time_near(pivot);
            prop_assert!(back.since(t).abs().nanos() <= 1, "{t:?} -> {back:?}");
        }

        #[test]
        fn differences_are_exact_across_eras(
            a in 0i64..6_000_000_000i64 * NANOS_PER_SEC,
            d in -(1i64 << 31) + 1..(1i64 << 31) - 1,
        ) {
            let ta = Time::from_unix_nanos(a);
            let tb = ta.add(Offset::from_secs(d));
            let diff = tb.to_ntp().wrapping_sub(ta.to_ntp());
            prop_assert!((diff.nanos() - d * NANOS_PER_SEC).abs() <= 1);
        }
    }
}
