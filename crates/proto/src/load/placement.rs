//! Placing VMs by their measured load so that the host's busiest second is as light as it can
//! be. Sans IO: profiles in, views out.
//!
//! A VM with profile `p` served a view whose offset is `o` seconds puts `p[(h + o) mod 60]` on
//! the host in second `h` of the host's minute. The host's *curve* is the sum over its VMs; its
//! *peak* the curve's largest second. Two decisions use it:
//! - [`best_views`]: a new client goes to the member where its profile adds least to the peak
//!   (then where its own busy seconds land lowest); members it would leave equal, within a
//!   margin, are left to the caller (the balancer counts clients).
//! - [`optimize`]: the fewest moves, at most a budget, that lower the predicted peak by a useful
//!   margin; pinned clients and flat profiles never move.
//!
//! [`lower_bound`] is the yardstick: no placement does better, and the property tests hold
//! [`optimize`] to within [`BOUND_FACTOR`] of it.

use crate::load::profile::{Profile, SECONDS};
use crate::move_smear::{MoveSmear, Pace};
use crate::time::{Offset, Time};
use crate::view::ViewId;

/// The host's load by second of its minute, in cores.
pub type Curve = [f64; SECONDS];

/// The promise [`optimize`] keeps, run without a move budget: its peak is at most this times
/// [`lower_bound`]. It is Graham's bound for list scheduling (a peak is at most the average
/// load per slot plus the heaviest job, each at most the bound), which is exact here for
/// VMs whose load falls in one second of their minute; the property tests check it for
/// several-second jobs and flat loads mixed in.
pub const BOUND_FACTOR: f64 = 2.0;

/// A member view as placement sees it: the second of the VM's minute that falls at the
/// host's second 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub view: ViewId,
    pub shift: usize,
    /// The view's offset in whole seconds: a walk between two views passes every second
    /// between their offsets.
    pub offset_s: i64,
}

impl Slot {
    /// A view whose offset is `offset_ns` (rounded to whole seconds: a minute profile has
    /// one-second bins).
    pub fn new(view: ViewId, offset_ns: i64) -> Slot {
        let secs = (offset_ns as f64 / 1e9).round() as i64;
        Slot {
            view,
            shift: secs.rem_euclid(SECONDS as i64) as usize,
            offset_s: secs,
        }
    }
}

/// `curve += sign * p` for a VM at `shift`.
pub fn add(curve: &mut Curve, p: &Profile, shift: usize, sign: f64) {
    for (h, c) in curve.iter_mut().enumerate() {
        *c += sign * f64::from(p.bins[(h + shift) % SECONDS]);
    }
}

/// The busiest second's load.
pub fn peak(curve: &Curve) -> f64 {
    busiest(curve).1
}

/// The busiest second (the first of equals) and its load.
pub fn busiest(curve: &Curve) -> (usize, f64) {
    curve
        .iter()
        .copied()
        .enumerate()
        .fold((0, 0.0), |b, (s, x)| if x > b.1 { (s, x) } else { b })
}

fn sum_of_squares(curve: &Curve) -> f64 {
    curve.iter().map(|x| x * x).sum()
}

/// How good a curve is: its peak first, then its sum of squares.
fn score(curve: &Curve) -> (f64, f64) {
    (peak(curve), sum_of_squares(curve))
}

/// Whether score `a` is better than `b` by more than rounding.
fn better(a: (f64, f64), b: (f64, f64)) -> bool {
    let eps = 1e-9 * (1.0 + b.0.abs());
    a.0 < b.0 - eps || (a.0 <= b.0 + eps && a.1 < b.1 - eps * (1.0 + b.1.abs()))
}

/// No placement of `profiles` over `slots` has a lower peak than this. Each VM's quietest
/// second is on the host in every second wherever it goes (the *floor*); above it, the peak is
/// at least the heaviest single VM's busiest second, the host's average second, and, for each
/// second `k` of a VM's minute, the total over all VMs divided among the distinct host seconds
/// it can fall in.
pub fn lower_bound<'a>(profiles: impl IntoIterator<Item = &'a Profile>, slots: &[Slot]) -> f64 {
    let mut shifts: Vec<usize> = slots.iter().map(|s| s.shift).collect();
    shifts.sort_unstable();
    shifts.dedup();
    let places = shifts.len().max(1) as f64;
    let mut floor = 0.0f64;
    let mut by_second = [0.0f64; SECONDS];
    let mut heaviest = 0.0f64;
    for p in profiles {
        let low = p.bins.iter().copied().fold(f32::MAX, f32::min);
        floor += f64::from(low);
        for (t, x) in by_second.iter_mut().zip(p.bins.iter()) {
            *t += f64::from(x - low);
        }
        heaviest = heaviest.max(f64::from(p.peak().1 - low));
    }
    let total: f64 = by_second.iter().sum();
    let per_second = by_second.iter().copied().fold(0.0, f64::max) / places;
    floor + heaviest.max(per_second).max(total / SECONDS as f64)
}

/// Loads closer than this share of the host's peak (or [`EQUAL_CORES`]) are equal to
/// placement: a profile is an average of noisy minutes, and among equal members the balancer
/// counts clients, which spreads a burst of new VMs instead of sending them all to one member.
pub const EQUAL_SHARE: f64 = 0.05;
/// See [`EQUAL_SHARE`].
pub const EQUAL_CORES: f64 = 0.02;

/// The members where `p` adds least to `curve`, in `slots`' order: first the host's peak after
/// adding it, then the busiest second its own busy seconds (at least half its peak) land on.
/// Members within [`EQUAL_SHARE`] of the best on both are returned together, for the caller
/// to count among (a flat profile leaves them all equal).
pub fn best_views(curve: &Curve, p: &Profile, slots: &[Slot]) -> Vec<ViewId> {
    let busy = 0.5 * p.peak().1;
    let scored: Vec<(ViewId, f64, f64)> = slots
        .iter()
        .map(|s| {
            let mut c = *curve;
            add(&mut c, p, s.shift, 1.0);
            let top = (0..SECONDS)
                .filter(|&h| p.bins[(h + s.shift) % SECONDS] >= busy)
                .map(|h| c[h])
                .fold(0.0, f64::max);
            (s.view, peak(&c), top)
        })
        .collect();
    let Some(low_peak) = scored.iter().map(|s| s.1).reduce(f64::min) else {
        return Vec::new();
    };
    let margin = (EQUAL_SHARE * low_peak).max(EQUAL_CORES);
    let low_top = scored
        .iter()
        .filter(|s| s.1 <= low_peak + margin)
        .map(|s| s.2)
        .fold(f64::MAX, f64::min);
    scored
        .into_iter()
        .filter(|s| s.1 <= low_peak + margin && s.2 <= low_top + margin)
        .map(|s| s.0)
        .collect()
}

/// `curve` plus the `typical` profile at each of `pending`'s shifts: the clients placed in the
/// last minutes whose own profiles are not known yet. Without them a burst of new VMs (a
/// deployment of fifty) sees the same curve for minutes and all go to the one lightest view.
pub fn with_pending(curve: &Curve, typical: &Profile, pending: &[usize]) -> Curve {
    let mut c = *curve;
    for &shift in pending {
        add(&mut c, typical, shift, 1.0);
    }
    c
}

/// A client as the optimizer sees it.
#[derive(Clone, Debug)]
pub struct Client<K> {
    pub key: K,
    pub view: ViewId,
    pub profile: Profile,
    /// Never moved (the operator pinned it, or it is still moving).
    pub pinned: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// At most this many moves per run.
    pub max_moves: usize,
    /// Propose nothing unless the peak drops by at least this fraction of it.
    pub min_gain: f64,
    /// A profile whose busiest second is within this many cores of its mean (or 10 % of its
    /// mean) is flat: moving it cannot help, so it stays.
    pub flat_tolerance: f32,
    /// How moved clients walk (`move = "smear"`); None: they step, and pass no second between.
    pub pace: Option<Pace>,
}

/// A client already walking to its view: its load passes the seconds between as it goes.
#[derive(Clone, Copy, Debug)]
pub struct Walker {
    pub profile: Profile,
    pub walk: MoveSmear,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_moves: 10,
            min_gain: 0.05,
            flat_tolerance: 0.02,
            pace: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Move<K> {
    pub key: K,
    pub from: ViewId,
    pub to: ViewId,
}

/// What [`optimize`] proposes, and the peaks it predicts.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan<K> {
    pub moves: Vec<Move<K>>,
    pub peak_before: f64,
    pub peak_after: f64,
}

/// The fewest moves (at most `params.max_moves`) that lower the host's predicted peak by at
/// least `params.min_gain` of it, given `base` (the curve of the host's other VMs, which do
/// not move), `clients` (this group's, in their views) and `walkers` (the host's clients
/// walking to their views). Greedy: each step moves the one client, from among those loading
/// a busiest second, whose move to another member lowers (peak, sum of squares) most (walking,
/// the nearest of the destinations that leave the same peak: `best_step`); the run
/// stops when no move helps or the budget is spent; the shortest prefix of the steps that
/// earns [`KEPT_GAIN`] of the best gain found is proposed. Deterministic for the same input
/// order.
///
/// Walkers count at their destination. With `params.pace`, moved clients walk too, from `now`,
/// passing every second between their views' offsets: a step is taken only if the host's peak
/// stays at most where it is now all the way, every walk under way included
/// ([`transit_peak`]; or at most where the walks under way take it), so a walk never carries a
/// heavy VM across a busy view's second.
pub fn optimize<K: Clone>(
    base: &Curve,
    clients: &[Client<K>],
    walkers: &[Walker],
    slots: &[Slot],
    params: &Params,
    now: Time,
) -> Plan<K> {
    let slot_of = |v: ViewId| slots.iter().find(|s| s.view == v).copied();
    let mut curve = *base;
    for w in walkers {
        add(&mut curve, &w.profile, shift_of(w.walk.to), 1.0);
    }
    let start: Vec<Option<Slot>> = clients.iter().map(|c| slot_of(c.view)).collect();
    for (c, s) in clients.iter().zip(&start) {
        if let Some(s) = s {
            add(&mut curve, &c.profile, s.shift, 1.0);
        }
    }
    let mut at = start.clone();
    let movable: Vec<usize> = (0..clients.len())
        .filter(|&i| {
            let c = &clients[i];
            !c.pinned && at[i].is_some() && !c.profile.is_flat(params.flat_tolerance)
        })
        .collect();
    let peak_before = peak(&curve);
    // The walks under way may pass busier seconds than the peak: new walks may not add to that.
    let ceiling = match params.pace {
        Some(pace) => {
            let (fixed, _) = in_transit(base, clients, &start, &start, pace, now);
            transit_peak(&fixed, walkers, now).max(peak_before)
        }
        None => peak_before,
    };
    let mut steps: Vec<(usize, Slot, f64)> = Vec::new();
    let mut refused: Vec<(usize, ViewId)> = Vec::new();
    // Each refusal rules a (client, view) out, so the loop ends; the cap bounds its cost.
    let max_refusals = 4 * params.max_moves.min(clients.len()) + 4;
    while steps.len() < params.max_moves && refused.len() <= max_refusals {
        let near = params.pace.map(|_| start.as_slice());
        let Some((i, to, next)) = best_step(&curve, clients, &at, &movable, slots, &refused, near)
        else {
            break;
        };
        if let Some(pace) = params.pace {
            let mut moved = at.clone();
            moved[i] = Some(to);
            let (fixed, mut all) = in_transit(base, clients, &start, &moved, pace, now);
            all.extend_from_slice(walkers);
            if transit_above(&fixed, &all, now, ceiling) > TRANSIT_ALLOWANCE_S {
                refused.push((i, to.view));
                continue;
            }
        }
        let from = at[i].expect("movable clients are placed");
        add(&mut curve, &clients[i].profile, from.shift, -1.0);
        add(&mut curve, &clients[i].profile, to.shift, 1.0);
        at[i] = Some(to);
        steps.push((i, to, next.0));
    }
    plan_of(&steps, clients, peak_before, params)
}

/// A plan keeps the fewest moves that earn this share of the best gain its steps found: on
/// real guests the greedy, after moving one busy VM, went on to walk two idle ones for 2 % of
/// the peak (the little load their cron jobs make at :00), each a day-long walk at the
/// default rate for nothing an operator would notice.
pub const KEPT_GAIN: f64 = 0.9;

/// The plan from the greedy `steps` (client index, slot, peak after): the shortest prefix
/// earning [`KEPT_GAIN`] of the best gain, if that gains enough.
fn plan_of<K: Clone>(
    steps: &[(usize, Slot, f64)],
    clients: &[Client<K>],
    peak_before: f64,
    params: &Params,
) -> Plan<K> {
    let lowest = steps.iter().map(|s| s.2).fold(peak_before, f64::min);
    if peak_before - lowest < params.min_gain * peak_before || steps.is_empty() {
        return Plan {
            moves: Vec::new(),
            peak_before,
            peak_after: peak_before,
        };
    }
    let enough = lowest + (1.0 - KEPT_GAIN) * (peak_before - lowest) + 1e-9 * (1.0 + lowest);
    let take = steps
        .iter()
        .position(|s| s.2 <= enough)
        .expect("lowest is a step's")
        + 1;
    // A client moved twice within the prefix: one move from where it is to where it ends.
    let mut ends: Vec<(usize, ViewId)> = Vec::new();
    for &(i, to, _) in &steps[..take] {
        match ends.iter_mut().find(|m| m.0 == i) {
            Some(m) => m.1 = to.view,
            None => ends.push((i, to.view)),
        }
    }
    Plan {
        moves: ends
            .into_iter()
            .filter(|&(i, to)| to != clients[i].view)
            .map(|(i, to)| Move {
                key: clients[i].key.clone(),
                from: clients[i].view,
                to,
            })
            .collect(),
        peak_before,
        peak_after: steps[take - 1].2,
    }
}

/// The second of a VM's minute at the host's second 0, for a VM served `offset`.
fn shift_of(offset: Offset) -> usize {
    let secs = (offset.nanos() as f64 / 1e9).round() as i64;
    secs.rem_euclid(SECONDS as i64) as usize
}

/// `base` plus the clients that stay, and the walks of those that move (from `start` to
/// `moved`, all from `now` at `pace`).
fn in_transit<K>(
    base: &Curve,
    clients: &[Client<K>],
    start: &[Option<Slot>],
    moved: &[Option<Slot>],
    pace: Pace,
    now: Time,
) -> (Curve, Vec<Walker>) {
    let mut fixed = *base;
    let mut walks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        match (start[i], moved[i]) {
            (Some(a), Some(b)) if a.view != b.view => walks.push(Walker {
                profile: c.profile,
                walk: MoveSmear {
                    from: Offset::from_secs(a.offset_s),
                    to: Offset::from_secs(b.offset_s),
                    start: now,
                    pace,
                },
            }),
            (Some(a), _) => add(&mut fixed, &c.profile, a.shift, 1.0),
            _ => {}
        }
    }
    (fixed, walks)
}

/// How long (seconds) the walks of one plan may hold the host above its current peak: a walk
/// that must cross another view's busy second to get where it lowers the peak for good may
/// do it if it is quick (at 50,000 ppm a second is crossed in 20 s; at 200 ppm in 83 minutes,
/// which is refused). On real guests two busy VMs shared view 0 and a third sat in view 2 of
/// 0/2/4/6 s: every way out of view 0 crosses view 2's second, and without this nothing
/// moved.
pub const TRANSIT_ALLOWANCE_S: f64 = 120.0;

/// The host's highest peak from `now` until every walk has ended: `fixed` plus each walker's
/// profile at the offset its walk has reached, looked at often enough that no walker moves more
/// than half a second between looks.
pub fn transit_peak(fixed: &Curve, walkers: &[Walker], now: Time) -> f64 {
    let mut worst = peak(fixed);
    in_transit_each(fixed, walkers, now, |p, _| worst = worst.max(p));
    worst
}

/// How many seconds from `now` until every walk has ended the host's peak is above
/// `ceiling` (the walks' curve as [`transit_peak`] looks at it).
pub fn transit_above(fixed: &Curve, walkers: &[Walker], now: Time, ceiling: f64) -> f64 {
    let mut above = 0.0;
    let line = ceiling + 1e-9 * (1.0 + ceiling);
    in_transit_each(fixed, walkers, now, |p, dt| {
        if p > line {
            above += dt;
        }
    });
    above
}

/// Calls `f(peak, seconds it lasts)` for the host's curve at each look from `now` until every
/// walk has ended (none: `fixed`'s peak, for no time).
fn in_transit_each(fixed: &Curve, walkers: &[Walker], now: Time, mut f: impl FnMut(f64, f64)) {
    let Some(end) = walkers.iter().map(|w| w.walk.end()).max() else {
        f(peak(fixed), 0.0);
        return;
    };
    let fastest = walkers
        .iter()
        .map(|w| w.walk.pace.rate_ppm)
        .fold(1.0, f64::max);
    let step = Offset::from_nanos((0.5e15 / fastest) as i64); // 0.5 s at the fastest rate
    let mut t = now;
    loop {
        let mut c = *fixed;
        for w in walkers {
            add(&mut c, &w.profile, shift_of(w.walk.offset_at(t)), 1.0);
        }
        let next = t.add(step).min(end);
        f(peak(&c), next.since(t).as_secs_f64());
        if t >= end {
            return;
        }
        t = next;
    }
}

/// The best single move: a movable client loading a busiest second, to another member, not
/// one `refused`. With `near` (each client's view before the run; moves walk), of the
/// destinations that leave the same peak the nearest wins before the sum of squares: a walk
/// twice as long takes twice the hours before it is done (a day for 15 s at 200 ppm) and
/// holds its VM out of later runs all that time.
fn best_step<K>(
    curve: &Curve,
    clients: &[Client<K>],
    at: &[Option<Slot>],
    movable: &[usize],
    slots: &[Slot],
    refused: &[(usize, ViewId)],
    near: Option<&[Option<Slot>]>,
) -> Option<(usize, Slot, (f64, f64))> {
    let now = score(curve);
    let eps = 1e-9 * (1.0 + now.0);
    let busiest: Vec<usize> = (0..SECONDS).filter(|&h| curve[h] >= now.0 - eps).collect();
    let distance = |i: usize, s: &Slot| {
        near.and_then(|n| n[i])
            .map_or(0, |from| (s.offset_s - from.offset_s).abs())
    };
    let mut best: Option<(usize, Slot, (f64, f64))> = None;
    for &i in movable {
        let (p, from) = (
            &clients[i].profile,
            at[i].expect("movable clients are placed"),
        );
        if !busiest
            .iter()
            .any(|&h| p.bins[(h + from.shift) % SECONDS] > 0.0)
        {
            continue;
        }
        let mut without = *curve;
        add(&mut without, p, from.shift, -1.0);
        for s in slots
            .iter()
            .filter(|s| s.shift != from.shift && !refused.contains(&(i, s.view)))
        {
            let mut c = without;
            add(&mut c, p, s.shift, 1.0);
            let sc = score(&c);
            let wins = match best {
                None => better(sc, now),
                Some((j, t, b)) => {
                    let (d, e) = (distance(i, s), distance(j, &t));
                    let same_peak = (sc.0 - b.0).abs() <= eps;
                    if near.is_some() && same_peak && d != e {
                        d < e
                    } else {
                        better(sc, b)
                    }
                }
            };
            if wins {
                best = Some((i, *s, sc));
            }
        }
    }
    best
}

#[cfg(test)]
#[path = "placement_tests.rs"]
mod tests;
