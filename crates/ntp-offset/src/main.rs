//! `ntp-offset`: serve deliberately shifted NTP time. See the README.
#![forbid(unsafe_code)]

use ntp_offset::serve::error::ReloadError;
use ntp_offset::serve::Server;
use ntp_offset::{args, config, control, demo, logging, monitor, pulse, query, serve};

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use tracing::{error, info, level_filters::LevelFilter, warn};

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
    /// Show a running daemon's state (serve: reference, views, sockets, drops; pulse listen
    /// and pulse send: theirs), from its control socket.
    Status(StatusArgs),
    /// List the clients `serve` has seen: address, view, how it was chosen, requests.
    Clients(ClientsArgs),
    /// For packaging: write the man pages or the shell completions into DIR.
    #[command(hide = true)]
    Generate { what: Generated, dir: PathBuf },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Generated {
    /// ntp-offset.1 and one page per subcommand (ntp-offset-pulse-send.1, ...).
    Man,
    /// bash, zsh and fish.
    Completions,
}

#[derive(clap::Args)]
struct StatusArgs {
    /// The daemon's control socket (default: the first of /run/ntp-offset/serve.sock,
    /// pulse-listen.sock and pulse-send.sock that exists).
    #[arg(long, short = 's', value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the status as JSON (the control protocol's, see docs/control.md).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ClientsArgs {
    /// serve's control socket (default: /run/ntp-offset/serve.sock).
    #[arg(long, short = 's', value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Only the clients of this view.
    #[arg(long, value_name = "NAME")]
    view: Option<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML); see examples/ and docs/configuration.md.
    #[arg(long, short = 'c', value_name = "FILE", conflicts_with_all = ["listen", "offset", "local_stratum", "no_rate_limit", "reference", "tick_listen", "share_tick_port", "key_file", "allow_unauthenticated", "holdover", "control_socket", "metrics"])]
    config: Option<PathBuf>,
    /// Validate the configuration (file or flags), print warnings, and exit.
    #[arg(long)]
    check: bool,
    /// With --check: say which view this client address gets, and why (the matching rule; for
    /// a balanced spread group, what its table in server.state_dir says). Repeatable.
    #[arg(long, value_name = "CLIENT", requires = "check")]
    explain: Vec<std::net::IpAddr>,
    #[command(flatten)]
    flags: config::ServeFlags,
}

#[derive(clap::Args)]
struct QueryArgs {
    /// Servers as HOST, HOST:PORT, IP or [IPv6]:PORT (port 123 by default).
    #[arg(required = true, value_name = "SERVER")]
    servers: Vec<String>,
    /// Requests per server (1-1000); the one with the smallest round trip is shown.
    #[arg(long, short = 'n', default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    count: u32,
    /// How long to wait for each answer.
    #[arg(long, short = 't', default_value = "2s", value_parser = args::parse_duration)]
    timeout: Duration,
    /// NTP version of the requests (2-4).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(2..=4))]
    ntp_version: u8,
    /// Print one JSON object per server and line (offset, delay, stratum, leap, refid, root
    /// delay and dispersion; times in seconds) instead of the table.
    #[arg(long)]
    json: bool,
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
        .with_writer(logging::Stderr)
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
        Command::Generate { what, dir } => match generate(what, &dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                logging::err(format_args!("error: {}: {e}", dir.display()));
                ExitCode::FAILURE
            }
        },
        Command::Status(a) => ask(
            a.socket.as_deref(),
            control::protocol::Command::Status,
            a.json,
        ),
        Command::Clients(a) => ask(
            a.socket.as_deref(),
            control::protocol::Command::Clients { view: a.view },
            a.json,
        ),
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

/// Man pages and completions come from the command line's own definition, so they cannot
/// go stale.
fn generate(what: Generated, dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    match what {
        Generated::Completions => {
            for shell in [
                clap_complete::Shell::Bash,
                clap_complete::Shell::Zsh,
                clap_complete::Shell::Fish,
            ] {
                clap_complete::generate_to(shell, &mut cmd, "ntp-offset", dir)?;
            }
            Ok(())
        }
        Generated::Man => {
            cmd.build();
            man_pages(&cmd, "ntp-offset", dir)
        }
    }
}

/// `name`.1 for `cmd`, then one page per visible subcommand (`name-sub`.1), recursively.
fn man_pages(cmd: &clap::Command, name: &str, dir: &std::path::Path) -> std::io::Result<()> {
    let page = cmd.clone().display_name(name.to_string());
    let mut out = std::fs::File::create(dir.join(format!("{name}.1")))?;
    clap_mangen::Man::new(page).render(&mut out)?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        man_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}

fn ask(socket: Option<&std::path::Path>, cmd: control::protocol::Command, json: bool) -> ExitCode {
    match control::client::run(socket, cmd, json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logging::err(format_args!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let loaded = match (&args.config, args.flags.listen.is_empty()) {
        (Some(path), _) => config::load(path),
        (None, false) => config::from_flags(&args.flags),
        (None, true) => {
            logging::err(format_args!("error: give --config FILE (try examples/try-it.toml), or --listen IP:PORT [--offset DURATION] for one view"));
            return ExitCode::from(2);
        }
    };
    let cfg = match loaded {
        Ok(cfg) => cfg,
        Err(e) => {
            logging::err(format_args!("error: {e}"));
            return ExitCode::from(2);
        }
    };
    if args.check {
        check(&args, &cfg);
        return ExitCode::SUCCESS;
    }
    for w in &cfg.warnings {
        warn!("{w}");
    }
    // Register signals before serving, so an early SIGHUP/SIGTERM is not lost or fatal.
    let mut signals = match Signals::new([SIGHUP, SIGINT, SIGTERM, SIGUSR1]) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let endpoints = cfg.endpoints.clone();
    let mut server = match serve::Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let watch = match monitor::Running::start(server.source(), &endpoints, "ntp-offset serve", true)
    {
        Ok(w) => w,
        Err(e) => {
            error!("{e}");
            server.stop();
            return ExitCode::FAILURE;
        }
    };
    server.log_serving();
    ntp_offset::service::ready();
    for signal in signals.forever() {
        match signal {
            SIGHUP => match &args.config {
                None => info!("SIGHUP: no config file to reload (started with --listen)"),
                Some(path) => match reload(&mut server, path, &endpoints) {
                    Ok(()) => info!(config = %path.display(), "reloaded"),
                    Err(e) => error!(
                        "reload failed, keeping the running configuration: {}",
                        e.in_file(path)
                    ),
                },
            },
            SIGUSR1 => log_state(&server, "stats"),
            _ => break,
        }
    }
    log_state(&server, "stopping; stats");
    watch.stop();
    server.stop();
    ExitCode::SUCCESS
}

/// `serve --check`: the warnings, the summary, and each `--explain` client's view.
fn check(args: &ServeArgs, cfg: &config::ServeConfig) {
    let name = args
        .config
        .as_ref()
        .map_or("the command line".to_string(), |p| p.display().to_string());
    for w in &cfg.warnings {
        logging::out(format_args!("warning: {w}"));
    }
    logging::out(format_args!("{name}: OK: {}", cfg.summary()));
    for client in &args.explain {
        for line in serve::explain::explain(cfg, *client) {
            logging::out(format_args!("{line}"));
        }
    }
}

/// The counters, the spread groups and the reference, logged (SIGUSR1, and on stopping).
fn log_state(server: &Server, what: &str) {
    info!("{what}: {}", server.stats());
    for g in server.groups_status() {
        info!("{g}");
    }
    if let Some(r) = server.reference_status() {
        info!("reference: {r}");
    }
}

/// SIGHUP: the config file read and checked again, then applied; its warnings logged.
fn reload(
    server: &mut Server,
    path: &std::path::Path,
    endpoints: &ntp_offset::monitor::Endpoints,
) -> Result<(), ReloadError> {
    let cfg = config::load(path)?;
    for w in &cfg.warnings {
        warn!("{w}");
    }
    if cfg.endpoints != *endpoints {
        warn!("[control] and [metrics] apply at the next start; the running ones stay");
    }
    server.reload(cfg)
}
