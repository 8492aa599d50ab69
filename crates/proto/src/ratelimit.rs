//! Per-client rate limiting in a table of fixed size.
//!
//! Each client address gets a GCRA bucket (one "theoretical arrival time" per client): a client
//! may send `burst` requests at once and then one per `interval` on average. The table is a
//! fixed array of four-way sets, one cache line each, indexed by a keyed hash of the address,
//! so memory never grows with the number of distinct clients and a request costs one cache
//! miss. A slot keeps 32 more bits of that hash as the client's tag (16 bytes a slot, where
//! the whole address and a KoD time took 32: twice the clients in the same memory).
//!
//! IPv6 addresses are also limited together, by prefix (a /64 by default): a host that owns a
//! /64 can send from as many addresses as it likes, so the prefix as a whole gets
//! `prefix_factor` times one address's budget (256 by default: a VM host's hundreds of guests
//! in one /64, polling every minute, stay far below it). A flood from one /64 then costs the
//! server its receive alone, however many addresses it uses. IPv4 is limited per address.
//!
//! When every slot of a set belongs to other clients, the one least in debt is evicted:
//! eviction can only make a client *less* limited, so a flood of spoofed sources can never get
//! a legitimate client refused. Sources that overflow their set get a full burst each time they
//! come back, so a table should hold the sources it must remember: a flood from 100,000
//! addresses is limited by a table of 262,144 slots (4 MiB), in which 7 % of them overflow.

use core::net::IpAddr;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitParams {
    /// Average spacing allowed between a client's requests, in nanoseconds.
    pub interval_ns: u64,
    /// Requests a client may send back to back.
    pub burst: u32,
    /// Answer a limited client with a KoD RATE packet (at most one per interval, and per
    /// second) instead of dropping silently.
    pub kod: bool,
    /// Number of client slots (rounded up to a power of two, at least one set of four).
    pub table_size: usize,
    /// IPv6 clients are also limited together by this prefix length; 128 turns it off.
    pub ipv6_prefix: u8,
    /// A prefix's budget in addresses' budgets: `burst` x this at once, then one request per
    /// `interval` / this.
    pub prefix_factor: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateVerdict {
    Allow,
    Drop,
    Kod,
}

/// Slots per set: four of 16 bytes fill one cache line.
const WAYS: usize = 4;

#[derive(Clone, Copy, Default)]
struct Slot {
    /// Theoretical arrival time of the next conforming request; 0 marks an empty slot.
    tat: u64,
    /// The client: bits of its address's keyed hash that did not choose the set.
    tag: u32,
    /// No KoD is sent to this client before this second (monotonic time).
    next_kod_s: u32,
}

#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Set([Slot; WAYS]);

pub struct RateLimiter {
    params: RateLimitParams,
    sets: Box<[Set]>,
    mask: usize,
    key: (u64, u64),
}

impl RateLimiter {
    /// `key` keeps the set and tag of an address unpredictable to senders (pass random bits).
    pub fn new(params: RateLimitParams, key: (u64, u64)) -> RateLimiter {
        let sets = (params.table_size.max(WAYS).next_power_of_two()) / WAYS;
        RateLimiter {
            params,
            sets: vec![Set::default(); sets].into_boxed_slice(),
            mask: sets - 1,
            key,
        }
    }

    pub fn params(&self) -> RateLimitParams {
        self.params
    }

    /// Bytes the table takes (all of it, once a flood has touched every set).
    pub fn table_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.sets)
    }

    /// Accounts one request from `client` at monotonic time `now_ns` and says what to do with it.
    pub fn check(&mut self, client: IpAddr, now_ns: u64) -> RateVerdict {
        let (addr, v6) = match client {
            IpAddr::V4(v4) => (u128::from(v4.to_ipv6_mapped()), false),
            IpAddr::V6(v6) => (u128::from(v6), v6.to_ipv4_mapped().is_none()),
        };
        let p = self.params;
        let tolerance =
            |interval: u64, burst: u32| interval.saturating_mul(burst.max(1) as u64 - 1);
        let own = self.check_key(
            addr,
            0,
            now_ns,
            p.interval_ns,
            tolerance(p.interval_ns, p.burst),
        );
        if own != RateVerdict::Allow || !v6 || p.ipv6_prefix >= 128 {
            return own;
        }
        // A limited address costs its prefix nothing; an allowed one spends from both.
        let factor = u64::from(p.prefix_factor.max(1));
        let interval = (p.interval_ns / factor).max(1);
        let burst = p.burst.saturating_mul(p.prefix_factor.max(1));
        let prefix = addr & (u128::MAX << (128 - u32::from(p.ipv6_prefix.max(1))));
        self.check_key(
            prefix,
            p.ipv6_prefix,
            now_ns,
            interval,
            tolerance(interval, burst),
        )
    }

    /// One GCRA bucket: `addr` with `prefix_len` (0 for an address) is the key.
    fn check_key(
        &mut self,
        addr: u128,
        prefix_len: u8,
        now_ns: u64,
        interval_ns: u64,
        tolerance: u64,
    ) -> RateVerdict {
        let mut h = SipHasher13::new_with_keys(self.key.0, self.key.1);
        h.write_u128(addr);
        h.write_u8(prefix_len);
        let hash = h.finish();
        let tag = (hash >> 32) as u32;
        let set = &mut self.sets[hash as usize & self.mask].0;
        // 0 means empty, so time starts at 1.
        let now = now_ns.max(1);
        let i = match set.iter().position(|s| s.tat != 0 && s.tag == tag) {
            Some(i) => i,
            None => {
                let victim = (0..WAYS).min_by_key(|&i| set[i].tat).unwrap_or(0);
                set[victim] = Slot {
                    tat: now,
                    tag,
                    next_kod_s: 0,
                };
                victim
            }
        };

        let slot = &mut set[i];
        if slot.tat <= now.saturating_add(tolerance) {
            slot.tat = slot.tat.max(now).saturating_add(interval_ns);
            RateVerdict::Allow
        } else if self.params.kod && now / SEC >= u64::from(slot.next_kod_s) {
            let next = now.saturating_add(interval_ns).div_ceil(SEC);
            slot.next_kod_s = next.min(u64::from(u32::MAX)) as u32;
            RateVerdict::Kod
        } else {
            RateVerdict::Drop
        }
    }
}

const SEC: u64 = 1_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(burst: u32, kod: bool, table_size: usize) -> RateLimiter {
        RateLimiter::new(
            RateLimitParams {
                interval_ns: 2 * SEC,
                burst,
                kod,
                table_size,
                ipv6_prefix: 64,
                prefix_factor: 256,
            },
            (3, 4),
        )
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(i.to_be_bytes())
    }

    #[test]
    fn burst_then_one_per_interval() {
        let mut rl = limiter(4, false, 64);
        let t0 = 1000 * SEC;
        for _ in 0..4 {
            assert_eq!(rl.check(ip(1), t0), RateVerdict::Allow);
        }
        assert_eq!(rl.check(ip(1), t0), RateVerdict::Drop);
        assert_eq!(rl.check(ip(1), t0 + SEC), RateVerdict::Drop);
        assert_eq!(rl.check(ip(1), t0 + 2 * SEC), RateVerdict::Allow);
        assert_eq!(rl.check(ip(1), t0 + 2 * SEC), RateVerdict::Drop);
        // After a long pause the full burst is available again.
        for _ in 0..4 {
            assert_eq!(rl.check(ip(1), t0 + 100 * SEC), RateVerdict::Allow);
        }
    }

    #[test]
    fn clients_are_limited_separately() {
        let mut rl = limiter(1, false, 64);
        assert_eq!(rl.check(ip(1), SEC), RateVerdict::Allow);
        assert_eq!(rl.check(ip(1), SEC), RateVerdict::Drop);
        assert_eq!(rl.check(ip(2), SEC), RateVerdict::Allow);
    }

    #[test]
    fn kod_at_most_once_per_interval() {
        let mut rl = limiter(1, true, 64);
        assert_eq!(rl.check(ip(1), SEC), RateVerdict::Allow);
        assert_eq!(rl.check(ip(1), SEC), RateVerdict::Kod);
        assert_eq!(rl.check(ip(1), SEC + 1), RateVerdict::Drop);
        assert_eq!(rl.check(ip(1), SEC + SEC / 2), RateVerdict::Drop);
    }

    #[test]
    fn a_flood_of_sources_never_refuses_a_polite_client() {
        // Tiny table, a million spoofed sources: the polite client may lose its slot, which
        // only resets its bucket to full; it must never be refused.
        let mut rl = limiter(2, false, 8);
        let mut now = 10 * SEC;
        for round in 0..1000u32 {
            for j in 0..1000u32 {
                rl.check(ip(0x0a00_0000 + round * 1000 + j), now);
            }
            assert_eq!(
                rl.check(ip(0xc612_0001), now),
                RateVerdict::Allow,
                "round {round}"
            );
            now += 2 * SEC;
        }
    }

    #[test]
    fn table_size_is_fixed() {
        let rl = limiter(2, false, 1000);
        assert_eq!(rl.sets.len() * WAYS, 1024);
        assert_eq!(rl.table_bytes(), 16 * 1024);
        assert_eq!(limiter(2, false, 1).sets.len(), 1);
    }

    fn ip6(prefix: u64, low: u64) -> IpAddr {
        IpAddr::from(((prefix as u128) << 64 | low as u128).to_be_bytes())
    }

    #[test]
    fn an_ipv6_prefix_gets_its_factor_of_one_address_budget() {
        let mut rl = limiter(2, false, 1 << 16); // interval 2 s: a /64 gets 512 at once
        let t = 100 * SEC;
        let flood = 0x2001_0002_0000_ff00;
        let allowed = (0..10_000u64)
            .filter(|&i| rl.check(ip6(flood, i), t) == RateVerdict::Allow)
            .count();
        assert_eq!(allowed, 512, "burst 2 x factor 256");
        // Another /64, and IPv4, are not touched by it.
        assert_eq!(
            rl.check(ip6(0x2001_0002_0000_0001, 3), t),
            RateVerdict::Allow
        );
        assert_eq!(rl.check(ip(7), t), RateVerdict::Allow);
        // Then the /64 gets one request per interval / 256 (7.8 ms).
        let later = (0..1000u64)
            .filter(|&i| rl.check(ip6(flood, 20_000 + i), t + SEC) == RateVerdict::Allow)
            .count();
        assert_eq!(later, 128);
    }

    #[test]
    fn ipv4_mapped_and_per_address_only_are_not_aggregated() {
        let mut rl = limiter(1, false, 1 << 16);
        let t = 100 * SEC;
        for i in 0..2000u32 {
            let mapped = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_ipv6_mapped();
            assert_eq!(rl.check(IpAddr::V6(mapped), t), RateVerdict::Allow);
        }
        let mut params = rl.params();
        params.ipv6_prefix = 128;
        let mut rl = RateLimiter::new(params, (3, 4));
        for i in 0..2000u64 {
            assert_eq!(rl.check(ip6(1, i), t), RateVerdict::Allow);
        }
    }

    #[test]
    fn a_set_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Set>(), 64);
        assert_eq!(std::mem::align_of::<Set>(), 64);
    }

    /// A flood from more sources than a small table holds: what the module's doc promises for
    /// a table of 2.6 slots per source, at an eighth of the scale (12,500 sources, 32,768 slots).
    /// Each source sends 4 requests a second for 20 s, allowed 1 a second after a burst of 4:
    /// a table that remembered every source would allow (4 + 20) / 80 = 30 % of requests.
    #[test]
    fn a_table_sized_for_the_flood_limits_it() {
        let mut rl = RateLimiter::new(
            RateLimitParams {
                interval_ns: SEC,
                burst: 4,
                kod: false,
                table_size: 32_768,
                ipv6_prefix: 128,
                prefix_factor: 256,
            },
            (5, 6),
        );
        let sources = 12_500u32;
        let (mut allowed, mut total) = (0u64, 0u64);
        let mut t = 100 * SEC;
        for _ in 0..80 {
            for s in 0..sources {
                total += 1;
                if rl.check(
                    ip(0x0a00_0000 + s),
                    t + s as u64 * (SEC / 4) / sources as u64,
                ) == RateVerdict::Allow
                {
                    allowed += 1;
                }
            }
            t += SEC / 4;
        }
        let share = allowed as f64 / total as f64;
        assert!((0.30..0.40).contains(&share), "allowed {share:.3}");
    }
}
