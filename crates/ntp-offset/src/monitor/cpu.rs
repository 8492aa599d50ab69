//! The host's CPU load by second of the minute: the picture this project exists for. The
//! sampler reads /proc/stat several times a second; each interval's busy fraction goes to the
//! second of the minute (host clock) it ends in, averaged per hour into 60 bins. As VMs move
//! into views, the bins at :00 come down and the others fill up.

use std::collections::VecDeque;

/// Hours of profiles kept.
pub const KEEP_HOURS: usize = 24;

/// Busy and total jiffies of all CPUs, from /proc/stat's first line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Reads the `cpu ` line: user nice system idle iowait irq softirq steal (guest time is
/// already inside user). Idle and iowait are not busy.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// One hour's profile: mean busy fraction per second of the minute.
#[derive(Clone, Debug, PartialEq)]
pub struct HourProfile {
    /// Unix seconds at the hour's start.
    pub hour: u64,
    sum: [f64; 60],
    n: [u32; 60],
}

impl HourProfile {
    /// Mean busy fraction (0-1) per second of the minute; None where nothing was sampled.
    pub fn bins(&self) -> [Option<f64>; 60] {
        std::array::from_fn(|i| (self.n[i] > 0).then(|| self.sum[i] / f64::from(self.n[i])))
    }

    /// The highest bin over the mean of all: 1 when the load is flat, up to 60 when it all
    /// comes in one second of the minute.
    pub fn peak_to_mean(&self) -> Option<f64> {
        let bins: Vec<f64> = self.bins().into_iter().flatten().collect();
        let mean = bins.iter().sum::<f64>() / bins.len() as f64;
        let max = bins.iter().cloned().fold(f64::MIN, f64::max);
        (!bins.is_empty() && mean > 0.0).then(|| max / mean)
    }
}

#[derive(Default)]
pub struct MinuteProfile {
    hours: VecDeque<HourProfile>,
    last: Option<CpuTimes>,
}

impl MinuteProfile {
    /// Adds a reading of /proc/stat taken at Unix time `unix_ms`.
    pub fn sample(&mut self, times: CpuTimes, unix_ms: u64) {
        if let Some(last) = self.last.replace(times) {
            let total = times.total.saturating_sub(last.total);
            if total > 0 {
                let busy = times.busy.saturating_sub(last.busy).min(total);
                self.add(unix_ms / 1000, busy as f64 / total as f64);
            }
        }
    }

    /// Adds a busy fraction for the interval ending in Unix second `t`.
    pub fn add(&mut self, t: u64, busy: f64) {
        let hour = t - t % 3600;
        if self.hours.back().is_none_or(|h| h.hour < hour) {
            self.hours.push_back(HourProfile {
                hour,
                sum: [0.0; 60],
                n: [0; 60],
            });
            while self.hours.len() > KEEP_HOURS {
                self.hours.pop_front();
            }
        }
        // A clock stepped back into an earlier hour adds to the current one.
        let h = self.hours.back_mut().expect("just pushed");
        let second = (t % 60) as usize;
        h.sum[second] += busy.clamp(0.0, 1.0);
        h.n[second] += 1;
    }

    /// Oldest first.
    pub fn hours(&self) -> impl DoubleEndedIterator<Item = &HourProfile> {
        self.hours.iter()
    }

    pub fn current(&self) -> Option<&HourProfile> {
        self.hours.back()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_excludes_idle_and_iowait() {
        let text = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        assert_eq!(
            parse_proc_stat(text),
            Some(CpuTimes {
                busy: 160,
                total: 1000
            })
        );
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 x 3 4\n"), None);
        assert_eq!(parse_proc_stat(""), None);
    }

    /// Load at :00 of every minute for a whole hour: the bin at 0 is the peak; a later hour
    /// with the load spread over four seconds shows a quarter of the peak.
    #[test]
    fn a_minute_peak_shows_in_its_bin_and_flattens_when_spread() {
        let mut p = MinuteProfile::default();
        let hour = 1_800_000_000 / 3600 * 3600;
        for t in hour..hour + 3600 {
            p.add(t, if t % 60 == 0 { 1.0 } else { 0.1 });
        }
        let bins = p.current().unwrap().bins();
        assert_eq!(bins[0], Some(1.0));
        assert!((bins[30].unwrap() - 0.1).abs() < 1e-9);
        let peaked = p.current().unwrap().peak_to_mean().unwrap();
        for t in hour + 3600..hour + 7200 {
            p.add(
                t,
                if [0, 15, 30, 45].contains(&(t % 60)) {
                    0.325
                } else {
                    0.1
                },
            );
        }
        let spread = p.current().unwrap().peak_to_mean().unwrap();
        assert_eq!(p.hours().count(), 2);
        assert!(peaked > 8.0 && spread < 3.0, "{peaked} {spread}");
    }

    #[test]
    fn keeps_a_day_and_samples_from_proc_stat_differences() {
        let mut p = MinuteProfile::default();
        for h in 0..30u64 {
            p.add(h * 3600, 0.5);
        }
        assert_eq!(p.hours().count(), KEEP_HOURS);
        let mut p = MinuteProfile::default();
        p.sample(CpuTimes { busy: 0, total: 0 }, 0);
        p.sample(
            CpuTimes {
                busy: 30,
                total: 100,
            },
            7_250,
        );
        assert_eq!(p.current().unwrap().bins()[7], Some(0.3));
    }
}
