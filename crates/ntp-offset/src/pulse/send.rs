//! `pulse send`: a tick at each second mark of the system clock, to every destination, then a
//! follow-up with the kernel's timestamp of the tick's departure.
//!
//! Timing: sleep to an absolute deadline `spin` before the second (clock_nanosleep with
//! TIMER_ABSTIME, so lateness never accumulates), then spin on the clock to the second itself:
//! a wake-up from sleep is late by tens of microseconds idle and by milliseconds under load,
//! the spin by well under one. The follow-up removes whatever is left.

use std::time::Duration;

use ntp_offset_proto::tick::{Leap, SourceState, TickPacket, ERROR_UNKNOWN};
use ntp_offset_proto::time::NANOS_PER_SEC;
use ntp_offset_sys::clock;
use tracing::{info, warn};

use super::error::PulseError;
use super::Signals;
use crate::ticks::transmit::{TransmitOptions, Transmitter};

pub struct SendOptions {
    pub transmit: TransmitOptions,
    pub stratum: u8,
    /// This host's clock is the reference: synchronized whatever the kernel says.
    pub local: bool,
    pub spin: Duration,
    /// Stop after this many ticks.
    pub count: Option<u64>,
    /// Testing: run the ticks' clock this fast (parts per billion) relative to the system clock.
    pub rate_error_ppb: i64,
}

/// The clock the ticks mark: the system clock, or (for testing receivers' frequency
/// tracking) one running `rate_ppb` fast from `epoch`, where the two agree.
#[derive(Clone, Copy, Debug)]
struct TickClock {
    epoch_ns: i64,
    rate_ppb: i64,
}

impl TickClock {
    /// Tick-clock ns at a system-clock instant.
    fn at_real(&self, real_ns: i64) -> i64 {
        let d = i128::from(real_ns - self.epoch_ns);
        self.epoch_ns + (d + d * i128::from(self.rate_ppb) / 1_000_000_000) as i64
    }

    /// The system-clock instant at which the tick clock reads `tick_ns`.
    fn real_at(&self, tick_ns: i64) -> i64 {
        let d = i128::from(tick_ns - self.epoch_ns);
        self.epoch_ns + (d * 1_000_000_000 / (1_000_000_000 + i128::from(self.rate_ppb))) as i64
    }

    fn now(&self) -> i64 {
        let (s, ns) = clock::realtime();
        self.at_real(s * NANOS_PER_SEC + ns)
    }
}

/// The source state, leap warning and error bound of the system clock, from the kernel.
fn clock_state(local: bool) -> (SourceState, Leap, u32) {
    match clock::kernel_ntp_status() {
        Ok(k) if k.unsynchronized() && !local => {
            (SourceState::Unsynchronized, Leap::None, ERROR_UNKNOWN)
        }
        Ok(k) => (
            SourceState::Synchronized,
            if k.insert_leap() {
                Leap::Insert
            } else if k.delete_leap() {
                Leap::Delete
            } else {
                Leap::None
            },
            if k.unsynchronized() {
                ERROR_UNKNOWN
            } else {
                u32::try_from(k.max_error_us).unwrap_or(ERROR_UNKNOWN)
            },
        ),
        Err(_) if local => (SourceState::Synchronized, Leap::None, ERROR_UNKNOWN),
        Err(_) => (SourceState::Unsynchronized, Leap::None, ERROR_UNKNOWN),
    }
}

fn clock_name(state: Option<SourceState>) -> &'static str {
    match state {
        Some(SourceState::Synchronized) => "synchronized",
        Some(SourceState::Holdover) => "in holdover",
        Some(SourceState::Unsynchronized) => "unsynchronized",
        None => "not read yet",
    }
}

/// Time to read the clock state and sign the tick, before the spin starts.
const PREPARE: Duration = Duration::from_millis(2);

/// Sleeps until `before` ahead of the system-clock instant `at_ns`. Returns false when stopped.
fn sleep_until_before(at_ns: i64, before: Duration, signals: &Signals) -> bool {
    let before_ns = before.as_nanos().min(NANOS_PER_SEC as u128 / 2) as i64;
    let wake = at_ns - before_ns;
    loop {
        if signals.stopped() {
            return false;
        }
        match clock::sleep_until_realtime(
            wake.div_euclid(NANOS_PER_SEC),
            wake.rem_euclid(NANOS_PER_SEC),
        ) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!("clock_nanosleep: {e}");
                std::thread::sleep(Duration::from_millis(1));
                break;
            }
        }
    }
    true
}

/// Sleeps, then spins, until CLOCK_REALTIME reaches `at_ns`. Returns false when stopped.
fn wait_until(at_ns: i64, spin: Duration, signals: &Signals) -> bool {
    if !sleep_until_before(at_ns, spin, signals) {
        return false;
    }
    loop {
        let (s, ns) = clock::realtime();
        if s * NANOS_PER_SEC + ns >= at_ns {
            return true;
        }
        std::hint::spin_loop();
    }
}

/// Says, once per change, whether the ticks tell receivers to use them: ticks from an
/// unsynchronized clock are sent flagged so, and receivers' daemons ignore them.
fn log_clock_state(last: &mut Option<SourceState>, now: SourceState) {
    if *last == Some(now) {
        return;
    }
    match now {
        SourceState::Unsynchronized => warn!("the system clock is not synchronized (the kernel says STA_UNSYNC): ticks say so and receivers' NTP daemons ignore them; let chronyd or ntpd keep the clock, or give --local if this host is the reference"),
        _ if last.is_some() => info!("the system clock is synchronized again: ticks are usable"),
        _ => {}
    }
    *last = Some(now);
}

pub fn run(opts: SendOptions, signals: &Signals) -> Result<(), PulseError> {
    let mut tx = Transmitter::open(opts.transmit)?;
    crate::service::ready();
    let mut second = clock::realtime().0 + 1;
    let ticks = TickClock {
        epoch_ns: second * NANOS_PER_SEC,
        rate_ppb: opts.rate_error_ppb,
    };
    if opts.rate_error_ppb != 0 {
        warn!(
            "testing: the ticks' clock runs {:+.3} ppm from the system clock",
            opts.rate_error_ppb as f64 / 1000.0
        );
    }
    let mut last_state = None;
    while opts.count.is_none_or(|c| tx.sent_ticks < c) {
        // Everything but the send happens before the second, so the tick leaves right at it;
        // the clock's state is read after a sleep to shortly before it.
        let due = ticks.real_at(second * NANOS_PER_SEC);
        if !sleep_until_before(due, opts.spin + PREPARE, signals) {
            break;
        }
        if signals.take_hup() {
            tx.reload_key();
        }
        if signals.take_usr1() {
            info!("status: {}; clock {}", tx.status(), clock_name(last_state));
        }
        let (state, leap, error_bound_us) = clock_state(opts.local);
        log_clock_state(&mut last_state, state);
        let tick = tx.complete(TickPacket {
            state,
            leap,
            stratum: if state == SourceState::Unsynchronized {
                16
            } else {
                opts.stratum
            },
            error_bound_us,
            ..TickPacket::tick(second)
        });
        let payload = tx.encode(&tick);
        if !wait_until(due, opts.spin, signals) {
            break;
        }
        let mark = second * NANOS_PER_SEC;
        tx.send(&tick, &payload, |tx_real_ns| {
            ticks.at_real(tx_real_ns) - mark
        });
        tx.publish(clock_name(last_state));
        if !tx.sends_follow_ups() {
            let after = ticks.now() - mark;
            tx.report(format_args!(
                r#"{{"second":{second},"after_send_ns":{after}}}"#
            ));
        }
        let now = ticks.now().div_euclid(NANOS_PER_SEC);
        second = if now > second {
            // Late (the clock was stepped, or we were stopped): skip to the next whole second.
            warn!(second, now, "fell behind; skipping to the next second");
            now + 1
        } else {
            second + 1
        };
    }
    tx.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_tick_clock_reaches_each_second_early_by_its_rate() {
        let epoch = 1_800_000_000 * NANOS_PER_SEC;
        let c = TickClock {
            epoch_ns: epoch,
            rate_ppb: 100_000,
        };
        assert_eq!(c.real_at(epoch), epoch);
        // 100 ppm fast: tick second 1000 comes 100 ms early, and reads back exactly.
        let s1000 = epoch + 1000 * NANOS_PER_SEC;
        let real = c.real_at(s1000);
        assert!((s1000 - real - 99_990_000).abs() <= 1);
        assert!((c.at_real(real) - s1000).abs() <= 1);
        let slow = TickClock {
            epoch_ns: epoch,
            rate_ppb: -10_000,
        };
        assert_eq!(slow.real_at(epoch + NANOS_PER_SEC) - epoch, 1_000_010_000);
    }
}
