//! `ntp-offset serve`: the NTP server's IO edge. One thread per listening socket runs a
//! [`worker`]; with `workers = N`, each address has N sockets in a SO_REUSEPORT group, steered
//! by the client's address so that a client always meets the same worker (and rate limiter); a reference thread ([`system_reference`] or [`pulse_reference`]) publishes the
//! [`clock`] snapshot; the configuration is swapped atomically on reload, so requests in
//! flight are never dropped.

pub mod assignments;
pub mod client_log;
pub mod clock;
pub mod error;
pub mod explain;
pub mod nts;
pub mod placement;
mod pulse_reference;
pub mod stats;
pub mod status;
mod system_reference;
pub mod tables;
mod worker;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use ntp_offset_proto::leap::LeapPolicy;
use ntp_offset_proto::nts::cookie::MasterKeys;
use ntp_offset_proto::ratelimit::RateLimitParams;
use ntp_offset_proto::responder::Unmatched;
use ntp_offset_proto::system::ClockPolicy;
use ntp_offset_proto::view::ViewTable;
use tracing::{info, warn};

use crate::config::{self, Reference, ServeConfig};
use crate::vms::watch::OffsetOf;
use crate::vms::{Vms, Watch};
use assignments::Groups;
use clock::{ReferenceClock, Timeline};
use error::{ReloadError, ServeError};
use pulse_reference::PulseReferenceTask;
use stats::{Stats, WorkerStats};
use system_reference::SystemReference;
use tables::TableWriter;

/// How long a worker blocks in receive before it checks whether to stop.
const RECV_TIMEOUT: Duration = Duration::from_millis(200);

/// The configuration as the workers use it; replaced whole on reload.
pub struct Runtime {
    pub views: ViewTable,
    /// The balanced spread groups' tables (kept across reloads).
    pub groups: Groups,
    pub state_dir: PathBuf,
    pub unmatched: Unmatched,
    pub rate_limit: Option<RateLimitParams>,
    /// Symmetric keys: requests with a MAC are answered with one.
    pub auth: ntp_offset_proto::symmetric::Auth,
    /// `views`' names by id, shared so counters and the client log need not copy them.
    pub view_names: Vec<Arc<str>>,
    /// How each of `views`' rules reads: "spread `vms` (line 40)".
    pub rule_names: Vec<String>,
}

pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    /// NTS's master keys (None while NTS is off); rotated apart from reloads.
    pub nts_keys: ArcSwapOption<MasterKeys>,
    /// The NTS-KE server's counters (kept across reloads) and its bound addresses.
    pub ke_stats: nts::ke_server::KeStats,
    pub ke_addrs: ArcSwap<Vec<SocketAddr>>,
    pub clock: Arc<ReferenceClock>,
    pub stats: Stats,
    /// The VMs on this host and their load (empty until the watcher finds some).
    pub vms: Arc<Vms>,
    /// `[cluster]`: the store the balanced groups' assignments are shared through.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

struct WorkerHandle {
    addr: SocketAddr,
    bound: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The thread that keeps the reference, by source.
enum ReferenceTask {
    System {
        system: Arc<SystemReference>,
        policies: Arc<ArcSwap<(ClockPolicy, LeapPolicy)>>,
        stop: Arc<AtomicBool>,
        thread: JoinHandle<()>,
    },
    Pulse(Box<PulseReferenceTask>),
}

impl ReferenceTask {
    fn start(clock: &Arc<ReferenceClock>, cfg: &ServeConfig) -> Result<ReferenceTask, ServeError> {
        match &cfg.reference {
            Reference::System => {
                let system = Arc::new(SystemReference::new(clock.clone(), cfg.clock, cfg.leap));
                let policies = Arc::new(ArcSwap::from_pointee((cfg.clock, cfg.leap)));
                let stop = Arc::new(AtomicBool::new(false));
                let thread = system_reference::spawn_refresher(
                    system.clone(),
                    policies.clone(),
                    stop.clone(),
                )
                .map_err(ServeError::thread("the clock thread"))?;
                Ok(ReferenceTask::System {
                    system,
                    policies,
                    stop,
                    thread,
                })
            }
            Reference::Pulse(p) => Ok(ReferenceTask::Pulse(Box::new(PulseReferenceTask::start(
                clock.clone(),
                p.clone(),
                cfg.leap,
            )?))),
        }
    }

    /// Takes a reloaded configuration; the source itself cannot change without a restart.
    fn reload(&mut self, cfg: &ServeConfig) -> Result<(), ReloadError> {
        match (self, &cfg.reference) {
            (
                ReferenceTask::System {
                    system, policies, ..
                },
                Reference::System,
            ) => {
                policies.store(Arc::new((cfg.clock, cfg.leap)));
                system.refresh(cfg.clock, cfg.leap);
                Ok(())
            }
            (ReferenceTask::Pulse(task), Reference::Pulse(p)) => Ok(task.reload(p, cfg.leap)?),
            _ => Err(ReloadError::NeedsRestart {
                setting: "[reference] source",
                change: String::new(),
                why: "change where its time comes from (a reload keeps the running clock)",
            }),
        }
    }

    fn status(&self) -> Option<String> {
        match self {
            ReferenceTask::System { .. } => None,
            ReferenceTask::Pulse(task) => Some(task.status().line()),
        }
    }

    fn stop(self) {
        match self {
            ReferenceTask::System { stop, thread, .. } => {
                stop.store(true, Ordering::Relaxed);
                let _ = thread.join();
            }
            ReferenceTask::Pulse(task) => task.stop(),
        }
    }
}

pub struct Server {
    shared: Arc<Shared>,
    workers: Vec<WorkerHandle>,
    plan: SocketPlan,
    nts: Option<nts::NtsService>,
    reference: Option<ReferenceTask>,
    tables: Option<TableWriter>,
    /// Watches the host's VMs while a balanced group places by load.
    watch: Option<Watch>,
    cluster: Option<crate::cluster::Threads>,
}

/// What the workers use of `cfg`; balanced groups keep their tables from `before`.
fn runtime_of(cfg: &ServeConfig, before: Option<&Runtime>) -> Runtime {
    let groups = Groups::for_config(
        &cfg.views,
        before.map(|r| (&r.groups, &r.views)),
        unix_seconds(),
    );
    tables::load(&groups, &cfg.views, &cfg.state_dir);
    Runtime {
        views: cfg.views.clone(),
        groups,
        state_dir: cfg.state_dir.clone(),
        unmatched: cfg.unmatched,
        rate_limit: cfg.rate_limit,
        auth: cfg.auth.clone(),
        view_names: cfg
            .views
            .views()
            .iter()
            .map(|v| v.name.as_str().into())
            .collect(),
        rule_names: cfg.rule_names.clone(),
    }
}

/// A cluster's check of a config's balanced groups: each view's offset as the store (or the
/// saved copy) records it, or an error naming the view. Views not recorded yet are queued.
fn check_cluster(
    cluster: &crate::cluster::Cluster,
    views: &ntp_offset_proto::view::ViewTable,
) -> Result<(), ServeError> {
    for (spread, b) in assignments::balanced_groups(views) {
        let name = b.name.as_str();
        let configured: Vec<(String, i64)> = spread
            .members()
            .map(|v| (views.view(v).name.clone(), views.view(v).offset.nanos()))
            .collect();
        let conflicts = cluster.conflicts(name, &configured);
        if !conflicts.is_empty() {
            return Err(ServeError::ClusterConflict {
                group: name.to_string(),
                what: crate::cluster::describe(&conflicts),
            });
        }
        cluster.record_views(name, configured);
    }
    Ok(())
}

/// Seconds since 1970 on the host's clock: when a spread group's client was seen.
pub fn unix_seconds() -> u64 {
    (ntp_offset_sys::clock::realtime_ns() / 1_000_000_000).max(0) as u64
}

/// How the sockets of one address are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketPlan {
    /// Sockets (one worker each) in a SO_REUSEPORT group.
    pub workers: usize,
    /// Report the kernel's transmit stamps of the answers that ask (interleaved mode).
    pub tx_stamps: bool,
}

impl SocketPlan {
    fn of(cfg: &ServeConfig) -> SocketPlan {
        SocketPlan {
            workers: cfg.workers,
            tx_stamps: cfg.interleaved,
        }
    }
}

fn bind_one(addr: SocketAddr, reuse_port: bool, tx_stamps: bool) -> Result<UdpSocket, ServeError> {
    let in_use = " (another NTP server, e.g. chronyd or ntpd, may be listening there)";
    let socket = crate::udp::bind_timestamped(addr, in_use, |socket| {
        // A deeper queue absorbs bursts; the kernel caps it at net.core.rmem_max.
        let _ = socket.set_recv_buffer_size(1 << 20);
        if addr.is_ipv4() {
            ntp_offset_sys::batch::set_dont_fragment(socket)
                .map_err(|e| ("set IP_MTU_DISCOVER on".to_string(), e))?;
        }
        if reuse_port {
            socket
                .set_reuse_port(true)
                .map_err(|e| ("set SO_REUSEPORT on".to_string(), e))?;
        }
        socket
            .set_read_timeout(Some(RECV_TIMEOUT))
            .map_err(|e| ("set a timeout on".to_string(), e))
    })?;
    // After binding, which turns on SO_TIMESTAMPNS: this replaces it.
    if tx_stamps {
        ntp_offset_sys::txstamp::enable_tx_stamp_reports(&socket).map_err(ServeError::socket(
            format!("cannot enable transmit timestamps (interleaved mode) on {addr}"),
        ))?;
    }
    Ok(socket)
}

/// `plan.workers` sockets on `addr`: one plain socket for one worker; else a SO_REUSEPORT
/// group whose datagrams are steered by source address (`sys::steer`), so one client always
/// reaches the same worker (and its log of transmit times), and its rate limit is not
/// multiplied by the number of workers.
pub fn bind_group(addr: SocketAddr, plan: SocketPlan) -> Result<Vec<UdpSocket>, ServeError> {
    let n = plan.workers;
    if n <= 1 {
        return Ok(vec![bind_one(addr, false, plan.tx_stamps)?]);
    }
    let first = bind_one(addr, true, plan.tx_stamps)?;
    // A port 0 becomes the kernel's choice; the others join that port.
    let at = first.local_addr().map_err(ServeError::local_addr(addr))?;
    let mut group = vec![first];
    for _ in 1..n {
        group.push(bind_one(at, true, plan.tx_stamps)?);
    }
    ntp_offset_sys::steer::steer_by_source_ip(&group[0], n as u32, addr.is_ipv6()).map_err(
        ServeError::socket(format!(
            "cannot steer {addr}'s {n} sockets by client address"
        )),
    )?;
    Ok(group)
}

impl Server {
    /// Binds every listen address and starts serving. Nothing is served unless all bind.
    pub fn start(cfg: ServeConfig) -> Result<Server, ServeError> {
        let mut sockets = Vec::new();
        for &a in &cfg.listen {
            sockets.extend(
                bind_group(a, SocketPlan::of(&cfg))?
                    .into_iter()
                    .map(|s| (a, s)),
            );
        }
        let timeline = match cfg.reference {
            Reference::System => Timeline::System,
            Reference::Pulse(_) => Timeline::Pulse(None),
        };
        let clock = ReferenceClock::new(cfg.leap, timeline);
        let (cluster, cluster_threads) = match &cfg.cluster {
            Some(c) => {
                let (cluster, threads) = crate::cluster::Cluster::start(c, &cfg.state_dir)
                    .map_err(ServeError::thread("the cluster's threads"))?;
                (Some(cluster), Some(threads))
            }
            None => (None, None),
        };
        if let Some(c) = &cluster {
            if let Err(e) = check_cluster(c, &cfg.views) {
                if let Some(t) = cluster_threads {
                    t.stop();
                }
                return Err(e);
            }
        }
        let reference = ReferenceTask::start(&clock, &cfg)?;
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime_of(&cfg, None)),
            nts_keys: ArcSwapOption::empty(),
            ke_stats: Default::default(),
            ke_addrs: Default::default(),
            clock,
            stats: Stats::default(),
            vms: Arc::new(Vms::default()),
            cluster,
        });
        let tables =
            TableWriter::start(shared.clone()).map_err(ServeError::thread("the table thread"))?;
        let nts = match &cfg.nts {
            Some(n) => Some(nts::NtsService::start(n, &shared, &cfg.state_dir)?),
            None => None,
        };
        let mut server = Server {
            shared,
            workers: Vec::new(),
            plan: SocketPlan::of(&cfg),
            nts,
            reference: Some(reference),
            tables: Some(tables),
            watch: None,
            cluster: cluster_threads,
        };
        server.shared.vms.set_configured(cfg.vms.clone());
        server.watch_vms()?;
        for (addr, socket) in sockets {
            server.spawn_worker(addr, socket)?;
        }
        for addr in &cfg.listen {
            if config::is_wildcard(addr) {
                warn!(%addr, "listening on a wildcard address: on a host with several addresses, list them one by one so answers leave from the address the client asked");
            }
        }
        Ok(server)
    }

    fn spawn_worker(&mut self, addr: SocketAddr, socket: UdpSocket) -> Result<(), ServeError> {
        let bound = socket.local_addr().map_err(ServeError::local_addr(addr))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = WorkerStats::new(bound, client_log::DEFAULT_CAPACITY);
        self.shared.stats.register(stats.clone());
        let worker = worker::Worker {
            socket,
            local: bound,
            shared: self.shared.clone(),
            stats,
            stop: stop.clone(),
            interleaved: self.plan.tx_stamps,
        };
        let thread = std::thread::Builder::new()
            .name(format!("serve {bound}"))
            .spawn(move || worker.run())
            .map_err(ServeError::thread(format!("a worker for {addr}")))?;
        self.workers.push(WorkerHandle {
            addr,
            bound,
            stop,
            thread,
        });
        Ok(())
    }

    /// Logs that the server is ready: its sockets are bound (and, from `serve`, the control
    /// socket too). Tests and scripts wait for this line.
    pub fn log_serving(&self) {
        let views = self.shared.runtime.load().views.views().len();
        let listen = crate::text::join_addrs(&self.local_addrs());
        let workers = self.plan.workers;
        match &self.nts {
            Some(n) => {
                let nts_ke = crate::text::join_addrs(n.ke_addrs());
                info!(%listen, views, workers, %nts_ke, "serving")
            }
            None => info!(%listen, views, workers, "serving"),
        }
    }

    /// The addresses actually bound (a configured port 0 becomes the kernel's choice), once
    /// each however many workers share one.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for w in &self.workers {
            if !out.contains(&w.bound) {
                out.push(w.bound);
            }
        }
        out
    }

    /// Every socket's counts, summed now.
    pub fn stats(&self) -> stats::Counts {
        self.shared.stats.totals().all
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// What the monitor (control socket, metrics, status page) reads.
    pub fn source(&self) -> Arc<status::ServeSource> {
        let pulse = match &self.reference {
            Some(ReferenceTask::Pulse(task)) => Some(task.status_cell()),
            _ => None,
        };
        Arc::new(status::ServeSource {
            shared: self.shared.clone(),
            pulse,
        })
    }

    /// The reference's state, for the status log (None for the system clock: see the kernel).
    pub fn reference_status(&self) -> Option<String> {
        self.reference.as_ref().and_then(ReferenceTask::status)
    }

    /// Applies a new configuration: sockets on addresses in both keep running (no request is
    /// dropped), new addresses are bound first, removed ones are closed last. If a new address
    /// cannot be bound, nothing changes and the error says why.
    pub fn reload(&mut self, cfg: ServeConfig) -> Result<(), ReloadError> {
        let plan = SocketPlan::of(&cfg);
        let restart = |setting, old: &dyn std::fmt::Display, new: &dyn std::fmt::Display| {
            Err(ReloadError::NeedsRestart {
                setting,
                change: format!(" ({old} to {new})"),
                why: "change it",
            })
        };
        if plan.workers != self.plan.workers {
            return restart("server.workers", &self.plan.workers, &plan.workers);
        }
        if plan.tx_stamps != self.plan.tx_stamps {
            return restart("server.interleaved", &self.plan.tx_stamps, &plan.tx_stamps);
        }
        let cluster_now = self.shared.cluster.as_ref().map(|c| c.config());
        if cluster_now != cfg.cluster.as_ref() {
            return Err(ReloadError::NeedsRestart {
                setting: "[cluster]",
                change: String::new(),
                why: "join, leave or reach the cluster differently",
            });
        }
        if let Some(c) = &self.shared.cluster {
            check_cluster(c, &cfg.views)?;
        }
        let mut fresh = Vec::new();
        for &addr in &cfg.listen {
            if !self.workers.iter().any(|w| w.addr == addr) {
                fresh.extend(bind_group(addr, plan)?.into_iter().map(|s| (addr, s)));
            }
        }
        if let Some(r) = self.reference.as_mut() {
            r.reload(&cfg)?;
        }
        match (self.nts.as_mut(), &cfg.nts) {
            (Some(n), Some(c)) => n.reload(c, &self.shared)?,
            (None, Some(c)) => {
                self.nts = Some(nts::NtsService::start(c, &self.shared, &cfg.state_dir)?);
            }
            (Some(_), None) => {
                if let Some(n) = self.nts.take() {
                    n.stop();
                }
                self.shared.nts_keys.store(None);
                self.shared.ke_addrs.store(Default::default());
            }
            (None, None) => {}
        }
        let runtime = runtime_of(&cfg, Some(&self.shared.runtime.load()));
        self.shared.runtime.store(Arc::new(runtime));
        self.shared.vms.set_configured(cfg.vms.clone());
        self.watch_vms()?;
        for (addr, socket) in fresh {
            self.spawn_worker(addr, socket)?;
        }
        let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.workers)
            .into_iter()
            .partition(|w| cfg.listen.contains(&w.addr));
        self.workers = keep;
        for w in &gone {
            self.shared.stats.retire(w.bound);
        }
        stop_workers(gone);
        Ok(())
    }

    /// Starts watching the host's VMs once a balanced group places by load (it keeps
    /// watching after a reload removes the last: the profiles stay warm).
    fn watch_vms(&mut self) -> Result<(), ServeError> {
        let by_load =
            assignments::balanced_groups(&self.shared.runtime.load().views).any(|(_, b)| b.by_load);
        if self.watch.is_some() || !by_load {
            return Ok(());
        }
        let shared = self.shared.clone();
        let offset_of: OffsetOf =
            Box::new(move |ip, now| placement::served_offset(&shared.runtime.load(), ip, now));
        let watch = Watch::start(self.shared.vms.clone(), offset_of)
            .map_err(ServeError::thread("the VM watcher"))?;
        self.watch = Some(watch);
        Ok(())
    }

    /// One line per balanced spread group: clients per view, moves, forgotten clients.
    pub fn groups_status(&self) -> Vec<String> {
        let runtime = self.shared.runtime.load();
        runtime.groups.status(&runtime.views)
    }

    /// The NTS-KE addresses actually bound (empty without `[nts]`).
    pub fn nts_ke_addrs(&self) -> Vec<SocketAddr> {
        self.nts
            .as_ref()
            .map_or(Vec::new(), |n| n.ke_addrs().to_vec())
    }

    pub fn stop(mut self) {
        if let Some(n) = self.nts.take() {
            n.stop();
        }
        stop_workers(std::mem::take(&mut self.workers));
        if let Some(w) = self.watch.take() {
            w.stop();
        }
        if let Some(t) = self.tables.take() {
            t.stop();
        }
        if let Some(c) = self.cluster.take() {
            c.stop();
        }
        if let Some(r) = self.reference.take() {
            r.stop();
        }
    }
}

fn stop_workers(workers: Vec<WorkerHandle>) {
    for w in &workers {
        w.stop.store(true, Ordering::Relaxed);
    }
    for w in workers {
        info!(addr = %w.bound, "stopped listening");
        let _ = w.thread.join();
    }
}
