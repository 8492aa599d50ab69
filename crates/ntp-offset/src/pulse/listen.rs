//! `pulse listen`: receive ticks with kernel timestamps, let the [`Receiver`] decide, and feed
//! the accepted samples to chronyd (SOCK) and/or ntpd/ntpsec/chronyd (SHM).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ntp_offset_proto::tick_receiver::{Event, Receiver, ReceiverConfig, RxStamp, TickSample};
use ntp_offset_proto::time::Time;
use ntp_offset_sys::batch::RecvBatch;
use ntp_offset_sys::clock;
use tracing::{debug, info, warn};

use super::feeds::{ShmFeed, SockFeed};
use super::status::Status;

/// Room to see that a datagram is longer than any tick (it then decodes as oversized).
const RECV_BUF: usize = 128;
/// The status file is rewritten at least this often.
const STATUS_EVERY: Duration = Duration::from_secs(1);

pub struct ListenOptions {
    pub listen: Vec<SocketAddr>,
    pub join: Vec<IpAddr>,
    pub receiver: ReceiverConfig,
    pub sock: Option<PathBuf>,
    pub shm: Option<(u32, Option<u32>)>,
    pub status_file: Option<PathBuf>,
    /// One JSON line per sample on stdout (for benchmarks and scripts).
    pub report: bool,
}

fn bind(addr: SocketAddr, join: &[IpAddr]) -> Result<UdpSocket, String> {
    crate::udp::bind_timestamped(addr, "", |s| {
        // Several receivers on one host may share a broadcast or multicast port.
        s.set_reuse_address(true)
            .map_err(|e| ("set SO_REUSEADDR on".to_string(), e))?;
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

fn report(s: &TickSample) {
    let (sec, ns) = s.rx.real.unix_secs_nanos();
    let tx = s
        .tx_offset_ns
        .map_or_else(|| "null".to_string(), |t| t.to_string());
    println!(
        r#"{{"second":{},"rx":"{sec}.{ns:09}","offset_ns":{},"tx_offset_ns":{tx},"legacy":{}}}"#,
        s.second,
        s.offset().nanos(),
        s.legacy
    );
}

pub fn run(opts: ListenOptions, stop: &AtomicBool, usr1: &AtomicBool) -> Result<(), String> {
    let sockets: Vec<UdpSocket> = opts
        .listen
        .iter()
        .map(|&a| bind(a, &opts.join))
        .collect::<Result<_, _>>()?;
    let mut sock = opts.sock.clone().map(SockFeed::new).transpose()?;
    let mut shm = opts
        .shm
        .map(|(unit, mode)| ShmFeed::new(unit, mode))
        .transpose()?;
    if sock.is_none() && shm.is_none() && !opts.report {
        warn!("no output configured (--sock, --shm or --report): only statistics are kept");
    }
    let mut receiver = Receiver::new(opts.receiver);
    info!(
        listen = %crate::config::join_addrs(&opts.listen),
        offset = %crate::duration::format(receiver.config().offset),
        "waiting for ticks"
    );
    let mut batch = RecvBatch::new(8, RECV_BUF);
    let mut events = Vec::with_capacity(16);
    let mut missing_stamps = 0u64;
    let mut next_status = clock::monotonic_raw_ns();
    while !stop.load(Ordering::Relaxed) {
        let now = clock::monotonic_raw_ns();
        let until = receiver
            .next_deadline()
            .unwrap_or(i64::MAX)
            .min(next_status)
            .max(now);
        let wait = Duration::from_nanos((until - now) as u64).min(STATUS_EVERY);
        let ready = ntp_offset_sys::poll::wait_readable(&sockets, Some(wait))
            .map_err(|e| format!("poll: {e}"))?;
        for (i, socket) in sockets.iter().enumerate() {
            if ready & (1 << i) == 0 {
                continue;
            }
            loop {
                let n = match batch.recv(socket) {
                    Ok(n) => n,
                    Err(e) if ntp_offset_sys::batch::is_retryable(&e) => break,
                    Err(e) => {
                        debug!("receive: {e}");
                        break;
                    }
                };
                for j in 0..n {
                    let Some(d) = batch.get(j) else { continue };
                    let at = rx_stamp(d.rx_time, &mut missing_stamps);
                    receiver.on_datagram(d.data, at, &mut events);
                }
                if n < batch.capacity() {
                    break;
                }
            }
        }
        let now = clock::monotonic_raw_ns();
        receiver.poll(now, &mut events);
        for e in events.drain(..) {
            match e {
                Event::Sample(s) => {
                    if let Some(f) = sock.as_mut() {
                        f.send(&s);
                    }
                    if let Some(f) = shm.as_mut() {
                        f.send(&s);
                    }
                    if opts.report {
                        report(&s);
                    }
                }
                Event::Locked { transmitter } => match transmitter {
                    Some(t) => info!("locked to transmitter {t:#010x}; feeding samples"),
                    None => info!("locked to legacy `time` pulses; feeding samples"),
                },
                Event::Restarted {
                    transmitter,
                    session,
                } => info!("transmitter {transmitter:#010x} restarted (session {session:#010x})"),
                Event::Lost => warn!(
                    "no tick for {}; samples stopped until ticks return",
                    crate::duration::format(receiver.config().timeout)
                ),
                Event::Rejected(r) => debug!("rejected a datagram: {}", r.name()),
            }
        }
        if usr1.swap(false, Ordering::Relaxed) {
            info!("status: {}", status(&receiver, &sock, &shm, now).line());
        }
        if now >= next_status {
            next_status = now + STATUS_EVERY.as_nanos() as i64;
            if let Some(path) = &opts.status_file {
                if let Err(e) = status(&receiver, &sock, &shm, now).write_file(path) {
                    warn!("status file {}: {e}", path.display());
                }
            }
        }
    }
    let now = clock::monotonic_raw_ns();
    let st = status(&receiver, &sock, &shm, now);
    if let Some(path) = &opts.status_file {
        let _ = st.write_file(path);
    }
    if missing_stamps > 0 {
        warn!("{missing_stamps} datagrams had no kernel timestamp (stamped in user space)");
    }
    info!("stopping; status: {}", st.line());
    Ok(())
}

fn status(
    receiver: &Receiver,
    sock: &Option<SockFeed>,
    shm: &Option<ShmFeed>,
    now_mono_ns: i64,
) -> Status {
    let mut st = Status::new(receiver.stats(), now_mono_ns);
    st.sock_sent = sock.as_ref().map(|f| f.sent);
    st.sock_failed = sock.as_ref().map(|f| f.failed);
    st.shm_written = shm.as_ref().map(|f| f.written);
    st
}
