//! Moving a client to another view without a step: the time it is served walks from the old
//! view's offset to the new one's, so its NTP client follows by frequency alone.
//!
//! The walk's rate rises linearly from zero to `rate` over `ramp`, holds, and falls the same way
//! (a short walk never reaches `rate`). The gentle start matters for ntpd, whose phase-locked
//! loop lags a sudden change of frequency by up to its time constant and steps the clock when
//! the lag passes 128 ms; chronyd's regression follows either way. The rate is the served
//! clock's frequency error during the move, which the client's own drift adds to: ntpd cannot
//! follow past 500 ppm in all.

use crate::time::{Offset, Time, NANOS_PER_SEC};

/// A walk's shape: its cruising rate and how long the rate takes to get there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    /// Parts per million: nanoseconds of offset per second of time.
    pub rate_ppm: f64,
    /// Seconds from standing to `rate_ppm` (and back).
    pub ramp_s: f64,
}

/// How a client changes view (a balanced group's `move`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Moves {
    /// Served the new view's offset at once: its NTP client steps or slews.
    Step,
    /// Served an offset that walks to the new view's at this pace.
    Smear(Pace),
}

/// One client's walk from one offset to another, starting at `start`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoveSmear {
    pub from: Offset,
    pub to: Offset,
    pub start: Time,
    pub pace: Pace,
}

impl MoveSmear {
    /// (acceleration in s/s², cruising rate in s/s, ramp seconds, cruise seconds) for this
    /// distance.
    fn shape(&self) -> (f64, f64, f64, f64) {
        let d = self.distance_s();
        let rate = self.pace.rate_ppm.max(1e-3) * 1e-6;
        let ramp = self.pace.ramp_s.max(0.0);
        if ramp == 0.0 {
            return (f64::INFINITY, rate, 0.0, d / rate);
        }
        let accel = rate / ramp;
        if d >= rate * ramp {
            (accel, rate, ramp, (d - rate * ramp) / rate)
        } else {
            let top = (accel * d).sqrt();
            (accel, top, top / accel, 0.0)
        }
    }

    fn distance_s(&self) -> f64 {
        (self.to.nanos() - self.from.nanos()).unsigned_abs() as f64 / NANOS_PER_SEC as f64
    }

    /// How long the walk takes, in seconds.
    pub fn duration_s(&self) -> f64 {
        let (_, _, ramp, cruise) = self.shape();
        2.0 * ramp + cruise
    }

    /// When the walk ends.
    pub fn end(&self) -> Time {
        self.start
            .add(Offset::from_nanos((self.duration_s() * 1e9).ceil() as i64))
    }

    /// The offset to serve at `now`: `from` before the start, `to` from the end on.
    pub fn offset_at(&self, now: Time) -> Offset {
        let t = now.since(self.start).nanos() as f64 / NANOS_PER_SEC as f64;
        if t <= 0.0 {
            return self.from;
        }
        let (accel, rate, ramp, cruise) = self.shape();
        let total = 2.0 * ramp + cruise;
        if t >= total {
            return self.to;
        }
        let d = self.distance_s();
        let covered = if t <= ramp {
            accel * t * t / 2.0
        } else if t <= ramp + cruise {
            rate * ramp / 2.0 + rate * (t - ramp)
        } else {
            let left = total - t;
            d - accel * left * left / 2.0
        };
        let sign = if self.to >= self.from { 1.0 } else { -1.0 };
        let step = (sign * covered.min(d) * NANOS_PER_SEC as f64).round() as i64;
        self.from.add(Offset::from_nanos(step))
    }

    /// The served clock's frequency error at `now`, in ppm (signed: positive runs fast).
    pub fn rate_at(&self, now: Time) -> f64 {
        let t = now.since(self.start).nanos() as f64 / NANOS_PER_SEC as f64;
        let (accel, rate, ramp, cruise) = self.shape();
        let total = 2.0 * ramp + cruise;
        let r = if t <= 0.0 || t >= total {
            0.0
        } else if t <= ramp {
            accel * t
        } else if t <= ramp + cruise {
            rate
        } else {
            accel * (total - t)
        };
        let sign = if self.to >= self.from { 1.0 } else { -1.0 };
        sign * r.min(rate) * 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: f64) -> Time {
        Time::from_unix_nanos(1_800_000_000 * NANOS_PER_SEC + (s * 1e9) as i64)
    }

    #[test]
    fn fifteen_seconds_at_250_ppm_with_an_hour_of_ramp() {
        let m = MoveSmear {
            from: Offset::ZERO,
            to: Offset::from_secs(15),
            start: at(0.0),
            pace: Pace {
                rate_ppm: 250.0,
                ramp_s: 3600.0,
            },
        };
        // 0.45 s covered in each ramp (an hour), 14.1 s cruising at 250 us/s: 56,400 s.
        assert!(
            (m.duration_s() - 63_600.0).abs() < 1e-6,
            "{}",
            m.duration_s()
        );
        assert_eq!(m.offset_at(at(-5.0)), Offset::ZERO);
        assert_eq!(m.offset_at(at(1800.0)), Offset::from_nanos(112_500_000));
        assert_eq!(m.offset_at(at(3600.0)), Offset::from_nanos(450_000_000));
        assert_eq!(m.offset_at(at(63_600.0)), Offset::from_secs(15));
        assert!((m.rate_at(at(1800.0)) - 125.0).abs() < 1e-6);
        assert!((m.rate_at(at(30_000.0)) - 250.0).abs() < 1e-6);
        let back = MoveSmear {
            from: m.to,
            to: m.from,
            ..m
        };
        assert_eq!(
            back.offset_at(at(3600.0)),
            Offset::from_nanos(14_550_000_000)
        );
        assert!((back.rate_at(at(30_000.0)) + 250.0).abs() < 1e-6);
    }

    proptest! {
        /// Any distance, pace and direction: the walk starts at `from`, ends at `to`, is
        /// monotonic, and never changes faster than its rate (nor its rate faster than the
        /// ramp allows).
        #[test]
        fn walks_are_monotonic_and_bounded(
            from_ms in -1_800_000i64..1_800_000, to_ms in -1_800_000i64..1_800_000,
            rate in 1.0f64..2000.0, ramp in 0.0f64..20_000.0,
        ) {
            let m = MoveSmear {
                from: Offset::from_nanos(from_ms * 1_000_000),
                to: Offset::from_nanos(to_ms * 1_000_000),
                start: at(0.0),
                pace: Pace { rate_ppm: rate, ramp_s: ramp },
            };
            let total = m.duration_s();
            prop_assert_eq!(m.offset_at(at(0.0)), m.from);
            prop_assert_eq!(m.offset_at(at(total + 1.0)), m.to);
            let mut last = m.from;
            let step = (total / 500.0).max(0.001);
            let mut t = 0.0;
            while t <= total + step {
                let o = m.offset_at(at(t));
                let moved = (o.nanos() - last.nanos()).abs() as f64;
                prop_assert!(moved <= rate * 1e3 * step + 2.0, "{} ns in {} s", moved, step);
                prop_assert!((o.nanos() - last.nanos()).signum() * (m.to.nanos() - m.from.nanos()).signum() >= 0);
                prop_assert!(m.rate_at(at(t)).abs() <= rate + 1e-6);
                last = o;
                t += step;
            }
        }
    }
}
