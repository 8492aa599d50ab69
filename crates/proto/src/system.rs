//! The server's "system variables" (RFC 5905 §9): what every answer says about the reference
//! clock, derived once per clock reading rather than per request.

use crate::clock_model::{ModelState, Reading};
use std::net::IpAddr;

use crate::packet::LeapIndicator;
use crate::tick::Source;
use crate::time::{NtpShort, Offset, Time};

/// What the kernel says about the host clock (adjtimex), as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelClock {
    /// STA_UNSYNC clear: some daemon (chronyd, ntpd, ...) keeps the clock.
    pub synchronized: bool,
    /// The kernel's maximum error: the keeping daemon's root distance when it last updated the
    /// clock, plus 500 ppm of the time since.
    pub max_error: Offset,
    /// The kernel's estimated error.
    pub est_error: Offset,
}

/// How this host presents itself, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockPolicy {
    /// `Some(s)`: this host *is* the reference (like chrony's `local stratum`): answer as
    /// synchronized at stratum `s` whatever the kernel says.
    pub local_stratum: Option<u8>,
    /// Stratum to announce when the kernel clock is synchronized by a daemon.
    pub stratum: u8,
    /// Reference ID to announce when synchronized.
    pub reference_id: [u8; 4],
}

/// The header fields every answer shares, before the view's offset is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerState {
    pub leap: LeapIndicator,
    /// 0 when unsynchronized (RFC 5905 sends "16, unsynchronized" as 0 on the wire).
    pub stratum: u8,
    pub reference_id: [u8; 4],
    pub root_delay: NtpShort,
    pub root_dispersion: NtpShort,
    pub precision: i8,
    /// When the reference clock was last known good, in base time; None before it ever was.
    pub reference_time: Option<Time>,
}

pub const REFID_LOCAL: [u8; 4] = *b"LOCL";

impl ServerState {
    /// A state that answers nobody as synchronized: the safe start.
    pub fn unsynchronized(precision: i8) -> ServerState {
        ServerState {
            leap: LeapIndicator::Unsynchronized,
            stratum: 0,
            reference_id: [0; 4],
            root_delay: NtpShort::from_bits(0),
            root_dispersion: NtpShort::from_bits(0),
            precision,
            reference_time: None,
        }
    }

    /// The system variables for a host-clock reference read at `now` (base time).
    /// `leap` is the leap tracker's indicator for that instant.
    pub fn from_kernel(
        kernel: KernelClock,
        policy: ClockPolicy,
        leap: LeapIndicator,
        precision: i8,
        now: Time,
    ) -> ServerState {
        if let Some(stratum) = policy.local_stratum {
            return ServerState {
                leap,
                stratum,
                reference_id: REFID_LOCAL,
                root_delay: NtpShort::from_bits(0),
                root_dispersion: NtpShort::from_bits(0),
                precision,
                reference_time: Some(now),
            };
        }
        if !kernel.synchronized {
            return ServerState {
                root_dispersion: NtpShort::from_offset(kernel.max_error),
                ..Self::unsynchronized(precision)
            };
        }
        // The daemon keeping the clock writes its root distance into max_error; a client adds
        // root delay / 2 + root dispersion, so all of it goes into the dispersion.
        ServerState {
            leap,
            stratum: policy.stratum,
            reference_id: policy.reference_id,
            root_delay: NtpShort::from_bits(0),
            root_dispersion: NtpShort::from_offset(kernel.max_error),
            precision,
            reference_time: Some(now),
        }
    }
}

/// What the pulse-disciplined clock (`[reference] source = "pulse"`) says at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PulseClock {
    /// The clock model read now, plus the time until the next refresh (so the dispersion
    /// announced until then is never too small). None before the first lock.
    pub reading: Option<Reading>,
    /// The transmitter's stratum (0 for a DCF77, GNSS or PPS source).
    pub source_stratum: u8,
    /// The transmitter's own error bound, when it sends one.
    pub source_error: Option<Offset>,
    pub reference_id: [u8; 4],
    /// When the last tick was taken, in base time.
    pub last_tick: Option<Time>,
}

/// The reference ID for a pulse reference: the source's name for stratum-0 sources (as ntpd
/// and chrony name refclocks), else the transmitter's IPv4 address (as for an upstream server,
/// which lets clients detect loops), else `TICK`.
pub fn pulse_refid(source: Source, transmitter: Option<IpAddr>) -> [u8; 4] {
    match (source, transmitter) {
        (Source::Pps, _) => *b"PPS\0",
        (Source::Dcf77, _) => *b"DCF\0",
        (Source::Gnss, _) => *b"GPS\0",
        (Source::SystemClock, Some(IpAddr::V4(v4))) => v4.octets(),
        (Source::SystemClock, _) => *b"TICK",
    }
}

impl ServerState {
    /// The system variables for the pulse reference: synchronized only while the model is
    /// locked or in holdover within its limit, one stratum below the transmitter, with the
    /// model's error bound plus the source's as root dispersion.
    pub fn from_pulse(pulse: PulseClock, leap: LeapIndicator, precision: i8) -> ServerState {
        let Some(reading) = pulse.reading else {
            return Self::unsynchronized(precision);
        };
        let error =
            Offset::from_nanos(reading.error_ns).add(pulse.source_error.unwrap_or(Offset::ZERO));
        let stratum = pulse.source_stratum.saturating_add(1);
        if reading.state == ModelState::Unsynchronized || stratum > 15 {
            return ServerState {
                root_dispersion: NtpShort::from_offset(error),
                ..Self::unsynchronized(precision)
            };
        }
        ServerState {
            leap,
            stratum,
            reference_id: pulse.reference_id,
            root_delay: NtpShort::from_bits(0),
            root_dispersion: NtpShort::from_offset(error),
            precision,
            reference_time: pulse.last_tick,
        }
    }
}

/// log2 of a clock's precision in seconds, rounded up, as the header's precision field wants it.
pub fn precision_log2(resolution: Offset) -> i8 {
    let ns = resolution.nanos().max(1) as f64;
    (ns / 1e9).log2().ceil().clamp(-32.0, 0.0) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Time = Time::from_unix_nanos(1_795_000_000_000_000_000);

    fn kernel(synchronized: bool) -> KernelClock {
        KernelClock {
            synchronized,
            max_error: Offset::from_micros(1500),
            est_error: Offset::from_micros(20),
        }
    }

    fn policy(local_stratum: Option<u8>) -> ClockPolicy {
        ClockPolicy {
            local_stratum,
            stratum: 3,
            reference_id: *b"OFFS",
        }
    }

    #[test]
    fn unsynchronized_kernel_says_li3_stratum0() {
        let s = ServerState::from_kernel(
            kernel(false),
            policy(None),
            LeapIndicator::NoWarning,
            -20,
            NOW,
        );
        assert_eq!(s.leap, LeapIndicator::Unsynchronized);
        assert_eq!(s.stratum, 0);
        assert_eq!(s.reference_time, None);
    }

    #[test]
    fn local_stratum_makes_this_host_the_reference() {
        let s = ServerState::from_kernel(
            kernel(false),
            policy(Some(10)),
            LeapIndicator::NoWarning,
            -20,
            NOW,
        );
        assert_eq!(
            (s.leap, s.stratum, s.reference_id),
            (LeapIndicator::NoWarning, 10, *b"LOCL")
        );
    }

    #[test]
    fn synchronized_kernel_passes_its_error_and_the_leap() {
        let s = ServerState::from_kernel(
            kernel(true),
            policy(None),
            LeapIndicator::InsertSecond,
            -20,
            NOW,
        );
        assert_eq!(
            (s.leap, s.stratum, s.reference_id),
            (LeapIndicator::InsertSecond, 3, *b"OFFS")
        );
        // 1.5 ms in 16.16, rounded up.
        assert_eq!(s.root_dispersion.to_bits(), 99);
        assert_eq!(s.reference_time, Some(NOW));
    }

    fn pulse(state: ModelState, stratum: u8) -> PulseClock {
        PulseClock {
            reading: Some(Reading {
                time: NOW,
                error_ns: 40_000,
                state,
            }),
            source_stratum: stratum,
            source_error: Some(Offset::from_micros(10)),
            reference_id: *b"DCF\0",
            last_tick: Some(NOW),
        }
    }

    #[test]
    fn pulse_refids_name_the_source_or_the_transmitter() {
        let v4: IpAddr = "198.18.1.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(pulse_refid(Source::Dcf77, Some(v4)), *b"DCF\0");
        assert_eq!(pulse_refid(Source::SystemClock, Some(v4)), [198, 18, 1, 1]);
        assert_eq!(pulse_refid(Source::SystemClock, Some(v6)), *b"TICK");
        assert_eq!(pulse_refid(Source::SystemClock, None), *b"TICK");
    }

    #[test]
    fn pulse_reference_is_one_stratum_below_the_transmitter() {
        for state in [ModelState::Locked, ModelState::Holdover] {
            let s = ServerState::from_pulse(pulse(state, 0), LeapIndicator::InsertSecond, -20);
            assert_eq!(
                (s.leap, s.stratum, s.reference_id),
                (LeapIndicator::InsertSecond, 1, *b"DCF\0")
            );
            // 40 us model + 10 us source = 50 us: 3.3 units of 15.3 us, rounded up.
            assert_eq!(s.root_dispersion.to_bits(), 4);
            assert_eq!(s.reference_time, Some(NOW));
        }
    }

    #[test]
    fn pulse_reference_is_unsynchronized_before_lock_past_holdover_or_at_stratum_16() {
        let never = PulseClock {
            reading: None,
            ..pulse(ModelState::Locked, 0)
        };
        for p in [
            never,
            pulse(ModelState::Unsynchronized, 0),
            pulse(ModelState::Locked, 15),
        ] {
            let s = ServerState::from_pulse(p, LeapIndicator::NoWarning, -20);
            assert_eq!(
                (s.leap, s.stratum),
                (LeapIndicator::Unsynchronized, 0),
                "{p:?}"
            );
            assert_eq!(s.reference_time, None);
        }
    }

    #[test]
    fn precision_is_log2_rounded_up() {
        assert_eq!(precision_log2(Offset::from_nanos(1)), -29);
        assert_eq!(precision_log2(Offset::from_nanos(29)), -25);
        assert_eq!(precision_log2(Offset::from_nanos(30)), -24);
        assert_eq!(precision_log2(Offset::from_micros(1)), -19);
        assert_eq!(precision_log2(Offset::from_secs(5)), 0);
    }
}
