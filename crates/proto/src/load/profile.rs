//! A VM's minute profile: how much host CPU it uses in each second of *its own* minute,
//! averaged over recent minutes.
//!
//! The VM's own minute is the host's time plus the offset the VM is served, so a profile does
//! not change when its VM changes view: a job at :00 of the VM's clock is always in bin 0.
//! [`Sampler`] turns cumulative CPU-time readings (a QEMU process's `utime + stime`, a cgroup's
//! `usage_usec`) taken several times a second into a [`Profile`].

use crate::time::NANOS_PER_SEC;

/// Seconds in a minute: bins of a profile, seconds of the host's curve.
pub const SECONDS: usize = 60;

/// A profile's weight on the newest minute is 1/n for its first n minutes, then
/// `1 / AVERAGE_MINUTES`: an exponential average whose memory is about this many minutes, so a
/// VM whose job changes is seen within a quarter of an hour and one odd minute counts little.
pub const AVERAGE_MINUTES: u32 = 10;

/// CPU load by second of a VM's own minute, in cores (1.0 = one core busy for that second).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Profile {
    pub bins: [f32; SECONDS],
}

impl Default for Profile {
    fn default() -> Self {
        Profile::FLAT_ZERO
    }
}

impl Profile {
    pub const FLAT_ZERO: Profile = Profile {
        bins: [0.0; SECONDS],
    };

    /// Every second alike.
    pub fn flat(cores: f32) -> Profile {
        Profile {
            bins: [cores; SECONDS],
        }
    }

    /// `cores` in second `at` of the VM's minute and for `len - 1` seconds after it (wrapping),
    /// nothing elsewhere: a job that fires at :`at`.
    pub fn spike(at: usize, len: usize, cores: f32) -> Profile {
        let mut p = Profile::FLAT_ZERO;
        for i in 0..len.min(SECONDS) {
            p.bins[(at + i) % SECONDS] = cores;
        }
        p
    }

    /// The busiest second: (second of the VM's minute, cores).
    pub fn peak(&self) -> (usize, f32) {
        self.bins
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |best, (s, x)| if x > best.1 { (s, x) } else { best },
            )
    }

    pub fn mean(&self) -> f32 {
        self.bins.iter().sum::<f32>() / SECONDS as f32
    }

    /// Whether moving this VM could change the host's peak: its busiest second is barely above
    /// its average (within `tolerance` cores, or 10 % of its mean, whichever is larger).
    pub fn is_flat(&self, tolerance: f32) -> bool {
        let mean = self.mean();
        self.peak().1 - mean <= tolerance.max(mean * 0.1)
    }

    /// `self + other * w`, bin by bin.
    pub fn add_scaled(&mut self, other: &Profile, w: f32) {
        for (a, b) in self.bins.iter_mut().zip(other.bins.iter()) {
            *a += b * w;
        }
    }
}

/// Builds a [`Profile`] from cumulative CPU-time readings. Sans IO: the caller reads the clock,
/// the CPU time and the VM's served offset, and hands them in.
#[derive(Clone, Debug, Default)]
pub struct Sampler {
    /// The previous reading: the VM's time (ns) and its cumulative CPU time (ns).
    last: Option<(i64, u64)>,
    /// The VM-minute being filled (its number since the epoch) and its seconds so far.
    minute: Option<i64>,
    current: Profile,
    /// Whether `current` started at the minute's beginning: a minute sampled in part (the
    /// first one, or one after a gap) is not averaged in.
    whole: bool,
    profile: Profile,
    minutes: u32,
}

/// Readings further apart than this are a gap (the sampler was stopped, the VM paused): the
/// CPU time between them is not spread over seconds it cannot be placed in.
const MAX_GAP_NS: i64 = 5 * NANOS_PER_SEC;

impl Sampler {
    /// The profile so far, and how many whole minutes it averages (0: nothing known yet).
    pub fn profile(&self) -> (Profile, u32) {
        (self.profile, self.minutes)
    }

    /// A reading: host time `host_ns` (Unix ns), the VM's served offset `offset_ns`, and the
    /// VM's cumulative CPU time `cpu_ns`. The CPU time since the last reading is spread evenly
    /// over the VM-time it spans, split at second boundaries.
    pub fn sample(&mut self, host_ns: i64, offset_ns: i64, cpu_ns: u64) {
        let t = host_ns.saturating_add(offset_ns);
        let last = self.last.replace((t, cpu_ns));
        let Some((t0, cpu0)) = last else {
            return;
        };
        // Time went backwards (the offset moved back further than time passed), the counter
        // went backwards (the process was replaced) or a gap: start over at this reading.
        if t <= t0 || cpu_ns < cpu0 || t - t0 > MAX_GAP_NS {
            self.minute = None;
            return;
        }
        let rate = (cpu_ns - cpu0) as f64 / (t - t0) as f64; // cores
        let mut from = t0;
        while from < t {
            let second = from.div_euclid(NANOS_PER_SEC);
            let to = t.min((second + 1) * NANOS_PER_SEC);
            self.enter_second(second, from == second * NANOS_PER_SEC);
            let bin = second.rem_euclid(SECONDS as i64) as usize;
            self.current.bins[bin] += (rate * (to - from) as f64 / NANOS_PER_SEC as f64) as f32;
            from = to;
        }
    }

    /// Makes `second`'s minute the current one, averaging in the minute it ends if whole.
    fn enter_second(&mut self, second: i64, at_boundary: bool) {
        let minute = second.div_euclid(SECONDS as i64);
        match self.minute {
            Some(m) if m == minute => return,
            Some(m) if m + 1 == minute && self.whole => self.average_in(),
            _ => {}
        }
        self.minute = Some(minute);
        self.current = Profile::FLAT_ZERO;
        self.whole = at_boundary && second.rem_euclid(SECONDS as i64) == 0;
    }

    fn average_in(&mut self) {
        self.minutes = self.minutes.saturating_add(1);
        let w = 1.0 / self.minutes.min(AVERAGE_MINUTES) as f32;
        for (avg, now) in self.profile.bins.iter_mut().zip(self.current.bins.iter()) {
            *avg += (now - *avg) * w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: i64 = NANOS_PER_SEC;

    /// Feeds `minutes` minutes of a VM busy `load(second)` cores, read every `step` ns.
    pub(super) fn feed(
        s: &mut Sampler,
        start: i64,
        offset: i64,
        minutes: i64,
        step: i64,
        load: impl Fn(i64) -> f64,
    ) -> i64 {
        let mut cpu = 0.0;
        let mut t = start;
        s.sample(t, offset, 0);
        while t < start + minutes * 60 * S {
            let next = t + step;
            // CPU used in [t, next): integrate per nanosecond second by second.
            let mut x = t;
            while x < next {
                let sec = (x + offset).div_euclid(S);
                let to = next.min((sec + 1) * S - offset);
                cpu += load(sec.rem_euclid(60)) * (to - x) as f64;
                x = to;
            }
            t = next;
            s.sample(t, offset, cpu as u64);
        }
        t
    }

    #[test]
    fn a_job_at_the_vms_zero_lands_in_bin_zero_whatever_its_offset() {
        for offset in [0, 15 * S, -15 * S, 45 * S + S / 2, 3600 * S + 7 * S] {
            let mut s = Sampler::default();
            feed(
                &mut s,
                1_800_000_000 * S + 13 * S,
                offset,
                5,
                S / 4,
                |sec| if sec < 2 { 0.8 } else { 0.0 },
            );
            let (p, minutes) = s.profile();
            assert!(minutes >= 3, "{minutes}");
            assert!(
                (p.bins[0] - 0.8).abs() < 0.01 && (p.bins[1] - 0.8).abs() < 0.01,
                "{offset}: {:?}",
                &p.bins[..4]
            );
            assert!(
                p.bins[2..].iter().all(|x| x.abs() < 0.01),
                "{offset}: {:?}",
                p.bins
            );
        }
    }

    #[test]
    fn the_partial_first_minute_and_gaps_are_not_averaged_in() {
        let mut s = Sampler::default();
        let start = 1_800_000_000 * S + 30 * S; // mid-minute
        let t = feed(&mut s, start, 0, 1, S / 4, |_| 1.0);
        assert_eq!(
            s.profile().1,
            0,
            "half a minute, then half of the next, in progress"
        );
        // A 10-s gap: the next minute starts over.
        s.sample(t + 10 * S, 0, u64::MAX / 2);
        assert_eq!(s.profile().1, 0);
    }

    #[test]
    fn the_average_follows_a_change_within_a_quarter_hour() {
        let mut s = Sampler::default();
        let start = 1_800_000_000 * S;
        let t = feed(&mut s, start, 0, 30, S / 2, |sec| {
            if sec == 0 {
                1.0
            } else {
                0.0
            }
        });
        assert!((s.profile().0.bins[0] - 1.0).abs() < 0.02);
        // The job moves to :30; the sampler continues (a new feed restarts its counter).
        let mut cpu = s.last.unwrap().1 as f64;
        let mut x = t;
        for _ in 0..(15 * 60 * 2) {
            let sec = x.div_euclid(S).rem_euclid(60);
            cpu += if sec == 30 { 0.5e9 } else { 0.0 };
            x += S / 2;
            s.sample(x, 0, cpu as u64);
        }
        let p = s.profile().0;
        assert!(
            p.bins[30] > 0.75 && p.bins[0] < 0.25,
            "{} {}",
            p.bins[30],
            p.bins[0]
        );
    }

    proptest! {
        /// Whatever the reading interval (several a second to one a second), start and
        /// offset, a profile's total is the CPU used per minute (up to a reading interval's) and it peaks where the job is.
        #[test]
        fn profiles_conserve_cpu_and_find_the_peak(
            step_ms in 100i64..=1000, start_s in 1_500_000_000i64..2_000_000_000,
            offset_s in -86_400i64..86_400, at in 0usize..60, len in 1usize..8, cores in 0.1f64..4.0,
        ) {
            let mut s = Sampler::default();
            let load = |sec: i64| {
                let d = (sec as usize + 60 - at) % 60;
                if d < len { cores } else { 0.0 }
            };
            feed(&mut s, start_s * S, offset_s * S, 4, step_ms * 1_000_000, load);
            let (p, minutes) = s.profile();
            prop_assert!(minutes >= 2);
            let total: f32 = p.bins.iter().sum();
            // A reading interval that straddles a minute's end puts some of one minute's CPU in
            // the next: at most one interval's worth at each end.
            let slack = cores * step_ms as f64 / 1000.0;
            prop_assert!((f64::from(total) - cores * len as f64).abs() <= slack + 0.01 * cores * len as f64);
            let (peak_at, peak) = p.peak();
            prop_assert!((at..at + len).any(|s| s % 60 == peak_at), "{} {} {}", peak_at, at, len);
            prop_assert!(f64::from(peak) > cores * 0.45);
        }
    }
}
