//! `pulse send --source dcf77`: ticks at the second marks of a DCF77 module on a GPIO line.
//! The kernel stamps each edge (CLOCK_REALTIME); the [`Decoder`] turns edges into marks with
//! their UTC second; each mark is sent at once, and its follow-up carries the kernel TX time
//! minus the mark, so receivers take the mark itself, not the send.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ntp_offset_proto::dcf77::{Decoder, DecoderConfig, Mark, MarkState};
use ntp_offset_proto::tick::{Leap, Source, SourceState, TickPacket};
use ntp_offset_proto::time::Offset;
use ntp_offset_sys::clock;
use ntp_offset_sys::gpio::EdgeLine;
use tracing::{info, warn};

use super::transmit::{TransmitOptions, Transmitter};

const NANOS_PER_SEC: i64 = 1_000_000_000;

pub struct Dcf77Options {
    /// The GPIO character device, e.g. /dev/gpiochip0.
    pub chip: PathBuf,
    pub line: u32,
    /// The module's output is low during the carrier reduction.
    pub active_low: bool,
    /// The module's demodulation delay.
    pub calibration: Offset,
    pub count: Option<u64>,
}

/// The tick for a mark, before the transmitter fills in its own fields. None until the
/// decoder knows which second it is: nothing is sent before (as the firmware does).
pub fn tick_for(mark: &Mark) -> Option<TickPacket> {
    let state = match mark.state {
        MarkState::Unsynchronized => return None,
        MarkState::Synchronized => SourceState::Synchronized,
        MarkState::Holdover => SourceState::Holdover,
    };
    Some(TickPacket {
        state,
        leap: if mark.leap_announced {
            Leap::Insert
        } else {
            Leap::None
        },
        source: Source::Dcf77,
        stratum: 0,
        ..TickPacket::tick(mark.second?)
    })
}

fn realtime_ns() -> i64 {
    let (s, ns) = clock::realtime();
    s * NANOS_PER_SEC + ns
}

pub fn run(transmit: TransmitOptions, o: Dcf77Options, stop: &AtomicBool) -> Result<(), String> {
    let mut line = EdgeLine::open(&o.chip, o.line, o.active_low, "ntp-offset dcf77").map_err(|e| {
        format!(
            "cannot request line {} of {} for edge events: {e} (is the chip right, and the line free? `gpioinfo` lists both)",
            o.line,
            o.chip.display()
        )
    })?;
    let mut tx = Transmitter::open(transmit)?;
    let mut decoder = Decoder::new(DecoderConfig {
        calibration_ns: o.calibration.nanos(),
        ..Default::default()
    });
    info!(chip = %o.chip.display(), line = o.line, "waiting for the DCF77 signal (synchronized after 2-3 minutes)");
    let mut marks = Vec::new();
    let mut last_state = None;
    while !stop.load(Ordering::Relaxed) && o.count.is_none_or(|c| tx.sent_ticks < c) {
        let now = realtime_ns();
        let wait = decoder
            .next_deadline()
            .map_or(NANOS_PER_SEC, |d| (d - now).clamp(0, NANOS_PER_SEC));
        let ready = ntp_offset_sys::poll::wait_readable(
            std::slice::from_ref(&line),
            Some(Duration::from_nanos(wait as u64)),
        )
        .map_err(|e| format!("poll: {e}"))?;
        if ready & 1 != 0 {
            let edge = line
                .read()
                .map_err(|e| format!("reading GPIO events: {e}"))?;
            decoder.on_edge(edge.realtime_ns, edge.active, &mut marks);
        } else {
            decoder.poll(realtime_ns(), &mut marks);
        }
        for m in marks.drain(..) {
            if last_state != Some(m.state) {
                match m.state {
                    MarkState::Unsynchronized => info!("DCF77: phase locked, decoding the time"),
                    MarkState::Synchronized => info!("DCF77: synchronized; sending ticks"),
                    MarkState::Holdover => {
                        warn!("DCF77: pulse missing; holdover from the oscillator")
                    }
                }
                last_state = Some(m.state);
            }
            if let Some(t) = tick_for(&m) {
                let tick = tx.complete(t);
                let payload = tx.encode(&tick);
                tx.send(&tick, &payload, |tx_real_ns| tx_real_ns - m.at_ns);
            }
        }
    }
    tx.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(state: MarkState, second: Option<i64>, leap: bool) -> Mark {
        Mark {
            at_ns: 1_483_228_799_000_000_000,
            second,
            state,
            leap_second: false,
            leap_announced: leap,
        }
    }

    #[test]
    fn a_mark_becomes_a_stratum_0_dcf77_tick_once_its_second_is_known() {
        assert_eq!(
            tick_for(&mark(MarkState::Unsynchronized, None, false)),
            None
        );
        let t = tick_for(&mark(MarkState::Holdover, Some(1_483_228_799), true)).unwrap();
        assert_eq!(
            (t.source, t.stratum, t.state, t.leap, t.second),
            (
                Source::Dcf77,
                0,
                SourceState::Holdover,
                Leap::Insert,
                1_483_228_799
            )
        );
        let t = tick_for(&mark(MarkState::Synchronized, Some(1_800_000_000), false)).unwrap();
        assert_eq!((t.state, t.leap), (SourceState::Synchronized, Leap::None));
    }
}
