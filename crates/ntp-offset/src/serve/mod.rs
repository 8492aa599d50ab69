//! `ntp-offset serve`: the NTP server's IO edge. One thread per listening socket runs a
//! [`worker`]; a clock thread refreshes the [`reference`] snapshot; the configuration is
//! swapped atomically on reload, so requests in flight are never dropped.

pub mod reference;
pub mod stats;
mod worker;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use ntp_offset_proto::leap::LeapPolicy;
use ntp_offset_proto::ratelimit::RateLimitParams;
use ntp_offset_proto::responder::Unmatched;
use ntp_offset_proto::system::ClockPolicy;
use ntp_offset_proto::view::ViewTable;
use tracing::{info, warn};

use crate::config::{self, ServeConfig};
use reference::ReferenceClock;
use stats::Stats;

/// How long a worker blocks in receive before it checks whether to stop.
const RECV_TIMEOUT: Duration = Duration::from_millis(200);

/// The configuration as the workers use it; replaced whole on reload.
pub struct Runtime {
    pub views: ViewTable,
    pub unmatched: Unmatched,
    pub rate_limit: Option<RateLimitParams>,
}

pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub clock: Arc<ReferenceClock>,
    pub stats: Stats,
}

struct WorkerHandle {
    addr: SocketAddr,
    bound: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

pub struct Server {
    shared: Arc<Shared>,
    policies: Arc<ArcSwap<(ClockPolicy, LeapPolicy)>>,
    workers: Vec<WorkerHandle>,
    clock_stop: Arc<AtomicBool>,
    clock_thread: Option<JoinHandle<()>>,
}

fn runtime_of(cfg: &ServeConfig) -> Runtime {
    Runtime {
        views: cfg.views.clone(),
        unmatched: cfg.unmatched,
        rate_limit: cfg.rate_limit,
    }
}

/// Binds one UDP socket with kernel receive timestamps.
pub fn bind(addr: SocketAddr) -> Result<UdpSocket, String> {
    let in_use = " (another NTP server, e.g. chronyd or ntpd, may be listening there)";
    crate::udp::bind_timestamped(addr, in_use, |socket| {
        // A deeper queue absorbs bursts; the kernel caps it at net.core.rmem_max.
        let _ = socket.set_recv_buffer_size(1 << 20);
        socket
            .set_read_timeout(Some(RECV_TIMEOUT))
            .map_err(|e| ("set a timeout on".to_string(), e))
    })
}

impl Server {
    /// Binds every listen address and starts serving. Nothing is served unless all bind.
    pub fn start(cfg: ServeConfig) -> Result<Server, String> {
        let sockets = cfg
            .listen
            .iter()
            .map(|&a| bind(a).map(|s| (a, s)))
            .collect::<Result<Vec<_>, _>>()?;
        let clock = ReferenceClock::new(cfg.clock, cfg.leap);
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime_of(&cfg)),
            clock: clock.clone(),
            stats: Stats::default(),
        });
        let policies = Arc::new(ArcSwap::from_pointee((cfg.clock, cfg.leap)));
        let clock_stop = Arc::new(AtomicBool::new(false));
        let clock_thread = reference::spawn_refresher(clock, policies.clone(), clock_stop.clone())
            .map_err(|e| format!("cannot start the clock thread: {e}"))?;
        let mut server = Server {
            shared,
            policies,
            workers: Vec::new(),
            clock_stop,
            clock_thread: Some(clock_thread),
        };
        for (addr, socket) in sockets {
            server.spawn_worker(addr, socket)?;
        }
        for addr in &cfg.listen {
            if config::is_wildcard(addr) {
                warn!(%addr, "listening on a wildcard address: on a host with several addresses, list them one by one so answers leave from the address the client asked");
            }
        }
        info!(listen = %config::join_addrs(&server.local_addrs()), views = cfg.views.views().len(), "serving");
        Ok(server)
    }

    fn spawn_worker(&mut self, addr: SocketAddr, socket: UdpSocket) -> Result<(), String> {
        let bound = socket.local_addr().map_err(|e| format!("{addr}: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let worker = worker::Worker {
            socket,
            local: bound,
            shared: self.shared.clone(),
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("serve {bound}"))
            .spawn(move || worker.run())
            .map_err(|e| format!("cannot start a worker for {addr}: {e}"))?;
        self.workers.push(WorkerHandle {
            addr,
            bound,
            stop,
            thread,
        });
        Ok(())
    }

    /// The addresses actually bound (a configured port 0 becomes the kernel's choice).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.bound).collect()
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Applies a new configuration: sockets on addresses in both keep running (no request is
    /// dropped), new addresses are bound first, removed ones are closed last. If a new address
    /// cannot be bound, nothing changes and the error says why.
    pub fn reload(&mut self, cfg: ServeConfig) -> Result<(), String> {
        let mut fresh = Vec::new();
        for &addr in &cfg.listen {
            if !self.workers.iter().any(|w| w.addr == addr) {
                fresh.push((addr, bind(addr)?));
            }
        }
        self.shared.runtime.store(Arc::new(runtime_of(&cfg)));
        self.policies.store(Arc::new((cfg.clock, cfg.leap)));
        self.shared.clock.refresh(cfg.clock, cfg.leap);
        for (addr, socket) in fresh {
            self.spawn_worker(addr, socket)?;
        }
        let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.workers)
            .into_iter()
            .partition(|w| cfg.listen.contains(&w.addr));
        self.workers = keep;
        stop_workers(gone);
        Ok(())
    }

    pub fn stop(mut self) {
        stop_workers(std::mem::take(&mut self.workers));
        self.clock_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.clock_thread.take() {
            let _ = t.join();
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
