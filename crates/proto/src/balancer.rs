//! Balanced, sticky assignment of clients to a spread group's member views (`[[spread]]`
//! with `assign = "balanced"`, the default). Sans IO: the caller hands in addresses and
//! times, shares the balancer between threads and persists the table (`serve/assignments.rs`).
//!
//! - A client seen for the first time goes to the member with the fewest *active* clients
//!   for its weight (those that asked within [`ACTIVE_WINDOW_S`]); ties go to the highest
//!   keyed hash of (client, member), so hosts with the same config and the same arrivals
//!   agree. Counting only active clients matters on a real host: a VM that was deleted stays
//!   in the table until `forget_after` (days), and counting it would leave its view short of
//!   running VMs (`fleet-sim` measured the peak barely better than the hash's that way).
//! - Once assigned, a client keeps its member until it is idle for `forget_after`, or its
//!   member leaves the group.
//! - Removing a member moves only its clients, each to the then-emptiest member. Adding one
//!   moves nobody ([`Rebalance::Never`]: it fills with new clients) or the fewest clients
//!   that even the group out again ([`Rebalance::OnChange`]); every move is counted.
//! - The table is bounded: past `capacity` a new client gets the keyed hash's member without
//!   being recorded (counted), so memory never grows with a flood of addresses.
//! - A move is a step (the client is served its new view's offset at once) or, with
//!   [`Moves::Smear`], a walk from the offset it was served to the new one
//!   ([`crate::move_smear`]); [`Balancer::served`] gives the walk while it lasts. A client
//!   still walking is not moved by [`Balancer::move_to`] again.

use std::collections::HashMap;
use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher13;

use crate::load::placement::Slot;
use crate::move_smear::{MoveSmear, Moves};
use crate::time::{Offset, Time, NANOS_PER_SEC};
use crate::view::{canonical_ip, Rebalance, ViewId};

/// A client counts toward its member's load while it has asked within this long: longer than
/// any common client's longest poll interval (chrony and ntpd 1024 s, systemd-timesyncd
/// 2048 s).
pub const ACTIVE_WINDOW_S: u64 = 7200;

/// A member's clients: all in the table, and those active.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Load {
    total: u64,
    active: u64,
}

/// Where [`Balancer::remap`] puts the clients of views that are gone: no config has this
/// many views.
const DEPARTED: ViewId = ViewId(u16::MAX);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub view: ViewId,
    /// Relative share of clients, at least 1.
    pub weight: u32,
    /// The view's offset: where a client moving to it walks to.
    pub offset: Offset,
}

/// A client walking to its view: the offset it was served when the walk began, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moving {
    pub from: Offset,
    /// Seconds, on the caller's clock (Unix seconds in `serve`).
    pub since_s: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub view: ViewId,
    /// Seconds (any epoch the caller keeps to).
    pub first_seen: u64,
    pub last_seen: u64,
    /// Set while the client walks to `view` ([`Moves::Smear`]).
    pub moving: Option<Moving>,
}

/// How a client got its view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// It had it already.
    Kept,
    /// New: the member with the fewest clients for its weight.
    Balanced,
    /// New, but the table is full: the keyed hash's member, not recorded.
    HashTableFull,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub assigned: u64,
    pub moved: u64,
    pub forgotten: u64,
    pub table_full: u64,
}

#[derive(Clone, Debug)]
pub struct Balancer {
    members: Vec<Member>,
    key: (u64, u64),
    capacity: usize,
    clients: HashMap<IpAddr, Assignment>,
    counts: HashMap<ViewId, Load>,
    /// When the active counts were last recounted: a client last seen more than
    /// [`ACTIVE_WINDOW_S`] before it was not counted active.
    recounted_at: u64,
    /// The latest time handed in: when a move made by a reload starts.
    now_s: u64,
    moves: Moves,
    /// The earliest second at which a walk under way ends (u64::MAX: none): lets
    /// [`Self::settle`] cost nothing until then, so it can be called every second.
    walks_end_s: u64,
    pub counters: Counters,
}

impl Balancer {
    /// `members` must not be empty; weights of 0 count as 1.
    pub fn new(members: &[Member], key: (u64, u64), capacity: usize) -> Balancer {
        assert!(!members.is_empty(), "a spread group has members");
        let members: Vec<Member> = members
            .iter()
            .map(|m| Member {
                weight: m.weight.max(1),
                ..*m
            })
            .collect();
        Balancer {
            counts: members.iter().map(|m| (m.view, Load::default())).collect(),
            members,
            key,
            capacity,
            clients: HashMap::new(),
            recounted_at: 0,
            now_s: 0,
            moves: Moves::Step,
            walks_end_s: u64::MAX,
            counters: Counters::default(),
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The members as load-aware placement sees them.
    pub fn slots(&self) -> Vec<Slot> {
        self.members
            .iter()
            .map(|m| Slot::new(m.view, m.offset.nanos()))
            .collect()
    }

    /// How clients change view from now on (walks under way finish as they started).
    pub fn set_moves(&mut self, moves: Moves) {
        self.moves = moves;
        self.recount_walks();
    }

    /// When the earliest walk under way ends (Unix seconds, rounded up), if any walks.
    pub fn next_walk_end_s(&self) -> Option<u64> {
        (self.walks_end_s != u64::MAX).then_some(self.walks_end_s)
    }

    fn walk_end_s(&self, a: &Assignment) -> Option<u64> {
        let end = self.walk(a)?.end().unix_secs_nanos();
        Some(u64::try_from(end.0).unwrap_or(0) + u64::from(end.1 > 0))
    }

    fn recount_walks(&mut self) {
        self.walks_end_s = self
            .clients
            .values()
            .filter_map(|a| self.walk_end_s(a))
            .min()
            .unwrap_or(u64::MAX);
    }

    fn member_offset(&self, view: ViewId) -> Option<Offset> {
        self.members
            .iter()
            .find(|m| m.view == view)
            .map(|m| m.offset)
    }

    /// The walk a client is on, if it is walking and its view is a member.
    pub fn walk(&self, a: &Assignment) -> Option<MoveSmear> {
        // Switching to steps ends the walks under way: their clients step.
        let (Some(m), Moves::Smear(pace)) = (a.moving, self.moves) else {
            return None;
        };
        Some(MoveSmear {
            from: m.from,
            to: self.member_offset(a.view)?,
            start: secs(m.since_s),
            pace,
        })
    }

    /// The offset `a`'s client is served at `now_s`.
    fn served_offset(&self, a: &Assignment, now_s: u64) -> Option<Offset> {
        match self.walk(a) {
            Some(w) => Some(w.offset_at(secs(now_s))),
            None => self.member_offset(a.view),
        }
    }

    /// The offset a known client is served at `now` (its walk's, while it walks).
    pub fn served_offset_at(&self, client: IpAddr, now: Time) -> Option<Offset> {
        let a = self.clients.get(&canonical_ip(client))?;
        match self.walk(a) {
            Some(w) => Some(w.offset_at(now)),
            None => self.member_offset(a.view),
        }
    }

    /// The moves the balancer makes now: a step, or a walk at some pace.
    pub fn moves(&self) -> Moves {
        self.moves
    }

    /// A known client's view and, while it walks there, its walk (None for a new client).
    pub fn served(&self, client: IpAddr) -> Option<(ViewId, Option<MoveSmear>)> {
        let a = self.clients.get(&canonical_ip(client))?;
        Some((a.view, self.walk(a)))
    }

    /// Ends the walks that are over at `now_s`; returns how many ended.
    pub fn settle(&mut self, now_s: u64) -> usize {
        self.now_s = self.now_s.max(now_s);
        if now_s < self.walks_end_s {
            return 0;
        }
        let ended: Vec<IpAddr> = self
            .clients
            .iter()
            .filter(|(_, a)| {
                a.moving.is_some() && self.walk(a).is_none_or(|w| w.end() <= secs(now_s))
            })
            .map(|(c, _)| *c)
            .collect();
        for c in &ended {
            if let Some(a) = self.clients.get_mut(c) {
                a.moving = None;
            }
        }
        self.recount_walks();
        ended.len()
    }

    /// Clients in the table per member view.
    pub fn count(&self, view: ViewId) -> u64 {
        self.counts.get(&view).map_or(0, |l| l.total)
    }

    /// Active clients per member view: what a new client's member is chosen by.
    pub fn active(&self, view: ViewId) -> u64 {
        self.counts.get(&view).map_or(0, |l| l.active)
    }

    fn is_active(&self, a: &Assignment) -> bool {
        a.last_seen.saturating_add(ACTIVE_WINDOW_S) >= self.recounted_at
    }

    /// Counts the active clients again, as of `now`: the counts go down only here (a client
    /// that stops asking is noticed at the next recount, a returning one at once).
    pub fn recount_active(&mut self, now: u64) {
        self.recounted_at = now;
        for l in self.counts.values_mut() {
            l.active = 0;
        }
        for a in self.clients.values() {
            if a.last_seen.saturating_add(ACTIVE_WINDOW_S) >= now {
                self.counts.entry(a.view).or_default().active += 1;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    pub fn get(&self, client: IpAddr) -> Option<&Assignment> {
        self.clients.get(&canonical_ip(client))
    }

    fn score(&self, client: IpAddr, view: ViewId) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.key.0, self.key.1);
        match canonical_ip(client) {
            IpAddr::V4(a) => h.write(&a.octets()),
            IpAddr::V6(a) => h.write(&a.octets()),
        }
        h.write(&view.0.to_be_bytes());
        h.finish()
    }

    /// The member a new client goes to, of `among` (all when empty): fewest clients for its
    /// weight, then the keyed hash.
    fn emptiest(&self, client: IpAddr, among: &[ViewId]) -> ViewId {
        self.emptiest_with(client, among, |_| 0)
    }

    fn emptiest_with(
        &self,
        client: IpAddr,
        among: &[ViewId],
        extra: impl Fn(ViewId) -> u64,
    ) -> ViewId {
        self.members
            .iter()
            .filter(|m| among.is_empty() || among.contains(&m.view))
            .min_by(|a, b| {
                // active_a / weight_a vs active_b / weight_b, exactly.
                let load = |v: ViewId| u128::from(self.active(v) + extra(v));
                let la = load(a.view) * u128::from(b.weight);
                let lb = load(b.view) * u128::from(a.weight);
                la.cmp(&lb)
                    .then_with(|| self.score(client, b.view).cmp(&self.score(client, a.view)))
            })
            .map(|m| m.view)
            .expect("members left")
    }

    /// The keyed hash's member (rendezvous): what a full table gives a new client.
    fn hashed(&self, client: IpAddr) -> ViewId {
        self.members
            .iter()
            .max_by_key(|m| self.score(client, m.view))
            .map(|m| m.view)
            .expect("members")
    }

    /// The view of `client` at `now`, assigning it if new.
    pub fn assign(&mut self, client: IpAddr, now: u64) -> (ViewId, Reason) {
        self.assign_among(client, now, &[])
    }

    /// [`Self::assign`], a new client choosing only among `among` (all members when empty or
    /// when none of them is a member): the views where its load adds least to the peak.
    pub fn assign_among(&mut self, client: IpAddr, now: u64, among: &[ViewId]) -> (ViewId, Reason) {
        let client = canonical_ip(client);
        self.now_s = self.now_s.max(now);
        let recounted_at = self.recounted_at;
        if let Some(a) = self.clients.get_mut(&client) {
            let was_idle = a.last_seen.saturating_add(ACTIVE_WINDOW_S) < recounted_at;
            a.last_seen = a.last_seen.max(now);
            if was_idle {
                self.counts.entry(a.view).or_default().active += 1;
            }
            return (a.view, Reason::Kept);
        }
        if self.clients.len() >= self.capacity {
            self.counters.table_full += 1;
            return (self.hashed(client), Reason::HashTableFull);
        }
        let among = if among.iter().any(|v| self.member_offset(*v).is_some()) {
            among
        } else {
            &[]
        };
        let view = self.emptiest(client, among);
        self.insert_new(client, view, now, None);
        (view, Reason::Balanced)
    }

    /// Records a client new to the table, active now, and counts it.
    fn insert_new(&mut self, client: IpAddr, view: ViewId, now: u64, moving: Option<Moving>) {
        self.clients.insert(
            client,
            Assignment {
                view,
                first_seen: now,
                last_seen: now,
                moving,
            },
        );
        let load = self.counts.entry(view).or_default();
        load.total += 1;
        load.active += 1;
        self.counters.assigned += 1;
    }

    /// The member a new client would get now ([`Self::assign_among`]'s choice), without
    /// recording it: a cluster records it in its store first ([`Self::adopt`] then).
    /// `pending`: clients per view chosen but not adopted yet, counted as if they were.
    pub fn choose(
        &self,
        client: IpAddr,
        among: &[ViewId],
        pending: &HashMap<ViewId, u64>,
    ) -> ViewId {
        let among = if among.iter().any(|v| self.member_offset(*v).is_some()) {
            among
        } else {
            &[]
        };
        self.emptiest_with(canonical_ip(client), among, |v| {
            pending.get(&v).copied().unwrap_or(0)
        })
    }

    /// Records a client with the view somebody else chose (a cluster's store): false when
    /// `view` is not a member or the table is full. A client already known keeps its own.
    pub fn adopt(&mut self, client: IpAddr, view: ViewId, now: u64) -> bool {
        let client = canonical_ip(client);
        if self.clients.contains_key(&client) {
            return true;
        }
        if self.member_offset(view).is_none() || self.clients.len() >= self.capacity {
            return false;
        }
        self.now_s = self.now_s.max(now);
        self.insert_new(client, view, now, None);
        true
    }

    /// Moves a known client to member `to` even while it walks (a cluster's store moved it):
    /// its walk starts from the offset it is served now. False when it is unknown, already
    /// there, or `to` is not a member.
    pub fn follow(&mut self, client: IpAddr, to: ViewId, now_s: u64) -> bool {
        let client = canonical_ip(client);
        self.now_s = self.now_s.max(now_s);
        let movable = self.clients.get(&client).is_some_and(|a| a.view != to);
        if !movable || self.member_offset(to).is_none() {
            return false;
        }
        self.move_client(client, to);
        true
    }

    /// A new address of a client the table knows by another (`sibling`: the same VM's other
    /// NIC, or its rotated IPv6 address): it gets the sibling's view and the rest of its
    /// walk, so the VM's clock is served alike whichever address it asks from. None when
    /// the sibling is unknown or the table is full; an address already known keeps its own.
    pub fn assign_like(
        &mut self,
        client: IpAddr,
        sibling: IpAddr,
        now: u64,
    ) -> Option<(ViewId, Reason)> {
        let client = canonical_ip(client);
        if self.clients.contains_key(&client) {
            return Some(self.assign_among(client, now, &[]));
        }
        let like = *self.clients.get(&canonical_ip(sibling))?;
        if self.clients.len() >= self.capacity {
            return None;
        }
        self.now_s = self.now_s.max(now);
        self.insert_new(client, like.view, now, like.moving);
        Some((like.view, Reason::Balanced))
    }

    /// Frees the slots of clients idle for longer than `forget_after` seconds, and counts
    /// the active clients again.
    pub fn forget_idle(&mut self, now: u64, forget_after: u64) -> usize {
        self.settle(now);
        let before = self.clients.len();
        let counts = &mut self.counts;
        self.clients.retain(|_, a| {
            let keep = now.saturating_sub(a.last_seen) <= forget_after;
            if !keep {
                counts.entry(a.view).or_default().total -= 1;
            }
            keep
        });
        self.recount_active(now);
        let n = before - self.clients.len();
        self.counters.forgotten += n as u64;
        n
    }

    /// Moves a known client that is not walking to member `to` (the load optimizer's move);
    /// false when it is unknown, walking, already there, or `to` is not a member.
    pub fn move_to(&mut self, client: IpAddr, to: ViewId, now_s: u64) -> bool {
        let client = canonical_ip(client);
        self.now_s = self.now_s.max(now_s);
        let movable = self
            .clients
            .get(&client)
            .is_some_and(|a| a.view != to && a.moving.is_none());
        if !movable || self.member_offset(to).is_none() {
            return false;
        }
        self.move_client(client, to);
        true
    }

    fn move_client(&mut self, client: IpAddr, to: ViewId) {
        let Some(&a) = self.clients.get(&client) else {
            return;
        };
        if a.view == to {
            return;
        }
        // The walk starts at the next whole second: the caller's `now_s` is the current one,
        // so the move is made within it, and a walk dated `now_s` would already be under way
        // when the client first gets it (at `move_ramp = 0`, a step of up to the rate times
        // a second). From the offset served then (a departed view's clients carry theirs
        // from `remap`); a client redirected mid-walk gets that second's offset early, at most
        // its walk's rate times a second.
        let start = self.now_s + 1;
        let walk_from = self.served_offset(&a, start).or(a.moving.map(|m| m.from));
        let active = u64::from(self.is_active(&a));
        let from = self.counts.entry(a.view).or_default();
        from.total -= 1;
        from.active -= active;
        let into = self.counts.entry(to).or_default();
        into.total += 1;
        into.active += active;
        let moving = match (self.moves, walk_from) {
            (Moves::Smear(_), Some(from)) => Some(Moving {
                from,
                since_s: start,
            }),
            _ => None,
        };
        if let Some(a) = self.clients.get_mut(&client) {
            a.view = to;
            a.moving = moving;
        }
        if let Some(end) = self.clients.get(&client).and_then(|a| self.walk_end_s(a)) {
            self.walks_end_s = self.walks_end_s.min(end);
        }
        self.counters.moved += 1;
    }

    /// Renames views after a reload reordered them: `map` gives a view's new id, or None
    /// when it is gone (its clients then move at the next [`Self::set_members`]). Members
    /// are renamed too; call [`Self::set_members`] next.
    pub fn remap(&mut self, map: impl Fn(ViewId) -> Option<ViewId>) {
        let to = |v: ViewId| map(v).unwrap_or(DEPARTED);
        // A departed view's clients remember the offset they are served, to walk from it.
        let departing: Vec<(IpAddr, Offset)> = self
            .clients
            .iter()
            .filter(|(_, a)| map(a.view).is_none())
            .filter_map(|(c, a)| Some((*c, self.served_offset(a, self.now_s + 1)?)))
            .collect();
        for (c, from) in departing {
            if let Some(a) = self.clients.get_mut(&c) {
                a.moving = Some(Moving {
                    from,
                    since_s: self.now_s + 1,
                });
            }
        }
        for a in self.clients.values_mut() {
            a.view = to(a.view);
        }
        let mut counts: HashMap<ViewId, Load> = HashMap::new();
        for (v, l) in self.counts.drain() {
            let merged = counts.entry(to(v)).or_default();
            merged.total += l.total;
            merged.active += l.active;
        }
        self.counts = counts;
        self.members.retain(|m| map(m.view).is_some());
        for m in &mut self.members {
            m.view = to(m.view);
        }
    }

    /// A new member list (a reload). Clients of members that left go, one by one, to the
    /// emptiest remaining member; with [`Rebalance::OnChange`] the fewest clients needed then
    /// move to even the group out. Returns how many moved.
    pub fn set_members(&mut self, members: &[Member], policy: Rebalance) -> u64 {
        assert!(!members.is_empty(), "a spread group has members");
        debug_assert!(members.iter().all(|m| m.view != DEPARTED));
        let before = self.counters.moved;
        self.members = members
            .iter()
            .map(|m| Member {
                weight: m.weight.max(1),
                ..*m
            })
            .collect();
        for m in &self.members {
            self.counts.entry(m.view).or_default();
        }
        let staying: Vec<ViewId> = self.members.iter().map(|m| m.view).collect();
        // Clients of members that left, in a stable order (the keyed hash), so every host
        // with the same table moves the same clients the same way.
        let mut orphans: Vec<IpAddr> = self
            .clients
            .iter()
            .filter(|(_, a)| !staying.contains(&a.view))
            .map(|(c, _)| *c)
            .collect();
        orphans.sort_by_key(|c| (self.score(*c, ViewId(u16::MAX)), *c));
        for c in orphans {
            let to = self.emptiest(c, &[]);
            self.move_client(c, to);
        }
        self.counts.retain(|v, _| staying.contains(v));
        if policy == Rebalance::OnChange {
            self.even_out();
        }
        // A kept member whose offset changed changes its walkers' ends.
        self.recount_walks();
        self.counters.moved - before
    }

    /// Moves one active client at a time from the fullest member (for its weight, counting
    /// active clients) to the emptiest, while that makes the two more even: with equal
    /// weights, until max - min <= 1, which takes the fewest moves there are. The most
    /// recently arrived clients move first, so long-standing clients keep their time; a
    /// client moved here is not moved again. O(n log n + moves x members).
    fn even_out(&mut self) {
        let load = |b: &Balancer, m: &Member| (b.active(m.view), u64::from(m.weight));
        // Each member's active clients, oldest first, sorted once: a move takes the last.
        let mut queues: HashMap<ViewId, Vec<(u64, u64, IpAddr)>> = HashMap::new();
        for (c, a) in self.clients.iter().filter(|(_, a)| self.is_active(a)) {
            queues
                .entry(a.view)
                .or_default()
                .push((a.first_seen, self.score(*c, a.view), *c));
        }
        for q in queues.values_mut() {
            q.sort_unstable();
        }
        for _ in 0..=self.clients.len() {
            let by_load = |a: &&Member, b: &&Member| {
                let ((ca, wa), (cb, wb)) = (load(self, a), load(self, b));
                (u128::from(ca) * u128::from(wb)).cmp(&(u128::from(cb) * u128::from(wa)))
            };
            let full = *self.members.iter().max_by(by_load).expect("members");
            let empty = *self.members.iter().min_by(by_load).expect("members");
            let ((cf, wf), (ce, we)) = (load(self, &full), load(self, &empty));
            // Worth it when the full one, one client lighter, is still at least as loaded as
            // the empty one, one client heavier.
            if cf == 0 || u128::from(cf - 1) * u128::from(we) < u128::from(ce + 1) * u128::from(wf)
            {
                break;
            }
            let Some((_, _, newest)) = queues.get_mut(&full.view).and_then(Vec::pop) else {
                break; // only clients moved here already: they stay
            };
            self.move_client(newest, empty.view);
        }
    }

    /// A new bound (a reload). A table already larger keeps its clients; new ones are hashed
    /// until it is below the bound again.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }

    /// Whether a new client would find no room (it then gets the keyed hash's view).
    pub fn is_full(&self) -> bool {
        self.clients.len() >= self.capacity
    }

    /// Every assignment, sorted by address.
    pub fn assignments(&self) -> Vec<(IpAddr, Assignment)> {
        let mut rows: Vec<(IpAddr, Assignment)> =
            self.clients.iter().map(|(c, a)| (*c, *a)).collect();
        rows.sort_unstable_by_key(|(c, _)| *c);
        rows
    }

    /// The table as text, one client a line: `ADDRESS VIEW FIRST-SEEN LAST-SEEN`, sorted by
    /// address so that it diffs well and a person can read it. Views are written by name
    /// (`name_of`): a view's index changes when the config is reordered, its name does not.
    pub fn to_table(&self, name_of: impl Fn(ViewId) -> String) -> String {
        self.assignments()
            .iter()
            .map(|(c, a)| table_line(*c, &name_of(a.view), a))
            .collect()
    }

    /// Reads a table written by [`Self::to_table`] (`#` starts a comment line); returns how
    /// many lines it dropped: those for views that are no longer members (`id_of` says None;
    /// their clients are assigned again when they return), malformed ones, repeats, and
    /// those past `capacity`.
    pub fn load_table(&mut self, text: &str, id_of: impl Fn(&str) -> Option<ViewId>) -> usize {
        let mut dropped = 0;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let w: Vec<&str> = line.split_whitespace().collect();
            let (fields, moving) = match w.as_slice() {
                [head @ .., m] if w.len() == 5 => (head, parse_moving(m).map(Some)),
                all => (all, Some(None)),
            };
            let parsed = match (fields, moving) {
                ([c, v, f, l], Some(moving)) => (|| {
                    Some((
                        canonical_ip(c.parse().ok()?),
                        id_of(v)?,
                        f.parse::<u64>().ok()?,
                        l.parse::<u64>().ok()?,
                        moving,
                    ))
                })(),
                _ => None,
            };
            let Some((client, view, first_seen, last_seen, moving)) = parsed else {
                dropped += 1;
                continue;
            };
            if !self.members.iter().any(|m| m.view == view)
                || self.clients.len() >= self.capacity
                || self.clients.contains_key(&client)
            {
                dropped += 1;
                continue;
            }
            self.clients.insert(
                client,
                Assignment {
                    view,
                    first_seen,
                    last_seen,
                    moving,
                },
            );
            let active = self.is_active(&self.clients[&client]);
            let load = self.counts.entry(view).or_default();
            load.total += 1;
            load.active += u64::from(active);
        }
        self.recount_walks();
        dropped
    }
}

/// One line of the table, newline included: `ADDRESS VIEW FIRST-SEEN LAST-SEEN`, what
/// [`Balancer::load_table`] reads.
/// A walking client's line adds `from=OFFSET-NS@SINCE`.
pub fn table_line(client: IpAddr, view: &str, a: &Assignment) -> String {
    match a.moving {
        Some(m) => format!(
            "{client} {view} {} {} from={}@{}\n",
            a.first_seen,
            a.last_seen,
            m.from.nanos(),
            m.since_s
        ),
        None => format!("{client} {view} {} {}\n", a.first_seen, a.last_seen),
    }
}

/// `FROM-NS@SINCE`, a walk's start as [`table_line`] writes it.
fn parse_moving(s: &str) -> Option<Moving> {
    let (from, since) = s.strip_prefix("from=")?.split_once('@')?;
    Some(Moving {
        from: Offset::from_nanos(from.parse().ok()?),
        since_s: since.parse().ok()?,
    })
}

/// Seconds on the caller's clock as an instant.
fn secs(s: u64) -> Time {
    Time::from_unix_nanos(i64::try_from(s).unwrap_or(i64::MAX / NANOS_PER_SEC) * NANOS_PER_SEC)
}

#[cfg(test)]
#[path = "balancer_tests.rs"]
mod tests;
