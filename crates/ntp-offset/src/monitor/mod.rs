//! Watching a running daemon from outside: the control socket (`ntp-offset status`,
//! `clients`), Prometheus metrics and the status page. All read one [`Source`] (the daemon's
//! status, built on demand from its counters) through a [`Monitor`], which also keeps the last
//! hour of it ([`history`]) and the host's CPU load by second of the minute ([`cpu`]). Every
//! thread here is apart from the NTP path: a slow reader slows only itself.

pub mod control_socket;
pub mod cpu;
pub mod history;
pub mod http;
pub mod metrics;
pub mod page;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ntp_offset_proto::responder::DropReason;
use tracing::warn;

pub use crate::control::path::{ControlPath, SYSTEM_DIR};
use crate::control::protocol::{Command, Reply};
use crate::control::status::{ClientEntry, Status};
use cpu::MinuteProfile;
use history::History;

/// Why `clients` has no list to give; the control socket sends the message as its error reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    #[error("only `ntp-offset serve` keeps a client log")]
    NoClientLog,
    #[error("no view `{view}` (views: {})", .views.join(", "))]
    NoView { view: String, views: Vec<String> },
}

/// What a daemon shows of itself.
pub trait Source: Send + Sync {
    fn status(&self) -> Status;
    fn clients(&self, _view: Option<&str>) -> Result<Vec<ClientEntry>, ClientsError> {
        Err(ClientsError::NoClientLog)
    }
}

/// `pulse listen` and `pulse send` publish their status into one of these after each event.
impl Source for Mutex<Status> {
    fn status(&self) -> Status {
        self.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How often /proc/stat is read for the minute profile.
const CPU_EVERY: Duration = Duration::from_millis(200);

pub struct Monitor {
    source: Arc<dyn Source>,
    history: Mutex<History>,
    cpu: Mutex<MinuteProfile>,
    started: Instant,
}

impl Monitor {
    pub fn new(source: Arc<dyn Source>) -> Arc<Monitor> {
        Arc::new(Monitor {
            source,
            history: Mutex::new(History::default()),
            cpu: Mutex::new(MinuteProfile::default()),
            started: Instant::now(),
        })
    }

    /// The source's status, with the rates only the history knows.
    pub fn status(&self) -> Status {
        let mut st = self.source.status();
        if let Status::Serve(s) = &mut st {
            s.uptime_s = self.started.elapsed().as_secs_f64();
            let h = self.history();
            for v in &mut s.views {
                let key = format!("requests/{}", v.name);
                v.requests_per_s_1m = h.rate(&key, 60);
                v.requests_per_s_5m = h.rate(&key, 300);
            }
        }
        st
    }

    pub fn reply(&self, command: &Command) -> Reply {
        match command {
            Command::Status => Reply::Status(Box::new(self.status())),
            Command::Clients { view } => match self.source.clients(view.as_deref()) {
                Ok(c) => Reply::Clients(c),
                Err(e) => Reply::Error(e.to_string()),
            },
        }
    }

    pub fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The clients that are VMs the host measures, for the page: those with the largest
    /// part of the host's busiest second first.
    pub fn vms(&self) -> Vec<ClientEntry> {
        let mut vms: Vec<ClientEntry> = self
            .source
            .clients(None)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.vm.is_some())
            .collect();
        let key = |c: &ClientEntry| {
            c.vm.as_ref()
                .map_or((0.0, 0.0), |v| (v.share_of_host_peak, v.peak_cores))
        };
        vms.sort_by(|a, b| {
            key(b)
                .partial_cmp(&key(a))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        vms
    }

    pub fn cpu(&self) -> MutexGuard<'_, MinuteProfile> {
        self.cpu.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one second of the status into the history.
    fn record(&self, t: u64) {
        let st = self.source.status();
        let mut h = self.history();
        let mut gauge = |k: &str, v: Option<f64>| {
            if let Some(v) = v {
                h.push(k, t, v)
            }
        };
        match &st {
            Status::Serve(s) => {
                for v in &s.views {
                    gauge(
                        &format!("requests/{}", v.name),
                        Some(v.counts.requests as f64),
                    );
                    gauge(
                        &format!("clients/{}", v.name),
                        Some(v.clients_last_hour as f64),
                    );
                }
                for r in DropReason::ALL {
                    let n = s.totals.dropped(r) as f64;
                    gauge(&format!("dropped/{}", r.name()), Some(n));
                }
                let r = &s.reference;
                gauge("reference/offset", r.offset_s);
                gauge("reference/error", r.max_error_s);
                gauge("reference/jitter", r.jitter_s);
                gauge("ticks/received", r.ticks.map(|n| n as f64));
                gauge("ticks/missed", r.missed.map(|n| n as f64));
                let rejected = r.rejected.values().sum::<u64>() as f64;
                gauge("ticks/rejected", r.ticks.map(|_| rejected));
            }
            Status::Listen(l) => {
                gauge("reference/offset", l.offset_ns.map(|n| n as f64 / 1e9));
                gauge("reference/jitter", l.jitter_ns.map(|n| n as f64 / 1e9));
                gauge("ticks/received", Some(l.counts.ticks as f64));
                gauge("ticks/missed", Some(l.counts.missed as f64));
                gauge(
                    "ticks/rejected",
                    Some(l.counts.rejected.iter().sum::<u64>() as f64),
                );
            }
            Status::Send(s) => {
                gauge("ticks/sent", Some(s.ticks_sent as f64));
                gauge("ticks/send_errors", Some(s.send_errors as f64));
            }
        }
    }
}

/// Where a daemon's control socket and web listener are, once checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub control_socket: Option<ControlPath>,
    pub metrics: Option<SocketAddr>,
}

/// `--control-socket` and `--metrics` of `pulse listen` and `pulse send`.
#[derive(clap::Args, Debug, Default)]
pub struct MonitorFlags {
    /// The control socket for `ntp-offset status`, or `none` (default:
    /// /run/ntp-offset/ROLE.sock, or in $RUNTIME_DIRECTORY).
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<String>,
    /// Serve /metrics (Prometheus) and a status page on IP:PORT, e.g. 127.0.0.1:9124.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics: Option<SocketAddr>,
}

impl MonitorFlags {
    pub fn endpoints(&self, role: &str) -> Endpoints {
        if let Some(m) = self.metrics.filter(|m| !m.ip().is_loopback()) {
            warn!(
                "--metrics {m} is not loopback: the metrics and status page have no authentication"
            );
        }
        Endpoints {
            control_socket: ControlPath::from_flag(self.control_socket.as_deref(), role),
            metrics: self.metrics,
        }
    }
}

/// The monitor's threads: the sampler, and the control socket and web listener if asked.
pub struct Running {
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
    control: Option<control_socket::ControlSocket>,
    http: Option<http::WebServer>,
    pub monitor: Arc<Monitor>,
}

/// Why the control socket, the web listener or the sampler did not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The control socket asked for by path (its message says why and what to do).
    #[error("{0}")]
    ControlSocket(String),
    #[error(transparent)]
    Web(#[from] http::WebError),
    #[error("cannot start the monitor thread: {0}")]
    Thread(std::io::Error),
}

impl Running {
    /// Binds what `endpoints` ask for (an explicit path or address that cannot be bound is an
    /// error; so is a control socket a live process holds) and starts the threads.
    ///
    /// The sampler runs only when something reads what it keeps: the web listener (plots,
    /// the CPU profile) or, with `rates`, the control socket's requests per second. Otherwise
    /// watching costs a blocked thread and nothing else (`pulse send` on a small board).
    pub fn start(
        source: Arc<dyn Source>,
        endpoints: &Endpoints,
        page_title: &str,
        rates: bool,
    ) -> Result<Running, MonitorError> {
        let monitor = Monitor::new(source);
        let control = match &endpoints.control_socket {
            None => None,
            Some(c) => {
                match control_socket::ControlSocket::start(&c.path, monitor.clone()) {
                    Ok(s) => Some(s),
                    // A path asked for: it must be this daemon's.
                    Err(
                        control_socket::BindError::InUse(e) | control_socket::BindError::Other(e),
                    ) if c.explicit => return Err(MonitorError::ControlSocket(e)),
                    // The default: never taken from another daemon (several `pulse send`, one per
                    // line, are normal), and not worth refusing to serve for.
                    Err(control_socket::BindError::InUse(_)) => {
                        warn!(socket = %c.path.display(), "the default control socket belongs to another running daemon: this one has none (give each its own --control-socket PATH)");
                        None
                    }
                    Err(control_socket::BindError::Other(e)) => {
                        warn!("{e}; running without a control socket (give --control-socket PATH, or `none`)");
                        None
                    }
                }
            }
        };
        let http = match endpoints.metrics {
            None => None,
            Some(addr) => Some(http::WebServer::start(addr, monitor.clone(), page_title)?),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let web = endpoints.metrics.is_some();
        let sampler = if web || (rates && endpoints.control_socket.is_some()) {
            let (m, stop) = (monitor.clone(), stop.clone());
            Some(
                std::thread::Builder::new()
                    .name("monitor".into())
                    .spawn(move || sample(&m, &stop, web))
                    .map_err(MonitorError::Thread)?,
            )
        } else {
            None
        };
        Ok(Running {
            stop,
            sampler,
            control,
            http,
            monitor,
        })
    }

    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.addr)
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.sampler.take() {
            let _ = t.join();
        }
        if let Some(c) = self.control.take() {
            c.stop();
        }
        if let Some(h) = self.http.take() {
            h.stop();
        }
    }
}

/// Records the status once a second and, with `cpu` (for the page), reads /proc/stat every
/// [`CPU_EVERY`], until stopped.
fn sample(m: &Monitor, stop: &AtomicBool, cpu: bool) {
    let mut last_second = 0;
    let mut cpu_failing = false;
    while !stop.load(Ordering::Relaxed) {
        let now_ms = (ntp_offset_sys::clock::realtime_ns() / 1_000_000).max(0) as u64;
        if cpu {
            match std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|t| cpu::parse_proc_stat(&t))
            {
                Some(times) => m.cpu().sample(times, now_ms),
                None if !cpu_failing => {
                    cpu_failing = true;
                    warn!("cannot read /proc/stat: the status page shows no CPU profile");
                }
                None => {}
            }
        }
        if now_ms / 1000 != last_second {
            last_second = now_ms / 1000;
            m.record(last_second);
        }
        std::thread::sleep(if cpu {
            CPU_EVERY
        } else {
            Duration::from_secs(1)
        });
    }
}
