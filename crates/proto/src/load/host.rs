//! The host's predicted load: every VM whose profile is known, at the second its view puts its
//! minute on the host. Kept up to date one VM at a time, so a new client's placement costs a
//! minute's worth of arithmetic per member view, not a pass over the fleet.

use std::collections::HashMap;
use std::hash::Hash;

use crate::load::placement::{self, Client, Curve, Params, Plan, Slot, Walker};
use crate::load::profile::{Profile, SECONDS};
use crate::move_smear::MoveSmear;
use crate::time::Time;
use crate::view::ViewId;

/// What the optimizer may do with a client of the group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Standing {
    Free,
    /// The operator keeps it where it is.
    Pinned,
    /// On its way to its view: it stays on this walk.
    Walking(MoveSmear),
}

/// A VM as the host's curve counts it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placed {
    pub view: ViewId,
    pub shift: usize,
    pub profile: Profile,
}

#[derive(Clone, Debug)]
pub struct HostLoad<K> {
    vms: HashMap<K, Placed>,
    curve: Curve,
    /// The sum of the known profiles, for the typical one.
    sum: Profile,
}

impl<K> Default for HostLoad<K> {
    fn default() -> Self {
        HostLoad {
            vms: HashMap::new(),
            curve: [0.0; SECONDS],
            sum: Profile::FLAT_ZERO,
        }
    }
}

impl<K: Hash + Eq + Clone> HostLoad<K> {
    /// Records (or updates) a VM's profile and where it is.
    pub fn set(&mut self, key: K, placed: Placed) {
        self.remove(&key);
        placement::add(&mut self.curve, &placed.profile, placed.shift, 1.0);
        self.sum.add_scaled(&placed.profile, 1.0);
        self.vms.insert(key, placed);
    }

    /// Forgets a VM (gone, or its profile is no longer measured).
    pub fn remove(&mut self, key: &K) {
        if let Some(old) = self.vms.remove(key) {
            placement::add(&mut self.curve, &old.profile, old.shift, -1.0);
            self.sum.add_scaled(&old.profile, -1.0);
        }
        if self.vms.is_empty() {
            // No drift of rounding errors past an empty host.
            self.curve = [0.0; SECONDS];
            self.sum = Profile::FLAT_ZERO;
        }
    }

    /// A VM moved: its load now falls at `slot`.
    pub fn moved(&mut self, key: &K, slot: Slot) {
        if let Some(p) = self.vms.get(key).copied() {
            self.set(
                key.clone(),
                Placed {
                    view: slot.view,
                    shift: slot.shift,
                    ..p
                },
            );
        }
    }

    pub fn get(&self, key: &K) -> Option<&Placed> {
        self.vms.get(key)
    }

    pub fn len(&self) -> usize {
        self.vms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vms.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &Placed)> {
        self.vms.iter()
    }

    /// The host's predicted load by second of its minute.
    pub fn curve(&self) -> &Curve {
        &self.curve
    }

    /// The mean of the known profiles: what a VM whose own is not known yet counts as.
    pub fn typical(&self) -> Profile {
        let mut t = Profile::FLAT_ZERO;
        if !self.vms.is_empty() {
            t.add_scaled(&self.sum, 1.0 / self.vms.len() as f32);
        }
        t
    }

    /// The members of a group (`slots`) a new client should choose among: where its profile
    /// (or the typical one) adds least to the host's peak.
    /// `pending`: the shifts of clients placed lately whose profiles are not known yet, each
    /// counted as typical ([`placement::with_pending`]).
    pub fn best_views(
        &self,
        profile: Option<&Profile>,
        slots: &[Slot],
        pending: &[usize],
    ) -> Vec<ViewId> {
        let typical = self.typical();
        let p = profile.copied().unwrap_or(typical);
        let curve = placement::with_pending(&self.curve, &typical, pending);
        placement::best_views(&curve, &p, slots)
    }

    /// The optimizer's proposal for one group at `now`: its known clients (`members` says
    /// which keys are in it, and which of them are pinned or walking) may move among `slots`;
    /// every other VM on the host stays where it is.
    pub fn optimize(
        &self,
        members: &[(K, Standing)],
        slots: &[Slot],
        params: &Params,
        now: Time,
    ) -> Plan<K> {
        let mut base = self.curve;
        let mut clients = Vec::new();
        let mut walkers = Vec::new();
        for (key, standing) in members {
            let Some(p) = self.vms.get(key) else {
                continue;
            };
            placement::add(&mut base, &p.profile, p.shift, -1.0);
            match standing {
                Standing::Walking(walk) => walkers.push(Walker {
                    profile: p.profile,
                    walk: *walk,
                }),
                _ => clients.push(Client {
                    key: key.clone(),
                    view: p.view,
                    profile: p.profile,
                    pinned: *standing == Standing::Pinned,
                }),
            }
        }
        placement::optimize(&base, &clients, &walkers, slots, params, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_follows_sets_moves_and_removals() {
        let mut h: HostLoad<u32> = HostLoad::default();
        let spike = Profile::spike(0, 1, 1.0);
        let slot = |v: u16| Slot::new(ViewId(v), i64::from(v) * 15_000_000_000);
        h.set(
            1,
            Placed {
                view: ViewId(0),
                shift: 0,
                profile: spike,
            },
        );
        h.set(
            2,
            Placed {
                view: ViewId(0),
                shift: 0,
                profile: spike,
            },
        );
        assert_eq!(placement::peak(h.curve()), 2.0);
        assert_eq!(
            h.best_views(None, &[slot(0), slot(1)], &[]),
            vec![ViewId(1)]
        );
        let now = Time::from_unix_nanos(0);
        let free = [(1, Standing::Free), (2, Standing::Free)];
        let plan = h.optimize(&free, &[slot(0), slot(1)], &Params::default(), now);
        assert_eq!(plan.moves.len(), 1);
        h.moved(&plan.moves[0].key, slot(1));
        assert_eq!(placement::peak(h.curve()), 1.0);
        // A pinned pair stays.
        let pinned = [(1, Standing::Pinned), (2, Standing::Pinned)];
        assert!(h
            .optimize(&pinned, &[slot(0), slot(1)], &Params::default(), now)
            .moves
            .is_empty());
        h.remove(&1);
        h.remove(&2);
        assert_eq!(h.curve(), &[0.0; SECONDS]);
        assert_eq!(h.typical(), Profile::FLAT_ZERO);
    }
}
