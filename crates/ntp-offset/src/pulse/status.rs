//! What `pulse listen` reports: a log line on SIGUSR1 and at exit, and a JSON status file
//! rewritten every second for monitoring.

use std::path::Path;

use ntp_offset_proto::tick_receiver::{Reject, Stats};
use ntp_offset_proto::time::Offset;
use serde::Serialize;

#[derive(Serialize)]
pub struct Status {
    pub state: &'static str,
    pub transmitter: Option<String>,
    /// What the transmitter says of its own clock, from the latest sample: synchronized,
    /// holdover or unsynchronized (whose samples the NTP daemons ignore).
    pub transmitter_state: Option<&'static str>,
    pub session: Option<String>,
    pub datagrams: u64,
    pub ticks: u64,
    pub samples: u64,
    pub follow_ups: u64,
    pub follow_ups_missing: u64,
    /// Seconds without a tick while following a transmitter.
    pub missed: u64,
    pub restarts: u64,
    /// Inserted leap seconds seen (their ticks make no sample).
    pub leap_seconds: u64,
    pub rejected: std::collections::BTreeMap<&'static str, u64>,
    /// Reference (tick time + offset + delay) minus local clock, latest sample.
    pub offset_ns: Option<i64>,
    pub mean_offset_ns: Option<i64>,
    pub jitter_ns: Option<i64>,
    pub seconds_since_sample: Option<f64>,
    pub sock_sent: Option<u64>,
    pub sock_failed: Option<u64>,
    pub shm_written: Option<u64>,
}

impl Status {
    pub fn new(st: &Stats, now_mono_ns: i64) -> Status {
        let mean_jitter = st.offset_mean_jitter();
        Status {
            state: st.state.name(),
            transmitter: st.transmitter.map(|t| format!("{t:#010x}")),
            transmitter_state: None,
            session: st.session.map(|s| format!("{s:#010x}")),
            datagrams: st.datagrams,
            ticks: st.ticks,
            samples: st.samples,
            follow_ups: st.follow_ups,
            follow_ups_missing: st.follow_ups_missing,
            missed: st.missed,
            restarts: st.restarts,
            leap_seconds: st.leap_seconds,
            rejected: Reject::ALL
                .iter()
                .map(|&r| (r.name(), st.rejected(r)))
                .filter(|&(_, n)| n > 0)
                .collect(),
            offset_ns: st.last_offset().map(Offset::nanos),
            mean_offset_ns: mean_jitter.map(|(m, _)| m.nanos()),
            jitter_ns: mean_jitter.map(|(_, j)| j.nanos()),
            seconds_since_sample: st
                .last_sample_mono_ns
                .map(|t| (now_mono_ns - t) as f64 / 1e9),
            sock_sent: None,
            sock_failed: None,
            shm_written: None,
        }
    }

    /// One human line, e.g. `locked to 0x0a0b0c0d: offset +15.000012s, jitter 8us, ...`.
    pub fn line(&self) -> String {
        let who = match &self.transmitter {
            Some(t) => format!(" to {t}"),
            None if self.samples > 0 || self.ticks > 0 => " to legacy pulses".into(),
            None => String::new(),
        };
        let mut s = format!("{}{who}", self.state);
        match self.transmitter_state {
            Some(t) if t != "synchronized" => s += &format!(" (transmitter {t})"),
            _ => {}
        }
        if let (Some(o), Some(j)) = (self.offset_ns, self.jitter_ns) {
            // Offsets may be seconds or decades; nanoseconds as an integer stay exact.
            let (sign, abs) = if o < 0 {
                ('-', -(o as i128))
            } else {
                ('+', o as i128)
            };
            s += &format!(
                ": offset {sign}{}.{:09}s, jitter {:.1}us",
                abs / 1_000_000_000,
                abs % 1_000_000_000,
                j as f64 / 1e3
            );
        }
        s += &format!(
            "; {} samples from {} ticks, {} missed, {} restarts, {} follow-ups ({} missing)",
            self.samples,
            self.ticks,
            self.missed,
            self.restarts,
            self.follow_ups,
            self.follow_ups_missing
        );
        if self.leap_seconds > 0 {
            s += &format!(", {} leap seconds", self.leap_seconds);
        }
        if let Some(age) = self.seconds_since_sample {
            s += &format!(", last sample {age:.1}s ago");
        }
        if !self.rejected.is_empty() {
            let r: Vec<String> = self
                .rejected
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            s += &format!("; rejected: {}", r.join(", "));
        }
        s
    }

    /// Writes the JSON atomically (temporary file, then rename), so readers never see half.
    pub fn write_file(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json + "\n")?;
        std::fs::rename(&tmp, path)
    }
}
