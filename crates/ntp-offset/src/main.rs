//! `ntp-offset`: serve deliberately shifted NTP time. See the README.
#![forbid(unsafe_code)]

mod config;
mod demo;
mod duration;
mod pulse;
mod query;
mod serve;
mod udp;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ntp_offset_proto::time::Offset;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use tracing::{error, info, level_filters::LevelFilter};

#[derive(Parser)]
#[command(
    name = "ntp-offset",
    version,
    about = "Serve NTP time shifted by exact, constant offsets: many views from one host"
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    log_level: LevelFilter,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the NTP server: answers carry the host clock plus the offset of the request's view.
    Serve(ServeArgs),
    /// Ask NTP servers for their time; print offsets from the local clock and between servers.
    Query(QueryArgs),
    /// Lock several hosts to one pulse: send ticks, or receive them and feed chrony/ntpd.
    #[command(subcommand)]
    Pulse(pulse::PulseCommand),
    /// A one-command tour: four views 15 s apart on loopback, measured; stops by itself.
    Demo,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML); see examples/ and docs/configuration.md.
    #[arg(long, short = 'c', value_name = "FILE", conflicts_with_all = ["listen", "offset", "local_stratum", "no_rate_limit", "reference"])]
    config: Option<PathBuf>,
    /// Validate the configuration file and exit.
    #[arg(long, requires = "config")]
    check: bool,
    /// Without a config file: address to answer on (repeatable), e.g. 127.0.0.1:11123.
    #[arg(long, value_name = "IP:PORT")]
    listen: Vec<SocketAddr>,
    /// Without a config file: the one view's offset, e.g. 15s, -250ms, +3650d.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true, value_parser = parse_offset, requires = "listen")]
    offset: Option<Offset>,
    /// Without a config file: this host is the reference; answer as synchronized at this stratum.
    #[arg(long, value_name = "STRATUM", value_parser = clap::value_parser!(u8).range(1..=15), requires = "listen")]
    local_stratum: Option<u8>,
    /// Without a config file: do not rate-limit clients.
    #[arg(long, requires = "listen")]
    no_rate_limit: bool,
    /// Without a config file: where time comes from. `system`: the host clock; `pulse`: a
    /// clock disciplined by received ticks (`pulse send`), leaving the host clock alone.
    #[arg(long, value_name = "SOURCE", value_parser = ["system", "pulse"], requires = "listen")]
    reference: Option<String>,
    /// With --reference pulse: address to receive ticks on (repeatable; default 0.0.0.0:8123).
    #[arg(long, value_name = "IP:PORT")]
    tick_listen: Vec<SocketAddr>,
    /// With --reference pulse: the tick key file (`ID HEX` lines, mode 600).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// With --reference pulse: accept unsigned ticks.
    #[arg(long)]
    allow_unauthenticated: bool,
    /// With --reference pulse: without ticks for this long, answers say unsynchronized.
    #[arg(long, value_name = "DURATION", value_parser = parse_offset)]
    holdover: Option<Offset>,
}

#[derive(clap::Args)]
struct QueryArgs {
    /// Servers as HOST, HOST:PORT, IP or [IPv6]:PORT (port 123 by default).
    #[arg(required = true, value_name = "SERVER")]
    servers: Vec<String>,
    /// Requests per server; the one with the smallest round trip is shown.
    #[arg(long, short = 'n', default_value_t = 4)]
    count: u32,
    /// How long to wait for each answer.
    #[arg(long, short = 't', default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    /// NTP version of the requests (2-4).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(2..=4))]
    ntp_version: u8,
    /// Print one JSON object per server and line (offset, delay, stratum, leap, refid, root
    /// delay and dispersion; times in seconds) instead of the table.
    #[arg(long)]
    json: bool,
}

fn parse_offset(s: &str) -> Result<Offset, String> {
    duration::parse(s)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let o = duration::parse(s)?;
    u64::try_from(o.nanos())
        .map(Duration::from_nanos)
        .map_err(|_| "must not be negative".into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.command {
        // The tour's output is its table; only problems should interrupt it.
        Command::Demo if cli.log_level == LevelFilter::INFO => LevelFilter::WARN,
        _ => cli.log_level,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Query(args) => {
            let opts = query::QueryOptions {
                count: args.count,
                timeout: args.timeout,
                version: args.ntp_version,
                json: args.json,
                ..Default::default()
            };
            if query::run(&args.servers, &opts) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Pulse(cmd) => pulse::run(cmd),
        Command::Demo => match demo::run() {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let cfg = match (&args.config, args.listen.is_empty()) {
        (Some(path), _) => match config::load(path) {
            Ok(cfg) => cfg,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        (None, false) => {
            let mut cfg = config::quick(
                args.listen.clone(),
                args.offset.unwrap_or(Offset::ZERO),
                args.local_stratum,
                !args.no_rate_limit,
            );
            match quick_reference(&args) {
                Ok(r) => cfg.reference = r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
            cfg
        }
        (None, true) => {
            eprintln!("error: give --config FILE (try examples/try-it.toml), or --listen IP:PORT [--offset DURATION] for one view");
            return ExitCode::from(2);
        }
    };
    if args.check {
        let path = args
            .config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let views: Vec<String> = cfg
            .views
            .views()
            .iter()
            .map(|v| format!("{} {}", v.name, duration::format(v.offset)))
            .collect();
        println!(
            "{path}: OK: {} views ({}), listening on {}",
            views.len(),
            views.join(", "),
            config::join_addrs(&cfg.listen)
        );
        return ExitCode::SUCCESS;
    }
    // Register signals before serving, so an early SIGHUP/SIGTERM is not lost or fatal.
    let mut signals = match Signals::new([SIGHUP, SIGINT, SIGTERM, SIGUSR1]) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut server = match serve::Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for signal in signals.forever() {
        match signal {
            SIGHUP => match &args.config {
                None => info!("SIGHUP: no config file to reload (started with --listen)"),
                Some(path) => match config::load(path).and_then(|cfg| {
                    server.reload(cfg).map_err(|message| config::ConfigError {
                        file: path.display().to_string(),
                        line: None,
                        field: String::new(),
                        message,
                    })
                }) {
                    Ok(()) => info!(config = %path.display(), "reloaded"),
                    Err(e) => error!("reload failed, keeping the running configuration: {e}"),
                },
            },
            SIGUSR1 => {
                info!("stats: {}", server.stats());
                if let Some(r) = server.reference_status() {
                    info!("reference: {r}");
                }
            }
            _ => break,
        }
    }
    info!("stopping; stats: {}", server.stats());
    if let Some(r) = server.reference_status() {
        info!("reference: {r}");
    }
    server.stop();
    ExitCode::SUCCESS
}

/// The `[reference]` of `serve --listen ...`, from --reference and the tick options.
fn quick_reference(args: &ServeArgs) -> Result<config::Reference, String> {
    let pulse_only = !args.tick_listen.is_empty()
        || args.key_file.is_some()
        || args.allow_unauthenticated
        || args.holdover.is_some();
    if args.reference.as_deref() != Some("pulse") {
        if pulse_only {
            return Err("--tick-listen, --key-file, --allow-unauthenticated and --holdover need --reference pulse".into());
        }
        return Ok(config::Reference::System);
    }
    if args.local_stratum.is_some() {
        return Err("--local-stratum and --reference pulse contradict each other: with pulse, the stratum is the transmitter's + 1".into());
    }
    let keys = match &args.key_file {
        Some(path) => pulse::keys::load(path)?,
        None if args.allow_unauthenticated => Default::default(),
        None => return Err("--reference pulse needs --key-file FILE (make one with `ntp-offset pulse keygen`) or --allow-unauthenticated".into()),
    };
    let mut p = config::PulseReference::new(keys, args.allow_unauthenticated);
    if !args.tick_listen.is_empty() {
        p.listen = args.tick_listen.clone();
    }
    if let Some(h) = args.holdover {
        if h < Offset::from_secs(3) {
            return Err("--holdover must be at least 3s".into());
        }
        p.model.holdover_limit_ns = h.nanos();
    }
    Ok(config::Reference::Pulse(p))
}
