//! The assignment policies being compared, as `serve` runs them: the stateless keyed hash
//! (`assign = "hash"`, [`Spread::pick`]), the balanced table (`assign = "balanced"`,
//! [`Balancer`]) placing by count, and the balanced table placing by load: new clients where
//! their profile (or the typical one) adds least to the host's peak ([`HostLoad`]), and every
//! 10 minutes the optimizer's moves, walked at a smear's pace.

use std::net::IpAddr;

use ntp_offset_proto::balancer::{Balancer, Member};
use ntp_offset_proto::load::host::{HostLoad, Placed, Standing};
use ntp_offset_proto::load::placement::{Params, Slot};
use ntp_offset_proto::load::profile::Profile;
use ntp_offset_proto::move_smear::{Moves, Pace};
use ntp_offset_proto::time::{Offset, Time};
use ntp_offset_proto::view::{Spread, ViewId};

pub const KEY: (u64, u64) = (0x766d_2d68_6f73_7431, 0x7370_7265_6164);

/// The walk's ramp in the simulation: serve's default (its rate is a parameter).
pub const RAMP_S: f64 = 3600.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hash,
    Balanced,
    LoadAware,
}

/// The load-aware policy's state beside its balancer.
pub struct Load {
    host: HostLoad<IpAddr>,
    slots: Vec<Slot>,
    offsets: Vec<f64>,
    params: Params,
    /// New clients whose profiles are not known yet, and the shift of the view each got:
    /// they count as typical until theirs is known (as `serve` counts them).
    pending: Vec<(IpAddr, usize)>,
}

pub enum Policy {
    Hash(Spread, Vec<f64>),
    Balanced(Box<Balancer>, u64, Vec<f64>),
    LoadAware(Box<Balancer>, u64, Box<Load>),
}

pub fn names(views: u16) -> Vec<String> {
    (0..views).map(|i| format!("v{i}")).collect()
}

pub fn spread(views: u16) -> Spread {
    let names = names(views);
    let members: Vec<(ViewId, &str)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (ViewId(i as u16), n.as_str()))
        .collect();
    Spread::new(&members, KEY)
}

fn offset_ns(i: u16, views: u16) -> i64 {
    60_000_000_000 * i64::from(i) / i64::from(views)
}

pub fn members(views: u16) -> Vec<Member> {
    (0..views)
        .map(|i| Member {
            view: ViewId(i),
            weight: 1,
            offset: Offset::from_nanos(offset_ns(i, views)),
        })
        .collect()
}

/// The member views as placement sees them: offsets 60/V s apart.
pub fn slots(views: u16) -> Vec<Slot> {
    (0..views)
        .map(|i| Slot::new(ViewId(i), offset_ns(i, views)))
        .collect()
}

fn offsets(views: u16) -> Vec<f64> {
    (0..views)
        .map(|i| offset_ns(i, views) as f64 / 1e9)
        .collect()
}

fn at(t: f64) -> Time {
    Time::from_unix_nanos((t * 1e9) as i64)
}

impl Policy {
    /// `forget_after_s`: the balanced table's setting (the default is 7 days); `rate_ppm`: how
    /// fast load-aware moves walk.
    pub fn new(kind: Kind, views: u16, forget_after_s: u64, rate_ppm: f64) -> Policy {
        let pace = Pace {
            rate_ppm,
            ramp_s: RAMP_S,
        };
        let table = || Box::new(Balancer::new(&members(views), KEY, 1_000_000));
        match kind {
            Kind::Hash => Policy::Hash(spread(views), offsets(views)),
            Kind::Balanced => Policy::Balanced(table(), forget_after_s, offsets(views)),
            Kind::LoadAware => {
                let mut b = table();
                b.set_moves(Moves::Smear(pace));
                let load = Load {
                    host: HostLoad::default(),
                    slots: slots(views),
                    offsets: offsets(views),
                    params: Params {
                        pace: Some(pace),
                        ..Params::default()
                    },
                    pending: Vec::new(),
                };
                Policy::LoadAware(b, forget_after_s, Box::new(load))
            }
        }
    }

    /// A request from `client` at `t`, whose profile the server knows (`known`) or not yet:
    /// the offset it is served, in seconds.
    pub fn ask(&mut self, client: IpAddr, t: f64, known: Option<&Profile>) -> f64 {
        let now_s = t as u64;
        match self {
            Policy::Hash(s, offsets) => offsets[s.pick(client).expect("members").0 as usize],
            Policy::Balanced(b, _, offsets) => offsets[b.assign(client, now_s).0 .0 as usize],
            Policy::LoadAware(b, _, load) => {
                let among = match b.get(client) {
                    Some(_) => Vec::new(),
                    None => {
                        let pending: Vec<usize> = load.pending.iter().map(|p| p.1).collect();
                        load.host.best_views(known, &load.slots, &pending)
                    }
                };
                let (view, _) = b.assign_among(client, now_s, &among);
                if known.is_none() && !among.is_empty() {
                    load.pending
                        .push((client, load.slots[view.0 as usize].shift));
                }
                if let (Some(p), None) = (known, load.host.get(&client)) {
                    load.pending.retain(|x| x.0 != client);
                    let slot = load.slots[view.0 as usize];
                    load.host.set(
                        client,
                        Placed {
                            view,
                            shift: slot.shift,
                            profile: *p,
                        },
                    );
                }
                let (view, walk) = b.served(client).expect("just assigned");
                match walk {
                    Some(w) => w.offset_at(at(t)).as_secs_f64(),
                    None => load.offsets[view.0 as usize],
                }
            }
        }
    }

    /// The VM at `client` halted: the server no longer measures it.
    pub fn halted(&mut self, client: IpAddr) {
        if let Policy::LoadAware(_, _, load) = self {
            load.host.remove(&client);
            load.pending.retain(|x| x.0 != client);
        }
    }

    /// What `serve`'s table thread does every 10 minutes; load-aware, the optimizer's moves
    /// too (at most `Params::max_moves` a run).
    pub fn housekeeping(&mut self, now_s: u64) {
        match self {
            Policy::Hash(..) => {}
            Policy::Balanced(b, forget_after, _) => {
                b.forget_idle(now_s, *forget_after);
            }
            Policy::LoadAware(b, forget_after, load) => {
                b.forget_idle(now_s, *forget_after);
                let members: Vec<(IpAddr, Standing)> = load
                    .host
                    .iter()
                    .map(|(c, _)| {
                        let standing = match b.served(*c) {
                            Some((_, Some(walk))) => Standing::Walking(walk),
                            Some((_, None)) => Standing::Free,
                            None => Standing::Pinned, // forgotten by the table: not ours
                        };
                        (*c, standing)
                    })
                    .collect();
                // The host's table iterates in a random order; the optimizer's ties must not.
                let mut members = members;
                members.sort_by_key(|m| m.0);
                let now = at(now_s as f64);
                let plan = load.host.optimize(&members, &load.slots, &load.params, now);
                for m in plan.moves {
                    if b.move_to(m.key, m.to, now_s) {
                        load.host.moved(&m.key, load.slots[m.to.0 as usize]);
                    }
                }
            }
        }
    }
}
