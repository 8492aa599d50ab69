//! The counters `serve` keeps, as the control socket carries them, and the tables that name
//! each counter (of `serve`, and of `pulse listen`'s receiver) for `status` and `/metrics`. A
//! new counter is a field and one row in [`TOTALS`], [`PER_VIEW`] or [`TICKS`]; nothing else
//! declares it.

use ntp_offset_proto::responder::{DropReason, ResponseKind};
use ntp_offset_proto::tick_stats::TickCounts;
use serde::{Deserialize, Serialize};

/// What the server did with the datagrams of one socket (or of all). The field names are the
/// control protocol's (`testvectors/control-v1.txt`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub received: u64,
    pub answered: u64,
    pub kod_rate: u64,
    pub kod_deny: u64,
    /// Crypto-NAKs: requests with a key the server does not have (`[keys] unknown_key`).
    #[serde(default)]
    pub crypto_nak: u64,
    /// NTS-NAKs: NTS requests whose cookie does not open here (sent back to key establishment).
    #[serde(default)]
    pub nts_nak: u64,
    /// Answered unsynchronised while the client's address was matched to its VM. Absent
    /// while zero (hosts without VMs): control-v1's vectors predate it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub placing: u64,
    /// Answers in interleaved mode.
    #[serde(default)]
    pub interleaved: u64,
    /// Kernel transmit stamps taken into the interleaved log; those that matched no logged
    /// answer (evicted, or the echoed frame unreadable).
    #[serde(default)]
    pub tx_stamps: u64,
    #[serde(default)]
    pub tx_stamps_unmatched: u64,
    pub send_errors: u64,
    /// By reason, as `{"truncated": n, ...}`: every [`DropReason`] by its name.
    #[serde(rename = "dropped", with = "drops_by_name")]
    pub drops: [u64; DropReason::ALL.len()],
}

/// One view's counts: requests that chose it, and what became of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewCounts {
    pub requests: u64,
    pub answered: u64,
    pub kod_rate: u64,
    pub rate_limited: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        for c in FIELDS {
            *(c.get_mut)(self) += (c.get)(o);
        }
        for (a, b) in self.drops.iter_mut().zip(o.drops) {
            *a += b;
        }
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub fn responded(&mut self, kind: ResponseKind) {
        match kind {
            ResponseKind::Time => self.answered += 1,
            ResponseKind::KodRate => self.kod_rate += 1,
            ResponseKind::KodDeny => self.kod_deny += 1,
            ResponseKind::CryptoNak => self.crypto_nak += 1,
            ResponseKind::NtsNak => self.nts_nak += 1,
            ResponseKind::Placing => self.placing += 1,
        }
    }

    pub fn drop_for(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }
}

impl ViewCounts {
    pub fn add(&mut self, o: &ViewCounts) {
        self.requests += o.requests;
        self.answered += o.answered;
        self.kod_rate += o.kod_rate;
        self.rate_limited += o.rate_limited;
    }
}

impl std::fmt::Display for Counts {
    /// `received=… answered=… kod_rate=… kod_deny=… send_errors=… dropped: truncated=… …`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received={} answered={} kod_rate={} kod_deny={} send_errors={} dropped:",
            self.received, self.answered, self.kod_rate, self.kod_deny, self.send_errors
        )?;
        for r in DropReason::ALL {
            write!(f, " {}={}", r.name(), self.dropped(r))?;
        }
        Ok(())
    }
}

/// One counter as the outside sees it.
pub struct Counter<T> {
    /// The Prometheus name, without the `ntp_offset_` prefix.
    pub metric: &'static str,
    pub help: &'static str,
    /// Its line in `ntp-offset status` (a column heading, for [`PER_VIEW`]).
    pub label: &'static str,
    /// Shown in `status` while zero, too.
    pub always: bool,
    pub get: fn(&T) -> u64,
}

/// Every scalar field of [`Counts`], to sum them; the table rows below say which are shown.
struct Field {
    get: fn(&Counts) -> u64,
    get_mut: fn(&mut Counts) -> &mut u64,
}

macro_rules! fields {
    ($($f:ident),*) => { &[$(Field { get: |c| c.$f, get_mut: |c| &mut c.$f }),*] };
}

const FIELDS: &[Field] = fields!(
    received,
    answered,
    kod_rate,
    kod_deny,
    crypto_nak,
    nts_nak,
    placing,
    interleaved,
    tx_stamps,
    tx_stamps_unmatched,
    send_errors
);

/// The server-wide counters that `status` shows a line each for and `/metrics` exports
/// without labels. (Received, answered and send errors are shown per socket, drops by reason.)
#[rustfmt::skip] // a table: one counter a line
pub const TOTALS: &[Counter<Counts>] = &[
    Counter { metric: "kod_deny_total", label: "KoD DENY", always: true, get: |c| c.kod_deny,
        help: "KoD DENY answers (requests matching no view, with unmatched = \"deny\")." },
    Counter { metric: "crypto_nak_total", label: "Crypto-NAK", always: false, get: |c| c.crypto_nak,
        help: "Crypto-NAK answers (requests with a key the server does not have)." },
    Counter { metric: "nts_nak_total", label: "NTS-NAK", always: false, get: |c| c.nts_nak,
        help: "NTS-NAK answers (NTS requests whose cookie does not open here)." },
    Counter { metric: "placing_total", label: "Being placed", always: false, get: |c| c.placing,
        help: "Answers marked unsynchronised because the client's new address was not yet matched to its VM." },
    Counter { metric: "interleaved_total", label: "Interleaved", always: false, get: |c| c.interleaved,
        help: "Answers in interleaved mode (carrying the kernel's transmit time of the client's previous answer)." },
    Counter { metric: "tx_stamps_total", label: "Transmit stamps", always: false, get: |c| c.tx_stamps,
        help: "Kernel transmit stamps taken into the interleaved log." },
    Counter { metric: "tx_stamps_unmatched_total", label: "Stamps unmatched", always: false, get: |c| c.tx_stamps_unmatched,
        help: "Kernel transmit stamps that matched no logged answer (evicted, or unreadable)." },
];

/// Each view's counters: `status`'s view columns and `/metrics`' `view`-labelled families.
#[rustfmt::skip] // a table: one counter a line
pub const PER_VIEW: &[Counter<ViewCounts>] = &[
    Counter { metric: "requests_total", label: "Requests", always: true, get: |v| v.requests,
        help: "Requests that chose each view (answered, KoD or rate-limited)." },
    Counter { metric: "answers_total", label: "Answers", always: true, get: |v| v.answered,
        help: "Time answers sent, per view." },
    Counter { metric: "kod_rate_total", label: "KoD", always: true, get: |v| v.kod_rate,
        help: "KoD RATE answers, per view." },
    Counter { metric: "rate_limited_total", label: "Limited", always: true, get: |v| v.rate_limited,
        help: "Requests dropped by the rate limiter, per view." },
];

/// `pulse listen`'s counters, as `/metrics` exports them.
#[rustfmt::skip] // a table: one counter a line
pub const TICKS: &[Counter<TickCounts>] = &[
    Counter { metric: "tick_datagrams_total", label: "Datagrams", always: true, get: |t| t.datagrams,
        help: "Tick datagrams received." },
    Counter { metric: "ticks_total", label: "Ticks", always: true, get: |t| t.ticks,
        help: "Ticks accepted." },
    Counter { metric: "samples_total", label: "Samples", always: true, get: |t| t.samples,
        help: "Samples made from ticks (fed to chrony or ntpd)." },
    Counter { metric: "ticks_missed_total", label: "Missed", always: true, get: |t| t.missed,
        help: "Seconds without a tick while following a transmitter." },
    Counter { metric: "tick_restarts_total", label: "Restarts", always: true, get: |t| t.restarts,
        help: "Times the receiver had to lock again." },
    Counter { metric: "follow_ups_missing_total", label: "Follow-ups missing", always: true, get: |t| t.follow_ups_missing,
        help: "Ticks whose announced follow-up never came." },
];

/// Drop counts as `{"truncated": n, ...}` on the control socket, not a bare array.
mod drops_by_name {
    use super::DropReason;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    type Drops = [u64; DropReason::ALL.len()];

    pub fn serialize<S: Serializer>(d: &Drops, s: S) -> Result<S::Ok, S::Error> {
        let m: BTreeMap<&str, u64> = DropReason::ALL
            .iter()
            .map(|r| (r.name(), d[*r as usize]))
            .collect();
        m.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Drops, D::Error> {
        let m = BTreeMap::<String, u64>::deserialize(d)?;
        let mut out = [0; DropReason::ALL.len()];
        for r in DropReason::ALL {
            out[r as usize] = m.get(r.name()).copied().unwrap_or(0);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_serialize_drops_by_name() {
        let mut c = Counts::default();
        c.drop_for(DropReason::RateLimited);
        let j = serde_json::to_string(&c).unwrap();
        assert!(j.contains("\"dropped\":{"), "{j}");
        assert!(j.contains("\"rate_limited\":1"), "{j}");
        assert_eq!(serde_json::from_str::<Counts>(&j).unwrap(), c);
    }

    #[test]
    fn adding_sums_every_field() {
        let mut one = Counts::default();
        for f in FIELDS {
            *(f.get_mut)(&mut one) = 1;
        }
        one.drop_for(DropReason::NoView);
        let mut sum = one;
        sum.add(&one);
        // Every field reads 2 in the JSON (none forgotten in `FIELDS`).
        let j = serde_json::to_value(sum).unwrap();
        for (name, v) in j.as_object().unwrap() {
            if name != "dropped" {
                assert_eq!(v, 2, "{name}: {j}");
            }
        }
        assert_eq!(sum.dropped(DropReason::NoView), 2);
    }
}
