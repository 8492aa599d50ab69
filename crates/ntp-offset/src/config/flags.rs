//! `serve` without a config file: its flags become the raw structures a file would give
//! (one view, `cli`, answering every request), so they pass the same checks with the same
//! limits, and errors name the flag.

use std::path::PathBuf;

use super::raw::{
    flag, RawControl, RawFile, RawMetrics, RawRateLimit, RawReference, RawServer, RawView,
};

/// Where `serve` takes its time from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReferenceSource {
    /// The host clock, as the kernel keeps it.
    System,
    /// A clock disciplined by received ticks (`pulse send`); the host clock is left alone.
    Pulse,
}

#[derive(clap::Args, Debug, Default)]
pub struct ServeFlags {
    /// Without a config file: address to answer on (repeatable), e.g. 127.0.0.1:11123.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Vec<String>,
    /// Without a config file: the one view's offset, e.g. 15s, -250ms, +3650d.
    #[arg(
        long,
        value_name = "DURATION",
        allow_hyphen_values = true,
        requires = "listen"
    )]
    pub offset: Option<String>,
    /// Without a config file: this host is the reference; answer as synchronized at this stratum.
    #[arg(long, value_name = "STRATUM", requires = "listen")]
    pub local_stratum: Option<i64>,
    /// Without a config file: do not rate-limit clients.
    #[arg(long, requires = "listen")]
    pub no_rate_limit: bool,
    /// Without a config file: where time comes from.
    #[arg(long, value_name = "SOURCE", requires = "listen")]
    pub reference: Option<ReferenceSource>,
    /// With --reference pulse: address to receive ticks on (repeatable; default 0.0.0.0:8123).
    #[arg(long, value_name = "IP:PORT")]
    pub tick_listen: Vec<String>,
    /// With --reference pulse: let other receivers on this host bind the tick port too (they
    /// must allow it as well; only broadcast and multicast ticks reach every one).
    #[arg(long)]
    pub share_tick_port: bool,
    /// With --reference pulse: the tick key file (`ID HEX` lines, mode 600 or 640).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// With --reference pulse: accept unsigned ticks.
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// With --reference pulse: without ticks for this long, answers say unsynchronized.
    #[arg(long, value_name = "DURATION")]
    pub holdover: Option<String>,
    /// Without a config file: the control socket for `ntp-offset status` and `clients`, or
    /// `none` (default: /run/ntp-offset/serve.sock, or in $RUNTIME_DIRECTORY).
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<String>,
    /// Without a config file: serve /metrics (Prometheus) and the status page on IP:PORT.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics: Option<String>,
    /// Without a config file: worker threads per address, a number or `auto` (one per CPU).
    #[arg(long, value_name = "N|auto", requires = "listen")]
    pub workers: Option<String>,
    /// Without a config file: answer every client in basic mode (no interleaved mode).
    #[arg(long, requires = "listen")]
    pub no_interleaved: bool,
}

/// How the checks' field names read as flags.
pub(super) const FLAG_NAMES: &[(&str, &str)] = &[
    ("server.listen", "--listen"),
    ("view `cli`.offset", "--offset"),
    ("server.local_stratum", "--local-stratum"),
    ("reference", "--reference"),
    ("reference.listen", "--tick-listen"),
    ("reference.key_file", "--key-file"),
    ("reference.holdover", "--holdover"),
    ("control.socket", "--control-socket"),
    ("metrics.listen", "--metrics"),
    ("server.workers", "--workers"),
];

impl ServeFlags {
    /// `[reference]` as the flags give it (`--reference`, the tick flags).
    fn raw_reference(&self, source: &str) -> RawReference {
        RawReference {
            source: flag(source.to_string()),
            listen: (!self.tick_listen.is_empty())
                .then(|| self.tick_listen.iter().cloned().map(flag).collect()),
            join: Vec::new(),
            share_port: self.share_tick_port.then_some(true),
            key_file: self
                .key_file
                .as_ref()
                .map(|p| flag(p.display().to_string())),
            allow_unauthenticated: self.allow_unauthenticated.then_some(true),
            transmitter: None,
            delay: None,
            outlier: None,
            holdover: self.holdover.clone().map(flag),
            step_threshold: None,
        }
    }

    pub(super) fn to_raw(&self) -> RawFile {
        let pulse_flags = !self.tick_listen.is_empty()
            || self.share_tick_port
            || self.key_file.is_some()
            || self.allow_unauthenticated
            || self.holdover.is_some();
        let source = match self.reference {
            Some(ReferenceSource::Pulse) => Some("pulse"),
            Some(ReferenceSource::System) => Some("system"),
            // Tick flags without --reference: the check says they need pulse.
            None if pulse_flags => Some("system"),
            None => None,
        };
        let strings = |v: &[String]| v.iter().cloned().map(flag).collect::<Vec<_>>();
        RawFile {
            nts: None,
            cluster: None,
            server: flag(RawServer {
                listen: flag(strings(&self.listen)),
                unmatched: None,
                default_view: Some(flag("cli".to_string())),
                local_stratum: self.local_stratum.map(flag),
                stratum: None,
                reference_id: None,
                leap: None,
                leap_smear_window: None,
                state_dir: None,
                workers: self.workers.clone().map(|w| {
                    flag(match w.parse::<i64>() {
                        Ok(n) => super::raw::RawWorkers::Count(n),
                        Err(_) => super::raw::RawWorkers::Word(w),
                    })
                }),
                interleaved: self.no_interleaved.then_some(false),
            }),
            reference: source.map(|source| flag(self.raw_reference(source))),
            rate_limit: self.no_rate_limit.then(|| {
                flag(RawRateLimit {
                    enabled: Some(false),
                    ..RawRateLimit::default()
                })
            }),
            view: vec![flag(RawView {
                name: flag("cli".to_string()),
                offset: flag(self.offset.clone().unwrap_or_else(|| "0s".into())),
                weight: None,
                listen: Vec::new(),
                clients: Vec::new(),
                auth: None,
            })],
            spread: Vec::new(),
            vm: Vec::new(),
            control: self.control_socket.clone().map(|s| {
                flag(RawControl {
                    socket: Some(flag(s)),
                })
            }),
            metrics: self
                .metrics
                .clone()
                .map(|m| flag(RawMetrics { listen: flag(m) })),
            // Symmetric keys only from a config file ([keys]).
            keys: None,
        }
    }
}
