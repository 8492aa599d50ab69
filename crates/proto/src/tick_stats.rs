//! What the tick receiver counts and reports: why it rejected datagrams ([`Reject`]), its lock
//! state, its counters ([`TickCounts`], which `pulse listen`'s status carries as they are)
//! and the recent offsets' statistics ([`Stats`]).

use crate::time::Offset;

/// Samples kept for the offset statistics.
const STATS_WINDOW: usize = 16;

/// Why a datagram was dropped. Each has a counter in [`Stats::rejected`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    Truncated,
    Oversized,
    /// Bad magic, unsupported version or an undefined field value.
    Malformed,
    BadMac,
    UnknownKey,
    /// Key id 0 while authentication is required.
    Unauthenticated,
    /// A legacy `time` pulse while legacy pulses are not enabled.
    Legacy,
    /// From a transmitter other than the one followed.
    OtherTransmitter,
    Duplicate,
    /// An older second or sequence than already seen from this transmitter.
    Replay,
    /// Not the second the elapsed time predicts.
    UnexpectedSecond,
    /// Arrived too far from where the previous ticks put it.
    Outlier,
    /// A follow-up whose tick is not the one waiting.
    UnmatchedFollowUp,
}

impl Reject {
    pub const ALL: [Reject; 13] = [
        Reject::Truncated,
        Reject::Oversized,
        Reject::Malformed,
        Reject::BadMac,
        Reject::UnknownKey,
        Reject::Unauthenticated,
        Reject::Legacy,
        Reject::OtherTransmitter,
        Reject::Duplicate,
        Reject::Replay,
        Reject::UnexpectedSecond,
        Reject::Outlier,
        Reject::UnmatchedFollowUp,
    ];

    pub fn from_name(name: &str) -> Option<Reject> {
        Reject::ALL.into_iter().find(|r| r.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::Oversized => "oversized",
            Reject::Malformed => "malformed",
            Reject::BadMac => "bad-mac",
            Reject::UnknownKey => "unknown-key",
            Reject::Unauthenticated => "unauthenticated",
            Reject::Legacy => "legacy",
            Reject::OtherTransmitter => "other-transmitter",
            Reject::Duplicate => "duplicate",
            Reject::Replay => "replay",
            Reject::UnexpectedSecond => "unexpected-second",
            Reject::Outlier => "outlier",
            Reject::UnmatchedFollowUp => "unmatched-follow-up",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockState {
    /// No transmitter yet, or not enough consistent ticks.
    Searching,
    Locked,
    /// Ticks stopped.
    Lost,
}

impl LockState {
    pub fn name(self) -> &'static str {
        match self {
            LockState::Searching => "searching",
            LockState::Locked => "locked",
            LockState::Lost => "lost",
        }
    }
}

/// What the receiver counted: `pulse listen`'s status carries these as they are (field names
/// are the control protocol's; `rejected` lists the reasons that rejected anything, by name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TickCounts {
    pub datagrams: u64,
    /// Ticks accepted (consistent, authenticated), locked or not.
    pub ticks: u64,
    pub samples: u64,
    pub follow_ups: u64,
    /// Ticks that announced a follow-up which never came.
    pub follow_ups_missing: u64,
    /// Seconds without a tick while following a transmitter.
    pub missed: u64,
    pub restarts: u64,
    /// Inserted leap seconds seen (their ticks count, but make no sample).
    pub leap_seconds: u64,
    #[cfg_attr(feature = "serde", serde(with = "rejected_by_name"))]
    pub rejected: [u64; Reject::ALL.len()],
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub counts: TickCounts,
    pub state: LockState,
    pub transmitter: Option<u32>,
    pub session: Option<u32>,
    /// Monotonic time of the last sample.
    pub last_sample_mono_ns: Option<i64>,
    recent: [i64; STATS_WINDOW],
    recent_len: usize,
    recent_next: usize,
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            counts: TickCounts::default(),
            state: LockState::Searching,
            transmitter: None,
            session: None,
            last_sample_mono_ns: None,
            recent: [0; STATS_WINDOW],
            recent_len: 0,
            recent_next: 0,
        }
    }

    pub fn rejected(&self, r: Reject) -> u64 {
        self.counts.rejected[r.index()]
    }

    /// The reasons that rejected anything, with their counts, as status reports list them.
    pub fn rejected_by_name(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Reject::ALL
            .iter()
            .map(|&r| (r.name(), self.rejected(r)))
            .filter(|&(_, n)| n > 0)
    }

    pub fn rejected_total(&self) -> u64 {
        self.counts.rejected.iter().sum()
    }

    /// The transmitter followed started a new session.
    pub(crate) fn note_restart(&mut self, session: u32) {
        self.counts.restarts += 1;
        self.session = Some(session);
    }

    pub(crate) fn record(&mut self, offset: Offset) {
        self.recent[self.recent_next] = offset.nanos();
        self.recent_next = (self.recent_next + 1) % STATS_WINDOW;
        self.recent_len = (self.recent_len + 1).min(STATS_WINDOW);
    }

    /// The latest sample's offset.
    pub fn last_offset(&self) -> Option<Offset> {
        (self.recent_len > 0).then(|| {
            Offset::from_nanos(self.recent[(self.recent_next + STATS_WINDOW - 1) % STATS_WINDOW])
        })
    }

    /// Mean and standard deviation of the last 16 offsets.
    pub fn offset_mean_jitter(&self) -> Option<(Offset, Offset)> {
        if self.recent_len == 0 {
            return None;
        }
        let xs = &self.recent[..self.recent_len];
        // Relative to the first value, so 15-s offsets lose no nanoseconds in f64.
        let base = xs[0];
        let n = xs.len() as f64;
        let mean = xs.iter().map(|&x| (x - base) as f64).sum::<f64>() / n;
        let var = xs
            .iter()
            .map(|&x| ((x - base) as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        Some((
            Offset::from_nanos(base + mean.round() as i64),
            Offset::from_nanos(var.sqrt().round() as i64),
        ))
    }
}

/// Rejections as `{"outlier": n, ...}`, only the reasons that rejected anything.
#[cfg(feature = "serde")]
mod rejected_by_name {
    use super::Reject;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    type Rejected = [u64; Reject::ALL.len()];

    pub fn serialize<S: Serializer>(r: &Rejected, s: S) -> Result<S::Ok, S::Error> {
        let m: BTreeMap<&str, u64> = Reject::ALL
            .iter()
            .map(|x| (x.name(), r[x.index()]))
            .filter(|&(_, n)| n > 0)
            .collect();
        m.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Rejected, D::Error> {
        let mut out = [0; Reject::ALL.len()];
        // A reason this build does not know (a newer daemon's) is left out, not an error.
        for (name, n) in BTreeMap::<String, u64>::deserialize(d)? {
            if let Some(r) = Reject::from_name(&name) {
                out[r.index()] = n;
            }
        }
        Ok(out)
    }
}
