//! A VM host's fleet over days, one event at a time, with a policy from `policy.rs` answering
//! every NTP request.
//!
//! The model (every number is a parameter of [`Model`]):
//! - `vms` VMs are running on average. At the start they boot within the first hour; each
//!   lives an exponential time (mean `mean_life`), and is replaced by a new VM after an
//!   exponential gap (mean 10 min). A new VM takes a random free address from a DHCP pool
//!   four times the fleet, so addresses are reused, as they are on a real host.
//! - Each VM runs chrony: the first request 1-5 s after boot (iburst), whose answer steps
//!   its clock to its view (`makestep`); then a request every 64 s, doubling to 1024 s
//!   (minpoll 6, maxpoll 10). A later change of view (a move) is slewed at chrony's maximum
//!   rate, 83.3 ms/s, so the clock drifts across the gap rather than jumping.
//! - Each VM starts a job at :00 of every minute of its own clock. A view of offset `o`
//!   (ahead of true time) fires at true second (60 - o) mod 60 of each minute.
//! - Every minute the simulation counts the job starts in each true second: the peak second
//!   and the total. Policies run on the same trace (the random draws do not depend on them).
//! - A mixed fleet ([`Model::mix`]) gives each VM a minute profile of host CPU instead: a
//!   fraction are spiky (a job at :00 of heavy-tailed weight, Pareto alpha 1.5, lasting 1-8 s),
//!   the rest flat or already spread (a small job at a random second). Each minute then sums the
//!   running VMs' profiles by true second, at their clocks' offsets, and compares the busiest
//!   second with the lower bound no placement beats. The server learns a VM's profile after it
//!   has run for [`PROFILED_AFTER_S`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use ntp_offset_proto::load::placement::{self, Client, Params, Slot};
use ntp_offset_proto::load::profile::{Profile, SECONDS};
use ntp_offset_proto::time::Time;

use crate::policy::{self, Policy};

/// How long a VM runs before the server knows its profile (a few whole minutes averaged).
pub const PROFILED_AFTER_S: f64 = 300.0;

/// chrony's maximum slew rate (maxslewrate 83333.333 ppm).
const SLEW_RATE: f64 = 0.083_333;
const MIN_POLL_S: f64 = 64.0;
const MAX_POLL_S: f64 = 1024.0;

pub struct Model {
    pub vms: usize,
    pub views: u16,
    pub days: u64,
    /// Mean VM lifetime, seconds.
    pub mean_life: f64,
    pub seed: u64,
    /// A mixed fleet: the fraction of spiky VMs (None: every VM one job start at :00).
    pub mix: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Boot(usize),
    /// A VM's request; the number is its boot's, so a request left over from a VM that has
    /// halted does not poll for its successor.
    Poll(usize, u32),
    Halt(usize),
}

struct Vm {
    boot: u32,
    addr: u32,
    alive: bool,
    /// When it booted, and its load by second of its own minute (mixed fleets).
    born: f64,
    profile: Profile,
    /// The clock's offset from true time, seconds, and where a slew takes it.
    offset: f64,
    target: f64,
    /// When the current slew started (its offset then), None when steady.
    slew_from: Option<(f64, f64)>,
    synced: bool,
    poll: f64,
}

impl Vm {
    /// A VM just booted at `born` with address `addr` of the pool: not yet synchronized.
    fn booted(boot: u32, addr: u32, born: f64, profile: Profile) -> Vm {
        Vm {
            boot,
            addr,
            alive: true,
            born,
            profile,
            offset: 0.0,
            target: 0.0,
            slew_from: None,
            synced: false,
            poll: MIN_POLL_S,
        }
    }

    /// The client's answer at `t` put its clock `want` ahead: it steps at the first update
    /// (chrony's makestep), and slews to a changed offset after that.
    fn answered(&mut self, t: f64, want: f64) {
        if !self.synced {
            self.synced = true;
            self.offset = want;
            self.target = want;
        } else if want != self.target {
            let now = self.offset_at(t);
            self.slew_from = Some((t, now));
            self.target = want;
        }
        if let Some((t0, o0)) = self.slew_from {
            if t - t0 >= (self.target - o0).abs() / SLEW_RATE {
                self.offset = self.target;
                self.slew_from = None;
            }
        }
    }

    fn offset_at(&self, t: f64) -> f64 {
        match self.slew_from {
            Some((t0, o0)) => {
                let span = (self.target - o0).abs() / SLEW_RATE;
                if t - t0 >= span {
                    self.target
                } else {
                    o0 + (self.target - o0).signum() * SLEW_RATE * (t - t0)
                }
            }
            None => self.offset,
        }
    }
}

/// Per-minute job starts: the peak second's share of the minute's total.
#[derive(Default, Debug, Clone)]
pub struct Peaks {
    /// peak / total, per minute.
    pub ratios: Vec<f64>,
    pub minutes: u64,
}

impl Peaks {
    pub fn worst(&self) -> f64 {
        self.ratios.iter().copied().fold(0.0, f64::max)
    }

    /// The `q` quantile of the minutes' ratios (0.95: 95 % of minutes were at most this).
    pub fn quantile(&self, q: f64) -> f64 {
        let mut r = self.ratios.clone();
        r.sort_by(f64::total_cmp);
        r.get(((r.len() as f64 * q) as usize).min(r.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    }

    pub fn mean(&self) -> f64 {
        self.ratios.iter().sum::<f64>() / self.ratios.len().max(1) as f64
    }
}

/// The busiest second's share of the running VMs' job starts in the minute at `at` (None with
/// no VM running); `bins` is scratch space.
fn peak_share(vms: &[Vm], live: &[usize], at: f64, bins: &mut [usize; 60]) -> Option<f64> {
    bins.fill(0);
    for &i in live {
        let o = vms[i].offset_at(at);
        let bin = (60.0 - o).rem_euclid(60.0) as usize % 60;
        bins[bin] += 1;
    }
    let total = live.len();
    (total > 0).then(|| *bins.iter().max().expect("60 bins") as f64 / total as f64)
}

/// Mixed fleets: the busiest second of the running VMs' summed profiles (each at its clock's
/// offset at `at`) over the lower bound for placing them in `slots` (None with no load).
fn peak_over_bound(vms: &[Vm], live: &[usize], at: f64, slots: &[Slot]) -> Option<f64> {
    let mut curve = [0.0; SECONDS];
    for &i in live {
        let shift = vms[i].offset_at(at).round().rem_euclid(60.0) as usize % SECONDS;
        placement::add(&mut curve, &vms[i].profile, shift, 1.0);
    }
    let bound = placement::lower_bound(live.iter().map(|&i| &vms[i].profile), slots);
    (bound > 0.0).then(|| placement::peak(&curve) / bound)
}

/// How often a mixed fleet's best placement is worked out (it changes as VMs come and go, a
/// few an hour; working it out every minute would cost most of the run).
const BEST_EVERY_S: f64 = 3600.0;

/// Mixed fleets: the best placement found of the running VMs' profiles, over the lower bound
/// (None with no load). Worked out offline, as if every VM could be anywhere at once (no walk,
/// no churn, every profile known): heaviest first, each where it adds least, then the
/// optimizer's moves, unbudgeted, until none helps. It is a placement, so the best one lies
/// between the bound and it: with jobs of several seconds and views a few seconds apart the
/// bound (which divides each second's load among the views as if jobs did not overlap) is
/// out of reach.
fn best_over_bound(vms: &[Vm], live: &[usize], slots: &[Slot]) -> Option<f64> {
    let mut order: Vec<usize> = live.to_vec();
    order.sort_by(|&a, &b| vms[b].profile.peak().1.total_cmp(&vms[a].profile.peak().1));
    let mut curve = [0.0; SECONDS];
    let mut clients = Vec::with_capacity(order.len());
    for i in order {
        let p = &vms[i].profile;
        let view = placement::best_views(&curve, p, slots)[0];
        let slot = slots[usize::from(view.0)];
        placement::add(&mut curve, p, slot.shift, 1.0);
        clients.push(Client {
            key: i,
            view,
            profile: *p,
            pinned: false,
        });
    }
    let params = Params {
        max_moves: 100,
        min_gain: 0.0,
        ..Params::default()
    };
    let zero = [0.0; SECONDS];
    for _ in 0..50 {
        let plan = placement::optimize(
            &zero,
            &clients,
            &[],
            slots,
            &params,
            Time::from_unix_nanos(0),
        );
        if plan.moves.is_empty() {
            break;
        }
        for m in plan.moves {
            let c = clients
                .iter_mut()
                .find(|c| c.key == m.key)
                .expect("a client's move");
            c.view = m.to;
        }
    }
    let mut curve = [0.0; SECONDS];
    for c in &clients {
        placement::add(
            &mut curve,
            &c.profile,
            slots[usize::from(c.view.0)].shift,
            1.0,
        );
    }
    let bound = placement::lower_bound(live.iter().map(|&i| &vms[i].profile), slots);
    (bound > 0.0).then(|| placement::peak(&curve) / bound)
}

/// A mixed fleet's VM: spiky with probability `spiky` (a job at :00, weight Pareto-distributed
/// from 0.2 cores with alpha 1.5 and capped at 8, 1-8 s long), else flat (up to 0.05 cores) or
/// already spread (a job of up to 0.2 cores, 1-3 s, at a random second), half and half.
fn draw_profile(rng: &mut StdRng, spiky: f64) -> Profile {
    if rng.random_bool(spiky) {
        let u: f64 = rng.random_range(0.0..1.0);
        let weight = (0.2 * (1.0 - u).powf(-1.0 / 1.5)).min(8.0);
        Profile::spike(0, rng.random_range(1..=8), weight as f32)
    } else if rng.random_bool(0.5) {
        Profile::flat(rng.random_range(0.0..0.05))
    } else {
        Profile::spike(
            rng.random_range(0..SECONDS),
            rng.random_range(1..=3),
            rng.random_range(0.0..0.2),
        )
    }
}

/// The minutes counted so far: their peaks and how many VMs ran in each.
struct Tally {
    peaks: Peaks,
    live_counts: Vec<usize>,
    next_minute: f64,
    /// Minutes before this are not counted (the fleet is booting).
    skip_s: f64,
    bins: [usize; 60],
    /// Mixed fleets: the views, to measure peaks against the lower bound.
    slots: Option<Vec<Slot>>,
    /// Mixed fleets: the best placement found, hourly ([`best_over_bound`]).
    best: Peaks,
    next_best: f64,
}

impl Tally {
    fn new(skip_s: f64, slots: Option<Vec<Slot>>) -> Tally {
        Tally {
            peaks: Peaks::default(),
            live_counts: Vec::new(),
            next_minute: 60.0,
            skip_s,
            bins: [0; 60],
            slots,
            best: Peaks::default(),
            next_best: skip_s,
        }
    }

    /// Counts every minute that starts before `t`.
    fn minutes_until(&mut self, t: f64, vms: &[Vm], live: &[usize]) {
        while self.next_minute <= t {
            if self.next_minute >= self.skip_s {
                let ratio = match &self.slots {
                    Some(slots) => peak_over_bound(vms, live, self.next_minute, slots),
                    None => peak_share(vms, live, self.next_minute, &mut self.bins),
                };
                if let Some(ratio) = ratio {
                    self.peaks.ratios.push(ratio);
                    self.live_counts.push(live.len());
                }
                self.peaks.minutes += 1;
                if let (Some(slots), true) = (&self.slots, self.next_minute >= self.next_best) {
                    self.best.ratios.extend(best_over_bound(vms, live, slots));
                    self.best.minutes += 1;
                    self.next_best += BEST_EVERY_S;
                }
            }
            self.next_minute += 60.0;
        }
    }
}

/// An exponentially distributed duration of mean `mean`.
fn exp(rng: &mut StdRng, mean: f64) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    -mean * u.ln()
}

/// A random free address of the pool (`used`, four per VM), taken.
fn free_address(rng: &mut StdRng, used: &mut [bool]) -> u32 {
    let pool = used.len() as u32;
    loop {
        let a = rng.random_range(0..pool);
        if !used[a as usize] {
            used[a as usize] = true;
            return a;
        }
    }
}

/// What a run measured from its `skip_s` on.
pub struct Run {
    pub peaks: Peaks,
    /// Each minute's count of running VMs (for the ideal, ceil(running / views)).
    pub live_counts: Vec<usize>,
    /// Mixed fleets: the best placement found each hour, over the lower bound; it does not
    /// depend on the policy.
    pub best: Peaks,
}

/// Runs the model from `skip_s` on (the first hour boots the fleet).
pub fn run(m: &Model, policy: &mut Policy, skip_s: f64) -> Run {
    let mut rng = StdRng::seed_from_u64(m.seed);
    let mut used = vec![false; m.vms * 4];
    let mut vms: Vec<Vm> = Vec::new();
    let mut live: Vec<usize> = Vec::new();
    let mut queue: BinaryHeap<Reverse<(u64, u64, Event)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |q: &mut BinaryHeap<Reverse<(u64, u64, Event)>>, t: f64, e: Event| {
        seq += 1;
        q.push(Reverse(((t * 1000.0) as u64, seq, e)));
    };
    let end = (m.days * 86_400) as f64;
    for i in 0..m.vms {
        vms.push(Vm {
            alive: false,
            ..Vm::booted(0, 0, 0.0, Profile::FLAT_ZERO)
        });
        push(&mut queue, rng.random_range(0.0..3600.0), Event::Boot(i));
    }
    let mut tally = Tally::new(skip_s, m.mix.map(|_| policy::slots(m.views)));
    let mut next_housekeeping = 600.0;
    while let Some(Reverse((t_ms, _, event))) = queue.pop() {
        let t = t_ms as f64 / 1000.0;
        if t >= end {
            break;
        }
        tally.minutes_until(t, &vms, &live);
        if next_housekeeping <= t {
            policy.housekeeping(t as u64);
            next_housekeeping += 600.0;
        }
        match event {
            Event::Boot(i) => {
                let addr = free_address(&mut rng, &mut used);
                let boot = vms[i].boot + 1;
                let profile = m
                    .mix
                    .map_or(Profile::FLAT_ZERO, |x| draw_profile(&mut rng, x));
                vms[i] = Vm::booted(boot, addr, t, profile);
                live.push(i);
                push(
                    &mut queue,
                    t + rng.random_range(1.0..5.0),
                    Event::Poll(i, boot),
                );
                push(&mut queue, t + exp(&mut rng, m.mean_life), Event::Halt(i));
            }
            Event::Poll(i, boot) => {
                let vm = &mut vms[i];
                if !vm.alive || vm.boot != boot {
                    continue;
                }
                let ip = IpAddr::V4(Ipv4Addr::from(0xc612_0000 + vm.addr));
                let known =
                    (m.mix.is_some() && t - vm.born >= PROFILED_AFTER_S).then_some(vm.profile);
                let want = policy.ask(ip, t, known.as_ref());
                vm.answered(t, want);
                let next = vm.poll;
                vm.poll = (vm.poll * 2.0).min(MAX_POLL_S);
                push(&mut queue, t + next, Event::Poll(i, boot));
            }
            Event::Halt(i) => {
                let vm = &mut vms[i];
                vm.alive = false;
                used[vm.addr as usize] = false;
                policy.halted(IpAddr::V4(Ipv4Addr::from(0xc612_0000 + vm.addr)));
                live.retain(|&j| j != i);
                // A replacement boots after a while, in the same slot.
                push(&mut queue, t + exp(&mut rng, 600.0), Event::Boot(i));
            }
        }
    }
    Run {
        peaks: tally.peaks,
        live_counts: tally.live_counts,
        best: tally.best,
    }
}
