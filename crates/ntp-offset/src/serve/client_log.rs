//! The clients a worker has seen, like chrony's client log: per address its view, first and
//! last request, requests and how many were rate-limited. Bounded: when full, clients idle for
//! an hour are forgotten; if none is (a flood of new addresses), new clients are counted but
//! not logged, and the sweep is retried at most every [`SWEEP_EVERY_S`] so a flood cannot make
//! every request scan the table.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use ntp_offset_proto::view::ViewId;

/// Per worker, unless configured otherwise: about 100 bytes each.
pub const DEFAULT_CAPACITY: usize = 16_384;
/// When full, clients idle longer than this may be forgotten.
pub const IDLE_S: u64 = 3600;
const SWEEP_EVERY_S: u64 = 10;

/// One request's client, as a worker saw it in a batch.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    pub ip: IpAddr,
    pub view: Option<ViewId>,
    pub limited: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub view: Option<Arc<str>>,
    pub first_s: u64,
    pub last_s: u64,
    pub requests: u64,
    pub rate_limited: u64,
}

#[derive(Default)]
pub struct ClientLog {
    capacity: usize,
    /// Keyed by the address as 128 bits (IPv4 mapped): one hash input, not an enum's parts.
    clients: HashMap<u128, Client>,
    /// Requests from clients that found the log full.
    pub not_logged: u64,
    last_sweep_s: u64,
}

impl ClientLog {
    pub fn new(capacity: usize) -> ClientLog {
        ClientLog {
            capacity,
            // Its full size at once (address space; pages are touched as clients come): grown
            // by doubling under a flood, the tables it outgrew stayed resident in the worker's
            // malloc arena, 6.7 MiB of a peak RSS of 19 MiB (scripts/bench-flood).
            clients: HashMap::with_capacity(capacity),
            ..ClientLog::default()
        }
    }

    pub fn record(&mut self, s: &Seen, names: &[Arc<str>], now_s: u64) {
        let view = s.view.and_then(|v| names.get(v.0 as usize));
        // One hash for a known client (the common case); a new one costs a second.
        let key = key(s.ip);
        let c = match self.clients.get_mut(&key) {
            Some(c) => c,
            None => {
                if !self.make_room(now_s) {
                    self.not_logged += 1;
                    return;
                }
                self.clients.entry(key).or_insert(Client {
                    view: None,
                    first_s: now_s,
                    last_s: now_s,
                    requests: 0,
                    rate_limited: 0,
                })
            }
        };
        c.last_s = now_s;
        c.requests += 1;
        c.rate_limited += u64::from(s.limited);
        // Usually the same view: compare before cloning, so the shared name is not touched.
        if c.view.as_deref() != view.map(|n| &**n) {
            c.view = view.cloned();
        }
    }

    fn make_room(&mut self, now_s: u64) -> bool {
        if self.clients.len() < self.capacity {
            return true;
        }
        if now_s < self.last_sweep_s + SWEEP_EVERY_S && self.last_sweep_s != 0 {
            return false;
        }
        self.last_sweep_s = now_s;
        self.clients
            .retain(|_, c| now_s.saturating_sub(c.last_s) < IDLE_S);
        self.clients.len() < self.capacity
    }

    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &Client)> {
        self.clients.iter().map(|(k, c)| (address(*k), c))
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().to_bits(),
        IpAddr::V6(a) => a.to_bits(),
    }
}

fn address(key: u128) -> IpAddr {
    let v6 = Ipv6Addr::from_bits(key);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(i: u32) -> Seen {
        Seen {
            ip: IpAddr::from(std::net::Ipv4Addr::from(0xc612_0000 + i)),
            view: Some(ViewId(0)),
            limited: i.is_multiple_of(2),
        }
    }

    #[test]
    fn counts_requests_and_keeps_first_and_last_seen() {
        let names: Vec<Arc<str>> = vec!["a".into()];
        let mut log = ClientLog::new(4);
        log.record(&seen(2), &names, 100);
        log.record(&seen(2), &names, 105);
        let c = &log.clients[&key(seen(2).ip)];
        assert_eq!(
            log.iter().next().unwrap().0,
            seen(2).ip,
            "the address reads back"
        );
        assert_eq!(
            (c.first_s, c.last_s, c.requests, c.rate_limited),
            (100, 105, 2, 2)
        );
        assert_eq!(c.view.as_deref(), Some("a"));
    }

    #[test]
    fn stays_bounded_under_a_flood_and_forgets_idle_clients() {
        let names: Vec<Arc<str>> = vec!["a".into()];
        let mut log = ClientLog::new(100);
        for i in 0..10_000 {
            log.record(&seen(i), &names, 1000);
        }
        assert_eq!(log.len(), 100);
        assert_eq!(log.not_logged, 9_900);
        // An hour later the old ones make room for new ones.
        log.record(&seen(20_000), &names, 1000 + IDLE_S);
        assert_eq!(log.len(), 1);
    }
}
