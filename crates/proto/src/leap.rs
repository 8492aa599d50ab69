//! Leap seconds, and how every view passes through them.
//!
//! Every view serves `base time + its offset`, where base time is one timeline shared by all
//! views. So the offsets *between* views are exactly constant at every instant, whatever the
//! leap policy; the policy only decides how base time relates to UTC around a leap:
//!
//! - [`LeapPolicy::Smear`] (the default): base time absorbs the leap linearly over a window
//!   centred on it (24 h: noon to noon, 11.6 ppm). It never steps and is never announced (LI
//!   stays 0), so clients of every view, shifted or not, follow it smoothly, and no client ever
//!   sees a leap at the wrong moment of its own shifted day. During the window base time
//!   differs from UTC by up to 0.5 s; do not mix smeared and unsmeared servers in one client.
//! - [`LeapPolicy::Step`]: base time is the kernel clock as it is, and LI announces the leap on
//!   its day. That is right for a view at offset 0. A shifted client inserts its leap at *its*
//!   midnight, |offset| before or after the server does, so it is 1 s off for |offset| seconds.
//!
//! The kernel announces a leap (adjtimex STA_INS/STA_DEL) on the day it happens, and steps the
//! clock at the next UTC midnight: an inserted second repeats the kernel's 23:59:59 (the state
//! says TIME_OOP), a deleted second skips it. The tracker learns the leap from those flags;
//! smearing needs "elapsed" time, which during the repeated second only the kernel's state can
//! tell, so the caller asks the kernel for that in just that second (see [`LeapTracker::is_ambiguous`]).
//! If the announcement comes later than half a window before the leap, the smear starts when
//! it comes (a steeper ramp, still continuous).

use crate::packet::LeapIndicator;
use crate::time::{Offset, Time, NANOS_PER_SEC};

const DAY_NS: i64 = 86_400 * NANOS_PER_SEC;
const SEC: Offset = Offset::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeapDirection {
    Insert,
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeapPolicy {
    /// Absorb the leap linearly over `window`, centred on the leap.
    Smear { window: Offset },
    /// Pass the kernel's step through and announce it.
    Step,
}

impl LeapPolicy {
    pub const DEFAULT_SMEAR_WINDOW: Offset = Offset::from_secs(86_400);
}

impl Default for LeapPolicy {
    fn default() -> Self {
        LeapPolicy::Smear {
            window: LeapPolicy::DEFAULT_SMEAR_WINDOW,
        }
    }
}

/// A leap at `at` (the UTC midnight that ends the leap's day, as a POSIX instant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LeapEvent {
    at: Time,
    dir: LeapDirection,
    /// Elapsed-time span of the smear (unused under `Step`).
    smear_start: Time,
    smear_end: Time,
}

/// Follows the kernel's leap announcements and maps kernel time to base time.
#[derive(Clone, Debug)]
pub struct LeapTracker {
    policy: LeapPolicy,
    event: Option<LeapEvent>,
    /// An announcement counts only after the flags were seen clear once since the last leap,
    /// because daemons leave them set for a while after the leap.
    armed: bool,
}

impl LeapTracker {
    pub fn new(policy: LeapPolicy) -> LeapTracker {
        LeapTracker {
            policy,
            event: None,
            armed: true,
        }
    }

    pub fn policy(&self) -> LeapPolicy {
        self.policy
    }

    /// Feed one reading of the kernel: its time and the leap it announces (None when the
    /// STA_INS/STA_DEL flags are clear, or the kernel is already past the leap). Returns the
    /// leap the tracker has just finished with, if any: from then on it maps nothing, so a
    /// continuous timeline (see [`base_from_elapsed`](Self::base_from_elapsed)) must take the
    /// second out (insert) or in (delete) at that moment.
    pub fn observe(
        &mut self,
        now: Time,
        announced: Option<LeapDirection>,
    ) -> Option<LeapDirection> {
        let mut finished = None;
        if let Some(ev) = self.event {
            let done = match self.policy {
                LeapPolicy::Smear { .. } => self.elapsed(now, false) >= ev.smear_end,
                LeapPolicy::Step => now >= ev.at.add(SEC),
            };
            if done {
                self.event = None;
                finished = Some(ev.dir);
            }
        }
        let Some(dir) = announced else {
            self.armed = true;
            return finished;
        };
        if self.event.is_some() || !self.armed {
            return finished;
        }
        let at = Time::from_unix_nanos((now.unix_nanos().div_euclid(DAY_NS) + 1) * DAY_NS);
        let half = match self.policy {
            LeapPolicy::Smear { window } => Offset::from_nanos(window.nanos() / 2),
            LeapPolicy::Step => Offset::ZERO,
        };
        let smear_start = at.add(half.neg()).max(now);
        self.event = Some(LeapEvent {
            at,
            dir,
            smear_start,
            smear_end: at.add(half),
        });
        self.armed = false;
        finished
    }

    /// True when a kernel reading `u` could be either the last second before an inserted leap
    /// or the inserted second itself; only then must the caller ask the kernel which.
    pub fn is_ambiguous(&self, u: Time) -> bool {
        match (self.policy, self.event) {
            (LeapPolicy::Smear { .. }, Some(ev)) if ev.dir == LeapDirection::Insert => {
                u >= ev.at.add(SEC.neg()) && u < ev.at
            }
            _ => false,
        }
    }

    /// Base time for kernel time `u`; `in_inserted_second` is the kernel's word (TIME_OOP) and
    /// matters only when [`is_ambiguous`](Self::is_ambiguous) says so.
    pub fn base_time(&self, u: Time, in_inserted_second: bool) -> Time {
        match self.policy {
            LeapPolicy::Smear { .. } => self.smeared(self.elapsed(u, in_inserted_second)),
            LeapPolicy::Step => u,
        }
    }

    /// A tick's time (POSIX: the inserted second has no tick of its own) on the tracker's
    /// continuous timeline, which counts every second while a leap is pending or in progress.
    pub fn elapsed_of_posix(&self, posix: Time) -> Time {
        self.elapsed(posix, false)
    }

    /// Base time for a continuous timeline (the pulse model's, fed
    /// [`elapsed_of_posix`](Self::elapsed_of_posix)): smeared, or under `Step` what the
    /// kernel shows (the inserted second repeats 23:59:59, the deleted one is skipped).
    pub fn base_from_elapsed(&self, elapsed: Time) -> Time {
        match (self.policy, self.event) {
            (LeapPolicy::Smear { .. }, _) => self.smeared(elapsed),
            (LeapPolicy::Step, Some(ev)) => match ev.dir {
                LeapDirection::Insert if elapsed >= ev.at => elapsed.add(SEC.neg()),
                LeapDirection::Delete if elapsed >= ev.at.add(SEC.neg()) => elapsed.add(SEC),
                _ => elapsed,
            },
            (LeapPolicy::Step, None) => elapsed,
        }
    }

    fn smeared(&self, elapsed: Time) -> Time {
        let Some(ev) = self.event else {
            return elapsed;
        };
        let span = ev.smear_end.since(ev.smear_start).nanos().max(1) as i128;
        let done = elapsed.since(ev.smear_start).nanos().clamp(0, span as i64) as i128;
        let correction = (done * NANOS_PER_SEC as i128 / span) as i64;
        match ev.dir {
            LeapDirection::Insert => elapsed.add(Offset::from_nanos(-correction)),
            LeapDirection::Delete => elapsed.add(Offset::from_nanos(correction)),
        }
    }

    /// The leap indicator for answers at kernel time `now`.
    pub fn indicator(&self, now: Time) -> LeapIndicator {
        match (self.policy, self.event) {
            (LeapPolicy::Step, Some(ev))
                if now < ev.at && now >= ev.at.add(Offset::from_nanos(-DAY_NS)) =>
            {
                match ev.dir {
                    LeapDirection::Insert => LeapIndicator::InsertSecond,
                    LeapDirection::Delete => LeapIndicator::DeleteSecond,
                }
            }
            _ => LeapIndicator::NoWarning,
        }
    }

    /// Kernel time with the leap undone: a timeline without a step.
    fn elapsed(&self, u: Time, in_inserted_second: bool) -> Time {
        let Some(ev) = self.event else { return u };
        match ev.dir {
            LeapDirection::Insert
                if u >= ev.at || (in_inserted_second && u >= ev.at.add(SEC.neg())) =>
            {
                u.add(SEC)
            }
            LeapDirection::Delete if u >= ev.at => u.add(SEC.neg()),
            _ => u,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2016-12-31T24:00:00Z, the last real leap second.
    const LEAP: Time = Time::from_unix_nanos(1_483_228_800 * NANOS_PER_SEC);
    const STEP: i64 = 100_000_000; // 100 ms between simulated readings

    /// What a kernel clock shows around an inserted leap: (kernel time, in inserted second),
    /// for true elapsed times from `from` to `to` past the leap.
    fn kernel_readings(from_secs: i64, to_secs: i64, dir: LeapDirection) -> Vec<(Time, bool)> {
        let mut out = Vec::new();
        let mut e = LEAP.unix_nanos() + from_secs * NANOS_PER_SEC;
        while e < LEAP.unix_nanos() + to_secs * NANOS_PER_SEC {
            let reading = match dir {
                // The inserted second is elapsed [L, L+1): the kernel shows L-1.. again.
                LeapDirection::Insert if e >= LEAP.unix_nanos() + NANOS_PER_SEC => {
                    (e - NANOS_PER_SEC, false)
                }
                LeapDirection::Insert if e >= LEAP.unix_nanos() => (e - NANOS_PER_SEC, true),
                // The deleted second is elapsed [L-1, L): the kernel skips ahead by one.
                LeapDirection::Delete if e >= LEAP.unix_nanos() - NANOS_PER_SEC => {
                    (e + NANOS_PER_SEC, false)
                }
                _ => (e, false),
            };
            out.push((Time::from_unix_nanos(reading.0), reading.1));
            e += STEP;
        }
        out
    }

    fn smear_run(dir: LeapDirection) {
        let mut tracker = LeapTracker::new(LeapPolicy::default());
        let offsets = [
            Offset::ZERO,
            Offset::from_secs(15),
            Offset::from_nanos(-250_000_000),
            Offset::from_secs(315_360_000),
        ];
        // The daemon announces at the start of the leap day and clears 2 s after the leap.
        let readings = kernel_readings(-86_400, 86_400, dir);
        let mut prev: Option<Time> = None;
        for (u, oop) in readings {
            let before_clear = u < LEAP.add(Offset::from_secs(2));
            tracker.observe(u, if before_clear { Some(dir) } else { None });
            if tracker.is_ambiguous(u) {
                // The real server asks the kernel here; the simulation knows.
            } else {
                assert!(
                    !oop,
                    "an inserted-second reading must be flagged ambiguous: {u:?}"
                );
            }
            let base = tracker.base_time(u, oop);
            if let Some(p) = prev {
                let step = base.since(p).nanos();
                // Never backwards, never a jump: 100 ms ± the 11.6 ppm smear rate.
                assert!(
                    (STEP - 1200..=STEP + 1200).contains(&step),
                    "step {step} ns at {u:?}"
                );
            }
            prev = Some(base);
            // Views are the same timeline shifted: their differences never change.
            let views: Vec<Time> = offsets.iter().map(|o| base.add(*o)).collect();
            for (v, o) in views.iter().zip(offsets) {
                assert_eq!(v.since(views[0]), o);
            }
            assert_eq!(
                tracker.indicator(u),
                LeapIndicator::NoWarning,
                "smear never announces"
            );
            // Far from the leap, base time is the kernel's time exactly.
            if u.since(LEAP).abs() > Offset::from_secs(12 * 3600 + 2) {
                assert_eq!(base, u);
            }
        }
    }

    #[test]
    fn smeared_insert_is_continuous_and_keeps_views_locked() {
        smear_run(LeapDirection::Insert);
    }

    #[test]
    fn smeared_delete_is_continuous_and_keeps_views_locked() {
        smear_run(LeapDirection::Delete);
    }

    #[test]
    fn smear_is_half_done_at_the_leap() {
        let mut t = LeapTracker::new(LeapPolicy::default());
        t.observe(
            LEAP.add(Offset::from_secs(-86_000)),
            Some(LeapDirection::Insert),
        );
        let at = t.base_time(LEAP.add(SEC.neg()), true); // start of 23:59:60
        assert_eq!(at.since(LEAP), Offset::from_nanos(-500_000_000));
    }

    #[test]
    fn late_announcement_starts_the_smear_when_it_comes() {
        let mut t = LeapTracker::new(LeapPolicy::default());
        let late = LEAP.add(Offset::from_secs(-3600));
        t.observe(late, Some(LeapDirection::Insert));
        assert_eq!(
            t.base_time(late, false),
            late,
            "no jump at the announcement"
        );
        let after = t.base_time(LEAP.add(Offset::from_secs(43_199)), false);
        assert_eq!(
            after,
            LEAP.add(Offset::from_secs(43_199)),
            "done at the window's end"
        );
    }

    #[test]
    fn flags_left_set_after_the_leap_do_not_schedule_another() {
        let mut t = LeapTracker::new(LeapPolicy::Step);
        t.observe(
            LEAP.add(Offset::from_secs(-10)),
            Some(LeapDirection::Insert),
        );
        assert_eq!(
            t.indicator(LEAP.add(Offset::from_secs(-10))),
            LeapIndicator::InsertSecond
        );
        // The daemon keeps STA_INS for a minute after the leap.
        for s in 1..60 {
            t.observe(LEAP.add(Offset::from_secs(s)), Some(LeapDirection::Insert));
            assert_eq!(
                t.indicator(LEAP.add(Offset::from_secs(s))),
                LeapIndicator::NoWarning
            );
        }
        assert_eq!(
            t.indicator(LEAP.add(Offset::from_secs(86_000))),
            LeapIndicator::NoWarning
        );
    }

    #[test]
    fn step_policy_announces_on_the_leap_day_only_and_passes_time_through() {
        let mut t = LeapTracker::new(LeapPolicy::Step);
        let morning = LEAP.add(Offset::from_secs(-80_000));
        t.observe(morning, Some(LeapDirection::Delete));
        assert_eq!(t.indicator(morning), LeapIndicator::DeleteSecond);
        assert_eq!(t.base_time(morning, false), morning);
        assert!(!t.is_ambiguous(LEAP.add(Offset::from_nanos(-1))));
    }
}
