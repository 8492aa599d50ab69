//! `pulse send`: a tick at each second mark of the system clock, to every destination, then a
//! follow-up with the kernel's timestamp of the tick's departure.
//!
//! Timing: sleep to an absolute deadline `spin` before the second (clock_nanosleep with
//! TIMER_ABSTIME, so lateness never accumulates), then spin on the clock to the second itself:
//! a wake-up from sleep is late by tens of microseconds idle and by milliseconds under load,
//! the spin by well under one. The follow-up removes whatever is left.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ntp_offset_proto::tick::{
    Kind, Leap, Source, SourceState, TickPacket, AUTH_LEN, ERROR_UNKNOWN, FLAG_FOLLOW_UP,
    LEGACY_PAYLOAD,
};
use ntp_offset_proto::tick_auth::{encode, Key};
use ntp_offset_sys::clock;
use ntp_offset_sys::txstamp::{enable_tx_timestamps, recv_tx_timestamp};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, info, warn};

const NANOS_PER_SEC: i64 = 1_000_000_000;
/// How long to wait for the kernel's TX timestamp of a tick.
const TX_STAMP_WAIT: Duration = Duration::from_millis(50);

pub struct SendOptions {
    pub destinations: Vec<SocketAddr>,
    pub key: Option<Key>,
    pub transmitter: u32,
    pub stratum: u8,
    /// This host's clock is the reference: synchronized whatever the kernel says.
    pub local: bool,
    pub follow_up: bool,
    pub legacy: bool,
    pub ttl: u32,
    pub spin: Duration,
    /// Stop after this many ticks.
    pub count: Option<u64>,
    /// Print one JSON line per tick and destination on stdout (for benchmarks).
    pub report: bool,
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

struct Destination {
    addr: SocketAddr,
    socket: usize,
}

struct Sender {
    socket: UdpSocket,
    /// The kernel numbers this socket's sends from 0 (SOF_TIMESTAMPING_OPT_ID).
    sent: u32,
}

fn open_socket(v6: bool, opts: &SendOptions) -> Result<UdpSocket, String> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| format!("cannot create a UDP socket: {e}"))?;
    if v6 {
        s.set_multicast_hops_v6(opts.ttl)
            .map_err(|e| format!("IPV6_MULTICAST_HOPS: {e}"))?;
    } else {
        s.set_broadcast(true)
            .map_err(|e| format!("SO_BROADCAST: {e}"))?;
        s.set_multicast_ttl_v4(opts.ttl)
            .map_err(|e| format!("IP_MULTICAST_TTL: {e}"))?;
    }
    let any: SocketAddr = if v6 {
        "[::]:0".parse().unwrap()
    } else {
        "0.0.0.0:0".parse().unwrap()
    };
    s.bind(&any.into())
        .map_err(|e| format!("cannot bind {any}: {e}"))?;
    let socket: UdpSocket = s.into();
    if opts.follow_up && !opts.legacy {
        enable_tx_timestamps(&socket)
            .map_err(|e| format!("cannot enable TX timestamps (SO_TIMESTAMPING): {e}"))?;
    }
    Ok(socket)
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

/// Time to read the clock state and sign the tick, before the spin starts.
const PREPARE: Duration = Duration::from_millis(2);

/// Sleeps until `before` ahead of the system-clock instant `at_ns`. Returns false when stopped.
fn sleep_until_before(at_ns: i64, before: Duration, stop: &AtomicBool) -> bool {
    let before_ns = before.as_nanos().min(NANOS_PER_SEC as u128 / 2) as i64;
    let wake = at_ns - before_ns;
    loop {
        if stop.load(Ordering::Relaxed) {
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
fn wait_until(at_ns: i64, spin: Duration, stop: &AtomicBool) -> bool {
    if !sleep_until_before(at_ns, spin, stop) {
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

pub fn run(opts: SendOptions, stop: &AtomicBool) -> Result<(), String> {
    let mut senders: Vec<Sender> = Vec::new();
    let mut family_socket = [None, None];
    let mut dests = Vec::new();
    for &addr in &opts.destinations {
        let fam = usize::from(addr.is_ipv6());
        let socket = match family_socket[fam] {
            Some(i) => i,
            None => {
                senders.push(Sender {
                    socket: open_socket(addr.is_ipv6(), &opts)?,
                    sent: 0,
                });
                family_socket[fam] = Some(senders.len() - 1);
                senders.len() - 1
            }
        };
        dests.push(Destination { addr, socket });
    }
    let mut session_bytes = [0u8; 4];
    super::keys::random_bytes(&mut session_bytes)?;
    let session = u32::from_be_bytes(session_bytes);
    let what = if opts.legacy {
        "legacy `time` pulses".to_string()
    } else {
        format!(
            "ticks as transmitter {:#010x}, session {session:#010x}, {}",
            opts.transmitter,
            match &opts.key {
                Some(k) => format!("key {}", k.id),
                None => "unauthenticated".into(),
            }
        )
    };
    info!(
        to = %crate::config::join_addrs(&opts.destinations),
        "sending {what}{}",
        if opts.follow_up && !opts.legacy { " with follow-ups" } else { "" }
    );

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
    let mut sequence: u32 = 0;
    let mut sent_ticks: u64 = 0;
    let mut send_errors: u64 = 0;
    let mut wire = [0u8; AUTH_LEN];
    while opts.count.is_none_or(|c| sent_ticks < c) {
        // Everything but the send happens before the second, so the tick leaves right at it;
        // the clock's state is read after a sleep to shortly before it.
        let due = ticks.real_at(second * NANOS_PER_SEC);
        if !sleep_until_before(due, opts.spin + PREPARE, stop) {
            break;
        }
        let (state, leap, error_bound_us) = clock_state(opts.local);
        let tick = TickPacket {
            kind: Kind::Tick,
            flags: if opts.follow_up { FLAG_FOLLOW_UP } else { 0 },
            state,
            leap,
            source: Source::SystemClock,
            stratum: if state == SourceState::Unsynchronized {
                16
            } else {
                opts.stratum
            },
            key_id: opts.key.as_ref().map_or(0, |k| k.id),
            transmitter: opts.transmitter,
            session,
            sequence,
            error_bound_us,
            second,
            tx_offset_ns: 0,
        };
        let payload: &[u8] = if opts.legacy {
            LEGACY_PAYLOAD
        } else {
            encode(&tick, opts.key.as_ref(), &mut wire)
        };
        if !wait_until(due, opts.spin, stop) {
            break;
        }
        let mut sent = Vec::with_capacity(dests.len());
        for d in &dests {
            let s = &mut senders[d.socket];
            match s.socket.send_to(payload, d.addr) {
                Ok(_) => {
                    sent.push((d, s.sent));
                    s.sent = s.sent.wrapping_add(1);
                }
                Err(e) => {
                    send_errors += 1;
                    if send_errors.is_power_of_two() {
                        warn!(to = %d.addr, "send failed ({send_errors} so far): {e}");
                    }
                }
            }
        }
        if opts.follow_up && !opts.legacy {
            for (d, id) in sent {
                let socket = &senders[d.socket].socket;
                let stamp = loop {
                    match recv_tx_timestamp(socket, TX_STAMP_WAIT) {
                        Ok(Some(ts)) if ts.id == id => break Some(ts),
                        Ok(Some(_)) => continue, // an older, late stamp
                        Ok(None) => break None,
                        Err(e) => {
                            debug!("TX timestamp: {e}");
                            break None;
                        }
                    }
                };
                let Some(ts) = stamp else {
                    debug!(to = %d.addr, second, "no TX timestamp; no follow-up");
                    continue;
                };
                let tx_offset =
                    ticks.at_real(ts.time.0 * NANOS_PER_SEC + ts.time.1) - second * NANOS_PER_SEC;
                if tx_offset.abs() >= NANOS_PER_SEC {
                    warn!(
                        second,
                        "tick left {tx_offset} ns from its second; no follow-up"
                    );
                    continue;
                }
                let fu = tick.follow_up(tx_offset, false);
                match socket.send_to(encode(&fu, opts.key.as_ref(), &mut wire), d.addr) {
                    // The follow-up is stamped too: count it, so ids stay in step (its stamp
                    // is skipped when the next tick's is read).
                    Ok(_) => senders[d.socket].sent = senders[d.socket].sent.wrapping_add(1),
                    Err(e) => debug!(to = %d.addr, "follow-up: {e}"),
                }
                if opts.report {
                    println!(
                        r#"{{"second":{second},"to":"{}","tx_offset_ns":{tx_offset}}}"#,
                        d.addr
                    );
                }
            }
        } else if opts.report {
            println!(
                r#"{{"second":{second},"after_send_ns":{}}}"#,
                ticks.now() - second * NANOS_PER_SEC
            );
        }
        sent_ticks += 1;
        sequence = sequence.wrapping_add(1);
        let now = ticks.now().div_euclid(NANOS_PER_SEC);
        second = if now > second {
            // Late (the clock was stepped, or we were stopped): skip to the next whole second.
            warn!(second, now, "fell behind; skipping to the next second");
            now + 1
        } else {
            second + 1
        };
    }
    info!(ticks = sent_ticks, send_errors, "stopped");
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
