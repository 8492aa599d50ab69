//! Value parsers for the command line's flags that are not configuration (those go through
//! `config`'s checks): durations, ids, modes.

use std::time::Duration;

use ntp_offset_proto::time::Offset;

use crate::duration;

pub fn parse_offset(s: &str) -> Result<Offset, duration::DurationError> {
    duration::parse(s)
}

/// A duration that must not be negative.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let o = duration::parse(s).map_err(|e| e.to_string())?;
    u64::try_from(o.nanos())
        .map(Duration::from_nanos)
        .map_err(|_| "must not be negative".into())
}

pub fn parse_ppm(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if p.abs() <= 1000.0 => Ok(p),
        _ => Err(format!("{s:?}: give parts per million, -1000 to 1000")),
    }
}

pub fn parse_u32(s: &str) -> Result<u32, String> {
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?}: {e}"))
}

pub fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode like 600"))
}

/// A multicast group address, as `[reference] join` requires too.
pub fn parse_multicast(s: &str) -> Result<std::net::IpAddr, String> {
    match s.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_multicast() => Ok(ip),
        _ => Err(format!("`{s}` is not a multicast group address")),
    }
}
