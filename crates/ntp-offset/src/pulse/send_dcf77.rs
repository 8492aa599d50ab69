//! `pulse send --source dcf77`: ticks at the second marks of a DCF77 module on a GPIO line or
//! a serial port's DCD ([`dcf77_input`](super::dcf77_input)). Each edge is stamped on
//! CLOCK_REALTIME; the [`Decoder`] turns edges into marks with their UTC second; each mark
//! is sent at once, and its follow-up carries the kernel TX time minus the mark, so
//! receivers take the mark itself, not the send.

use std::time::Duration;

use ntp_offset_proto::dcf77::{Decoder, DecoderConfig, Mark, MarkState};
use ntp_offset_proto::tick::{Leap, Source, SourceState, TickPacket, FLAG_LEAP_SECOND};
use ntp_offset_proto::time::{Offset, NANOS_PER_SEC};
use ntp_offset_sys::clock::realtime_ns;
use tracing::{debug, info, warn};

use super::dcf77_input::{Dcf77Input, Edges};
use super::error::PulseError;
use super::Signals;
use crate::ticks::transmit::{TransmitOptions, Transmitter};

/// How long after its kernel stamp an edge may still reach us (interrupt thread, scheduling,
/// the DCD thread). Time alone decides something (a slot without a pulse, a pulse's end) only
/// this long after the fact, or a pulse in its window but read late would be taken for a
/// missing one: holdover marks and minute marks leave this much later, and their follow-ups
/// say so. A loaded emulated host lost whole minutes to this before.
const EDGE_DELIVERY_NS: i64 = 50_000_000;

pub struct Dcf77Options {
    pub input: Dcf77Input,
    /// The module's output is low (DCD: not asserted) during the carrier reduction.
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
        flags: if mark.leap_second {
            FLAG_LEAP_SECOND
        } else {
            0
        },
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

/// With --report: the decoded mark as this host's clock stamped it (the edge minus the
/// calibration), so the mark itself can be checked against the signal, not only the send.
/// `leap_second`: the mark is the inserted 23:59:60; `leap_announced`: one is due.
fn report_mark(tx: &mut Transmitter, m: &Mark, t: &TickPacket) {
    let state = match t.state {
        SourceState::Synchronized => "synchronized",
        SourceState::Holdover => "holdover",
        SourceState::Unsynchronized => "unsynchronized",
    };
    tx.report(format_args!(
        r#"{{"mark_ns":{},"second":{},"state":"{state}","leap_second":{},"leap_announced":{}}}"#,
        m.at_ns,
        t.second,
        t.is_leap_second(),
        t.leap == Leap::Insert
    ));
}

pub fn run(
    transmit: TransmitOptions,
    o: Dcf77Options,
    signals: &Signals,
) -> Result<(), PulseError> {
    let mut edges = Edges::open(&o.input, o.active_low)?;
    let mut tx = Transmitter::open(transmit)?;
    crate::service::ready();
    let mut decoder = Decoder::new(DecoderConfig {
        calibration_ns: o.calibration.nanos(),
        ..Default::default()
    });
    info!(input = %o.input, "waiting for the DCF77 signal (synchronized after 2-3 minutes)");
    let mut marks = Vec::new();
    let mut last_state = None;
    while !signals.stopped() && o.count.is_none_or(|c| tx.sent_ticks < c) {
        if signals.take_hup() {
            tx.reload_key();
        }
        if signals.take_usr1() {
            info!(
                "status: {}; DCF77 {}",
                tx.status(),
                match last_state {
                    None => "waiting for the signal",
                    Some(MarkState::Unsynchronized) => "phase locked, decoding",
                    Some(MarkState::Synchronized) => "synchronized",
                    Some(MarkState::Holdover) => "in holdover",
                }
            );
        }
        let now = realtime_ns();
        let wait = decoder.next_deadline().map_or(NANOS_PER_SEC, |d| {
            (d + EDGE_DELIVERY_NS - now).clamp(0, NANOS_PER_SEC)
        });
        match edges.next(Duration::from_nanos(wait as u64))? {
            Some(edge) => {
                // Lets a test (or a user chasing a bad frame) see each stamp against the signal.
                debug!(at_ns = edge.realtime_ns, active = edge.active, "DCF77 edge");
                decoder.on_edge(edge.realtime_ns, edge.active, &mut marks)
            }
            None => decoder.poll(realtime_ns() - EDGE_DELIVERY_NS, &mut marks),
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
                report_mark(&mut tx, &m, &t);
                let tick = tx.complete(t);
                let payload = tx.encode(&tick);
                tx.send(&tick, &payload, |tx_real_ns| tx_real_ns - m.at_ns);
                tx.publish(match m.state {
                    MarkState::Synchronized => "synchronized",
                    MarkState::Holdover => "holdover",
                    MarkState::Unsynchronized => "unsynchronized",
                });
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
        assert!(!t.is_leap_second());
    }

    #[test]
    fn the_inserted_second_is_flagged_and_repeats_the_number() {
        let m = Mark {
            leap_second: true,
            ..mark(MarkState::Synchronized, Some(1_483_228_799), true)
        };
        let t = tick_for(&m).unwrap();
        assert!(t.is_leap_second() && t.second == 1_483_228_799);
    }
}
