//! `pulse listen`: receive ticks with kernel timestamps, let the [`Receiver`] decide, and feed
//! the accepted samples to chronyd (SOCK) and/or ntpd/ntpsec/chronyd (SHM).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ntp_offset_proto::tick::SourceState;
use ntp_offset_proto::tick_receiver::{Event, Receiver, ReceiverConfig, TickSample};
use ntp_offset_sys::clock;
use tracing::{info, warn};

use super::error::PulseError;
use super::feeds::{ShmFeed, SockFeed};
use super::status::{from_stats, write_file};
use super::{reload_keys, Signals};
use crate::control::status::{ListenStatus, Status};
use crate::logging::Report;
use crate::monitor::{Endpoints, Running};
use crate::ticks::input::{bind_all, log_event, TickInput};

/// The status file is rewritten at least this often.
const STATUS_EVERY: Duration = Duration::from_secs(1);

pub struct ListenOptions {
    pub listen: Vec<SocketAddr>,
    pub join: Vec<IpAddr>,
    /// Other receivers on this host may bind the same port.
    pub share_port: bool,
    pub receiver: ReceiverConfig,
    /// Read again on SIGHUP.
    pub key_file: Option<PathBuf>,
    pub sock: Option<PathBuf>,
    pub shm: Option<(u32, Option<u32>)>,
    pub status_file: Option<PathBuf>,
    /// One JSON line per sample on stdout (for benchmarks and scripts).
    pub report: bool,
    /// The control socket and web listener.
    pub endpoints: Endpoints,
}

fn report(out: &mut Report, s: &TickSample) {
    let (sec, ns) = s.rx.real.unix_secs_nanos();
    let tx = s
        .tx_offset_ns
        .map_or_else(|| "null".to_string(), |t| t.to_string());
    out.line(format_args!(
        r#"{{"second":{},"rx":"{sec}.{ns:09}","offset_ns":{},"tx_offset_ns":{tx},"legacy":{}}}"#,
        s.second,
        s.offset().nanos(),
        s.legacy
    ));
}

/// Says, once per change, what the transmitter says of its own clock: samples of an
/// unsynchronized one go to the daemons marked unusable (leap 3), which drop them.
fn log_transmitter_state(last: &mut Option<SourceState>, now: SourceState) {
    if *last == Some(now) {
        return;
    }
    match now {
        SourceState::Unsynchronized => warn!("the transmitter says its clock is unsynchronized: its samples go out marked unusable, and the NTP daemons ignore them (start `pulse send` with --local if that host is the reference)"),
        SourceState::Holdover => warn!("the transmitter is in holdover (its source is missing)"),
        SourceState::Synchronized if last.is_some() => {
            info!("the transmitter is synchronized again")
        }
        SourceState::Synchronized => {}
    }
    *last = Some(now);
}

/// Whole seconds between this host's clock and the ticks' time + offset, or None within half a
/// second. A PPS refclock that takes the second from the local clock (chrony's `refclock PPS`
/// without `lock`, ntpd's PPS driver) locks the phase and keeps these seconds.
fn whole_seconds_off(offset_ns: i64) -> Option<i64> {
    let secs = (offset_ns as f64 / 1e9).round() as i64;
    (secs != 0).then_some(secs)
}

/// Says, once per change, whether this host's clock is whole seconds off (legacy samples carry
/// no second, so they say nothing here).
fn log_whole_seconds(last: &mut Option<Option<i64>>, s: &TickSample) {
    if s.legacy {
        return;
    }
    let now = whole_seconds_off(s.offset().nanos());
    if *last == Some(now) {
        return;
    }
    match now {
        Some(secs) => warn!(
            "this host's clock is {} s {} the ticks' time + offset: a PPS refclock that takes \
             the second from this clock (chrony's `refclock PPS` without `lock`, ntpd's PPS \
             driver) would keep it {} whole s off; number the seconds from this feed instead \
             (`refclock PPS ... lock`, docs/kernel-module.md) or set the clock",
            secs.abs(),
            if secs > 0 { "behind" } else { "ahead of" },
            secs.abs()
        ),
        None if last.is_some() => {
            info!("this host's clock is within half a second of the ticks' time + offset")
        }
        None => {}
    }
    *last = Some(now);
}

pub fn run(opts: ListenOptions, signals: &Signals) -> Result<(), PulseError> {
    let mut status_file = StatusFile::open(opts.status_file.clone())?;
    let sockets = bind_all(&opts.listen, &opts.join, opts.share_port)?;
    let (mut sock, mut shm) = feeds(&opts)?;
    let timeout = opts.receiver.timeout;
    info!(
        listen = %crate::text::join_addrs(&opts.listen),
        offset = %crate::duration::format(opts.receiver.offset),
        "waiting for ticks"
    );
    let mut input = TickInput::new(sockets, opts.receiver);
    let published = std::sync::Arc::new(std::sync::Mutex::new(Status::Listen(from_stats(
        input.receiver.stats(),
        clock::monotonic_raw_ns(),
    ))));
    let watch = Running::start(
        published.clone(),
        &opts.endpoints,
        "ntp-offset pulse listen",
        false,
    )?;
    crate::service::ready();
    let mut out = Report::new(opts.report);
    let mut events = Vec::with_capacity(16);
    let mut next_status = clock::monotonic_raw_ns();
    let mut transmitter_state = None;
    let mut seconds_off = None;
    while !signals.stopped() {
        let to_status = (next_status - clock::monotonic_raw_ns()).max(0) as u64;
        input
            .wait(
                Duration::from_nanos(to_status).min(STATUS_EVERY),
                &mut events,
            )
            .map_err(PulseError::Poll)?;
        for e in events.drain(..) {
            if let Event::Sample(s) = &e {
                log_transmitter_state(&mut transmitter_state, s.state);
                log_whole_seconds(&mut seconds_off, s);
                if let Some(f) = sock.as_mut() {
                    f.send(s);
                }
                if let Some(f) = shm.as_mut() {
                    f.send(s);
                }
                report(&mut out, s);
            }
            log_event(&e, timeout, "samples stopped until ticks return");
        }
        if signals.take_hup() {
            if let Some(keys) = reload_keys(opts.key_file.as_deref()) {
                input.receiver.set_keys(keys);
            }
        }
        let now = clock::monotonic_raw_ns();
        let st = || status(&input.receiver, transmitter_state, &sock, &shm, now);
        if let Ok(mut p) = published.lock() {
            *p = Status::Listen(st());
        }
        if signals.take_usr1() {
            info!("status: {}", st().line());
        }
        if now >= next_status {
            next_status = now + STATUS_EVERY.as_nanos() as i64;
            status_file.write(&st());
        }
    }
    let now = clock::monotonic_raw_ns();
    let st = status(&input.receiver, transmitter_state, &sock, &shm, now);
    status_file.write(&st);
    watch.stop();
    log_missing_stamps(input.missing_stamps);
    info!("stopping; status: {}", st.line());
    Ok(())
}

/// Where samples go: chronyd's SOCK refclock, the SHM segment, neither (a warning).
fn feeds(opts: &ListenOptions) -> Result<(Option<SockFeed>, Option<ShmFeed>), PulseError> {
    let sock = opts.sock.clone().map(SockFeed::new).transpose()?;
    let shm = opts
        .shm
        .map(|(unit, mode)| ShmFeed::new(unit, mode))
        .transpose()?;
    if sock.is_none() && shm.is_none() && !opts.report {
        warn!("no output configured (--sock, --shm or --report): only statistics are kept");
    }
    Ok((sock, shm))
}

fn log_missing_stamps(n: u64) {
    if n > 0 {
        warn!("{n} datagrams had no kernel timestamp (stamped in user space)");
    }
}

/// `--status-file`: the status as JSON, written every second.
struct StatusFile {
    path: Option<PathBuf>,
    failing: bool,
}

impl StatusFile {
    /// A file that cannot be written at the start is an error, not a warning every second.
    fn open(path: Option<PathBuf>) -> Result<StatusFile, PulseError> {
        if let Some(path) = &path {
            let empty = from_stats(Receiver::new(ReceiverConfig::default()).stats(), 0);
            write_file(&empty, path).map_err(|source| PulseError::StatusFile {
                path: path.display().to_string(),
                source,
            })?;
        }
        Ok(StatusFile {
            path,
            failing: false,
        })
    }

    /// A failure is said once when it starts and once when writing works again.
    fn write(&mut self, st: &ListenStatus) {
        let Some(path) = &self.path else { return };
        match write_file(st, path) {
            Err(e) if !self.failing => {
                self.failing = true;
                warn!("status file {}: {e}; retrying every second", path.display());
            }
            Ok(()) if self.failing => {
                self.failing = false;
                info!("status file {}: written again", path.display());
            }
            _ => {}
        }
    }
}

fn status(
    receiver: &Receiver,
    transmitter_state: Option<SourceState>,
    sock: &Option<SockFeed>,
    shm: &Option<ShmFeed>,
    now_mono_ns: i64,
) -> ListenStatus {
    let mut st = from_stats(receiver.stats(), now_mono_ns);
    st.transmitter_state = transmitter_state.map(|s| s.name().to_string());
    st.sock_sent = sock.as_ref().map(|f| f.sent);
    st.sock_failed = sock.as_ref().map(|f| f.failed);
    st.shm_written = shm.as_ref().map(|f| f.written);
    st
}

#[cfg(test)]
mod tests {
    use super::whole_seconds_off;

    #[test]
    fn whole_seconds_round_to_the_nearest_second() {
        assert_eq!(whole_seconds_off(0), None);
        assert_eq!(whole_seconds_off(499_999_999), None);
        assert_eq!(whole_seconds_off(-499_999_999), None);
        assert_eq!(whole_seconds_off(500_000_000), Some(1));
        assert_eq!(whole_seconds_off(-1_000_200_000), Some(-1));
        assert_eq!(whole_seconds_off(14_999_980_160), Some(15));
    }
}
