//! Placing VMs by their measured load so that the host's busiest second is as light as it can
//! be. Sans IO: profiles in, views out.
//!
//! A VM with profile `p` served a view whose offset is `o` seconds puts `p[(h + o) mod 60]` on
//! the host in second `h` of the host's minute. The host's *curve* is the sum over its VMs; its
//! *peak* the curve's largest second. Two decisions use it:
//! - [`best_view`]: a new client goes to the member where its profile adds least to the peak
//!   (then the least to the curve's sum of squares, which spreads the seconds below the peak);
//!   members it would leave equal are left to the caller (the balancer counts clients).
//! - [`optimize`]: the fewest moves, at most a budget, that lower the predicted peak by a useful
//!   margin; pinned clients and flat profiles never move.
//!
//! [`lower_bound`] is the yardstick: no placement does better, and the property tests hold
//! [`optimize`] to within [`BOUND_FACTOR`] of it.

use crate::load::profile::{Profile, SECONDS};
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
}

impl Slot {
    /// A view whose offset is `offset_ns` (rounded to whole seconds: a minute profile has
    /// one-second bins).
    pub fn new(view: ViewId, offset_ns: i64) -> Slot {
        let secs = (offset_ns as f64 / 1e9).round() as i64;
        Slot {
            view,
            shift: secs.rem_euclid(SECONDS as i64) as usize,
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
    curve.iter().copied().fold(0.0, f64::max)
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

/// The members where `p` adds least to `curve` (its peak, then its sum of squares), in
/// `slots`' order: usually one, several when they are equal (a zero or flat profile leaves
/// them all equal).
pub fn best_views(curve: &Curve, p: &Profile, slots: &[Slot]) -> Vec<ViewId> {
    let scored: Vec<(ViewId, (f64, f64))> = slots
        .iter()
        .map(|s| {
            let mut c = *curve;
            add(&mut c, p, s.shift, 1.0);
            (s.view, score(&c))
        })
        .collect();
    let Some(best) = scored
        .iter()
        .map(|(_, s)| *s)
        .reduce(|a, b| if better(b, a) { b } else { a })
    else {
        return Vec::new();
    };
    scored
        .into_iter()
        .filter(|(_, s)| !better(best, *s))
        .map(|(v, _)| v)
        .collect()
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
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_moves: 10,
            min_gain: 0.05,
            flat_tolerance: 0.02,
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
/// not move) and `clients` (this group's). Greedy: each step moves the one client, from among
/// those loading a busiest second, whose move to another member lowers (peak, sum of squares)
/// most; the run stops when no move helps or the budget is spent; the shortest prefix of the
/// steps that reaches the lowest peak is proposed. Deterministic for the same input order.
pub fn optimize<K: Clone>(
    base: &Curve,
    clients: &[Client<K>],
    slots: &[Slot],
    params: &Params,
) -> Plan<K> {
    let shift_of = |v: ViewId| slots.iter().find(|s| s.view == v).map(|s| s.shift);
    let mut curve = *base;
    let mut at: Vec<Option<usize>> = clients.iter().map(|c| shift_of(c.view)).collect();
    for (c, s) in clients.iter().zip(&at) {
        if let Some(s) = s {
            add(&mut curve, &c.profile, *s, 1.0);
        }
    }
    let movable: Vec<usize> = (0..clients.len())
        .filter(|&i| {
            let c = &clients[i];
            !c.pinned && at[i].is_some() && !c.profile.is_flat(params.flat_tolerance)
        })
        .collect();
    let peak_before = peak(&curve);
    let mut steps: Vec<(usize, Slot, f64)> = Vec::new();
    while steps.len() < params.max_moves {
        let Some((i, to, next)) = best_step(&curve, clients, &at, &movable, slots) else {
            break;
        };
        let from = at[i].expect("movable clients are placed");
        add(&mut curve, &clients[i].profile, from, -1.0);
        add(&mut curve, &clients[i].profile, to.shift, 1.0);
        at[i] = Some(to.shift);
        steps.push((i, to, next.0));
    }
    let lowest = steps.iter().map(|s| s.2).fold(peak_before, f64::min);
    if peak_before - lowest < params.min_gain * peak_before || steps.is_empty() {
        return Plan {
            moves: Vec::new(),
            peak_before,
            peak_after: peak_before,
        };
    }
    let eps = 1e-9 * (1.0 + lowest);
    let take = steps
        .iter()
        .position(|s| s.2 <= lowest + eps)
        .expect("lowest is a step's")
        + 1;
    // A client moved twice within the prefix: one move from where it is to where it ends.
    let mut pending: Vec<Pending> = Vec::new();
    for &(i, to, _) in &steps[..take] {
        match pending.iter_mut().find(|m| m.key_index == i) {
            Some(m) => m.to = to.view,
            None => pending.push(Pending {
                key_index: i,
                to: to.view,
            }),
        }
    }
    Plan {
        moves: pending
            .into_iter()
            .filter(|m| m.to != clients[m.key_index].view)
            .map(|m| Move {
                key: clients[m.key_index].key.clone(),
                from: clients[m.key_index].view,
                to: m.to,
            })
            .collect(),
        peak_before,
        peak_after: lowest,
    }
}

/// The best single move: a movable client loading a busiest second, to another member.
fn best_step<K>(
    curve: &Curve,
    clients: &[Client<K>],
    at: &[Option<usize>],
    movable: &[usize],
    slots: &[Slot],
) -> Option<(usize, Slot, (f64, f64))> {
    let now = score(curve);
    let eps = 1e-9 * (1.0 + now.0);
    let busiest: Vec<usize> = (0..SECONDS).filter(|&h| curve[h] >= now.0 - eps).collect();
    let mut best: Option<(usize, Slot, (f64, f64))> = None;
    for &i in movable {
        let (p, from) = (
            &clients[i].profile,
            at[i].expect("movable clients are placed"),
        );
        if !busiest.iter().any(|&h| p.bins[(h + from) % SECONDS] > 0.0) {
            continue;
        }
        let mut without = *curve;
        add(&mut without, p, from, -1.0);
        for s in slots.iter().filter(|s| s.shift != from) {
            let mut c = without;
            add(&mut c, p, s.shift, 1.0);
            let sc = score(&c);
            if better(sc, best.map_or(now, |b| b.2)) {
                best = Some((i, *s, sc));
            }
        }
    }
    best
}

/// A move being collected in [`optimize`]: the client's index and where it ends.
struct Pending {
    key_index: usize,
    to: ViewId,
}

#[cfg(test)]
#[path = "placement_tests.rs"]
mod tests;
