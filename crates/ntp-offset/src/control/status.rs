//! What `ntp-offset status` and `clients` show, as the control socket carries it: plain data
//! (serde), filled by `serve`, `pulse listen` and `pulse send`, read by the client, the metrics
//! and the status page. Times are seconds (f64) or Unix seconds; offsets also as exact text.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use ntp_offset_proto::tick_stats::{Reject, TickCounts};

use super::counters::{Counts, ViewCounts};

/// A daemon's status, by role. (Built a few times a second at most: its size does not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Serve(ServeStatus),
    Listen(ListenStatus),
    Send(SendStatus),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServeStatus {
    pub program_version: String,
    pub uptime_s: f64,
    pub reference: ReferenceStatus,
    pub views: Vec<ViewStatus>,
    pub sockets: Vec<SocketStatus>,
    pub totals: Counts,
    pub spread: Vec<SpreadStatus>,
    /// The clients with the most rate-limited requests (at most 10).
    pub most_rate_limited: Vec<ClientEntry>,
    pub client_log: ClientLogStatus,
    /// The NTS-KE server and the cookie master key; absent without `[nts]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nts: Option<NtsStatus>,
    /// The host's VMs and their predicted load; absent while no group places by load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadStatus>,
    /// The cluster's store and this host's copy of it; absent without `[cluster]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// A cluster's store (`[cluster]`) and this host's copy of it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterStatus {
    pub host: String,
    pub endpoints: Vec<String>,
    /// Whether the last call to etcd worked.
    pub available: bool,
    /// The store revision the copy has everything up to.
    pub revision: i64,
    /// Clients in the copy, all groups.
    pub clients: u64,
    /// New clients' views this host recorded, and those another host had recorded first.
    pub created: u64,
    pub lost_races: u64,
    /// Moves made here and recorded; changes made elsewhere that this host followed.
    pub moves_recorded: u64,
    pub moves_followed: u64,
    pub refreshed: u64,
    pub forgotten: u64,
    /// New clients not answered because etcd could not record their view, and those given
    /// the keyed hash's view instead (`on_store_unavailable = "hash"`).
    pub unanswered_unavailable: u64,
    pub hashed_unavailable: u64,
    /// Clients the store gives a view this host's config does not have.
    pub unknown_view: u64,
    /// Full reads of the store (start, compaction, after an outage).
    pub resyncs: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Keys under the prefix that are not ours: dropped.
    pub foreign: u64,
    /// Groups refused: a view of theirs is recorded with another offset.
    pub refused_groups: Vec<String>,
}

/// Load-aware placement's view of the host.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LoadStatus {
    /// VMs found (QEMU processes), and those whose profile is known.
    pub vms: u64,
    pub profiled: u64,
    /// The host's predicted CPU in its busiest second of the minute (cores), and which second.
    pub peak_cores: f64,
    pub peak_second: u8,
    /// Per view: its VMs' predicted busiest second (cores).
    pub views: Vec<ViewLoad>,
    /// Per balanced group placed by load: its VMs' predicted busiest second (cores), all its
    /// views together.
    #[serde(default)]
    pub groups: Vec<GroupLoad>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GroupLoad {
    pub group: String,
    pub peak_cores: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ViewLoad {
    pub view: String,
    pub peak_cores: f64,
}

/// The VM behind a client, and its load.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VmLoad {
    pub name: String,
    pub pid: u32,
    /// Where its CPU time is read: "cgroup PATH" or "process".
    pub source: String,
    /// Whole minutes its profile averages (below 2: not known yet).
    pub minutes: u32,
    /// Its busiest second of its own minute, and its CPU then (cores).
    pub peak_second: u8,
    pub peak_cores: f32,
    /// Its part of the host's predicted busiest second (0-1).
    pub share_of_host_peak: f32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NtsStatus {
    pub ke_listen: Vec<String>,
    /// KE sessions that ended with cookies.
    pub ke_sessions: u64,
    /// The same by the AEAD negotiated (its IANA name, e.g. AEAD_AES_128_GCM_SIV).
    #[serde(default)]
    pub ke_sessions_by_aead: std::collections::BTreeMap<String, u64>,
    /// KE requests answered with an error record (or no protocol in common).
    pub ke_refused: u64,
    /// Handshakes and sessions that failed: TLS errors, no ALPN, clients that closed early.
    pub ke_failed: u64,
    pub ke_timeouts: u64,
    /// Connections closed at once because `max_connections` sessions were running.
    pub ke_busy: u64,
    pub ke_active: u64,
    /// The current cookie master key's id and age; how many keys still open cookies.
    pub master_key_id: u32,
    pub master_key_age_s: u64,
    pub master_keys: usize,
}

/// Where the served time comes from, and its state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReferenceStatus {
    /// "system" or "pulse".
    pub source: String,
    /// system: "synchronized", "local" (local_stratum: answered as synchronized though the
    /// kernel says STA_UNSYNC) or "unsynchronized";
    /// pulse: "locked", "holdover" or "unsynchronized".
    pub state: String,
    /// As answers carry it (16: unsynchronized).
    pub stratum: u8,
    pub reference_id: String,
    pub leap: String,
    pub root_delay_s: f64,
    pub root_dispersion_s: f64,
    /// system: the kernel's maximum error; pulse: the model's error bound.
    pub max_error_s: Option<f64>,
    /// system: the kernel's estimated error.
    pub estimated_error_s: Option<f64>,
    /// pulse: tick time (+ offset) minus the host clock, latest tick.
    pub offset_s: Option<f64>,
    /// pulse: the standard deviation of the recent ticks' offsets.
    pub jitter_s: Option<f64>,
    /// pulse: the model's frequency against the host's monotonic clock.
    pub frequency_ppm: Option<f64>,
    pub ticks: Option<u64>,
    pub missed: Option<u64>,
    pub restarts: Option<u64>,
    pub rejected: BTreeMap<String, u64>,
    pub transmitter: Option<String>,
    /// pulse: what the latest tick says of the transmitter's clock (synchronized, holdover,
    /// unsynchronized).
    pub transmitter_state: Option<String>,
    pub seconds_since_tick: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ViewStatus {
    pub name: String,
    pub offset_s: f64,
    /// Exact, as configured: "+15s".
    pub offset: String,
    #[serde(flatten)]
    pub counts: ViewCounts,
    pub requests_per_s_1m: Option<f64>,
    pub requests_per_s_5m: Option<f64>,
    /// Clients in the client log whose last request chose this view, within the hour.
    pub clients_last_hour: u64,
    /// In balanced spread groups: clients assigned to this view, and those active.
    pub assigned: Option<u64>,
    pub assigned_active: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SocketStatus {
    pub address: String,
    pub received: u64,
    pub answered: u64,
    pub kod: u64,
    pub dropped: u64,
    pub send_errors: u64,
    /// With `workers = N`: what each worker received (how evenly clients spread).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub received_by_worker: Vec<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SpreadStatus {
    pub name: String,
    pub clients: u64,
    pub moved: u64,
    pub forgotten: u64,
    pub hashed_while_full: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClientLogStatus {
    pub logged: u64,
    pub capacity: u64,
    /// Requests from new clients that found the log full (a flood of addresses).
    pub not_logged: u64,
}

/// One client, as `ntp-offset clients` lists it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ClientEntry {
    pub address: String,
    pub view: Option<String>,
    /// How the view was chosen: "rule", "pin" (a rule for this one address), "balancer",
    /// "hash", "default" or "none".
    pub chosen_by: String,
    /// Which rule, as the config names it: "spread `vms` (line 40)".
    pub rule: Option<String>,
    pub first_seen: u64,
    pub last_seen: u64,
    pub requests: u64,
    pub rate_limited: u64,
    /// The VM it is, where the host can tell (absent: unknown, placed by count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmLoad>,
    /// While it walks to its view (then `view`, whatever its last request was answered
    /// from): how far it has to go (seconds, signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walk_left_s: Option<f64>,
}

/// `pulse listen`'s status.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ListenStatus {
    pub state: String,
    pub transmitter: Option<String>,
    /// What the transmitter says of its own clock, from the latest sample: synchronized,
    /// holdover or unsynchronized (whose samples the NTP daemons ignore).
    pub transmitter_state: Option<String>,
    pub session: Option<String>,
    #[serde(flatten)]
    pub counts: TickCounts,
    /// Reference (tick time + offset + delay) minus local clock, latest sample.
    pub offset_ns: Option<i64>,
    pub mean_offset_ns: Option<i64>,
    pub jitter_ns: Option<i64>,
    pub seconds_since_sample: Option<f64>,
    pub sock_sent: Option<u64>,
    pub sock_failed: Option<u64>,
    pub shm_written: Option<u64>,
}

/// `pulse send`'s status.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SendStatus {
    /// "system" or "dcf77".
    pub source: String,
    /// The source clock: "synchronized", "holdover", "unsynchronized" or "not read yet".
    pub clock: String,
    pub transmitter: String,
    pub session: String,
    pub sequence: u64,
    pub ticks_sent: u64,
    pub send_errors: u64,
    pub destinations: Vec<String>,
    pub authenticated: bool,
    pub follow_ups: bool,
}

impl ListenStatus {
    /// One human line, e.g. `locked to 0x0a0b0c0d: offset +15.000012s, jitter 8us, ...`.
    pub fn line(&self) -> String {
        let who = match &self.transmitter {
            Some(t) => format!(" to {t}"),
            None if self.counts.samples > 0 || self.counts.ticks > 0 => " to legacy pulses".into(),
            None => String::new(),
        };
        let mut s = format!("{}{who}", self.state);
        match self.transmitter_state.as_deref() {
            Some(t) if t != "synchronized" => s += &format!(" (transmitter {t})"),
            _ => {}
        }
        if let (Some(o), Some(j)) = (self.offset_ns, self.jitter_ns) {
            s += &format!(": offset {}, jitter {:.1}us", exact_ns(o), j as f64 / 1e3);
        }
        s += &format!(
            "; {} samples from {} ticks, {} missed, {} restarts, {} follow-ups ({} missing)",
            self.counts.samples,
            self.counts.ticks,
            self.counts.missed,
            self.counts.restarts,
            self.counts.follow_ups,
            self.counts.follow_ups_missing
        );
        if self.counts.leap_seconds > 0 {
            s += &format!(", {} leap seconds", self.counts.leap_seconds);
        }
        if let Some(age) = self.seconds_since_sample {
            s += &format!(", last sample {age:.1}s ago");
        }
        let r: Vec<String> = Reject::ALL
            .iter()
            .filter(|x| self.counts.rejected[**x as usize] > 0)
            .map(|x| format!("{} {}", x.name(), self.counts.rejected[*x as usize]))
            .collect();
        if !r.is_empty() {
            s += &format!("; rejected: {}", r.join(", "));
        }
        s
    }
}

/// Nanoseconds as exact seconds: offsets may be seconds or decades, and an integer stays exact.
pub fn exact_ns(o: i64) -> String {
    let (sign, abs) = if o < 0 {
        ('-', -(o as i128))
    } else {
        ('+', o as i128)
    };
    format!("{sign}{}.{:09}s", abs / 1_000_000_000, abs % 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_offsets_keep_every_nanosecond() {
        assert_eq!(exact_ns(15_000_012_000), "+15.000012000s");
        assert_eq!(exact_ns(-1), "-0.000000001s");
        assert_eq!(exact_ns(i64::MIN), "-9223372036.854775808s");
    }
}
