use super::*;
use crate::move_smear::Pace;
use proptest::prelude::*;
use std::net::Ipv4Addr;

const KEY: (u64, u64) = (0x6e74_702d, 7);

fn members(n: u16) -> Vec<Member> {
    (0..n)
        .map(|i| Member {
            view: ViewId(i),
            weight: 1,
            offset: Offset::from_secs(15 * i64::from(i)),
        })
        .collect()
}

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i))
}

fn name(v: ViewId) -> String {
    format!("v{}", v.0)
}

fn id(n: &str) -> Option<ViewId> {
    n.strip_prefix('v')?.parse().ok().map(ViewId)
}

fn spread(b: &Balancer) -> (u64, u64) {
    let c: Vec<u64> = b.members().iter().map(|m| b.count(m.view)).collect();
    (*c.iter().min().unwrap(), *c.iter().max().unwrap())
}

#[test]
fn new_clients_fill_the_emptiest_view_and_keep_it() {
    let mut b = Balancer::new(&members(4), KEY, 1000);
    for i in 0..100 {
        assert_eq!(b.assign(client(i), 10).1, Reason::Balanced);
    }
    assert_eq!(spread(&b), (25, 25));
    for i in 0..100 {
        let had = b.get(client(i)).unwrap().view;
        assert_eq!(b.assign(client(i), 20), (had, Reason::Kept));
    }
    assert_eq!(b.get(client(3)).unwrap().last_seen, 20);
    // A v4 client on a dual-stack socket is the same client.
    let mapped = IpAddr::V6(Ipv4Addr::from(0xc612_0003).to_ipv6_mapped());
    assert_eq!(b.assign(mapped, 30).1, Reason::Kept);
}

#[test]
fn two_hosts_with_the_same_arrivals_agree() {
    let mut a = Balancer::new(&members(3), KEY, 100);
    let mut b = Balancer::new(&members(3), KEY, 100);
    for i in 0..50 {
        assert_eq!(a.assign(client(i * 7), 1), b.assign(client(i * 7), 1));
    }
    assert_eq!(a.to_table(name), b.to_table(name));
}

#[test]
fn a_full_table_hashes_new_clients_and_counts_them() {
    let mut b = Balancer::new(&members(4), KEY, 10);
    for i in 0..10 {
        b.assign(client(i), 1);
    }
    let (v, r) = b.assign(client(99), 1);
    assert_eq!(r, Reason::HashTableFull);
    assert_eq!(b.assign(client(99), 2).0, v, "the hash is stable");
    assert_eq!((b.len(), b.counters.table_full), (10, 2));
}

#[test]
fn idle_clients_free_their_slots() {
    let mut b = Balancer::new(&members(2), KEY, 100);
    for i in 0..10 {
        b.assign(client(i), 0);
    }
    for i in 0..4 {
        b.assign(client(i), 500);
    }
    assert_eq!(b.forget_idle(1000, 600), 6);
    assert_eq!((b.len(), b.counters.forgotten), (4, 6));
    assert_eq!(b.count(ViewId(0)) + b.count(ViewId(1)), 4);
}

#[test]
fn clients_that_stopped_asking_do_not_count_toward_their_view() {
    let mut b = Balancer::new(&members(2), KEY, 1000);
    for i in 0..10 {
        b.assign(client(i), 0);
    }
    // The five on view 0 are deleted VMs: they stop asking; the others go on.
    let gone: Vec<u32> = (0..10)
        .filter(|&i| b.get(client(i)).unwrap().view == ViewId(0))
        .collect();
    assert_eq!(gone.len(), 5);
    for i in (0..10).filter(|i| !gone.contains(i)) {
        b.assign(client(i), ACTIVE_WINDOW_S + 800);
    }
    assert_eq!(b.forget_idle(ACTIVE_WINDOW_S + 800, 7 * 86_400), 0);
    assert_eq!((b.count(ViewId(0)), b.active(ViewId(0))), (5, 0));
    // New VMs fill view 0, which runs none, until the running ones are even.
    for i in 10..15 {
        assert_eq!(b.assign(client(i), ACTIVE_WINDOW_S + 900).0, ViewId(0));
    }
    assert_eq!((b.active(ViewId(0)), b.active(ViewId(1))), (5, 5));
    // One that comes back counts at once, and keeps its view.
    assert_eq!(
        b.assign(client(gone[0]), ACTIVE_WINDOW_S + 901),
        (ViewId(0), Reason::Kept)
    );
    assert_eq!((b.count(ViewId(0)), b.active(ViewId(0))), (10, 6));
}

#[test]
fn weights_share_clients_in_proportion() {
    let ms = [
        Member {
            view: ViewId(0),
            weight: 1,
            offset: Offset::ZERO,
        },
        Member {
            view: ViewId(1),
            weight: 3,
            offset: Offset::from_secs(15),
        },
    ];
    let mut b = Balancer::new(&ms, KEY, 1000);
    for i in 0..400 {
        b.assign(client(i), 1);
    }
    assert_eq!((b.count(ViewId(0)), b.count(ViewId(1))), (100, 300));
}

#[test]
fn the_table_reads_back_and_drops_what_it_cannot_use() {
    let mut a = Balancer::new(&members(3), KEY, 100);
    for i in 0..30 {
        a.assign(client(i), 5);
    }
    let text = a.to_table(name);
    assert!(text.starts_with("198.18.0.0 v"), "{text}");
    let mut b = Balancer::new(&members(3), KEY, 100);
    assert_eq!(b.load_table(&format!("# a comment\n\n{text}"), id), 0);
    assert_eq!(b.to_table(name), text);
    // A view that left the group (v2: `id` knows it, the group does not), garbage, a repeat.
    let mut c = Balancer::new(&members(2), KEY, 100);
    let garbage = format!("{text}not a line\n198.18.0.1 x 1 2\n198.18.0.0 v0 1 2\n");
    let dropped = c.load_table(&garbage, id);
    assert_eq!(dropped as u64, 3 + a.count(ViewId(2)));
}

#[test]
fn a_reload_that_reorders_and_removes_views_keeps_every_other_client() {
    let mut b = Balancer::new(&members(4), KEY, 1000);
    for i in 0..100 {
        b.assign(client(i), 1);
    }
    let before: Vec<ViewId> = (0..100).map(|i| b.get(client(i)).unwrap().view).collect();
    // The new config lists the views in reverse and drops view 1: old 3 -> 0, 2 -> 1, 0 -> 2.
    let new_id = |v: ViewId| match v.0 {
        1 => None,
        n => Some(ViewId(3 - n - u16::from(n == 0))),
    };
    b.remap(new_id);
    assert_eq!(b.set_members(&members(3), Rebalance::Never), 25);
    for i in 0..100 {
        let now = b.get(client(i)).unwrap().view;
        match new_id(before[i as usize]) {
            Some(v) => assert_eq!(now, v, "client {i} moved needlessly"),
            None => assert!(now.0 < 3),
        }
    }
    assert!(spread(&b).1 - spread(&b).0 <= 1);
    assert_eq!(b.members().len(), 3);
}

proptest! {
    /// Equal weights: max - min <= 1 for any number of clients and views.
    #[test]
    fn arrivals_stay_even(n in 1u32..10_000, v in 2u16..=16) {
        let mut b = Balancer::new(&members(v), KEY, 100_000);
        for i in 0..n {
            b.assign(client(i), 1);
        }
        let (lo, hi) = spread(&b);
        prop_assert!(hi - lo <= 1, "{lo}..{hi}");
    }

    /// Removing a member moves only its clients, and the rest stay even.
    #[test]
    fn removing_a_member_moves_only_its_clients(n in 1u32..3000, v in 3u16..=16, gone in 0u16..16) {
        let gone = gone % v;
        let mut b = Balancer::new(&members(v), KEY, 100_000);
        for i in 0..n {
            b.assign(client(i), 1);
        }
        let before: Vec<ViewId> = (0..n).map(|i| b.get(client(i)).unwrap().view).collect();
        let orphans = b.count(ViewId(gone));
        let rest: Vec<Member> = members(v).into_iter().filter(|m| m.view.0 != gone).collect();
        let moved = b.set_members(&rest, Rebalance::Never);
        prop_assert_eq!(moved, orphans);
        for i in 0..n {
            let now = b.get(client(i)).unwrap().view;
            prop_assert!(before[i as usize] == now || before[i as usize] == ViewId(gone));
        }
        let (lo, hi) = spread(&b);
        prop_assert!(hi - lo <= 1, "{lo}..{hi}");
    }

    /// Adding a member: `Never` moves nobody; `OnChange` moves the fewest needed to even out.
    #[test]
    fn adding_a_member_moves_nobody_or_the_fewest(n in 1u32..3000, v in 2u16..=15) {
        let mut b = Balancer::new(&members(v), KEY, 100_000);
        for i in 0..n {
            b.assign(client(i), u64::from(i));
        }
        let mut never = b.clone();
        prop_assert_eq!(never.set_members(&members(v + 1), Rebalance::Never), 0);
        let moved = b.set_members(&members(v + 1), Rebalance::OnChange);
        // The fewest moves: the largest members may keep q + 1, the others q.
        let (q, r) = (u64::from(n) / (u64::from(v) + 1), u64::from(n) % (u64::from(v) + 1));
        let mut old: Vec<u64> = (0..v).map(|i| never.count(ViewId(i))).collect();
        old.sort_unstable_by(|a, b| b.cmp(a));
        let needed: u64 = old
            .iter()
            .enumerate()
            .map(|(k, c)| c.saturating_sub(if (k as u64) < r { q + 1 } else { q }))
            .sum();
        prop_assert_eq!(moved, needed);
        let (lo, hi) = spread(&b);
        prop_assert!(hi - lo <= 1, "{lo}..{hi}");
    }
}

const PACE: Pace = Pace {
    rate_ppm: 500.0,
    ramp_s: 0.0,
};

#[test]
fn a_smeared_move_walks_from_the_served_offset_and_settles() {
    let mut b = Balancer::new(&members(4), KEY, 1000);
    b.set_moves(Moves::Smear(PACE));
    let (v, _) = b.assign(client(1), 1000);
    let to = ViewId((v.0 + 1) % 4);
    assert!(b.move_to(client(1), to, 2000));
    assert!(
        !b.move_to(client(1), v, 2001),
        "a walking client is not moved again"
    );
    let (view, walk) = b.served(client(1)).unwrap();
    let walk = walk.unwrap();
    assert_eq!(view, to);
    assert_eq!(walk.from, Offset::from_secs(15 * i64::from(v.0)));
    assert_eq!(walk.to, Offset::from_secs(15 * i64::from(to.0)));
    // 15 s (or 45 back) at 500 ppm: 30,000 s (90,000 s).
    let d = walk.duration_s();
    assert!(d == 30_000.0 || d == 90_000.0, "{d}");
    // The table keeps the walk across a restart.
    let text = b.to_table(name);
    assert!(text.contains(" from="), "{text}");
    let mut again = Balancer::new(&members(4), KEY, 1000);
    again.set_moves(Moves::Smear(PACE));
    assert_eq!(again.load_table(&text, id), 0);
    assert_eq!(again.served(client(1)).unwrap().1, Some(walk));
    assert_eq!(
        b.next_walk_end_s(),
        Some(2001 + d as u64),
        "settle knows when to look"
    );
    assert_eq!(b.settle(2001 + d as u64 - 1), 0);
    assert_eq!(b.settle(2001 + d as u64 + 1), 1);
    assert_eq!(b.served(client(1)).unwrap(), (to, None));
    assert_eq!(b.next_walk_end_s(), None);
    assert!(!b.to_table(name).contains(" from="));
}

/// The move is made some time within the caller's second: whenever that is, the client is
/// served no other offset just after it than just before (at `move_ramp = 0` too, where a walk
/// dated back to the start of the second would have leapt by the rate times the fraction).
#[test]
fn a_walk_starts_after_the_move_not_before_it() {
    let sharp = Pace {
        rate_ppm: 50_000.0,
        ramp_s: 0.0,
    };
    for fraction in [0.0, 0.25, 0.5, 0.999] {
        let mut b = Balancer::new(&members(4), KEY, 1000);
        b.set_moves(Moves::Smear(sharp));
        let (v, _) = b.assign(client(1), 1000);
        let moment = Time::from_unix_nanos(2000 * 1_000_000_000 + (fraction * 1e9) as i64);
        let before = b.served_offset_at(client(1), moment).unwrap();
        assert_eq!(before, Offset::from_secs(15 * i64::from(v.0)));
        assert!(b.move_to(client(1), ViewId((v.0 + 1) % 4), 2000));
        assert_eq!(
            b.served_offset_at(client(1), moment),
            Some(before),
            "at {fraction}"
        );
        // Then it walks at the rate: 50 ms in the second after the start.
        let later = b.served_offset_at(client(1), secs(2002)).unwrap();
        assert_eq!((later.nanos() - before.nanos()).abs(), 50_000_000);
    }
}

#[test]
fn removing_a_view_walks_its_clients_from_where_they_were() {
    let mut b = Balancer::new(&members(4), KEY, 1000);
    b.set_moves(Moves::Smear(PACE));
    for i in 0..40 {
        b.assign(client(i), 100);
    }
    let gone: Vec<IpAddr> = (0..40)
        .map(client)
        .filter(|c| b.get(*c).unwrap().view == ViewId(3))
        .collect();
    assert!(!gone.is_empty());
    b.remap(|v| (v.0 < 3).then_some(v));
    assert_eq!(
        b.set_members(&members(3), Rebalance::Never),
        gone.len() as u64
    );
    for c in gone {
        let (view, walk) = b.served(c).unwrap();
        let walk = walk.expect("walking");
        assert_eq!(walk.from, Offset::from_secs(45));
        assert_eq!(walk.to, Offset::from_secs(15 * i64::from(view.0)));
        assert_eq!(walk.start, secs(101));
    }
    // With steps, nobody walks.
    let mut s = Balancer::new(&members(4), KEY, 1000);
    for i in 0..40 {
        s.assign(client(i), 100);
    }
    s.remap(|v| (v.0 < 3).then_some(v));
    s.set_members(&members(3), Rebalance::OnChange);
    assert!((0..40).all(|i| s.served(client(i)).unwrap().1.is_none()));
}

#[test]
fn a_new_client_chooses_among_the_views_it_is_offered() {
    let mut b = Balancer::new(&members(4), KEY, 1000);
    for i in 0..20 {
        let (v, _) = b.assign_among(client(i), 1, &[ViewId(2)]);
        assert_eq!(v, ViewId(2));
    }
    // Of two offered, the emptier; an offer of no member is no constraint.
    assert_eq!(
        b.assign_among(client(100), 1, &[ViewId(2), ViewId(3)]).0,
        ViewId(3)
    );
    let (v, _) = b.assign_among(client(101), 1, &[ViewId(9)]);
    assert_ne!(v, ViewId(2));
}

#[test]
fn a_vms_new_address_gets_its_siblings_view_and_walk() {
    let mut b = Balancer::new(&members(4), KEY, 3);
    b.set_moves(Moves::Smear(PACE));
    let (v, _) = b.assign(client(1), 1000);
    let to = ViewId((v.0 + 2) % 4);
    assert!(b.move_to(client(1), to, 2000));
    let sibling = b.served(client(1)).unwrap();
    // The VM's second address, half way through the walk.
    assert_eq!(
        b.assign_like(client(2), client(1), 5000),
        Some((to, Reason::Balanced))
    );
    assert_eq!(
        b.served(client(2)).unwrap(),
        sibling,
        "the same view and walk"
    );
    let now = secs(5000);
    assert_eq!(
        b.served_offset_at(client(2), now),
        b.served_offset_at(client(1), now)
    );
    assert_eq!(b.count(to), 2);
    assert_eq!(b.get(client(2)).unwrap().first_seen, 5000);
    // Known addresses keep their own view; unknown siblings and a full table give none.
    assert_eq!(
        b.assign_like(client(1), client(9), 5001),
        Some((to, Reason::Kept))
    );
    assert_eq!(b.assign_like(client(3), client(9), 5001), None);
    b.assign(client(4), 5001);
    assert_eq!(b.assign_like(client(5), client(1), 5002), None, "full");
    assert!(b.settle(10_000_000) >= 1);
    assert_eq!(b.served(client(2)).unwrap(), (to, None), "both arrive");
}

/// A cluster host chooses as `assign` would, records in its store first, then adopts; a
/// view chosen elsewhere is adopted as it is.
#[test]
fn choosing_then_adopting_is_assigning() {
    let mut a = Balancer::new(&members(4), KEY, 1000);
    let mut b = Balancer::new(&members(4), KEY, 1000);
    for i in 0..40 {
        let chosen = b.choose(client(i), &[], &HashMap::new());
        assert!(b.adopt(client(i), chosen, 5));
        assert_eq!(a.assign(client(i), 5).0, chosen);
    }
    assert_eq!(a.to_table(name), b.to_table(name));
    assert_eq!(spread(&b), (10, 10));
    // Clients chosen but not yet adopted (their views being recorded) count: 40 arriving
    // at once still spread evenly.
    let mut pending = HashMap::new();
    let mut c = Balancer::new(&members(4), KEY, 1000);
    let chosen: Vec<ViewId> = (0..40)
        .map(|i| {
            let v = c.choose(client(i), &[], &pending);
            *pending.entry(v).or_default() += 1;
            v
        })
        .collect();
    assert!(pending.values().all(|&n| n == 10), "{pending:?}");
    for (i, v) in chosen.into_iter().enumerate() {
        assert!(c.adopt(client(i as u32), v, 5));
    }
    assert_eq!(spread(&c), (10, 10));
    // Another host's choice, whatever the counts say; not a member or a full table: no.
    assert!(b.adopt(client(100), ViewId(0), 6));
    assert_eq!(b.get(client(100)).unwrap().view, ViewId(0));
    assert!(!b.adopt(client(101), ViewId(9), 6));
    let mut full = Balancer::new(&members(2), KEY, 1);
    assert!(full.adopt(client(1), ViewId(1), 1));
    assert!(!full.adopt(client(2), ViewId(1), 1));
    assert_eq!(full.count(ViewId(1)), 1);
}

/// A move made elsewhere is followed even mid-walk, from the offset served then.
#[test]
fn following_a_move_walks_from_where_the_client_is() {
    let mut b = Balancer::new(&members(4), KEY, 10);
    b.set_moves(Moves::Smear(PACE));
    assert!(b.adopt(client(1), ViewId(0), 1_000));
    assert!(b.follow(client(1), ViewId(2), 1_000));
    let w = b.walk(b.get(client(1)).unwrap()).unwrap();
    assert_eq!(w.from, Offset::ZERO);
    // Mid-walk, elsewhere moved it again: it walks on from where it is when the new walk
    // starts (the next second).
    let mid = w.offset_at(secs(1_101));
    assert!(
        !b.move_to(client(1), ViewId(1), 1_100),
        "walking: the optimizer leaves it"
    );
    assert!(b.follow(client(1), ViewId(1), 1_100));
    let w2 = b.walk(b.get(client(1)).unwrap()).unwrap();
    assert_eq!(w2.from, mid);
    assert_eq!(w2.to, Offset::from_secs(15));
    assert!(!b.follow(client(1), ViewId(1), 1_100), "already there");
    assert!(!b.follow(client(9), ViewId(1), 1_100), "unknown");
    assert_eq!((b.count(ViewId(1)), b.count(ViewId(2))), (1, 0));
}
