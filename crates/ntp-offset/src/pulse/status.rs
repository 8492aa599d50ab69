//! What `pulse listen` reports: a log line on SIGUSR1 and at exit, the control socket's
//! status, and a JSON status file rewritten every second for monitoring.

use std::path::Path;

use ntp_offset_proto::tick_receiver::Stats;
use ntp_offset_proto::time::Offset;

use crate::control::status::ListenStatus;

pub fn from_stats(st: &Stats, now_mono_ns: i64) -> ListenStatus {
    let mean_jitter = st.offset_mean_jitter();
    ListenStatus {
        state: st.state.name().into(),
        transmitter: st.transmitter.map(|t| format!("{t:#010x}")),
        transmitter_state: None,
        session: st.session.map(|s| format!("{s:#010x}")),
        counts: st.counts,
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

/// Writes the JSON atomically (temporary file, then rename), so readers never see half.
pub fn write_file(st: &ListenStatus, path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_string_pretty(st).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json + "\n")?;
    std::fs::rename(&tmp, path)
}
