//! `[server]` and `[rate_limit]`: the addresses, the header's stratum and refid, the leap
//! second policy and the per-client rate limit.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;

use ntp_offset_proto::leap::LeapPolicy;
use ntp_offset_proto::ratelimit::RateLimitParams;
use ntp_offset_proto::responder::Unmatched;
use ntp_offset_proto::system::ClockPolicy;
use ntp_offset_proto::time::Offset;
use toml::Spanned;

use super::raw::{RawRateLimit, RawServer};
use super::{ConfigError, Context};
use crate::duration;

pub const DEFAULT_STRATUM: u8 = 3;
pub const DEFAULT_REFID: [u8; 4] = *b"OFFS";
pub const DEFAULT_RATE_LIMIT: RateLimitParams = RateLimitParams {
    interval_ns: 2_000_000_000,
    burst: 16,
    kod: false,
    table_size: 16_384,
    ipv6_prefix: 64,
    prefix_factor: 256,
};

/// More workers than this per address gain nothing (and a reuseport group's steering takes
/// indexes below it).
pub const MAX_WORKERS: usize = 64;

impl Context<'_> {
    /// `server.workers`: threads (and sockets) per listening address; 1 by default.
    pub(super) fn workers(&self, server: &RawServer) -> Result<usize, ConfigError> {
        use super::raw::RawWorkers;
        let Some(w) = &server.workers else {
            return Ok(1);
        };
        match w.get_ref() {
            RawWorkers::Count(n) if (1..=MAX_WORKERS as i64).contains(n) => Ok(*n as usize),
            RawWorkers::Word(s) if s == "auto" => Ok(std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_WORKERS)),
            _ => self.err(
                w.span(),
                "server.workers",
                format!("1 to {MAX_WORKERS}, or \"auto\" (one per CPU this process may use)"),
            ),
        }
    }

    pub(super) fn listen(&self, server: &RawServer) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut out = Vec::new();
        if server.listen.get_ref().is_empty() {
            return self.err(
                server.listen.span(),
                "server.listen",
                "needs at least one address, e.g. [\"127.0.0.1:11123\"]",
            );
        }
        for l in server.listen.get_ref() {
            let Ok(addr) = l.get_ref().parse::<SocketAddr>() else {
                return self.err(
                    l.span(),
                    "server.listen",
                    format!(
                        "`{}` is not IP:PORT (e.g. 127.0.0.1:123, [::1]:123, 0.0.0.0:123)",
                        l.get_ref()
                    ),
                );
            };
            if out.contains(&addr) {
                return self.err(
                    l.span(),
                    "server.listen",
                    format!("`{addr}` is listed twice"),
                );
            }
            out.push(addr);
        }
        Ok(out)
    }

    pub(super) fn unmatched(&self, server: &RawServer) -> Result<Unmatched, ConfigError> {
        match server
            .unmatched
            .as_ref()
            .map(|u| (u.get_ref().as_str(), u.span()))
        {
            None | Some(("ignore", _)) => Ok(Unmatched::Ignore),
            Some(("deny", _)) => Ok(Unmatched::Deny),
            Some((other, span)) => self.err(
                span,
                "server.unmatched",
                format!("`{other}`: use \"ignore\" (drop silently) or \"deny\" (answer KoD DENY)"),
            ),
        }
    }

    pub(super) fn stratum(&self, s: &Spanned<i64>, field: &str) -> Result<u8, ConfigError> {
        match *s.get_ref() {
            n @ 1..=15 => Ok(n as u8),
            n => self.err(s.span(), field, format!("{n}: a stratum is 1-15")),
        }
    }

    pub(super) fn clock(&self, server: &RawServer) -> Result<ClockPolicy, ConfigError> {
        let local_stratum = match &server.local_stratum {
            Some(s) => Some(self.stratum(s, "server.local_stratum")?),
            None => None,
        };
        let stratum = match &server.stratum {
            Some(s) => self.stratum(s, "server.stratum")?,
            None => DEFAULT_STRATUM,
        };
        let reference_id = match &server.reference_id {
            None => DEFAULT_REFID,
            Some(r) => match parse_refid(r.get_ref()) {
                Some(id) => id,
                None => {
                    return self.err(
                        r.span(),
                        "server.reference_id",
                        format!(
                            "`{}`: use an IPv4 address (your upstream server) or 1-4 ASCII letters",
                            r.get_ref()
                        ),
                    )
                }
            },
        };
        Ok(ClockPolicy {
            local_stratum,
            stratum,
            reference_id,
        })
    }

    pub(super) fn leap(&self, server: &RawServer) -> Result<LeapPolicy, ConfigError> {
        let window = match &server.leap_smear_window {
            None => LeapPolicy::DEFAULT_SMEAR_WINDOW,
            Some(w) => match duration::parse(w.get_ref()) {
                Ok(o) if o >= Offset::from_secs(2) && o <= Offset::from_secs(7 * 86_400) => o,
                Ok(_) => {
                    return self.err(
                        w.span(),
                        "server.leap_smear_window",
                        "must be between 2s and 7d",
                    )
                }
                Err(e) => return self.err(w.span(), "server.leap_smear_window", e.to_string()),
            },
        };
        match server.leap.as_ref().map(|l| (l.get_ref().as_str(), l.span())) {
            None | Some(("smear", _)) => Ok(LeapPolicy::Smear { window }),
            Some(("step", _)) => Ok(LeapPolicy::Step),
            Some((other, span)) => self.err(span, "server.leap", format!("`{other}`: use \"smear\" (all views smear the leap; offsets stay exact) or \"step\" (pass the kernel's step through and announce it)")),
        }
    }

    pub(super) fn rate_limit(
        &self,
        raw: Option<&Spanned<RawRateLimit>>,
    ) -> Result<Option<RateLimitParams>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Some(DEFAULT_RATE_LIMIT));
        };
        let r = raw.get_ref();
        if r.enabled == Some(false) {
            return Ok(None);
        }
        let mut p = DEFAULT_RATE_LIMIT;
        if let Some(i) = &r.interval {
            match duration::parse(i.get_ref()) {
                Ok(o) if o > Offset::ZERO => p.interval_ns = o.nanos() as u64,
                Ok(_) => return self.err(i.span(), "rate_limit.interval", "must be positive"),
                Err(e) => return self.err(i.span(), "rate_limit.interval", e.to_string()),
            }
        }
        let int =
            |v: &Option<Spanned<i64>>, key: &str, range: RangeInclusive<i64>, rule: &str| match v {
                Some(v) if !range.contains(v.get_ref()) => {
                    self.err(v.span(), key, format!("{}: {rule}", v.get_ref()))
                }
                v => Ok(v.as_ref().map(|v| *v.get_ref())),
            };
        if let Some(n) = int(
            &r.burst,
            "rate_limit.burst",
            1..=100_000,
            "must be 1-100000",
        )? {
            p.burst = n as u32;
        }
        let rule = "must be 2-16777216 (each slot takes 16 bytes)";
        if let Some(n) = int(&r.table_size, "rate_limit.table_size", 2..=16_777_216, rule)? {
            p.table_size = n as usize;
        }
        let rule = "must be a prefix length of 16-128 (128: per address only)";
        if let Some(n) = int(&r.ipv6_prefix, "rate_limit.ipv6_prefix", 16..=128, rule)? {
            p.ipv6_prefix = n as u8;
        }
        let rule = "must be 1-1000000";
        if let Some(n) = int(
            &r.prefix_factor,
            "rate_limit.prefix_factor",
            1..=1_000_000,
            rule,
        )? {
            p.prefix_factor = n as u32;
        }
        p.kod = r.kod.unwrap_or(false);
        Ok(Some(p))
    }
}

/// A reference ID: an IPv4 address, or up to four ASCII characters padded with NULs.
pub fn parse_refid(text: &str) -> Option<[u8; 4]> {
    if let Ok(ip) = text.parse::<Ipv4Addr>() {
        return Some(ip.octets());
    }
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let mut id = [0u8; 4];
    id[..text.len()].copy_from_slice(text.as_bytes());
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_ids() {
        assert_eq!(parse_refid("198.18.0.1"), Some([198, 18, 0, 1]));
        assert_eq!(parse_refid("GPS"), Some(*b"GPS\0"));
        assert_eq!(parse_refid("TOOLONG"), None);
        assert_eq!(parse_refid(""), None);
    }
}
