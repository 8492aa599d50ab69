//! Balanced spread groups at run time: one [`Balancer`] per group, shared by the workers,
//! kept across reloads, and written to `server.state_dir` by [`tables`](super::tables).
//!
//! The request path: a client already in the table is found under a read lock, so workers
//! never wait for each other; only a new client (or one whose last-seen time is an hour
//! stale) takes the write lock, for one insert. A full table hashes new clients under the
//! read lock too, so a flood of spoofed addresses cannot serialize the workers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use ntp_offset_proto::balancer::{Balancer, Member, Reason};
use ntp_offset_proto::load::placement::Slot;
use ntp_offset_proto::move_smear::Moves;

use crate::cluster::{Cluster, NewClient};
use crate::vms::{Located, Vms};
use ntp_offset_proto::view::{Assigned, Assigner, Balanced, Spread, Target, ViewId, ViewTable};
use tracing::{debug, info, warn};

/// A client's last-seen time is refreshed (under the write lock) when it is this stale:
/// it only decides when an idle client is forgotten (`forget_after` is at least an hour).
const TOUCH_AFTER_S: u64 = 600;
/// A new client's proposed view counts toward its view's load this long (seconds): long
/// enough for a client's next request, short enough that one lost write is soon forgotten.
const PENDING_FOR_S: u64 = 30;
/// New clients being recorded at once, at most: more wait for their next request.
const MAX_PENDING: usize = 10_000;

pub struct Group {
    pub name: String,
    pub balancer: RwLock<Balancer>,
    /// Assignments changed since the table was last written: write within a second.
    pub changed: AtomicBool,
    /// Only last-seen times changed: write with the next change, or every few minutes.
    pub touched: AtomicBool,
    /// New clients hashed because the table was full.
    pub table_full: AtomicU64,
    full_logged: AtomicBool,
    /// The table file could not be read at start: it is not overwritten (see `tables`).
    pub keep_file: AtomicBool,
    /// In a cluster: new clients whose chosen view is being recorded, and since when. They
    /// count toward their views' load, so clients arriving at once still spread evenly.
    pending: Mutex<HashMap<IpAddr, (ViewId, u64)>>,
    /// Set when a reload renumbered the views: the group that replaces this one, and the
    /// way back from its view ids to this one's. Requests still being decided with the old
    /// view table read it there, so their view ids always match their table.
    successor: OnceLock<(Arc<Group>, HashMap<ViewId, ViewId>)>,
}

impl Group {
    fn new(name: &str, balancer: Balancer) -> Group {
        Group {
            name: name.to_string(),
            balancer: RwLock::new(balancer),
            changed: AtomicBool::new(false),
            touched: AtomicBool::new(false),
            table_full: AtomicU64::new(0),
            full_logged: AtomicBool::new(false),
            keep_file: AtomicBool::new(false),
            pending: Mutex::new(HashMap::new()),
            successor: OnceLock::new(),
        }
    }

    /// A retired group's answer: the successor's assignment in this group's ids, else the
    /// hash (a new client during a reload; its next request is assigned for good).
    fn retired(&self, spread: &Spread, client: IpAddr) -> Option<Assigned> {
        let (next, back) = self.successor.get()?;
        let served = next
            .balancer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .served(client)
            .and_then(|(view, walk)| Some(Assigned::walking(*back.get(&view)?, walk)));
        Some(served.unwrap_or_else(|| {
            Assigned::view(spread.pick(client).expect("a spread group has members"))
        }))
    }

    /// The view of `client` at `now_s` (Unix seconds), and its walk there if it is moving. A
    /// new client of a group placed by load goes among the members `vms` says its load adds
    /// least to.
    pub fn assign(
        &self,
        spread: &Spread,
        client: IpAddr,
        now_s: u64,
        vms: Option<&Vms>,
        cluster: Option<(&Cluster, &ViewTable)>,
    ) -> Assigned {
        if let Some(v) = self.retired(spread, client) {
            return v;
        }
        let hashed = || Assigned::view(spread.pick(client).expect("a spread group has members"));
        let (mut among, mut siblings, mut slots) = (Vec::new(), Vec::new(), Vec::new());
        {
            let b = self.balancer.read().unwrap_or_else(|p| p.into_inner());
            match (b.get(client), cluster) {
                (Some(a), _) if now_s < a.last_seen.saturating_add(TOUCH_AFTER_S) => {
                    return Assigned::walking(a.view, b.walk(a));
                }
                (Some(_), Some((c, _))) => c.touch(&self.name, client, now_s),
                (Some(_), None) => {}
                (None, Some((c, views))) => {
                    drop(b);
                    return self.assign_from_cluster(c, views, spread, client, now_s, vms);
                }
                (None, None) if b.is_full() => {
                    drop(b);
                    self.full(spread);
                    return hashed();
                }
                (None, None) => {
                    if let Some(vms) = vms {
                        slots = b.slots();
                        // Not under the balancer's lock: see vms::watch on lock order.
                        drop(b);
                        let Some(found) = by_load(vms, client, &slots) else {
                            return Assigned {
                                placing: true,
                                ..hashed()
                            };
                        };
                        (siblings, among) = found;
                    }
                }
            }
        }
        let mut b = self.balancer.write().unwrap_or_else(|p| p.into_inner());
        // A reload may have retired this group while we waited for the lock.
        if let Some(v) = self.retired(spread, client) {
            return v;
        }
        // A VM's new address joins the view (and walk) its other addresses have.
        let like = siblings
            .iter()
            .filter(|s| **s != client)
            .find_map(|s| b.assign_like(client, *s, now_s));
        let (view, reason) = like.unwrap_or_else(|| b.assign_among(client, now_s, &among));
        if like.is_some() && reason == Reason::Balanced {
            debug!(group = %self.name, %client, view = view.0, "a VM's new address joins its other addresses' view");
        }
        let walk = b.get(client).and_then(|a| b.walk(a));
        match reason {
            Reason::Kept => self.touched.store(true, Ordering::Relaxed),
            Reason::Balanced => {
                self.changed.store(true, Ordering::Relaxed);
                debug!(group = %self.name, %client, view = view.0, clients = b.len(), "new client assigned");
            }
            Reason::HashTableFull => {
                drop(b);
                self.full(spread);
                return hashed();
            }
        }
        drop(b);
        if let (Some(vms), Reason::Balanced, None) = (vms, reason, like) {
            placed(vms, client, view, &slots, &siblings);
        }
        Assigned::walking(view, walk)
    }

    /// A client this host's table does not have, in a cluster: the store's view if it has
    /// one (a VM that migrated here, or asked another host first); else this host chooses,
    /// by its own load, and the view is recorded before the client is answered with time.
    fn assign_from_cluster(
        &self,
        cluster: &Cluster,
        views: &ViewTable,
        spread: &Spread,
        client: IpAddr,
        now_s: u64,
        vms: Option<&Vms>,
    ) -> Assigned {
        let placing = Assigned {
            placing: true,
            ..Assigned::view(spread.pick(client).expect("a spread group has members"))
        };
        if let Some((name, revision)) = cluster.view_of(&self.name, client) {
            let Some(view) = member_id(views, spread, &name) else {
                cluster.unknown_view();
                return placing;
            };
            let mut b = self.balancer.write().unwrap_or_else(|p| p.into_inner());
            if b.adopt(client, view, now_s) {
                self.changed.store(true, Ordering::Relaxed);
                cluster.adopted(&self.name, client, revision);
            }
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&client);
            return Assigned::walking(view, b.get(client).and_then(|a| b.walk(a)));
        }
        if cluster.is_refused(&self.name) {
            return placing;
        }
        // The cluster's table is bounded like a host's: past `max_clients` (a flood of
        // spoofed addresses, say) new clients get the keyed hash's view, unrecorded.
        let capacity = spread.balanced().map_or(usize::MAX, |b| b.max_clients);
        if cluster.group_len(&self.name) >= capacity {
            self.full(spread);
            return Assigned::view(spread.pick(client).expect("members"));
        }
        let slots = self
            .balancer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .slots();
        let among = match vms {
            Some(vms) => match by_load(vms, client, &slots) {
                Some((_, among)) => among,
                None => return placing,
            },
            None => Vec::new(),
        };
        let view = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            // A proposal whose client never came back (or whose write failed) stops counting.
            pending.retain(|_, (_, since)| now_s.saturating_sub(*since) <= PENDING_FOR_S);
            if let Some((v, _)) = pending.get(&client) {
                *v
            } else if pending.len() >= MAX_PENDING {
                return placing;
            } else {
                let mut per_view: HashMap<ViewId, u64> = HashMap::new();
                for (v, _) in pending.values() {
                    *per_view.entry(*v).or_default() += 1;
                }
                let v = self
                    .balancer
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .choose(client, &among, &per_view);
                pending.insert(client, (v, now_s));
                v
            }
        };
        let name = &views.view(view).name;
        match cluster.propose(&self.name, client, name, now_s) {
            NewClient::Hash => Assigned::view(spread.pick(client).expect("members")),
            NewClient::Recording | NewClient::Unanswered => placing,
        }
    }

    fn full(&self, spread: &Spread) {
        self.table_full.fetch_add(1, Ordering::Relaxed);
        if !self.full_logged.swap(true, Ordering::Relaxed) {
            let max = spread.balanced().map_or(0, |b| b.max_clients);
            warn!(group = %self.name, "spread group's table is full ({max} clients): new clients get the keyed hash's view until idle ones are forgotten; raise max_clients if this many are real");
        }
    }

    /// Drops clients idle for longer than the group's `forget_after`.
    pub fn forget_idle(&self, now_s: u64, forget_after_s: u64) {
        let mut b = self.balancer.write().unwrap_or_else(|p| p.into_inner());
        let n = b.forget_idle(now_s, forget_after_s);
        if n > 0 {
            self.changed.store(true, Ordering::Relaxed);
            self.full_logged.store(false, Ordering::Relaxed);
            info!(group = %self.name, forgotten = n, clients = b.len(), "forgot clients idle for longer than forget_after");
        }
    }
}

/// A balanced group's members with their weights and offsets, as its balancer takes them.
pub fn members_of(views: &ViewTable, spread: &Spread, b: &Balanced) -> Vec<Member> {
    spread
        .members()
        .zip(&b.weights)
        .map(|(view, &weight)| Member {
            view,
            weight,
            offset: views.view(view).offset,
        })
        .collect()
}

/// The id of a view by name, if it is a member of `spread`: how a table's (or the cluster's
/// store's) view names are read.
pub fn member_id(views: &ViewTable, spread: &Spread, name: &str) -> Option<ViewId> {
    let id = ViewId(views.views().iter().position(|v| v.name == name)? as u16);
    spread.members().any(|m| m == id).then_some(id)
}

/// The balanced groups of a view table, in spread order (None: a hash group).
#[derive(Default, Clone)]
pub struct Groups {
    by_index: Vec<Option<Arc<Group>>>,
}

/// Every balanced group of `views`: (its spread, its settings).
pub fn balanced_groups(views: &ViewTable) -> impl Iterator<Item = (&Spread, &Balanced)> {
    views.rules().iter().filter_map(|r| match &r.target {
        Target::Spread(s) => s.balanced().map(|b| (s, b)),
        Target::View(_) => None,
    })
}

impl Groups {
    /// The groups of a new configuration. A group of the same name as before keeps its table:
    /// views are matched by name (a reload may reorder them), clients of removed members
    /// move, and `rebalance` decides about added ones. New groups start empty (`load` fills
    /// them from their files). Moves made now start walking at `now_s` (Unix seconds).
    pub fn for_config(
        views: &ViewTable,
        before: Option<(&Groups, &ViewTable)>,
        now_s: u64,
    ) -> Groups {
        let mut by_index = Vec::new();
        for (spread, b) in balanced_groups(views) {
            let index = b.index as usize;
            if by_index.len() <= index {
                by_index.resize(index + 1, None);
            }
            let members = members_of(views, spread, b);
            let old = before.and_then(|(groups, old_views)| {
                groups
                    .iter()
                    .find(|g| g.name == b.name)
                    .map(|g| (g.clone(), old_views))
            });
            let group = match old {
                Some((g, old_views)) => {
                    let new_id = |old: ViewId| {
                        let name = &old_views.views().get(old.0 as usize)?.name;
                        views
                            .views()
                            .iter()
                            .position(|v| &v.name == name)
                            .map(|i| ViewId(i as u16))
                    };
                    let mut bal = g.balancer.write().unwrap_or_else(|p| p.into_inner());
                    let renumbered = bal
                        .members()
                        .iter()
                        .any(|m| new_id(m.view).is_some_and(|n| n != m.view));
                    // Renumbered views: requests in flight still hold the old table, so the
                    // old group stays as it is for them and a new one takes over.
                    let mut next = bal.clone();
                    next.settle(now_s);
                    next.remap(new_id);
                    next.set_capacity(b.max_clients);
                    next.set_moves(b.moves);
                    let moved = next.set_members(&members, b.rebalance);
                    let group = if renumbered {
                        let back = bal
                            .members()
                            .iter()
                            .filter_map(|m| new_id(m.view).map(|n| (n, m.view)))
                            .collect();
                        let fresh = Arc::new(Group::new(&b.name, next));
                        fresh
                            .keep_file
                            .store(g.keep_file.load(Ordering::Relaxed), Ordering::Relaxed);
                        let _ = g.successor.set((fresh.clone(), back));
                        fresh
                    } else {
                        *bal = next;
                        g.clone()
                    };
                    drop(bal);
                    if moved > 0 {
                        group.changed.store(true, Ordering::Relaxed);
                        let how = match b.moves {
                            Moves::Step => "their clocks jump by the difference",
                            Moves::Smear(_) => "their time walks there at the group's move_rate",
                        };
                        info!(group = %b.name, moved, "reload: clients moved to other views of the group ({how})");
                    }
                    group
                }
                None => {
                    // The group's hash key breaks ties: hosts with the same config break them alike.
                    let mut bal = Balancer::new(&members, spread.key(), b.max_clients);
                    bal.set_moves(b.moves);
                    Arc::new(Group::new(&b.name, bal))
                }
            };
            by_index[index] = Some(group);
        }
        Groups { by_index }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.by_index.iter().flatten()
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.iter().all(Option::is_none)
    }

    /// One line per group for the status log: clients per view.
    pub fn status(&self, views: &ViewTable) -> Vec<String> {
        self.iter()
            .map(|g| {
                let b = g.balancer.read().unwrap_or_else(|p| p.into_inner());
                let counts: Vec<String> = b
                    .members()
                    .iter()
                    .map(|m| {
                        format!(
                            "{} {} ({} active)",
                            views.view(m.view).name,
                            b.count(m.view),
                            b.active(m.view)
                        )
                    })
                    .collect();
                format!(
                    "spread `{}`: {} clients ({}); moved {}, forgotten {}, hashed while full {}",
                    g.name,
                    b.len(),
                    counts.join(", "),
                    b.counters.moved,
                    b.counters.forgotten,
                    g.table_full.load(Ordering::Relaxed)
                )
            })
            .collect()
    }
}

/// The workers' [`Assigner`] for one batch: the groups, the batch's wall-clock second, and
/// the host's VMs (for groups placed by load).
pub struct BatchAssigner<'a> {
    pub groups: &'a Groups,
    pub now_s: u64,
    pub vms: &'a Vms,
    /// The cluster this host shares its groups with, and the view table the groups are of.
    pub cluster: Option<(&'a Cluster, &'a ViewTable)>,
}

impl Assigner for BatchAssigner<'_> {
    fn assign(&self, spread: &Spread, b: &Balanced, client: IpAddr) -> Assigned {
        match self.groups.by_index.get(b.index as usize) {
            Some(Some(g)) => g.assign(
                spread,
                client,
                self.now_s,
                b.by_load.then_some(self.vms),
                self.cluster,
            ),
            // Not reachable: the groups are built from the same table.
            _ => Assigned::view(spread.pick(client).expect("a spread group has members")),
        }
    }
}

/// View names by id, for writing a table.
pub fn names(views: &ViewTable) -> HashMap<ViewId, String> {
    views
        .views()
        .iter()
        .enumerate()
        .map(|(i, v)| (ViewId(i as u16), v.name.clone()))
        .collect()
}

/// A VM placed by load counts for the next placements before its profile is known.
fn placed(vms: &Vms, client: IpAddr, view: ViewId, slots: &[Slot], siblings: &[IpAddr]) {
    if let Some(s) = slots.iter().find(|s| s.view == view) {
        if !siblings.is_empty() {
            vms.placed(client, s.shift);
        }
    }
}

/// A new client of a group placed by load: its VM's addresses (empty if it is no VM's) and
/// the members its load adds least to; None while it is being placed (not in the neighbour
/// table yet).
fn by_load(vms: &Vms, client: IpAddr, slots: &[Slot]) -> Option<(Vec<IpAddr>, Vec<ViewId>)> {
    let siblings = match vms.locate(client) {
        Located::Placing => return None,
        Located::Vm(addrs) => addrs,
        Located::Other => Vec::new(),
    };
    Some((siblings, vms.best_views(client, slots)))
}
