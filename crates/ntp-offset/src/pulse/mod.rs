//! `ntp-offset pulse`: the tick transmitter and receiver (docs/tick-protocol.md).

mod dcf77_input;
mod error;
mod feeds;
mod listen;
mod send;
mod send_dcf77;
mod send_pps;
mod status;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use ntp_offset_proto::tick::{DEFAULT_PORT, LEGACY_PORT};
use ntp_offset_proto::tick_auth::{Key, KeyRing};
use ntp_offset_proto::tick_receiver::ReceiverConfig;
use ntp_offset_proto::time::Offset;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use tracing::{error, info};

use crate::args::{
    parse_duration, parse_multicast, parse_octal, parse_offset, parse_ppm, parse_u32,
};
use crate::config::receiver::{check_listen_flags, ListenFlags};
use crate::control::status::{SendStatus, Status};
use crate::ticks::keys;
use crate::ticks::transmit;
use error::PulseError;

#[derive(Subcommand)]
pub enum PulseCommand {
    /// Send a tick at each second mark of the system clock (and its follow-up).
    Send(SendArgs),
    /// Receive ticks and feed chronyd (SOCK) or ntpd/ntpsec/chronyd (SHM) with tick time + offset.
    Listen(ListenArgs),
    /// Print a new key file line (`ID HEX`, 32 random bytes); save it with mode 600, or 640 with group ntp-offset for the packaged services.
    Keygen {
        /// Key id, 1-65535.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        id: u16,
    },
}

/// What marks the seconds for `pulse send`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SendSource {
    /// This host's clock.
    System,
    /// A DCF77 receiver module on a GPIO line (--gpio, --line) or a serial port's DCD (--serial).
    Dcf77,
    /// A PPS device's pulses (--device, e.g. a GPS receiver's), numbered by this host's
    /// clock, which must be within 0.4 s of them.
    Pps,
}

/// Which edge of a PPS device's pulse marks the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PpsEdge {
    Assert,
    Clear,
}

#[derive(Args)]
pub struct SendArgs {
    /// What marks the seconds.
    #[arg(long, value_enum, default_value_t = SendSource::System)]
    source: SendSource,
    /// With --source dcf77: the GPIO character device.
    #[arg(long, value_name = "CHIP", default_value = "/dev/gpiochip0")]
    gpio: PathBuf,
    /// With --source dcf77: the line (offset on the chip) the module's output is on.
    #[arg(long, value_name = "N")]
    line: Option<u32>,
    /// With --source dcf77: the module's output is on this serial port's DCD (carrier
    /// detect) instead of a GPIO line, e.g. /dev/ttyS0 or /dev/ttyUSB0.
    #[arg(long, value_name = "TTY", conflicts_with = "line")]
    serial: Option<PathBuf>,
    /// With --source dcf77: the module's output is low (DCD: not asserted) during the carrier
    /// reduction.
    #[arg(long)]
    active_low: bool,
    /// With --source dcf77 or pps: the receiver's delay (DCF77: the module's demodulation;
    /// PPS: the device's), subtracted from every edge.
    #[arg(long, default_value = "0s", value_parser = parse_offset)]
    calibration: Offset,
    /// With --source pps: the PPS device.
    #[arg(long, value_name = "DEVICE", default_value = "/dev/pps0")]
    device: PathBuf,
    /// With --source pps: the edge that marks the second.
    #[arg(long, value_enum, default_value_t = PpsEdge::Assert)]
    pps_edge: PpsEdge,
    /// With --source pps: how long missing pulses are sent as holdover ticks (this host's
    /// oscillator carrying the second on) before ticks say unsynchronized.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    holdover: Duration,
    /// Destination (repeatable): broadcast (198.18.0.255:8123), multicast (239.1.2.3:8123,
    /// [ff15::123]:8123) or unicast, IPv4 or IPv6.
    #[arg(long, required = true, value_name = "IP:PORT")]
    to: Vec<SocketAddr>,
    /// Key file (`ID HEX` lines, mode 600 or 640); ticks are signed with --key-id.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["unauthenticated", "legacy"])]
    key_file: Option<PathBuf>,
    /// Which key of the key file signs (default: the first).
    #[arg(long, value_name = "ID", requires = "key_file")]
    key_id: Option<u16>,
    /// Send unsigned ticks (receivers must allow them explicitly).
    #[arg(long, conflicts_with = "key_file")]
    unauthenticated: bool,
    /// Transmitter id, decimal or 0x-hex (default: derived from the host name, stable).
    #[arg(long, value_name = "ID", value_parser = parse_u32)]
    id: Option<u32>,
    /// Stratum of this host's clock, announced in the ticks.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=15))]
    stratum: u8,
    /// This host's clock is the reference (a lab, an isolated network): announce ticks as
    /// synchronized even when the kernel says the clock is not. Without it, ticks from an
    /// unsynchronized clock say so, and receivers' NTP daemons ignore them.
    #[arg(long)]
    local: bool,
    /// Do not send follow-ups with the kernel's TX timestamps.
    #[arg(long)]
    no_follow_up: bool,
    /// Send the original 4-byte `time` packets instead of ticks (to test old receivers). They
    /// carry no MAC: --unauthenticated is implied (and accepted), a key file is refused.
    #[arg(long, conflicts_with = "key_file")]
    legacy: bool,
    /// Multicast TTL / hop limit (1-255).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=255))]
    ttl: u32,
    /// Spin this long before each second instead of sleeping (precision vs. CPU).
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    spin: Duration,
    /// Stop after this many ticks.
    #[arg(long)]
    count: Option<u64>,
    /// Print each tick's departure (kernel TX time minus its second; with --source dcf77,
    /// minus its mark) as a JSON line; with --source dcf77 also each decoded mark.
    #[arg(long)]
    report: bool,
    /// Testing: let the ticks' clock run this fast (e.g. 10, -100; at most ±1000 ppm) from
    /// the system clock, to show a receiver tracking a real frequency difference.
    #[arg(long, value_name = "PPM", default_value_t = 0.0, allow_hyphen_values = true, value_parser = parse_ppm)]
    rate_error_ppm: f64,
    #[command(flatten)]
    monitor: crate::monitor::MonitorFlags,
}

#[derive(Args)]
pub struct ListenArgs {
    /// Address to receive ticks on (repeatable); broadcasts arrive on 0.0.0.0. Default:
    /// 0.0.0.0:8123, plus 0.0.0.0:8000 with --legacy.
    #[arg(long, value_name = "IP:PORT")]
    listen: Vec<SocketAddr>,
    /// Multicast group to join (repeatable), on the listen sockets of its family.
    #[arg(long, value_name = "GROUP", value_parser = parse_multicast)]
    join: Vec<IpAddr>,
    /// Let other receivers on this host bind the same tick port (they must allow it too,
    /// e.g. `serve`'s `share_port = true`). Only broadcast and multicast ticks reach every
    /// one of them; a unicast tick reaches one. Without it, a port in use is an error.
    #[arg(long)]
    share_port: bool,
    /// Key file (`ID HEX` lines, mode 600 or 640).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["allow_unauthenticated", "legacy"])]
    key_file: Option<PathBuf>,
    /// Accept unsigned ticks.
    #[arg(long)]
    allow_unauthenticated: bool,
    /// Accept the original 4-byte `time` pulses too, on any listen address. They mark a second
    /// but not which one: that comes from the local clock (SOCK gets pulse samples).
    #[arg(long)]
    legacy: bool,
    /// Follow only this transmitter id.
    #[arg(long, value_name = "ID", value_parser = parse_u32)]
    transmitter: Option<u32>,
    /// Added to the tick time: this host's shifted time (e.g. 15s, -250ms; up to ±68 years).
    #[arg(long, default_value = "0s", allow_hyphen_values = true)]
    offset: String,
    /// The ticks' travel time from the transmitter, added to the tick time (0 to 1s).
    #[arg(long, default_value = "0s")]
    delay: String,
    /// chrony SOCK refclock socket to feed (chrony.conf: `refclock SOCK PATH`).
    #[arg(long, value_name = "PATH")]
    sock: Option<PathBuf>,
    /// NTP SHM refclock unit to feed (ntpd: `refclock shm unit N`; chrony: `refclock SHM N`).
    #[arg(long, value_name = "UNIT")]
    shm: Option<u32>,
    /// Permissions of a new SHM segment, octal (default 600 for units 0-1, 666 above, as ntpd).
    #[arg(long, value_name = "MODE", value_parser = parse_octal, requires = "shm")]
    shm_mode: Option<u32>,
    /// Reject a tick arriving further than this from where the previous ticks put it
    /// (10us to 500ms).
    #[arg(long, default_value = "20ms")]
    outlier: String,
    /// No tick for this long: the source is lost and samples stop (1.1s to 1h).
    #[arg(long, default_value = "1500ms")]
    timeout: String,
    /// Write the status as JSON to this file every second.
    #[arg(long, value_name = "FILE")]
    status_file: Option<PathBuf>,
    /// Print each sample as a JSON line on stdout.
    #[arg(long)]
    report: bool,
    #[command(flatten)]
    monitor: crate::monitor::MonitorFlags,
}

/// A stable default transmitter id: a hash of the host name.
fn default_transmitter_id() -> u32 {
    use std::hash::Hasher;
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut h = siphasher::sip::SipHasher13::new();
    h.write(name.trim().as_bytes());
    h.finish() as u32
}

/// The signals a long-running `pulse` subcommand acts on, as flags its loop polls: INT and
/// TERM stop it, USR1 asks for a status line, HUP for a reload of what can be reloaded.
pub struct Signals {
    pub stop: Arc<AtomicBool>,
    pub usr1: Arc<AtomicBool>,
    pub hup: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Result<Signals, PulseError> {
        let s = Signals {
            stop: Arc::new(AtomicBool::new(false)),
            usr1: Arc::new(AtomicBool::new(false)),
            hup: Arc::new(AtomicBool::new(false)),
        };
        for (sig, flag) in [
            (SIGINT, &s.stop),
            (SIGTERM, &s.stop),
            (SIGUSR1, &s.usr1),
            (SIGHUP, &s.hup),
        ] {
            signal_hook::flag::register(sig, flag.clone()).map_err(PulseError::Signals)?;
        }
        Ok(s)
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn take_usr1(&self) -> bool {
        self.usr1.swap(false, Ordering::Relaxed)
    }

    pub fn take_hup(&self) -> bool {
        self.hup.swap(false, Ordering::Relaxed)
    }
}

/// The key file again, on SIGHUP: the new ring, or None (logged) to keep the old one.
pub fn reload_keys(path: Option<&std::path::Path>) -> Option<KeyRing> {
    let Some(path) = path else {
        info!("SIGHUP: no key file to reload; the rest is set on the command line");
        return None;
    };
    match keys::load(path) {
        Ok(ring) => {
            info!(file = %path.display(), keys = ring.len(), "SIGHUP: key file reloaded");
            Some(ring)
        }
        Err(e) => {
            error!("SIGHUP: {e}; keeping the keys in use");
            None
        }
    }
}

pub fn run(cmd: PulseCommand) -> ExitCode {
    let result = match cmd {
        PulseCommand::Send(args) => send(args),
        PulseCommand::Listen(args) => listen(args),
        PulseCommand::Keygen { id } => keys::generate(id)
            .map(|line| crate::logging::out(format_args!("{line}")))
            .map_err(PulseError::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn send(a: SendArgs) -> Result<(), PulseError> {
    let key = match &a.key_file {
        Some(path) => Some(keys::signing_key(path, a.key_id)?),
        None => None,
    };
    let signals = Signals::install()?;
    let published = Arc::new(std::sync::Mutex::new(Status::Send(SendStatus {
        source: format!("{:?}", a.source).to_lowercase(),
        clock: "not read yet".into(),
        destinations: a.to.iter().map(|d| d.to_string()).collect(),
        authenticated: key.is_some(),
        follow_ups: !a.no_follow_up && !a.legacy,
        ..SendStatus::default()
    })));
    let watch = crate::monitor::Running::start(
        published.clone(),
        &a.monitor.endpoints("pulse-send"),
        "ntp-offset pulse send",
        false,
    )?;
    let result = send_with(a, key, published, &signals);
    watch.stop();
    result
}

fn send_with(
    a: SendArgs,
    key: Option<Key>,
    published: Arc<std::sync::Mutex<Status>>,
    signals: &Signals,
) -> Result<(), PulseError> {
    let transmit = transmit::TransmitOptions {
        destinations: a.to,
        key,
        key_file: a.key_file.map(|f| (f, a.key_id)),
        transmitter: a.id.unwrap_or_else(default_transmitter_id),
        follow_up: !a.no_follow_up,
        legacy: a.legacy,
        ttl: a.ttl,
        report: a.report,
        status: Some(published),
    };
    if a.source != SendSource::System && (a.local || a.legacy || a.rate_error_ppm != 0.0) {
        return Err(PulseError::Usage(
            "--local, --legacy and --rate-error-ppm are for --source system",
        ));
    }
    if a.source == SendSource::Pps {
        return send_pps::run(
            transmit,
            send_pps::PpsOptions {
                device: a.device,
                edge: match a.pps_edge {
                    PpsEdge::Assert => ntp_offset_sys::pps::Edge::Assert,
                    PpsEdge::Clear => ntp_offset_sys::pps::Edge::Clear,
                },
                calibration: a.calibration,
                holdover: a.holdover,
                count: a.count,
            },
            signals,
        );
    }
    if a.source == SendSource::Dcf77 {
        let input = match (a.line, a.serial) {
            (Some(line), None) => dcf77_input::Dcf77Input::Gpio { chip: a.gpio, line },
            (None, Some(tty)) => dcf77_input::Dcf77Input::SerialDcd { tty },
            _ => return Err(PulseError::Usage(
                "--source dcf77 needs --line N (and --gpio CHIP if not /dev/gpiochip0), or --serial TTY",
            )),
        };
        return send_dcf77::run(
            transmit,
            send_dcf77::Dcf77Options {
                input,
                active_low: a.active_low,
                calibration: a.calibration,
                count: a.count,
            },
            signals,
        );
    }
    send::run(
        send::SendOptions {
            transmit,
            stratum: a.stratum,
            local: a.local,
            spin: a.spin,
            count: a.count,
            rate_error_ppb: (a.rate_error_ppm * 1000.0).round() as i64,
        },
        signals,
    )
}

fn listen(a: ListenArgs) -> Result<(), PulseError> {
    let times = check_listen_flags(&ListenFlags {
        offset: &a.offset,
        delay: &a.delay,
        outlier: &a.outlier,
        timeout: &a.timeout,
    })?;
    let keys = match &a.key_file {
        Some(path) => keys::load(path)?,
        None => KeyRing::default(),
    };
    let mut listen_on = a.listen;
    if listen_on.is_empty() {
        listen_on.push(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)));
        if a.legacy {
            listen_on.push(SocketAddr::from(([0, 0, 0, 0], LEGACY_PORT)));
        }
    }
    let signals = Signals::install()?;
    listen::run(
        listen::ListenOptions {
            listen: listen_on,
            join: a.join,
            share_port: a.share_port,
            receiver: ReceiverConfig {
                keys,
                allow_unauthenticated: a.allow_unauthenticated,
                allow_legacy: a.legacy,
                transmitter: a.transmitter,
                offset: times.offset,
                path_delay: times.delay,
                outlier: times.outlier,
                timeout: times.timeout,
                ..ReceiverConfig::default()
            },
            key_file: a.key_file,
            sock: a.sock,
            shm: a.shm.map(|u| (u, a.shm_mode)),
            status_file: a.status_file,
            report: a.report,
            endpoints: a.monitor.endpoints("pulse-listen"),
        },
        &signals,
    )
}
