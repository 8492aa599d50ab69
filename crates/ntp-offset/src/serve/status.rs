//! `serve`'s side of the monitor: its status and client list, read from the workers'
//! counters and client logs, the reference and the spread groups, on demand.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use ntp_offset_proto::nts::Aead;
use ntp_offset_proto::packet::LeapIndicator;
use ntp_offset_proto::time::Time;
use ntp_offset_proto::view::{Target, ViewTable};

use super::client_log::{self, Client};
use super::pulse_reference::PulseStatus;
use super::stats::Totals;
use super::{placement, Runtime, Shared};
use crate::control::status::{
    ClientEntry, ClientLogStatus, NtsStatus, ReferenceStatus, ServeStatus, SocketStatus,
    SpreadStatus, Status, ViewStatus,
};
use crate::monitor::{ClientsError, Source};

pub struct ServeSource {
    pub shared: Arc<Shared>,
    /// The pulse reference's state; None for the system clock (the kernel is asked).
    pub pulse: Option<Arc<Mutex<PulseStatus>>>,
}

impl ServeSource {
    /// The NTS-KE server's counters and the master key, when NTS is on.
    fn nts(&self) -> Option<NtsStatus> {
        let keys = self.shared.nts_keys.load_full()?;
        let ke = &self.shared.ke_stats;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        Some(NtsStatus {
            ke_listen: self
                .shared
                .ke_addrs
                .load()
                .iter()
                .map(|a| a.to_string())
                .collect(),
            ke_sessions: n(&ke.sessions),
            ke_sessions_by_aead: Aead::ALL
                .iter()
                .zip(&ke.sessions_by_aead)
                .map(|(a, c)| (a.name().to_string(), n(c)))
                .collect(),
            ke_refused: n(&ke.refused),
            ke_failed: n(&ke.tls_errors),
            ke_timeouts: n(&ke.timeouts),
            ke_busy: n(&ke.busy),
            ke_active: ke.active.load(Ordering::Relaxed) as u64,
            master_key_id: keys.current().id,
            master_key_age_s: unix_now().saturating_sub(keys.current().created),
            master_keys: keys.keys().len(),
        })
    }
}

fn unix_now() -> u64 {
    super::unix_seconds()
}

/// Every worker's client log merged by address (a client may ask on several sockets): the
/// latest view, the sums, and the socket it last asked on. Sized once: grown by doubling, its
/// outgrown tables stayed resident (it was built every second, for the monitor's history).
fn merged_clients(shared: &Shared) -> HashMap<IpAddr, (Client, SocketAddr)> {
    let workers = shared.stats.workers();
    let logged = workers.iter().map(|w| w.lock().clients.len()).sum();
    let mut all: HashMap<IpAddr, (Client, SocketAddr)> = HashMap::with_capacity(logged);
    for w in workers {
        let c = w.lock();
        for (ip, e) in c.clients.iter() {
            match all.get_mut(&ip) {
                None => {
                    all.insert(ip, (e.clone(), w.local));
                }
                Some((m, local)) => {
                    m.requests += e.requests;
                    m.rate_limited += e.rate_limited;
                    m.first_s = m.first_s.min(e.first_s);
                    if e.last_s > m.last_s {
                        m.last_s = e.last_s;
                        m.view = e.view.clone();
                        *local = w.local;
                    }
                }
            }
        }
    }
    all
}

/// What the status shows of the clients: per view those seen in the last hour, the ten most
/// rate-limited, and how many are logged.
struct ClientSummary {
    recent: HashMap<String, u64>,
    /// (address, client, the socket it asked on last), most rate-limited first.
    most_limited: Vec<(IpAddr, Client, SocketAddr)>,
    logged: u64,
}

impl ClientSummary {
    fn new() -> ClientSummary {
        ClientSummary {
            recent: HashMap::new(),
            most_limited: Vec::with_capacity(11),
            logged: 0,
        }
    }

    fn add(&mut self, ip: IpAddr, c: &Client, local: SocketAddr, now: u64) {
        self.logged += 1;
        if now.saturating_sub(c.last_s) < client_log::IDLE_S {
            if let Some(v) = &c.view {
                match self.recent.get_mut(&**v) {
                    Some(n) => *n += 1,
                    None => {
                        self.recent.insert(v.to_string(), 1);
                    }
                }
            }
        }
        let least = self
            .most_limited
            .last()
            .map_or(0, |(_, l, _)| l.rate_limited);
        if c.rate_limited > 0 && (self.most_limited.len() < 10 || c.rate_limited > least) {
            let at = self
                .most_limited
                .partition_point(|(_, l, _)| l.rate_limited >= c.rate_limited);
            self.most_limited.insert(at, (ip, c.clone(), local));
            self.most_limited.truncate(10);
        }
    }

    /// Every logged client once. With one socket (the default) its log is read in place,
    /// under its lock: the monitor asks every second, and a merged copy of a full log (16,384
    /// clients) took megabytes each time.
    fn of(shared: &Shared, now: u64) -> ClientSummary {
        let mut sum = ClientSummary::new();
        let workers = shared.stats.workers();
        if let [w] = workers.as_slice() {
            let c = w.lock();
            for (ip, e) in c.clients.iter() {
                sum.add(ip, e, w.local, now);
            }
        } else {
            for (ip, (c, local)) in merged_clients(shared) {
                sum.add(ip, &c, local, now);
            }
        }
        sum
    }
}

/// How a request from `client` on `local` finds its view, read from the rules now.
fn chosen_by(
    views: &ViewTable,
    rule_names: &[String],
    local: SocketAddr,
    client: IpAddr,
) -> (String, Option<String>) {
    match views.rule_for(local, client) {
        Some((i, rule)) => {
            let how = match &rule.target {
                Target::View(_)
                    if rule.clients.len() == 1 && rule.clients[0].is_single_address() =>
                {
                    "pin"
                }
                Target::View(_) => "rule",
                Target::Spread(s) if s.balanced().is_some() => "balancer",
                Target::Spread(_) => "hash",
            };
            (how.into(), rule_names.get(i).cloned())
        }
        None if views.default_view().is_some() => ("default".into(), None),
        None => ("none".into(), None),
    }
}

fn entry(ip: &IpAddr, c: &Client, how: (String, Option<String>)) -> ClientEntry {
    ClientEntry {
        address: ip.to_string(),
        view: c.view.as_deref().map(str::to_string),
        chosen_by: how.0,
        rule: how.1,
        first_seen: c.first_s,
        last_seen: c.last_s,
        requests: c.requests,
        rate_limited: c.rate_limited,
        vm: None,
        walk_left_s: None,
    }
}

fn leap_name(l: LeapIndicator) -> &'static str {
    match l {
        LeapIndicator::NoWarning => "none",
        LeapIndicator::InsertSecond => "insert",
        LeapIndicator::DeleteSecond => "delete",
        LeapIndicator::Unsynchronized => "unsynchronized",
    }
}

impl ServeSource {
    fn reference(&self) -> ReferenceStatus {
        let snap = self.shared.clock.snapshot();
        let st = &snap.state;
        let mut r = ReferenceStatus {
            stratum: if st.stratum == 0 { 16 } else { st.stratum },
            reference_id: crate::text::refid(st.stratum, st.reference_id),
            leap: leap_name(st.leap).into(),
            root_delay_s: f64::from(st.root_delay.to_bits()) / 65536.0,
            root_dispersion_s: f64::from(st.root_dispersion.to_bits()) / 65536.0,
            ..ReferenceStatus::default()
        };
        match &self.pulse {
            None => {
                r.source = "system".into();
                match ntp_offset_sys::clock::kernel_ntp_status() {
                    Ok(k) => {
                        // What answers say: with local_stratum, synchronized whatever the kernel.
                        r.state = if st.leap == LeapIndicator::Unsynchronized {
                            "unsynchronized"
                        } else if k.unsynchronized() {
                            "local"
                        } else {
                            "synchronized"
                        }
                        .into();
                        r.max_error_s = Some(k.max_error_us as f64 / 1e6);
                        r.estimated_error_s = Some(k.est_error_us as f64 / 1e6);
                    }
                    Err(_) => r.state = "unknown".into(),
                }
            }
            Some(p) => {
                let p = p.lock().unwrap_or_else(|e| e.into_inner()).clone();
                r.source = "pulse".into();
                r.state = if p.state.is_empty() {
                    "unsynchronized"
                } else {
                    p.state
                }
                .into();
                r.max_error_s = p.error_s;
                r.offset_s = p.offset_s;
                r.jitter_s = p.jitter_s;
                r.frequency_ppm = p.frequency_ppm;
                r.ticks = Some(p.ticks);
                r.missed = Some(p.missed);
                r.restarts = Some(p.restarts);
                r.rejected = p.rejected.clone();
                r.transmitter = p.transmitter.clone();
                r.transmitter_state = p.transmitter_state.map(str::to_string);
                r.seconds_since_tick = p
                    .last_sample_mono_ns
                    .map(|t| (ntp_offset_sys::clock::monotonic_raw_ns() - t) as f64 / 1e9);
            }
        }
        r
    }
}

/// Each listening socket's counts, with what each of its workers received.
fn sockets(totals: &Totals) -> Vec<SocketStatus> {
    totals
        .sockets
        .iter()
        .zip(&totals.received_by_worker)
        .map(|((addr, c), by_worker)| SocketStatus {
            address: addr.to_string(),
            received: c.received,
            answered: c.answered,
            kod: c.kod_rate + c.kod_deny,
            dropped: c.dropped_total(),
            send_errors: c.send_errors,
            received_by_worker: if by_worker.len() > 1 {
                by_worker.clone()
            } else {
                Vec::new()
            },
        })
        .collect()
}

/// The balanced spread groups, and by view name its clients assigned and active.
fn spread_groups(runtime: &Runtime) -> (Vec<SpreadStatus>, HashMap<String, (u64, u64)>) {
    let mut assigned = HashMap::new();
    let mut spread = Vec::new();
    for g in runtime.groups.iter() {
        let b = g.balancer.read().unwrap_or_else(|p| p.into_inner());
        for m in b.members() {
            let name = runtime.views.view(m.view).name.clone();
            assigned.insert(name, (b.count(m.view), b.active(m.view)));
        }
        spread.push(SpreadStatus {
            name: g.name.clone(),
            clients: b.len() as u64,
            moved: b.counters.moved,
            forgotten: b.counters.forgotten,
            hashed_while_full: g.table_full.load(Ordering::Relaxed),
        });
    }
    (spread, assigned)
}

impl Source for ServeSource {
    fn status(&self) -> Status {
        let runtime = self.shared.runtime.load();
        let totals = self.shared.stats.totals();
        let clients = ClientSummary::of(&self.shared, unix_now());
        let recent = &clients.recent;
        let (spread, assigned) = spread_groups(&runtime);
        let views = runtime
            .views
            .views()
            .iter()
            .map(|v| {
                let c = totals.views.get(&v.name).copied().unwrap_or_default();
                let a = assigned.get(&v.name);
                ViewStatus {
                    name: v.name.clone(),
                    offset_s: v.offset.nanos() as f64 / 1e9,
                    offset: crate::duration::format(v.offset),
                    counts: c,
                    requests_per_s_1m: None,
                    requests_per_s_5m: None,
                    clients_last_hour: recent.get(v.name.as_str()).copied().unwrap_or(0),
                    assigned: a.map(|a| a.0),
                    assigned_active: a.map(|a| a.1),
                }
            })
            .collect();
        let sockets = sockets(&totals);
        let most_rate_limited = clients
            .most_limited
            .iter()
            .map(|(ip, c, local)| {
                entry(
                    ip,
                    c,
                    chosen_by(&runtime.views, &runtime.rule_names, *local, *ip),
                )
            })
            .collect();
        let workers = self.shared.stats.workers();
        let not_logged = workers.iter().map(|w| w.lock().clients.not_logged).sum();
        Status::Serve(ServeStatus {
            program_version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: 0.0,
            reference: self.reference(),
            views,
            sockets,
            totals: totals.all,
            spread,
            most_rate_limited,
            client_log: ClientLogStatus {
                logged: clients.logged,
                capacity: client_log::DEFAULT_CAPACITY as u64,
                not_logged,
            },
            nts: self.nts(),
            load: placement::load_status(
                &runtime,
                &self.shared.vms,
                Time::from_unix_nanos(ntp_offset_sys::clock::realtime_ns()),
            ),
            cluster: self.shared.cluster.as_ref().map(|c| c.status()),
        })
    }

    fn clients(&self, view: Option<&str>) -> Result<Vec<ClientEntry>, ClientsError> {
        let runtime = self.shared.runtime.load();
        if let Some(v) = view {
            if !runtime.views.views().iter().any(|x| x.name == v) {
                let views = runtime.views.views().iter().map(|x| x.name.clone());
                return Err(ClientsError::NoView {
                    view: v.to_string(),
                    views: views.collect(),
                });
            }
        }
        let mut list: Vec<ClientEntry> = merged_clients(&self.shared)
            .iter()
            .filter(|(_, (c, _))| view.is_none() || c.view.as_deref() == view)
            .map(|(ip, (c, local))| {
                entry(
                    ip,
                    c,
                    chosen_by(&runtime.views, &runtime.rule_names, *local, *ip),
                )
            })
            .collect();
        list.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.address.cmp(&b.address)));
        let vms = &self.shared.vms;
        let now = Time::from_unix_nanos(ntp_offset_sys::clock::realtime_ns());
        let watching = vms
            .watching()
            .then(|| (vms.rows(), placement::host_curve(&runtime, vms, now)));
        for e in &mut list {
            let Ok(ip) = e.address.parse() else { continue };
            if let Some((rows, curve)) = &watching {
                e.vm = placement::client_load(&runtime, rows, curve, ip, now);
            }
            // A walking client is shown in the view it walks to (its last request may have
            // been answered before the move).
            if let Some((to, left)) = placement::walk_left(&runtime, ip, now) {
                (e.view, e.walk_left_s) = (Some(to), Some(left));
            }
        }
        Ok(list)
    }
}
