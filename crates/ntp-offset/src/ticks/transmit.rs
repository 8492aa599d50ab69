//! Sending ticks, whatever marks the second: the sockets (one per address family), the
//! session, the signature, the kernel TX timestamp and the follow-up that carries it. Used by
//! the system-clock schedule (`send.rs`) and the DCF77 source (`send_dcf77.rs`).

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ntp_offset_proto::tick::{
    TickPacket, AUTH_LEN, FLAG_FOLLOW_UP, FLAG_LEAP_SECOND, LEGACY_PAYLOAD,
};
use ntp_offset_proto::tick_auth::{encode, Key};
use ntp_offset_proto::time::NANOS_PER_SEC;
use ntp_offset_sys::txstamp::{enable_tx_timestamps, recv_tx_timestamp};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, error, info, warn};

use super::keys;
use crate::control::status::Status;
use crate::logging::Report;

/// How long to wait for the kernel's TX timestamp of a tick.
const TX_STAMP_WAIT: Duration = Duration::from_millis(50);

/// Where and how ticks go.
pub struct TransmitOptions {
    pub destinations: Vec<SocketAddr>,
    pub key: Option<Key>,
    /// Where `key` came from, and the key id asked for: SIGHUP reads it again.
    pub key_file: Option<(PathBuf, Option<u16>)>,
    pub transmitter: u32,
    pub follow_up: bool,
    pub legacy: bool,
    pub ttl: u32,
    /// Print one JSON line per tick and destination on stdout (for benchmarks).
    pub report: bool,
    /// Where the transmitter publishes its status after each tick (control socket, metrics).
    pub status: Option<Arc<Mutex<Status>>>,
}

impl TransmitOptions {
    /// Follow-ups go out unless disabled or sending legacy pulses (which have none).
    fn sends_follow_ups(&self) -> bool {
        self.follow_up && !self.legacy
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

pub struct Transmitter {
    opts: TransmitOptions,
    senders: Vec<Sender>,
    dests: Vec<Destination>,
    pub session: u32,
    sequence: u32,
    pub sent_ticks: u64,
    pub send_errors: u64,
    wire: [u8; AUTH_LEN],
    report: Report,
}

/// Why the transmitter did not start.
#[derive(Debug, thiserror::Error)]
pub enum TransmitError {
    /// A step of the sending socket's set-up: `cannot create a UDP socket`, `SO_BROADCAST`.
    #[error("{step}: {source}")]
    Socket {
        step: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Entropy(#[from] keys::EntropyError),
}

fn step(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> TransmitError {
    let step = step.into();
    move |source| TransmitError::Socket { step, source }
}

fn open_socket(v6: bool, opts: &TransmitOptions) -> Result<UdpSocket, TransmitError> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .map_err(step("cannot create a UDP socket"))?;
    if v6 {
        s.set_multicast_hops_v6(opts.ttl)
            .map_err(step("IPV6_MULTICAST_HOPS"))?;
    } else {
        s.set_broadcast(true).map_err(step("SO_BROADCAST"))?;
        s.set_multicast_ttl_v4(opts.ttl)
            .map_err(step("IP_MULTICAST_TTL"))?;
    }
    let any: SocketAddr = if v6 {
        "[::]:0".parse().unwrap()
    } else {
        "0.0.0.0:0".parse().unwrap()
    };
    s.bind(&any.into())
        .map_err(step(format!("cannot bind {any}")))?;
    let socket: UdpSocket = s.into();
    if opts.sends_follow_ups() {
        enable_tx_timestamps(&socket)
            .map_err(step("cannot enable TX timestamps (SO_TIMESTAMPING)"))?;
    }
    Ok(socket)
}

impl Transmitter {
    /// Opens the sockets and starts a session (a random id, sequences from 0).
    pub fn open(opts: TransmitOptions) -> Result<Transmitter, TransmitError> {
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
        keys::random_bytes(&mut session_bytes)?;
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
            to = %crate::text::join_addrs(&opts.destinations),
            "sending {what}{}",
            if opts.sends_follow_ups() { " with follow-ups" } else { "" }
        );
        let report = Report::new(opts.report);
        Ok(Transmitter {
            report,
            opts,
            senders,
            dests,
            session,
            sequence: 0,
            sent_ticks: 0,
            send_errors: 0,
            wire: [0; AUTH_LEN],
        })
    }

    /// Fills in what the transmitter owns (id, session, sequence, key, follow-up flag); the
    /// source's leap-second flag stays.
    pub fn complete(&self, mut tick: TickPacket) -> TickPacket {
        tick.transmitter = self.opts.transmitter;
        tick.session = self.session;
        tick.sequence = self.sequence;
        tick.key_id = self.opts.key.as_ref().map_or(0, |k| k.id);
        tick.flags = (tick.flags & FLAG_LEAP_SECOND)
            | if self.opts.follow_up {
                FLAG_FOLLOW_UP
            } else {
                0
            };
        tick.tx_offset_ns = 0;
        tick
    }

    /// The bytes of a completed tick (built before its mark, so the send is not delayed).
    pub fn encode(&mut self, tick: &TickPacket) -> Vec<u8> {
        if self.opts.legacy {
            LEGACY_PAYLOAD.to_vec()
        } else {
            encode(tick, self.opts.key.as_ref(), &mut self.wire).to_vec()
        }
    }

    /// Sends `payload` (the encoded `tick`) to every destination, then each follow-up with
    /// `tx_offset(kernel TX time in CLOCK_REALTIME ns)`: the departure minus the mark.
    pub fn send(&mut self, tick: &TickPacket, payload: &[u8], tx_offset: impl Fn(i64) -> i64) {
        let mut sent = Vec::with_capacity(self.dests.len());
        for (i, d) in self.dests.iter().enumerate() {
            let s = &mut self.senders[d.socket];
            match s.socket.send_to(payload, d.addr) {
                Ok(_) => {
                    sent.push((i, s.sent));
                    s.sent = s.sent.wrapping_add(1);
                }
                Err(e) => {
                    self.send_errors += 1;
                    if self.send_errors.is_power_of_two() {
                        warn!(to = %d.addr, "send failed ({} so far): {e}", self.send_errors);
                    }
                }
            }
        }
        let second = tick.second;
        if self.sends_follow_ups() {
            for (i, id) in sent {
                let d = &self.dests[i];
                let socket = &self.senders[d.socket].socket;
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
                let offset = tx_offset(ts.time.0 * NANOS_PER_SEC + ts.time.1);
                if offset.abs() >= NANOS_PER_SEC {
                    warn!(second, "tick left {offset} ns from its mark; no follow-up");
                    continue;
                }
                let fu = tick.follow_up(offset, false);
                match socket.send_to(encode(&fu, self.opts.key.as_ref(), &mut self.wire), d.addr) {
                    // The follow-up is stamped too: count it, so ids stay in step (its stamp
                    // is skipped when the next tick's is read).
                    Ok(_) => {
                        let s = &mut self.senders[d.socket];
                        s.sent = s.sent.wrapping_add(1);
                    }
                    Err(e) => debug!(to = %d.addr, "follow-up: {e}"),
                }
                self.report.line(format_args!(
                    r#"{{"second":{second},"to":"{}","tx_offset_ns":{offset}}}"#,
                    d.addr
                ));
            }
        }
        self.sent_ticks += 1;
        self.sequence = self.sequence.wrapping_add(1);
    }

    /// A `--report` line (stdout; stops by itself if the reader goes away).
    pub fn report(&mut self, line: std::fmt::Arguments) {
        self.report.line(line);
    }

    /// SIGHUP: the key file again; the session and sequence go on.
    pub fn reload_key(&mut self) {
        let Some((path, id)) = &self.opts.key_file else {
            info!("SIGHUP: no key file to reload; the rest is set on the command line");
            return;
        };
        match keys::signing_key(path, *id) {
            Ok(k) => {
                info!(file = %path.display(), key = k.id, "SIGHUP: key file reloaded");
                self.opts.key = Some(k);
            }
            Err(e) => error!("SIGHUP: {e}; keeping the key in use"),
        }
    }

    /// The status line for SIGUSR1.
    pub fn status(&self) -> String {
        format!(
            "session {:#010x}, sequence {}, {} ticks sent, {} send errors",
            self.session, self.sequence, self.sent_ticks, self.send_errors
        )
    }

    /// Publishes the counts and the source clock's state (`clock`) for the monitor.
    pub fn publish(&self, clock: &str) {
        let Some(cell) = &self.opts.status else {
            return;
        };
        if let Ok(mut st) = cell.lock() {
            if let Status::Send(s) = &mut *st {
                s.clock = clock.to_string();
                s.transmitter = format!("{:#010x}", self.opts.transmitter);
                s.session = format!("{:#010x}", self.session);
                s.sequence = u64::from(self.sequence);
                s.ticks_sent = self.sent_ticks;
                s.send_errors = self.send_errors;
            }
        }
    }

    pub fn sends_follow_ups(&self) -> bool {
        self.opts.sends_follow_ups()
    }

    /// Logs what was sent, when a transmitter stops.
    pub fn finish(&self) {
        info!(
            ticks = self.sent_ticks,
            send_errors = self.send_errors,
            "stopped"
        );
    }
}
