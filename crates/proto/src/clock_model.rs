//! The pulse-disciplined clock, sans IO: maps the local monotonic raw clock to reference (tick)
//! time from (arrival, tick time) pairs, with an error estimate at any instant and holdover.
//!
//! - **Estimate.** A least-squares line through the last `window` pairs gives phase and
//!   frequency. A pair further than the gate from the line's prediction is an outlier; the gate
//!   is `outlier` or, in holdover, three times the current error bound, whichever is larger.
//!   Three outliers in a row mean the reference really moved: the window starts over.
//! - **Output.** What is served is a separate line that follows the estimate without ever
//!   jumping: at each new pair it is re-anchored where it stands, with the estimated frequency
//!   plus a correction of the phase error spread over `slew_time`, capped at `max_slew`. It is
//!   continuous and its rate stays near 1, so served time never goes backwards. Only a phase
//!   error beyond `step_threshold` (and the first lock, before anything was served as
//!   synchronized) steps it.
//! - **Error bound.** Three times the fit's residual RMS, plus the remaining phase correction,
//!   plus `phi` (15 ppm, RFC 5905's PHI) times the time since the last pair. In holdover the
//!   last term grows; past `holdover_limit` the clock is unsynchronized.

use crate::leap::{LeapDirection, LeapTracker};
use crate::time::{Time, NANOS_PER_SEC};

/// A leap second, in ns.
const LEAP_NS: i64 = 1_000_000_000;
const RESTART_AFTER_OUTLIERS: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// Pairs in the fit.
    pub window: usize,
    /// Pairs needed before the clock is synchronized.
    pub min_pairs: usize,
    pub outlier_ns: i64,
    /// A phase error beyond this steps the served time instead of slewing it.
    pub step_threshold_ns: i64,
    /// Phase errors are corrected over this time...
    pub slew_time_ns: i64,
    /// ...at most this fast (parts per billion).
    pub max_slew_ppb: i64,
    /// Error growth without pairs (parts per billion): RFC 5905's PHI, 15 ppm.
    pub phi_ppb: i64,
    /// Without pairs for this long, the clock is unsynchronized.
    pub holdover_limit_ns: i64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            window: 16,
            min_pairs: 4,
            outlier_ns: 5_000_000,
            step_threshold_ns: 128_000_000,
            slew_time_ns: 2_000_000_000,
            max_slew_ppb: 500_000,
            phi_ppb: 15_000,
            holdover_limit_ns: 3_600_000_000_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelState {
    /// Never locked: nothing to serve as synchronized.
    Unsynchronized,
    Locked,
    /// Pairs stopped; running on the last frequency.
    Holdover,
}

impl ModelState {
    /// As `status` and the metrics say it.
    pub fn name(self) -> &'static str {
        match self {
            ModelState::Unsynchronized => "unsynchronized",
            ModelState::Locked => "locked",
            ModelState::Holdover => "holdover",
        }
    }
}

/// The clock read at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    pub time: Time,
    pub error_ns: i64,
    pub state: ModelState,
}

/// What became of a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    Accepted,
    /// The served time was stepped by this much (first lock or beyond the step threshold).
    Stepped(i64),
    Outlier,
    /// Too many outliers in a row: the fit started over from this pair.
    Restarted,
}

/// A line: reference ns = ref0 + (mono − mono0) · (1 + rate).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Line {
    mono0: i64,
    ref0: i64,
    rate: f64,
}

impl Line {
    fn at(&self, mono: i64) -> i64 {
        let dt = (mono - self.mono0) as f64;
        self.ref0 + (dt * (1.0 + self.rate)).round() as i64
    }
}

/// The served time: `slewing` up to `until` (the phase correction), then the estimated rate,
/// so a correction never outlives the error it removes (which matters in holdover). A copy is
/// all a reader needs to turn monotonic raw instants into reference time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServedLine {
    slewing: Line,
    until: i64,
    rate: f64,
}

impl ServedLine {
    fn following(fit: Line) -> ServedLine {
        ServedLine {
            slewing: fit,
            until: fit.mono0,
            rate: fit.rate,
        }
    }

    /// Reference time (Unix ns) at a monotonic raw instant.
    pub fn at(&self, mono: i64) -> i64 {
        if mono <= self.until {
            return self.slewing.at(mono);
        }
        let dt = (mono - self.until) as f64;
        self.slewing.at(self.until) + (dt * (1.0 + self.rate)).round() as i64
    }
}

pub struct ClockModel {
    cfg: ModelConfig,
    pairs: Vec<(i64, i64)>,
    fit: Option<Line>,
    /// Residual RMS of the fit, ns.
    rms_ns: f64,
    served: Option<ServedLine>,
    last_pair_mono: Option<i64>,
    outliers_in_row: u32,
    locked_once: bool,
}

impl ClockModel {
    pub fn new(cfg: ModelConfig) -> ClockModel {
        ClockModel {
            pairs: Vec::with_capacity(cfg.window),
            cfg,
            fit: None,
            rms_ns: 0.0,
            served: None,
            last_pair_mono: None,
            outliers_in_row: 0,
            locked_once: false,
        }
    }

    /// The current frequency estimate: reference rate minus 1 (e.g. 1e-4 for +100 ppm).
    pub fn frequency(&self) -> Option<f64> {
        self.fit.map(|f| f.rate)
    }

    /// The served line, once locked: what readers copy to tell time between pairs.
    pub fn served(&self) -> Option<ServedLine> {
        self.served
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Adds a tick whose reference time is on the POSIX scale, announcing `announced`, and
    /// returns the update and the tick's time on the model's timeline. That timeline is
    /// continuous: past a pending leap it counts the leap second, until `tracker` is done
    /// with the leap; then the whole timeline drops (or takes) the second in one piece.
    /// Readers turn model time into served time with `LeapTracker::base_from_elapsed`,
    /// smeared or stepped as the policy says; either way no tick looks like a step.
    pub fn add_tick(
        &mut self,
        tracker: &mut LeapTracker,
        mono: i64,
        posix: Time,
        announced: Option<LeapDirection>,
    ) -> (Update, Time) {
        if let Some(dir) = tracker.observe(posix, announced) {
            self.shift(match dir {
                LeapDirection::Insert => -LEAP_NS,
                LeapDirection::Delete => LEAP_NS,
            });
        }
        let on_timeline = tracker.elapsed_of_posix(posix);
        (self.add(mono, on_timeline.unix_nanos()), on_timeline)
    }

    /// Moves the whole timeline by `by_ns`, pairs, fit and served line alike, so nothing
    /// looks like a step or an outlier.
    fn shift(&mut self, by_ns: i64) {
        for p in &mut self.pairs {
            p.1 += by_ns;
        }
        if let Some(f) = self.fit.as_mut() {
            f.ref0 += by_ns;
        }
        if let Some(s) = self.served.as_mut() {
            s.slewing.ref0 += by_ns;
        }
    }

    /// Takes new settings (a configuration reload) without forgetting the pairs.
    pub fn set_config(&mut self, cfg: ModelConfig) {
        let excess = self.pairs.len().saturating_sub(cfg.window.max(2));
        self.pairs.drain(..excess);
        self.cfg = cfg;
    }

    fn gate_ns(&self, mono: i64) -> i64 {
        let holdover = self.error_bound(mono).unwrap_or(0).saturating_mul(3);
        self.cfg.outlier_ns.max(holdover)
    }

    /// Adds one pair: the tick's arrival on the monotonic raw clock, and the reference time it
    /// marks (tick second + TX correction + path delay), both in ns.
    pub fn add(&mut self, mono: i64, reference: i64) -> Update {
        let mut restarted = false;
        if let Some(fit) = self.fit.filter(|_| self.pairs.len() >= 2) {
            if (reference - fit.at(mono)).abs() > self.gate_ns(mono) {
                self.outliers_in_row += 1;
                if self.outliers_in_row < RESTART_AFTER_OUTLIERS {
                    return Update::Outlier;
                }
                self.pairs.clear();
                self.fit = None;
                restarted = true;
            }
        }
        self.outliers_in_row = 0;
        if self.pairs.len() == self.cfg.window {
            self.pairs.remove(0);
        }
        self.pairs.push((mono, reference));
        self.last_pair_mono = Some(mono);
        self.refit();
        if self.pairs.len() < self.cfg.min_pairs {
            return if restarted {
                Update::Restarted
            } else {
                Update::Accepted
            };
        }
        let fit = self.fit.expect("refit with pairs");
        let target = fit.at(mono);
        let step = match self.served {
            Some(s) if self.locked_once => {
                let current = s.at(mono);
                let err = target - current;
                if err.abs() > self.cfg.step_threshold_ns {
                    Some(err)
                } else {
                    let max = self.cfg.max_slew_ppb as f64 * 1e-9;
                    let correction = (err as f64 / self.cfg.slew_time_ns as f64).clamp(-max, max);
                    let duration = if correction == 0.0 {
                        0
                    } else {
                        (err as f64 / correction).round() as i64
                    };
                    self.served = Some(ServedLine {
                        slewing: Line {
                            mono0: mono,
                            ref0: current,
                            rate: fit.rate + correction,
                        },
                        until: mono + duration,
                        rate: fit.rate,
                    });
                    None
                }
            }
            _ => Some(target - self.served.map_or(target, |s| s.at(mono))),
        };
        self.locked_once = true;
        match step {
            Some(by) => {
                self.served = Some(ServedLine::following(fit));
                if restarted {
                    Update::Restarted
                } else {
                    Update::Stepped(by)
                }
            }
            None if restarted => Update::Restarted,
            None => Update::Accepted,
        }
    }

    fn refit(&mut self) {
        let (m_last, r_last) = *self.pairs.last().expect("a pair");
        let n = self.pairs.len() as f64;
        // x: seconds before the latest pair; y: offset (reference − mono) relative to the
        // latest pair's, in ns. Small numbers, so f64 keeps sub-nanosecond precision.
        let off_last = r_last - m_last;
        let pts: Vec<(f64, f64)> = self
            .pairs
            .iter()
            .map(|&(m, r)| {
                (
                    (m - m_last) as f64 / NANOS_PER_SEC as f64,
                    ((r - m) - off_last) as f64,
                )
            })
            .collect();
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        // Slope in ns per second of x; with one pair, keep the previous frequency.
        let slope = if sxx > 0.0 {
            sxy / sxx
        } else {
            self.fit.map_or(0.0, |f| f.rate * NANOS_PER_SEC as f64)
        };
        let at_last = my - slope * mx;
        self.rms_ns = if self.pairs.len() > 2 {
            (pts.iter()
                .map(|p| (p.1 - (at_last + slope * p.0)).powi(2))
                .sum::<f64>()
                / (n - 2.0))
                .sqrt()
        } else {
            0.0
        };
        self.fit = Some(Line {
            mono0: m_last,
            ref0: r_last + at_last.round() as i64,
            rate: slope / NANOS_PER_SEC as f64,
        });
    }

    /// The error bound at `mono`, once locked.
    pub fn error_bound(&self, mono: i64) -> Option<i64> {
        let (served, fit, last) = (self.served?, self.fit?, self.last_pair_mono?);
        let since = (mono - last).max(0) as f64;
        let slewing = (fit.at(mono) - served.at(mono)).abs() as f64;
        Some((3.0 * self.rms_ns + slewing + since * self.cfg.phi_ppb as f64 * 1e-9).ceil() as i64)
    }

    /// Reads the clock at `mono` (monotonic raw ns). None before the first lock.
    pub fn read(&self, mono: i64) -> Option<Reading> {
        let served = self.served?;
        let last = self.last_pair_mono?;
        let since = mono - last;
        let state = if since > self.cfg.holdover_limit_ns {
            ModelState::Unsynchronized
        } else if since > 2 * 1_000_000_000 {
            ModelState::Holdover
        } else {
            ModelState::Locked
        };
        Some(Reading {
            time: Time::from_unix_nanos(served.at(mono)),
            error_ns: self.error_bound(mono)?,
            state,
        })
    }
}

#[cfg(test)]
#[path = "clock_model_tests.rs"]
mod tests;
