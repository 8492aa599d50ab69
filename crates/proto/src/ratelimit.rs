//! Per-client rate limiting in a table of fixed size.
//!
//! Each client address gets a GCRA bucket (one "theoretical arrival time" per client): a client
//! may send `burst` requests at once and then one per `interval` on average. The table is a
//! fixed array of two-way buckets indexed by a keyed hash of the address, so memory never grows
//! with the number of distinct clients. When both slots of a bucket belong to other clients, the
//! one that is least in debt is evicted: eviction can only make a client *less* limited, so a
//! flood of spoofed sources can never get a legitimate client refused.

use core::net::IpAddr;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitParams {
    /// Average spacing allowed between a client's requests, in nanoseconds.
    pub interval_ns: u64,
    /// Requests a client may send back to back.
    pub burst: u32,
    /// Answer a limited client with a KoD RATE packet (at most one per interval) instead of
    /// dropping silently.
    pub kod: bool,
    /// Number of client slots (rounded up to a power of two, at least 2).
    pub table_size: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateVerdict {
    Allow,
    Drop,
    Kod,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    addr: u128,
    /// Theoretical arrival time of the next conforming request; 0 marks an empty slot.
    tat: u64,
    /// No KoD is sent to this client before this instant.
    next_kod: u64,
}

pub struct RateLimiter {
    params: RateLimitParams,
    slots: Box<[Slot]>,
    mask: usize,
    key: (u64, u64),
}

impl RateLimiter {
    /// `key` keeps the slot of an address unpredictable to senders (pass random bits).
    pub fn new(params: RateLimitParams, key: (u64, u64)) -> RateLimiter {
        let size = params.table_size.max(2).next_power_of_two();
        RateLimiter {
            params,
            slots: vec![Slot::default(); size].into_boxed_slice(),
            mask: size - 1,
            key,
        }
    }

    pub fn params(&self) -> RateLimitParams {
        self.params
    }

    /// Accounts one request from `client` at monotonic time `now_ns` and says what to do with it.
    pub fn check(&mut self, client: IpAddr, now_ns: u64) -> RateVerdict {
        let addr = match client {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let mut h = SipHasher13::new_with_keys(self.key.0, self.key.1);
        h.write_u128(addr);
        let first = (h.finish() as usize) & self.mask & !1;
        // 0 means empty, so time starts at 1.
        let now = now_ns.max(1);
        let i = if self.slots[first].tat != 0 && self.slots[first].addr == addr {
            first
        } else if self.slots[first + 1].tat != 0 && self.slots[first + 1].addr == addr {
            first + 1
        } else {
            let victim = if self.slots[first].tat <= self.slots[first + 1].tat {
                first
            } else {
                first + 1
            };
            self.slots[victim] = Slot {
                addr,
                tat: now,
                next_kod: 0,
            };
            victim
        };

        let p = self.params;
        let slot = &mut self.slots[i];
        let tolerance = p
            .interval_ns
            .saturating_mul(p.burst.saturating_sub(1) as u64);
        if slot.tat <= now.saturating_add(tolerance) {
            slot.tat = slot.tat.max(now).saturating_add(p.interval_ns);
            RateVerdict::Allow
        } else if p.kod && now >= slot.next_kod {
            slot.next_kod = now.saturating_add(p.interval_ns);
            RateVerdict::Kod
        } else {
            RateVerdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn limiter(burst: u32, kod: bool, table_size: usize) -> RateLimiter {
        RateLimiter::new(
            RateLimitParams {
                interval_ns: 2 * SEC,
                burst,
                kod,
                table_size,
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
        assert_eq!(rl.slots.len(), 1024);
    }
}
