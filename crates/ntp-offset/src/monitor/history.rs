//! The last hour, one value per series and second: counters as they stood (rates are
//! differences) and gauges. Bounded: [`KEEP_S`] points per series, and at most
//! [`MAX_SERIES`] series (views come and go with reloads; the oldest-updated go first).

use std::collections::{BTreeMap, VecDeque};

pub const KEEP_S: usize = 3600;
pub const MAX_SERIES: usize = 256;

#[derive(Default)]
pub struct History {
    series: BTreeMap<String, VecDeque<(u64, f64)>>,
}

impl History {
    /// Records `value` for `key` at Unix second `t` (a second already recorded is replaced).
    pub fn push(&mut self, key: &str, t: u64, value: f64) {
        if !self.series.contains_key(key) && self.series.len() >= MAX_SERIES {
            let stalest = self
                .series
                .iter()
                .min_by_key(|(_, s)| s.back().map_or(0, |p| p.0))
                .map(|(k, _)| k.clone());
            if let Some(k) = stalest {
                self.series.remove(&k);
            }
        }
        let s = self.series.entry(key.to_string()).or_default();
        match s.back_mut() {
            Some(last) if last.0 == t => last.1 = value,
            Some(last) if last.0 > t => {} // the clock stepped back: wait until it catches up
            _ => s.push_back((t, value)),
        }
        while s.len() > KEEP_S || s.front().is_some_and(|p| p.0 + (KEEP_S as u64) < t) {
            s.pop_front();
        }
    }

    pub fn get(&self, key: &str) -> Option<&VecDeque<(u64, f64)>> {
        self.series.get(key)
    }

    /// Keys that start with `prefix`, without it.
    pub fn keys_under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.series
            .keys()
            .filter_map(move |k| k.strip_prefix(prefix))
    }

    /// A counter's mean rate per second over the last `window_s` (or as much as there is, if
    /// at least two points).
    pub fn rate(&self, key: &str, window_s: u64) -> Option<f64> {
        let s = self.series.get(key)?;
        let &(t1, v1) = s.back()?;
        let &(t0, v0) = s.iter().find(|p| p.0 + window_s >= t1)?;
        (t1 > t0).then(|| (v1 - v0).max(0.0) / (t1 - t0) as f64)
    }

    /// A counter as rates per `bin_s` seconds over the last hour: (bin start, per second).
    pub fn binned_rate(&self, key: &str, bin_s: u64) -> Vec<(u64, f64)> {
        let Some(s) = self.series.get(key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut start: Option<(u64, f64)> = None;
        for &(t, v) in s {
            match start {
                None => start = Some((t, v)),
                Some((t0, v0)) if t >= t0 + bin_s => {
                    out.push((t0, (v - v0).max(0.0) / (t - t0) as f64));
                    start = Some((t, v));
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_counters_difference() {
        let mut h = History::default();
        for t in 0..600u64 {
            h.push("r", 1000 + t, (t * 10) as f64);
        }
        assert_eq!(h.rate("r", 60), Some(10.0));
        assert_eq!(h.rate("r", 300), Some(10.0));
        assert_eq!(h.rate("none", 60), None);
        let bins = h.binned_rate("r", 10);
        assert_eq!(bins.len(), 59);
        assert!(bins.iter().all(|&(_, r)| r == 10.0));
    }

    #[test]
    fn keeps_an_hour_and_a_bounded_number_of_series() {
        let mut h = History::default();
        for t in 0..(2 * KEEP_S as u64) {
            h.push("a", t, 1.0);
        }
        assert_eq!(h.get("a").unwrap().len(), KEEP_S);
        // A step back of the clock neither reorders nor duplicates.
        h.push("a", 5, 2.0);
        assert!(h.get("a").unwrap().iter().all(|p| p.1 == 1.0));
        for i in 0..(MAX_SERIES + 10) {
            h.push(&format!("s{i}"), 10_000 + i as u64, 1.0);
        }
        assert_eq!(h.series.len(), MAX_SERIES);
        assert!(h.get("a").is_none(), "the stalest series made room");
    }
}
