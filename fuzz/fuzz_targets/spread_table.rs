//! The spread assignment table's reader (the state file `serve` will keep) on arbitrary text:
//! never panics, never holds more than its capacity, and its per-view counts add up to its
//! clients; assigning afterwards keeps the group even or leaves it as loaded.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use ntp_offset_proto::balancer::{Balancer, Member};
use ntp_offset_proto::move_smear::{Moves, Pace};
use ntp_offset_proto::time::Offset;
use ntp_offset_proto::view::ViewId;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let members: Vec<Member> = (0..4)
        .map(|i| Member {
            view: ViewId(i),
            weight: 1,
            offset: Offset::from_secs(15 * i64::from(i)),
        })
        .collect();
    let mut b = Balancer::new(&members, (1, 2), 64);
    b.set_moves(Moves::Smear(Pace {
        rate_ppm: 500.0,
        ramp_s: 600.0,
    }));
    b.load_table(text, |n| n.parse().ok().map(ViewId));
    assert!(b.len() <= 64);
    let sum: u64 = members.iter().map(|m| b.count(m.view)).sum();
    assert_eq!(sum, b.len() as u64);
    for i in 0..8u32 {
        b.assign(IpAddr::V4(Ipv4Addr::from(0xc612_0100 + i)), 1);
    }
    let sum: u64 = members.iter().map(|m| b.count(m.view)).sum();
    assert_eq!(sum, b.len() as u64);
    // Walks read from the table settle without panicking, whatever their start.
    for (c, a) in b.assignments() {
        if let Some((_, Some(w))) = b.served(c) {
            let _ = w.offset_at(w.start);
            assert!(a.moving.is_some());
        }
    }
    b.settle(u64::MAX);
    assert_eq!(b.to_table(|v| v.0.to_string()).lines().count(), b.len());
});
