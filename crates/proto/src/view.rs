//! Views and how a request finds its view.
//!
//! A view is a name and an offset. Which view answers a request is decided by rules, tried in
//! this order, the first match winning:
//! 1. views that have selectors (`listen` addresses and/or `clients` prefixes), in config order;
//!    a view matches when every selector it has matches;
//! 2. spread groups, in config order: a matching group gives each client address one of its
//!    member views. A balanced group (the default) asks an [`Assigner`], which keeps a table:
//!    a new client goes to the member with the fewest clients and keeps it
//!    ([`crate::balancer`]). A hash group picks by rendezvous hashing (highest keyed hash of
//!    client and view name): no table, the same answer on every host with the same config,
//!    and adding or removing a member moves only the clients of that member;
//! 3. the default view, if one is configured.
//!
//! A client must only ever see one view's time, so selection depends on nothing but the
//! request's addresses, the configuration and (balanced groups) the assignment table.

use core::net::{IpAddr, Ipv6Addr, SocketAddr};
use core::str::FromStr;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

use crate::move_smear::{MoveSmear, Moves};
use crate::time::Offset;

/// Index of a view in its [`ViewTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ViewId(pub u16);

/// What adding a member to a balanced spread group does to clients already assigned (the
/// group's setting; [`crate::balancer`] carries it out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rebalance {
    /// Nobody moves; the new member takes new clients until the group is even.
    Never,
    /// The fewest clients needed move to the new member at once.
    OnChange,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub name: String,
    pub offset: Offset,
    /// Which requests this view answers with time.
    pub auth: AuthRequirement,
}

/// A view's `auth`: what a request must carry to get time from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum AuthRequirement {
    /// Anything is answered (an authenticated request still gets an authenticated answer).
    #[default]
    None,
    /// Only requests with a valid symmetric-key MAC; the others are dropped and counted.
    Key,
    /// Only NTS-authenticated requests.
    Nts,
    /// Either a valid MAC or NTS.
    Any,
}

impl AuthRequirement {
    pub fn name(self) -> &'static str {
        match self {
            AuthRequirement::None => "none",
            AuthRequirement::Key => "key",
            AuthRequirement::Nts => "nts",
            AuthRequirement::Any => "any",
        }
    }
}

/// An address prefix, `198.18.0.0/15` or `2001:db8::/32`. IPv4 is held as IPv4-mapped IPv6 so
/// that a v4 client arriving on a dual-stack socket matches the same prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    prefix: u8, // 0..=128, in the mapped space
}

/// A local address a request can arrive on: a whole socket address, or any port of an IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalAddr {
    Socket(SocketAddr),
    Ip(IpAddr),
}

/// What a matching rule yields.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    View(ViewId),
    Spread(Spread),
}

/// A spread group's members and hash key.
#[derive(Clone, Debug, PartialEq)]
pub struct Spread {
    members: Vec<(ViewId, u64)>, // (view, hash of its name under the key)
    key: (u64, u64),
    balanced: Option<Balanced>,
}

/// A balanced group's settings: how its [`Assigner`] keeps the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Balanced {
    /// The group's name: the key of its table across reloads and restarts.
    pub name: String,
    /// The group's place among the config's spread groups (0, 1, ...): where an
    /// [`Assigner`] keeps its table.
    pub index: u16,
    /// Per member, in member order: its relative share of clients.
    pub weights: Vec<u32>,
    pub rebalance: Rebalance,
    /// How its clients change view: a step, or a walk (`move = "smear"`).
    pub moves: Moves,
    /// Whether new clients are placed by measured load where the host can measure it.
    pub by_load: bool,
    /// How often the load optimizer looks for moves (seconds).
    pub optimize_every_s: u64,
    /// A client not heard from for this long frees its slot.
    pub forget_after_s: u64,
    /// At most this many clients in the table; past it, new clients are hashed.
    pub max_clients: usize,
}

/// Gives the clients of balanced spread groups their views: `serve` keeps the tables.
pub trait Assigner {
    /// The member view of `spread` (which is balanced) that `client` belongs to, and its
    /// walk there while it is moving.
    fn assign(&self, spread: &Spread, balanced: &Balanced, client: IpAddr) -> Assigned;
}

/// No tables: every group hashes. What a config check or a fuzzer uses.
pub struct HashOnly;

impl Assigner for HashOnly {
    fn assign(&self, spread: &Spread, _: &Balanced, client: IpAddr) -> Assigned {
        Assigned::view(spread.pick(client).expect("a spread group has members"))
    }
}

/// Where a request goes: a view, and the walk its client is on if it is moving there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assigned {
    pub view: ViewId,
    pub walk: Option<MoveSmear>,
    /// The client is not placed yet: its address may be a new one of a VM the table knows
    /// by another, and the host has not yet seen which (its neighbour entry appears when
    /// this answer is sent). Answered unsynchronised, which clients do not set their clocks
    /// from, rather than from a view that may not be its VM's.
    pub placing: bool,
}

impl Assigned {
    pub fn view(view: ViewId) -> Assigned {
        Assigned {
            view,
            walk: None,
            placing: false,
        }
    }

    pub fn walking(view: ViewId, walk: Option<MoveSmear>) -> Assigned {
        Assigned {
            view,
            walk,
            placing: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub listen: Vec<LocalAddr>,
    pub clients: Vec<Cidr>,
    pub target: Target,
}

/// All views and the rules that choose among them: built from the config, then read-only.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ViewTable {
    views: Vec<View>,
    rules: Vec<Rule>,
    default: Option<ViewId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CidrError {
    BadAddress(String),
    BadPrefix(String),
    HostBitsSet(String),
}

impl core::fmt::Display for CidrError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CidrError::BadAddress(s) => write!(
                f,
                "`{s}` is not an IP address or prefix (e.g. 198.18.0.0/24, 2001:db8::/48)"
            ),
            CidrError::BadPrefix(s) => write!(
                f,
                "`{s}`: the prefix length must be 0-32 for IPv4, 0-128 for IPv6"
            ),
            CidrError::HostBitsSet(s) => write!(
                f,
                "`{s}` has bits set beyond its prefix length; did you mean the network address?"
            ),
        }
    }
}

fn mapped(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address as a client of either family would be written: IPv4-mapped becomes IPv4.
/// View and spread group names: safe in a file name, a log line and a cluster store's key.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Cidr {
    /// A prefix of one address (/32 for IPv4, /128 for IPv6).
    pub fn is_single_address(&self) -> bool {
        self.prefix == 128
    }

    /// Whether every address of `other` is in this prefix.
    pub fn covers(&self, other: &Cidr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - self.prefix)
        };
        self.prefix <= other.prefix && other.net & mask == self.net
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - self.prefix)
        };
        mapped(ip) & mask == self.net
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDR/LEN`, or a bare address meaning one host.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress(s.to_string()))?;
        let (max, extra) = match ip {
            IpAddr::V4(_) => (32u8, 96u8),
            IpAddr::V6(_) => (128, 0),
        };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(CidrError::BadPrefix(s.to_string())),
            },
        };
        let prefix = len + extra;
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix)
        };
        let net = mapped(ip);
        if net & !mask != 0 {
            return Err(CidrError::HostBitsSet(s.to_string()));
        }
        Ok(Cidr { net, prefix })
    }
}

impl core::fmt::Display for Cidr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let v6 = Ipv6Addr::from(self.net);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.prefix >= 96 => write!(f, "{v4}/{}", self.prefix - 96),
            _ => write!(f, "{v6}/{}", self.prefix),
        }
    }
}

impl LocalAddr {
    pub fn matches(&self, local: SocketAddr) -> bool {
        match self {
            LocalAddr::Socket(s) => {
                s.port() == local.port() && canonical_ip(s.ip()) == canonical_ip(local.ip())
            }
            LocalAddr::Ip(ip) => canonical_ip(*ip) == canonical_ip(local.ip()),
        }
    }
}

impl FromStr for LocalAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(LocalAddr::Socket(sa));
        }
        s.parse::<IpAddr>().map(LocalAddr::Ip).map_err(|_| {
            format!("`{s}` is neither IP:PORT (127.0.0.1:123, [::1]:123) nor an IP address")
        })
    }
}

impl Spread {
    /// `key` seeds the hash: change it to reshuffle every client.
    pub fn new(members: &[(ViewId, &str)], key: (u64, u64)) -> Spread {
        let members = members
            .iter()
            .map(|&(id, name)| {
                let mut h = SipHasher13::new_with_keys(key.0, key.1);
                h.write(name.as_bytes());
                (id, h.finish())
            })
            .collect();
        Spread {
            members,
            key,
            balanced: None,
        }
    }

    /// The same members, assigned by a table (see [`Assigner`]) instead of the hash.
    pub fn with_balancer(mut self, balanced: Balanced) -> Spread {
        assert_eq!(
            balanced.weights.len(),
            self.members.len(),
            "a weight per member"
        );
        self.balanced = Some(balanced);
        self
    }

    /// The hash key (also what breaks a balanced group's ties).
    pub fn key(&self) -> (u64, u64) {
        self.key
    }

    pub fn balanced(&self) -> Option<&Balanced> {
        self.balanced.as_ref()
    }

    pub fn members(&self) -> impl Iterator<Item = ViewId> + '_ {
        self.members.iter().map(|&(id, _)| id)
    }

    /// The member view this client belongs to (rendezvous hashing).
    pub fn pick(&self, client: IpAddr) -> Option<ViewId> {
        let client = mapped(client).to_be_bytes();
        self.members
            .iter()
            .map(|&(id, name_hash)| {
                let mut h = SipHasher13::new_with_keys(self.key.0 ^ name_hash, self.key.1);
                h.write(&client);
                (h.finish(), id)
            })
            .max_by_key(|&(score, id)| (score, core::cmp::Reverse(id.0)))
            .map(|(_, id)| id)
    }
}

impl Rule {
    fn matches(&self, local: SocketAddr, client: IpAddr) -> bool {
        (self.listen.is_empty() || self.listen.iter().any(|l| l.matches(local)))
            && (self.clients.is_empty() || self.clients.iter().any(|c| c.contains(client)))
    }
}

impl ViewTable {
    pub fn new(views: Vec<View>, rules: Vec<Rule>, default: Option<ViewId>) -> ViewTable {
        ViewTable {
            views,
            rules,
            default,
        }
    }

    /// A table with one view that answers every request.
    pub fn single(name: &str, offset: Offset) -> ViewTable {
        let views = vec![View {
            name: name.to_string(),
            offset,
            auth: AuthRequirement::None,
        }];
        ViewTable {
            views,
            rules: Vec::new(),
            default: Some(ViewId(0)),
        }
    }

    pub fn views(&self) -> &[View] {
        &self.views
    }

    pub fn view(&self, id: ViewId) -> &View {
        &self.views[id.0 as usize]
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn default_view(&self) -> Option<ViewId> {
        self.default
    }

    /// The first rule that takes a request arriving on `local` from `client`, with its index.
    pub fn rule_for(&self, local: SocketAddr, client: IpAddr) -> Option<(usize, &Rule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(local, client))
    }

    /// The view a request arriving on `local` from `client` belongs to, if any, and the
    /// client's walk if it is moving there; balanced groups ask `assigner`.
    pub fn assigned(
        &self,
        local: SocketAddr,
        client: IpAddr,
        assigner: &dyn Assigner,
    ) -> Option<Assigned> {
        match self.rule_for(local, client) {
            Some((_, rule)) => match &rule.target {
                Target::View(id) => Some(Assigned::view(*id)),
                Target::Spread(s) => match s.balanced() {
                    Some(b) => Some(assigner.assign(s, b, client)),
                    None => s.pick(client).map(Assigned::view),
                },
            },
            None => self.default.map(Assigned::view),
        }
    }

    /// [`Self::assigned`]'s view.
    pub fn select_with(
        &self,
        local: SocketAddr,
        client: IpAddr,
        assigner: &dyn Assigner,
    ) -> Option<ViewId> {
        self.assigned(local, client, assigner).map(|a| a.view)
    }

    /// [`Self::select_with`], every group hashing ([`HashOnly`]).
    pub fn select(&self, local: SocketAddr, client: IpAddr) -> Option<ViewId> {
        self.select_with(local, client, &HashOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parsing_and_matching() {
        assert!(cidr("198.18.0.0/15").contains(ip("198.19.255.255")));
        assert!(!cidr("198.18.0.0/15").contains(ip("198.20.0.0")));
        assert!(cidr("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(
            !cidr("0.0.0.0/0").contains(ip("2001:db8::1")),
            "v4 /0 is all of v4 only"
        );
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(cidr("10.1.2.3").contains(ip("10.1.2.3")));
        assert!(!cidr("10.1.2.3").contains(ip("10.1.2.4")));
        // A v4 client on a dual-stack socket shows up IPv4-mapped.
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.9.8.7")));
        assert!(cidr("198.18.0.0/15").covers(&cidr("198.19.1.0/24")));
        assert!(cidr("0.0.0.0/0").covers(&cidr("10.1.2.3")));
        assert!(!cidr("198.19.1.0/24").covers(&cidr("198.18.0.0/15")));
        assert!(!cidr("10.0.0.0/8").covers(&cidr("2001:db8::/32")));
        assert_eq!(cidr("198.18.0.0/15").to_string(), "198.18.0.0/15");
        assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
    }

    #[test]
    fn cidr_errors_say_what_is_wrong() {
        assert!(matches!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err(CidrError::HostBitsSet(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::BadPrefix(_))
        ));
        assert!(matches!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::BadPrefix(_))
        ));
        assert!(matches!(
            "host.example/8".parse::<Cidr>(),
            Err(CidrError::BadAddress(_))
        ));
        let msg = "10.0.0.1/8".parse::<Cidr>().unwrap_err().to_string();
        assert!(msg.contains("network address"), "{msg}");
    }

    fn four_views() -> Vec<View> {
        ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, n)| View {
                name: n.to_string(),
                offset: Offset::from_secs(15 * i as i64),
                auth: AuthRequirement::None,
            })
            .collect()
    }

    #[test]
    fn local_address_selects_the_view() {
        let rules = (0..4)
            .map(|i| Rule {
                listen: vec![LocalAddr::Socket(sa(&format!("127.0.0.1:{}", 11123 + i)))],
                clients: vec![],
                target: Target::View(ViewId(i)),
            })
            .collect();
        let t = ViewTable::new(four_views(), rules, None);
        for i in 0..4u16 {
            let local = sa(&format!("127.0.0.1:{}", 11123 + i));
            assert_eq!(t.select(local, ip("127.0.0.1")), Some(ViewId(i)));
        }
        assert_eq!(t.select(sa("127.0.0.1:9999"), ip("127.0.0.1")), None);
    }

    #[test]
    fn ip_only_local_matches_any_port_and_mapped_form() {
        let rules = vec![Rule {
            listen: vec![LocalAddr::Ip(ip("198.18.0.2"))],
            clients: vec![],
            target: Target::View(ViewId(1)),
        }];
        let t = ViewTable::new(four_views(), rules, Some(ViewId(0)));
        assert_eq!(
            t.select(sa("198.18.0.2:123"), ip("198.18.1.1")),
            Some(ViewId(1))
        );
        assert_eq!(
            t.select(sa("[::ffff:198.18.0.2]:4000"), ip("198.18.1.1")),
            Some(ViewId(1))
        );
        assert_eq!(
            t.select(sa("198.18.0.3:123"), ip("198.18.1.1")),
            Some(ViewId(0)),
            "default"
        );
    }

    #[test]
    fn rules_go_in_order_and_need_all_their_selectors() {
        let rules = vec![
            Rule {
                listen: vec![LocalAddr::Ip(ip("198.18.0.1"))],
                clients: vec![cidr("198.18.1.0/24")],
                target: Target::View(ViewId(2)),
            },
            Rule {
                listen: vec![],
                clients: vec![cidr("198.18.0.0/16")],
                target: Target::View(ViewId(1)),
            },
        ];
        let t = ViewTable::new(four_views(), rules, None);
        assert_eq!(
            t.select(sa("198.18.0.1:123"), ip("198.18.1.7")),
            Some(ViewId(2))
        );
        assert_eq!(
            t.select(sa("198.18.0.9:123"), ip("198.18.1.7")),
            Some(ViewId(1)),
            "listen fails"
        );
        assert_eq!(
            t.select(sa("198.18.0.1:123"), ip("198.18.2.7")),
            Some(ViewId(1)),
            "clients fail"
        );
        assert_eq!(t.select(sa("198.18.0.1:123"), ip("203.0.113.1")), None);
    }

    fn spread_of(names: &[&str], key: (u64, u64)) -> Spread {
        let members: Vec<(ViewId, &str)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (ViewId(i as u16), *n))
            .collect();
        Spread::new(&members, key)
    }

    #[test]
    fn spread_is_stable_and_roughly_even() {
        let s = spread_of(&["a", "b", "c", "d"], (1, 2));
        let mut counts = [0u32; 4];
        for i in 0..4000u32 {
            let client = IpAddr::from((0xc612_0000u32 + i).to_be_bytes());
            let v = s.pick(client).unwrap();
            assert_eq!(s.pick(client), Some(v), "same client, same view");
            counts[v.0 as usize] += 1;
        }
        for c in counts {
            assert!((850..1150).contains(&c), "uneven spread {counts:?}");
        }
    }

    #[test]
    fn spread_moves_only_the_clients_of_a_removed_member() {
        let four = spread_of(&["a", "b", "c", "d"], (7, 9));
        // Same names, "d" removed; the ids of a, b, c are unchanged.
        let three = spread_of(&["a", "b", "c"], (7, 9));
        for i in 0..2000u32 {
            let client = IpAddr::from((0x0a00_0000u32 + i * 7919).to_be_bytes());
            let before = four.pick(client).unwrap();
            if before != ViewId(3) {
                assert_eq!(
                    three.pick(client),
                    Some(before),
                    "client {client} moved needlessly"
                );
            }
        }
    }

    #[test]
    fn spread_key_reshuffles() {
        let a = spread_of(&["a", "b", "c", "d"], (1, 1));
        let b = spread_of(&["a", "b", "c", "d"], (2, 2));
        let moved = (0..1000u32)
            .filter(|i| {
                let c = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
                a.pick(c) != b.pick(c)
            })
            .count();
        assert!(
            moved > 600,
            "a new key should move about 3/4 of the clients, moved {moved}"
        );
    }
}
