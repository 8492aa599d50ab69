//! `pulse send --source pps`: ticks at the pulses of a PPS device (a GPS receiver's or a radio
//! clock's, through the kernel's /dev/ppsN), numbered by this host's clock
//! ([`PpsPulses`]). Each tick is sent at once; its follow-up carries the kernel TX time minus
//! the pulse's stamp, so receivers take the pulse itself, not the send. Missing pulses become
//! holdover ticks, then unsynchronized ones.

use std::path::PathBuf;
use std::time::Duration;

use ntp_offset_proto::pps_pulses::{PpsPulses, Refused};
use ntp_offset_proto::tick::SourceState;
use ntp_offset_proto::time::{Offset, NANOS_PER_SEC};
use ntp_offset_sys::clock::realtime_ns;
use ntp_offset_sys::pps::{Edge, PpsDevice};
use tracing::{info, warn};

use super::error::PulseError;
use super::Signals;
use crate::ticks::transmit::{TransmitOptions, Transmitter};

/// At most one warning this often for pulses the clock cannot number.
const WARN_EVERY_NS: i64 = 60 * NANOS_PER_SEC;

pub struct PpsOptions {
    pub device: PathBuf,
    pub edge: Edge,
    /// The device's delay (subtracted from every stamp).
    pub calibration: Offset,
    /// How long after the last pulse missing ones are still holdover ticks.
    pub holdover: Duration,
    pub count: Option<u64>,
}

pub fn run(transmit: TransmitOptions, o: PpsOptions, signals: &Signals) -> Result<(), PulseError> {
    let pps = |source| PulseError::Pps {
        device: o.device.display().to_string(),
        source,
    };
    let mut device = PpsDevice::open(&o.device, o.edge).map_err(pps)?;
    let mut tx = Transmitter::open(transmit)?;
    crate::service::ready();
    let holdover_ns = i64::try_from(o.holdover.as_nanos()).unwrap_or(i64::MAX);
    let mut pulses = PpsPulses::new(o.calibration.nanos(), holdover_ns);
    info!(device = %o.device.display(), edge = ?o.edge, "waiting for pulses");
    let mut planned = Vec::new();
    let mut last_state = None;
    let mut last_warning = i64::MIN / 2;
    while !signals.stopped() && o.count.is_none_or(|c| tx.sent_ticks < c) {
        if signals.take_hup() {
            tx.reload_key();
        }
        if signals.take_usr1() {
            let s = last_state.map_or("waiting for the first pulse", SourceState::name);
            info!("status: {}; PPS {s}", tx.status());
        }
        let now = realtime_ns();
        let wait = pulses
            .next_deadline()
            .map_or(NANOS_PER_SEC, |d| (d - now).clamp(0, NANOS_PER_SEC));
        let pulse = device
            .next(Duration::from_nanos(wait as u64))
            .map_err(pps)?;
        match pulse {
            Some(p) => match pulses.on_pulse(p.time.0 * NANOS_PER_SEC + p.time.1) {
                Ok(t) => planned.push(t),
                Err(Refused::ClockOff { by_ns }) => {
                    if now - last_warning >= WARN_EVERY_NS {
                        last_warning = now;
                        warn!(
                            off_ms = by_ns as f64 / 1e6,
                            "a pulse came {:.1} ms from this host's second: the clock must be within 0.4 s of the pulses to number them; no ticks until it is",
                            by_ns as f64 / 1e6
                        );
                    }
                }
                Err(Refused::Repeated { second }) => {
                    warn!(
                        second,
                        sequence = p.sequence,
                        "a second pulse within one second: dropped"
                    );
                }
            },
            None => pulses.on_silence(realtime_ns(), &mut planned),
        }
        for t in planned.drain(..) {
            if last_state != Some(t.state) {
                match t.state {
                    SourceState::Synchronized => info!("PPS: pulses; sending ticks"),
                    SourceState::Holdover => {
                        warn!("PPS: pulse missing; holdover from this host's oscillator")
                    }
                    SourceState::Unsynchronized => warn!(
                        "PPS: no pulses for longer than the holdover; ticks say unsynchronized"
                    ),
                }
                last_state = Some(t.state);
            }
            let tick = tx.complete(t.tick());
            let payload = tx.encode(&tick);
            tx.send(&tick, &payload, |tx_real_ns| tx_real_ns - t.mark_ns);
            tx.publish(t.state.name());
        }
    }
    tx.finish();
    Ok(())
}
