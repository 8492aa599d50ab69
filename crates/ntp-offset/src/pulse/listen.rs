//! `pulse listen`: receive ticks with kernel timestamps, let the [`Receiver`] decide, and feed
//! the accepted samples to chronyd (SOCK) and/or ntpd/ntpsec/chronyd (SHM).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ntp_offset_proto::tick_receiver::{Event, Receiver, ReceiverConfig, TickSample};
use ntp_offset_sys::clock;
use tracing::{info, warn};

use super::feeds::{ShmFeed, SockFeed};
use super::input::{bind_all, log_event, TickInput};
use super::status::Status;

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
    let sockets = bind_all(&opts.listen, &opts.join)?;
    let mut sock = opts.sock.clone().map(SockFeed::new).transpose()?;
    let mut shm = opts
        .shm
        .map(|(unit, mode)| ShmFeed::new(unit, mode))
        .transpose()?;
    if sock.is_none() && shm.is_none() && !opts.report {
        warn!("no output configured (--sock, --shm or --report): only statistics are kept");
    }
    let timeout = opts.receiver.timeout;
    info!(
        listen = %crate::config::join_addrs(&opts.listen),
        offset = %crate::duration::format(opts.receiver.offset),
        "waiting for ticks"
    );
    let mut input = TickInput::new(sockets, opts.receiver);
    let mut events = Vec::with_capacity(16);
    let mut next_status = clock::monotonic_raw_ns();
    while !stop.load(Ordering::Relaxed) {
        let to_status = (next_status - clock::monotonic_raw_ns()).max(0) as u64;
        input.wait(
            Duration::from_nanos(to_status).min(STATUS_EVERY),
            &mut events,
        )?;
        for e in events.drain(..) {
            if let Event::Sample(s) = &e {
                if let Some(f) = sock.as_mut() {
                    f.send(s);
                }
                if let Some(f) = shm.as_mut() {
                    f.send(s);
                }
                if opts.report {
                    report(s);
                }
            }
            log_event(&e, timeout, "samples stopped until ticks return");
        }
        let now = clock::monotonic_raw_ns();
        if usr1.swap(false, Ordering::Relaxed) {
            info!(
                "status: {}",
                status(&input.receiver, &sock, &shm, now).line()
            );
        }
        if now >= next_status {
            next_status = now + STATUS_EVERY.as_nanos() as i64;
            if let Some(path) = &opts.status_file {
                if let Err(e) = status(&input.receiver, &sock, &shm, now).write_file(path) {
                    warn!("status file {}: {e}", path.display());
                }
            }
        }
    }
    let now = clock::monotonic_raw_ns();
    let st = status(&input.receiver, &sock, &shm, now);
    if let Some(path) = &opts.status_file {
        let _ = st.write_file(path);
    }
    if input.missing_stamps > 0 {
        warn!(
            "{} datagrams had no kernel timestamp (stamped in user space)",
            input.missing_stamps
        );
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
