//! Which ticks a PPS device's pulses become (`pulse send --source pps`): a GPS receiver's or a
//! radio clock's pulse per second marks the second, and this host's clock, which must be
//! within half a second of it, numbers it.
//!
//! - A pulse becomes a synchronized tick for the second nearest its (calibrated) stamp. A
//!   stamp more than [`MAX_CLOCK_ERROR_NS`] from every second is refused: the clock is too far
//!   off to number the pulses safely, and a tick one second wrong is worse than none.
//! - A second whose pulse does not come becomes a holdover tick, its mark one second after
//!   the previous one (the host's oscillator carries the pulse on), sent [`PULSE_GRACE_NS`]
//!   after the mark; after `holdover` without a pulse, unsynchronized ticks, which receivers
//!   count and ignore.
//! - A second pulse in one second (noise, a bouncing line) is dropped.

use crate::tick::{Source, SourceState, TickPacket};
use crate::time::NANOS_PER_SEC;

/// Beyond this the host clock cannot number a pulse: 0.4 s leaves a margin for jitter.
pub const MAX_CLOCK_ERROR_NS: i64 = 400_000_000;
/// How late a pulse may come before its second counts as missing (interrupt latency, the
/// device's own delay, a loaded host).
pub const PULSE_GRACE_NS: i64 = 200_000_000;

/// A tick to send for a second, and the instant it marks (this host's clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    pub second: i64,
    pub mark_ns: i64,
    pub state: SourceState,
}

impl Planned {
    /// The tick, before the transmitter fills in its own fields: stratum 0, source PPS.
    pub fn tick(&self) -> TickPacket {
        TickPacket {
            state: self.state,
            source: Source::Pps,
            stratum: 0,
            ..TickPacket::tick(self.second)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The stamp lies this far from the nearest second: the host clock is off by about that.
    ClockOff { by_ns: i64 },
    /// A second pulse for a second that already has its tick.
    Repeated { second: i64 },
}

#[derive(Clone, Copy, Debug)]
struct Last {
    second: i64,
    mark_ns: i64,
    /// When the last real pulse came (its mark).
    pulse_ns: i64,
}

/// The pulses seen so far and what they make of the seconds.
#[derive(Clone, Debug)]
pub struct PpsPulses {
    calibration_ns: i64,
    holdover_ns: i64,
    last: Option<Last>,
}

impl PpsPulses {
    /// `calibration_ns`: the device's delay, subtracted from every stamp; `holdover_ns`: how
    /// long after the last pulse missing ones are still holdover ticks.
    pub fn new(calibration_ns: i64, holdover_ns: i64) -> PpsPulses {
        PpsPulses {
            calibration_ns,
            holdover_ns,
            last: None,
        }
    }

    /// A pulse stamped `stamp_ns` (CLOCK_REALTIME).
    pub fn on_pulse(&mut self, stamp_ns: i64) -> Result<Planned, Refused> {
        let mark_ns = stamp_ns - self.calibration_ns;
        let second = (mark_ns + NANOS_PER_SEC / 2).div_euclid(NANOS_PER_SEC);
        let by_ns = mark_ns - second * NANOS_PER_SEC;
        if by_ns.abs() > MAX_CLOCK_ERROR_NS {
            return Err(Refused::ClockOff { by_ns });
        }
        if self.last.is_some_and(|l| l.second >= second) {
            return Err(Refused::Repeated { second });
        }
        self.last = Some(Last {
            second,
            mark_ns,
            pulse_ns: mark_ns,
        });
        Ok(Planned {
            second,
            mark_ns,
            state: SourceState::Synchronized,
        })
    }

    /// When the next second counts as missing if no pulse has come: the time to wait until.
    pub fn next_deadline(&self) -> Option<i64> {
        self.last
            .map(|l| l.mark_ns + NANOS_PER_SEC + PULSE_GRACE_NS)
    }

    /// No pulse came by `now_ns`: the ticks of the seconds that are due without one.
    pub fn on_silence(&mut self, now_ns: i64, out: &mut Vec<Planned>) {
        while let Some(deadline) = self.next_deadline().filter(|&d| now_ns >= d) {
            let Some(l) = self.last.as_mut() else {
                return;
            };
            l.second += 1;
            l.mark_ns += NANOS_PER_SEC;
            let state = if l.mark_ns - l.pulse_ns <= self.holdover_ns {
                SourceState::Holdover
            } else {
                SourceState::Unsynchronized
            };
            out.push(Planned {
                second: l.second,
                mark_ns: l.mark_ns,
                state,
            });
            // A host asleep for long catches up with one tick, not one per lost second.
            if now_ns - deadline > NANOS_PER_SEC {
                let behind = (now_ns - deadline) / NANOS_PER_SEC;
                l.second += behind;
                l.mark_ns += behind * NANOS_PER_SEC;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: i64 = NANOS_PER_SEC;
    const T0: i64 = 1_798_761_600 * S; // 2027-01-01T00:00:00Z

    #[test]
    fn a_pulse_is_numbered_by_the_nearest_second_and_calibrated() {
        let mut p = PpsPulses::new(3_000_000, 10 * S);
        let t = p.on_pulse(T0 + 5 * S + 3_000_200).unwrap();
        assert_eq!((t.second, t.mark_ns), (T0 / S + 5, T0 + 5 * S + 200));
        let t = p.on_pulse(T0 + 6 * S - 120_000_000).unwrap();
        assert_eq!(t.second, T0 / S + 6, "a clock 123 ms slow still numbers it");
        let tick = t.tick();
        assert_eq!((tick.source, tick.stratum), (Source::Pps, 0));
        assert_eq!(tick.state, SourceState::Synchronized);
    }

    #[test]
    fn a_clock_too_far_off_and_a_repeated_pulse_are_refused() {
        let mut p = PpsPulses::new(0, 10 * S);
        assert_eq!(
            p.on_pulse(T0 + 450_000_000),
            Err(Refused::ClockOff { by_ns: 450_000_000 })
        );
        assert_eq!(
            p.on_pulse(T0 - 450_000_000),
            Err(Refused::ClockOff {
                by_ns: -450_000_000
            })
        );
        p.on_pulse(T0 + 1_000).unwrap();
        assert_eq!(
            p.on_pulse(T0 + 300_000_000),
            Err(Refused::Repeated { second: T0 / S })
        );
        assert!(p.on_pulse(T0 + S + 2_000).is_ok());
    }

    #[test]
    fn missing_pulses_are_holdover_then_unsynchronized_ticks() {
        let mut p = PpsPulses::new(0, 3 * S);
        let mut out = Vec::new();
        p.on_silence(T0, &mut out);
        assert!(out.is_empty(), "nothing before the first pulse");
        p.on_pulse(T0 + 500).unwrap();
        assert_eq!(p.next_deadline(), Some(T0 + 500 + S + PULSE_GRACE_NS));
        p.on_silence(T0 + S + PULSE_GRACE_NS - 1, &mut out);
        assert!(out.is_empty(), "within the grace: still waiting");
        for k in 1..=5 {
            p.on_silence(T0 + k * S + PULSE_GRACE_NS + 500, &mut out);
        }
        let got: Vec<_> = out
            .iter()
            .map(|t| (t.second - T0 / S, t.mark_ns - T0, t.state))
            .collect();
        use SourceState::*;
        assert_eq!(
            got,
            [
                (1, S + 500, Holdover),
                (2, 2 * S + 500, Holdover),
                (3, 3 * S + 500, Holdover),
                (4, 4 * S + 500, Unsynchronized),
                (5, 5 * S + 500, Unsynchronized),
            ]
        );
        // The pulse comes back: synchronized at once, numbered on.
        let t = p.on_pulse(T0 + 6 * S + 900).unwrap();
        assert_eq!((t.second, t.state), (T0 / S + 6, Synchronized));
    }

    #[test]
    fn a_host_that_slept_catches_up_with_one_tick() {
        let mut p = PpsPulses::new(0, 10 * S);
        p.on_pulse(T0).unwrap();
        let mut out = Vec::new();
        p.on_silence(T0 + 30 * S, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        p.on_silence(T0 + 30 * S, &mut out);
        assert_eq!(out.len(), 1, "and then waits for the next second");
        let t = p.on_pulse(T0 + 31 * S).unwrap();
        assert_eq!(t.second, T0 / S + 31);
    }

    proptest! {
        /// Across every second of many years and clock errors within the limit, each pulse
        /// gets the second it marks; beyond the limit none does.
        #[test]
        fn pulses_get_their_true_second_whenever_the_clock_is_close_enough(
            second in 0i64..4_102_444_800, // 1970 to 2100
            error_ns in -499_999_999i64..=499_999_999,
            calibration_ns in 0i64..50_000_000,
        ) {
            let mut p = PpsPulses::new(calibration_ns, 10 * S);
            let stamp = second * S + error_ns + calibration_ns;
            match p.on_pulse(stamp) {
                Ok(t) => {
                    prop_assert!(error_ns.abs() <= MAX_CLOCK_ERROR_NS);
                    prop_assert_eq!(t.second, second);
                    prop_assert_eq!(t.mark_ns, second * S + error_ns);
                }
                Err(Refused::ClockOff { by_ns }) => {
                    prop_assert!(error_ns.abs() > MAX_CLOCK_ERROR_NS);
                    prop_assert_eq!(by_ns, error_ns);
                }
                Err(e) => prop_assert!(false, "{:?}", e),
            }
        }
    }
}
