//! Receiving ticks: the sockets, kernel receive stamps on both clocks, and the [`Receiver`]
//! that decides. Shared by `pulse listen` and `serve` with `[reference] source = "pulse"`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use ntp_offset_proto::tick_receiver::{Event, Receiver, ReceiverConfig, RxStamp};
use ntp_offset_proto::time::Time;
use ntp_offset_sys::batch::{is_retryable, RecvBatch};
use ntp_offset_sys::clock;
use tracing::{debug, info, warn};

use crate::udp::BindError;

/// Room to see that a datagram is longer than any tick (it then decodes as oversized).
const RECV_BUF: usize = 128;

/// Binds one tick socket (kernel RX timestamps, non-blocking) and joins the groups of its
/// address family. `share`: other receivers on this host may bind the same port, if they
/// allow it too (SO_REUSEADDR on each); otherwise a port in use is an error, because a
/// second receiver there would silently take the unicast ticks.
pub fn bind(addr: SocketAddr, join: &[IpAddr], share: bool) -> Result<UdpSocket, BindError> {
    let in_use = if share {
        " (a receiver there does not share it: both must allow sharing)"
    } else {
        " (another receiver, `pulse listen` or `serve` with the pulse reference, may be there; \
         to share the port on purpose, allow it on both: --share-port, share_port = true)"
    };
    crate::udp::bind_timestamped(addr, in_use, |s| {
        if share {
            s.set_reuse_address(true)
                .map_err(|e| ("set SO_REUSEADDR on".to_string(), e))?;
        }
        for group in join {
            let joined = match (group, addr.ip()) {
                (IpAddr::V4(g), IpAddr::V4(_)) => s.join_multicast_v4(g, &Ipv4Addr::UNSPECIFIED),
                (IpAddr::V6(g), IpAddr::V6(_)) => s.join_multicast_v6(g, 0),
                _ => Ok(()),
            };
            joined.map_err(|e| (format!("join {group} on"), e))?;
        }
        s.set_nonblocking(true)
            .map_err(|e| ("make non-blocking".to_string(), e))
    })
}

pub fn bind_all(
    listen: &[SocketAddr],
    join: &[IpAddr],
    share: bool,
) -> Result<Vec<UdpSocket>, BindError> {
    listen.iter().map(|&a| bind(a, join, share)).collect()
}

/// A multicast group a kept tick socket could not join on a reload.
#[derive(Debug, thiserror::Error)]
#[error("cannot join {group}: {source}")]
pub struct JoinError {
    group: IpAddr,
    source: io::Error,
}

/// Moves a bound socket's group memberships from `old` to `new` (a reload).
fn change_groups(s: &UdpSocket, old: &[IpAddr], new: &[IpAddr]) -> Result<(), JoinError> {
    let v6 = s.local_addr().is_ok_and(|a| a.is_ipv6());
    for g in old.iter().filter(|g| !new.contains(g)) {
        let _ = match g {
            IpAddr::V4(g) if !v6 => s.leave_multicast_v4(g, &Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(g) if v6 => s.leave_multicast_v6(g, 0),
            _ => Ok(()),
        };
    }
    for g in new.iter().filter(|g| !old.contains(g)) {
        match g {
            IpAddr::V4(g) if !v6 => s.join_multicast_v4(g, &Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(g) if v6 => s.join_multicast_v6(g, 0),
            _ => Ok(()),
        }
        .map_err(|source| JoinError { group: *g, source })?;
    }
    Ok(())
}

/// A reload's tick sockets: the addresses not bound yet are bound now (a failure changes
/// nothing); those that stay keep their socket, since rebinding a port this process holds
/// would need the sharing it may not allow.
pub struct Rebind {
    pub listen: Vec<SocketAddr>,
    pub fresh: Vec<UdpSocket>,
    pub old_join: Vec<IpAddr>,
    pub join: Vec<IpAddr>,
}

impl Rebind {
    pub fn prepare(
        old: &[SocketAddr],
        old_join: &[IpAddr],
        listen: &[SocketAddr],
        join: &[IpAddr],
        share: bool,
    ) -> Result<Rebind, BindError> {
        let new: Vec<SocketAddr> = listen
            .iter()
            .filter(|a| !old.contains(a))
            .copied()
            .collect();
        Ok(Rebind {
            listen: listen.to_vec(),
            fresh: bind_all(&new, join, share)?,
            old_join: old_join.to_vec(),
            join: join.to_vec(),
        })
    }
}

/// The arrival of a datagram on both clocks. The kernel stamps CLOCK_REALTIME; the raw
/// monotonic instant is derived from a reading of both taken now, which is exact unless the
/// system clock is being slewed fast (80 ppm of the few microseconds since arrival).
fn rx_stamp(kernel: Option<(i64, i64)>, missing: &mut u64) -> RxStamp {
    let ((s, ns), mono_now) = clock::realtime_and_raw();
    let now = Time::from_timespec(s, ns);
    let real = match kernel {
        Some((s, ns)) => Time::from_timespec(s, ns),
        None => {
            *missing += 1;
            now
        }
    };
    RxStamp {
        real,
        mono_ns: mono_now - now.since(real).nanos(),
    }
}

pub struct TickInput {
    sockets: Vec<UdpSocket>,
    pub receiver: Receiver,
    batch: RecvBatch,
    /// Datagrams the kernel gave no timestamp (stamped here instead).
    pub missing_stamps: u64,
    /// Where the datagram that produced the latest sample came from.
    pub last_sample_from: Option<IpAddr>,
}

impl TickInput {
    pub fn new(sockets: Vec<UdpSocket>, cfg: ReceiverConfig) -> TickInput {
        TickInput {
            sockets,
            receiver: Receiver::new(cfg),
            batch: RecvBatch::new(8, RECV_BUF),
            missing_stamps: 0,
            last_sample_from: None,
        }
    }

    /// A reload's addresses; the receiver keeps its state.
    pub fn rebind(&mut self, r: Rebind) {
        let mut kept: Vec<UdpSocket> = std::mem::take(&mut self.sockets)
            .into_iter()
            .filter(|s| s.local_addr().is_ok_and(|a| r.listen.contains(&a)))
            .collect();
        for s in &kept {
            if let Err(e) = change_groups(s, &r.old_join, &r.join) {
                warn!("reload: {e}");
            }
        }
        kept.extend(r.fresh);
        self.sockets = kept;
    }

    /// Hands the sockets over (to a new input after a reload).
    pub fn take_sockets(&mut self) -> Vec<UdpSocket> {
        std::mem::take(&mut self.sockets)
    }

    /// Waits at most `max_wait` (less if the receiver has a deadline), receives what arrived,
    /// and appends the receiver's events.
    /// An error is poll's (the sockets are unusable).
    pub fn wait(&mut self, max_wait: Duration, events: &mut Vec<Event>) -> io::Result<()> {
        let now = clock::monotonic_raw_ns();
        let until = self.receiver.next_deadline().unwrap_or(i64::MAX).max(now);
        let wait = Duration::from_nanos((until - now) as u64).min(max_wait);
        let ready = ntp_offset_sys::poll::wait_readable(&self.sockets, Some(wait))?;
        for (i, socket) in self.sockets.iter().enumerate() {
            if ready & (1 << i) == 0 {
                continue;
            }
            loop {
                let n = match self.batch.recv(socket) {
                    Ok(n) => n,
                    Err(e) if is_retryable(&e) => break,
                    Err(e) => {
                        debug!("receive: {e}");
                        break;
                    }
                };
                for j in 0..n {
                    let Some(d) = self.batch.get(j) else { continue };
                    let at = rx_stamp(d.rx_time, &mut self.missing_stamps);
                    let before = events.len();
                    self.receiver.on_datagram(d.data, at, events);
                    if events[before..]
                        .iter()
                        .any(|e| matches!(e, Event::Sample(_)))
                    {
                        self.last_sample_from = Some(d.peer.ip());
                    }
                }
                if n < self.batch.capacity() {
                    break;
                }
            }
        }
        self.receiver.poll(clock::monotonic_raw_ns(), events);
        Ok(())
    }
}

/// Logs a change of the receiver's lock state (samples themselves are the caller's);
/// `on_loss` says what losing the ticks means for this program.
pub fn log_event(e: &Event, timeout: ntp_offset_proto::time::Offset, on_loss: &str) {
    match e {
        Event::Sample(_) => {}
        Event::Locked { transmitter } => match transmitter {
            Some(t) => info!("locked to transmitter {t:#010x}"),
            None => info!("locked to legacy `time` pulses"),
        },
        Event::Restarted {
            transmitter,
            session,
        } => info!("transmitter {transmitter:#010x} restarted (session {session:#010x})"),
        Event::Lost => warn!(
            "no tick for {}; {on_loss}",
            crate::duration::format(timeout)
        ),
        Event::Rejected(r) => debug!("rejected a datagram: {}", r.name()),
    }
}
