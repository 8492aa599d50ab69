use super::*;
use crate::leap::LeapPolicy;
use crate::time::Offset;

const S: i64 = 1_000_000_000;
const START: i64 = 1_800_000_000 * S;

/// A reference clock seen from the monotonic clock: offset `phase` at mono 0, running
/// `ppm` fast, with deterministic noise of up to +-`noise` ns.
struct Sim {
    phase: i64,
    ppm: f64,
    noise: i64,
    seed: u64,
}

impl Sim {
    fn truth(&self, mono: i64) -> i64 {
        START + self.phase + mono + (mono as f64 * self.ppm * 1e-6).round() as i64
    }

    fn pair(&mut self, mono: i64) -> (i64, i64) {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = if self.noise == 0 {
            0
        } else {
            (self.seed >> 33) as i64 % (2 * self.noise + 1) - self.noise
        };
        (mono, self.truth(mono) + n)
    }
}

fn feed(m: &mut ClockModel, sim: &mut Sim, from_s: i64, to_s: i64) -> Vec<Update> {
    (from_s..to_s)
        .map(|i| {
            let (mono, r) = sim.pair(i * S);
            m.add(mono, r)
        })
        .collect()
}

#[test]
fn converges_from_100_ppm_and_0_4_s_within_8_ticks() {
    for ppm in [100.0, -100.0] {
        let mut sim = Sim {
            phase: 400_000_000,
            ppm,
            noise: 2_000,
            seed: 1,
        };
        let mut m = ClockModel::new(ModelConfig::default());
        let ups = feed(&mut m, &mut sim, 0, 3);
        assert!(m.read(2 * S).is_none(), "not synchronized before 4 pairs");
        assert_eq!(ups, vec![Update::Accepted; 3]);
        feed(&mut m, &mut sim, 3, 8);
        let f = m.frequency().unwrap();
        assert!(
            (f * 1e6 - ppm).abs() < 2.0,
            "{ppm} ppm estimated as {}",
            f * 1e6
        );
        for t in [8 * S, 8 * S + S / 2] {
            let r = m.read(t).unwrap();
            let err = r.time.unix_nanos() - sim.truth(t);
            assert_eq!(r.state, ModelState::Locked);
            assert!(err.abs() < 20_000, "{ppm} ppm: error {err} ns at {t}");
            assert!(
                r.error_ns >= err.abs(),
                "bound {} < error {err}",
                r.error_ns
            );
        }
    }
}

#[test]
fn a_50_ms_outlier_is_rejected_and_changes_nothing() {
    let mut sim = Sim {
        phase: 0,
        ppm: 20.0,
        noise: 1_000,
        seed: 2,
    };
    let mut m = ClockModel::new(ModelConfig::default());
    feed(&mut m, &mut sim, 0, 10);
    let before = m.read(10 * S + S / 2).unwrap();
    let (mono, r) = sim.pair(10 * S);
    assert_eq!(m.add(mono, r + 50_000_000), Update::Outlier);
    assert_eq!(m.read(10 * S + S / 2).unwrap(), before);
    assert_eq!(feed(&mut m, &mut sim, 11, 12), vec![Update::Accepted]);
}

#[test]
fn holdover_error_bound_covers_a_10_ppm_drift_then_gives_up() {
    let cfg = ModelConfig {
        holdover_limit_ns: 300 * S,
        ..Default::default()
    };
    let mut sim = Sim {
        phase: 123_456,
        ppm: 30.0,
        noise: 1_000,
        seed: 3,
    };
    let mut m = ClockModel::new(cfg);
    feed(&mut m, &mut sim, 0, 20);
    // The ticks stop, and the oscillator drifts by 10 ppm from the last estimate.
    let last = 19 * S;
    let drifted = |mono: i64| sim.truth(mono) + ((mono - last) as f64 * 10e-6) as i64;
    for secs in [1, 10, 60, 120, 299] {
        let t = last + secs * S;
        let r = m.read(t).unwrap();
        let err = (r.time.unix_nanos() - drifted(t)).abs();
        assert!(
            err <= r.error_ns,
            "after {secs} s: error {err} > bound {}",
            r.error_ns
        );
        assert_eq!(
            r.state,
            if secs <= 2 {
                ModelState::Locked
            } else {
                ModelState::Holdover
            }
        );
    }
    // 60 s at 10 ppm is 600 us; the bound (15 ppm) says at most ~900 us plus the fit's noise.
    let r60 = m.read(last + 60 * S).unwrap();
    assert!(
        (900_000..1_000_000).contains(&r60.error_ns),
        "{}",
        r60.error_ns
    );
    assert_eq!(
        m.read(last + 301 * S).unwrap().state,
        ModelState::Unsynchronized
    );
}

/// Reads every 100 ms over [from, to) and checks served time never goes backwards.
fn assert_monotonic(m: &ClockModel, from: i64, to: i64) {
    let mut prev = i64::MIN;
    let mut t = from;
    while t < to {
        let now = m.read(t).unwrap().time.unix_nanos();
        assert!(now > prev, "served time went back at {t}: {prev} -> {now}");
        prev = now;
        t += S / 10;
    }
}

#[test]
fn relocks_after_a_gap_by_slewing_never_stepping_back() {
    let mut sim = Sim {
        phase: 0,
        ppm: -40.0,
        noise: 500,
        seed: 4,
    };
    let mut m = ClockModel::new(ModelConfig::default());
    feed(&mut m, &mut sim, 0, 16);
    // 60 s without ticks, and the oscillator now runs 10 ppm slower than estimated: the
    // reference is 0.76 ms behind the extrapolation when ticks return.
    sim.ppm = -50.0;
    let mut ups = Vec::new();
    for i in 76..100 {
        let (mono, r) = sim.pair(i * S);
        let before = m.read(mono).unwrap().time.unix_nanos();
        ups.push(m.add(mono, r));
        let after = m.read(mono).unwrap().time.unix_nanos();
        assert_eq!(
            after, before,
            "a pair never moves the served time at its instant"
        );
    }
    assert!(ups.iter().all(|u| *u == Update::Accepted), "{ups:?}");
    assert_monotonic(&m, 16 * S, 100 * S);
    let err = m.read(100 * S).unwrap().time.unix_nanos() - sim.truth(100 * S);
    assert!(err.abs() < 20_000, "relocked to within {err} ns");
}

#[test]
fn a_phase_error_below_the_step_threshold_is_slewed_at_most_500_ppm() {
    let mut sim = Sim {
        phase: 0,
        ppm: 0.0,
        noise: 0,
        seed: 5,
    };
    let mut m = ClockModel::new(ModelConfig::default());
    feed(&mut m, &mut sim, 0, 8);
    // The reference jumps back 100 ms (e.g. the transmitter was corrected).
    sim.phase = -100_000_000;
    let ups = feed(&mut m, &mut sim, 8, 11);
    assert_eq!(ups[..2], [Update::Outlier, Update::Outlier]);
    assert_eq!(ups[2], Update::Restarted);
    feed(&mut m, &mut sim, 11, 14);
    assert_monotonic(&m, 0, 400 * S);
    // 100 ms at 500 ppm takes 200 s.
    let lag = |t: i64| m.read(t).unwrap().time.unix_nanos() - sim.truth(t);
    assert!(lag(20 * S) > 90_000_000, "{}", lag(20 * S));
    assert!(lag(300 * S).abs() < 1_000, "{}", lag(300 * S));
}

#[test]
fn a_phase_error_beyond_the_step_threshold_steps() {
    let mut sim = Sim {
        phase: 0,
        ppm: 0.0,
        noise: 0,
        seed: 6,
    };
    let mut m = ClockModel::new(ModelConfig::default());
    feed(&mut m, &mut sim, 0, 8);
    sim.phase = 500_000_000;
    let ups = feed(&mut m, &mut sim, 8, 14);
    assert!(ups.contains(&Update::Stepped(500_000_000)), "{ups:?}");
    assert_eq!(m.read(14 * S).unwrap().time.unix_nanos(), sim.truth(14 * S));
}

/// Ticks around the 2016-12-31 leap second (POSIX seconds; the inserted second has none),
/// announced from `announce_s` before it: what the model serves at each tick's arrival, and
/// every update after the first lock.
fn across_a_leap(
    policy: LeapPolicy,
    announce_s: i64,
    after_s: i64,
) -> (Vec<(i64, i64)>, Vec<Update>) {
    const LEAP: i64 = 1_483_228_800; // 2017-01-01T00:00:00Z
    let mut m = ClockModel::new(ModelConfig::default());
    let mut tracker = LeapTracker::new(policy);
    let (mut served, mut updates) = (Vec::new(), Vec::new());
    // Real (elapsed) seconds k from the first tick; the tick at k marks POSIX second
    // LEAP - announce_s + k before the leap, one less from the inserted second on.
    for k in 0..announce_s + after_s {
        let elapsed = LEAP - announce_s + k;
        if elapsed == LEAP {
            continue; // 23:59:60: its tick makes no sample
        }
        let posix = if elapsed > LEAP { elapsed - 1 } else { elapsed };
        let announced = (posix < LEAP).then_some(LeapDirection::Insert);
        let mono = k * S;
        let (u, _) = m.add_tick(
            &mut tracker,
            mono,
            Time::from_unix_nanos(posix * S),
            announced,
        );
        if k >= 8 {
            updates.push(u);
        }
        if let Some(line) = m.served() {
            let base = tracker.base_from_elapsed(Time::from_unix_nanos(line.at(mono)));
            served.push((elapsed, base.unix_nanos()));
        }
    }
    (served, updates)
}

#[test]
fn a_leap_second_under_step_repeats_23_59_59_and_nothing_looks_like_a_step() {
    let (served, updates) = across_a_leap(LeapPolicy::Step, 60, 30);
    assert!(
        updates.iter().all(|u| *u == Update::Accepted),
        "{updates:?}"
    );
    for (elapsed, base) in served {
        // What a kernel shows: POSIX, the inserted second a repeat of 23:59:59.
        let posix = if elapsed >= 1_483_228_800 {
            elapsed - 1
        } else {
            elapsed
        };
        assert!((base - posix * S).abs() < 1_000, "at {elapsed}: {base}");
    }
}

#[test]
fn a_leap_second_under_smear_is_absorbed_without_a_step() {
    let window = Offset::from_secs(100);
    let (served, updates) = across_a_leap(LeapPolicy::Smear { window }, 80, 80);
    assert!(
        updates.iter().all(|u| *u == Update::Accepted),
        "{updates:?}"
    );
    let steps: Vec<i64> = served.windows(2).map(|w| w[1].1 - w[0].1).collect();
    // Each real second advances served time by 1 s, or by 1 s - 1 s/100 inside the window
    // (the gap over the skipped tick is two seconds).
    for (i, d) in steps.iter().enumerate() {
        let span = served[i + 1].0 - served[i].0;
        let slow = span * S - span * S / 100;
        assert!(
            (d - span * S).abs() < 1_000 || (d - slow).abs() < 1_000,
            "served advanced {d} ns over {span} s at {}",
            served[i].0
        );
    }
    // After the window: POSIX again, to the microsecond.
    let (elapsed, base) = *served.last().unwrap();
    assert!((base - (elapsed - 1) * S).abs() < 1_000, "{base}");
}
