//! The assignment policies being compared, as `serve` runs them: the stateless keyed hash
//! (`assign = "hash"`, [`Spread::pick`]) and the balanced table (`assign = "balanced"`,
//! [`Balancer`]), plus the ideal a perfect oracle would reach.

use std::net::IpAddr;

use ntp_offset_proto::balancer::{Balancer, Member};
use ntp_offset_proto::time::Offset;
use ntp_offset_proto::view::{Spread, ViewId};

pub const KEY: (u64, u64) = (0x766d_2d68_6f73_7431, 0x7370_7265_6164);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hash,
    Balanced,
}

pub enum Policy {
    Hash(Spread),
    Balanced(Box<Balancer>, u64),
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

pub fn members(views: u16) -> Vec<Member> {
    (0..views)
        .map(|i| Member {
            view: ViewId(i),
            weight: 1,
            offset: Offset::from_nanos(60_000_000_000 * i64::from(i) / i64::from(views)),
        })
        .collect()
}

impl Policy {
    /// `forget_after_s`: the balanced table's setting (the default is 7 days).
    pub fn new(kind: Kind, views: u16, forget_after_s: u64) -> Policy {
        match kind {
            Kind::Hash => Policy::Hash(spread(views)),
            Kind::Balanced => Policy::Balanced(
                Box::new(Balancer::new(&members(views), KEY, 1_000_000)),
                forget_after_s,
            ),
        }
    }

    /// A request from `client` at `now_s`: its view.
    pub fn ask(&mut self, client: IpAddr, now_s: u64) -> ViewId {
        match self {
            Policy::Hash(s) => s.pick(client).expect("members"),
            Policy::Balanced(b, _) => b.assign(client, now_s).0,
        }
    }

    /// What `serve`'s table thread does every 10 minutes.
    pub fn housekeeping(&mut self, now_s: u64) {
        if let Policy::Balanced(b, forget_after) = self {
            b.forget_idle(now_s, *forget_after);
        }
    }
}
