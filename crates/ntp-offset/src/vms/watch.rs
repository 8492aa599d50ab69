//! The VM watcher: one thread, never on the request path. Workers read what it publishes
//! under a read lock ([`Vms::vm_of`], [`Vms::best_views`]).
//!
//! Lock order: a worker holds no balancer lock while it asks here, and nothing here calls out
//! (`offset_of`, `view_of`, which read the balancers) while holding this lock: with writers
//! waiting on both, the two orders would deadlock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ntp_offset_proto::load::host::{HostLoad, Placed};
use ntp_offset_proto::load::placement::{self, Curve, Slot};
use ntp_offset_proto::load::profile::{Profile, Sampler};
use ntp_offset_proto::time::{Offset, Time};
use ntp_offset_proto::view::ViewId;
use ntp_offset_sys::clock::realtime_ns;
use ntp_offset_sys::neighbours::neighbour_table;
use tracing::{debug, info, warn};

use super::configured::VmMapping;
use super::cpu::CpuReader;
use super::machines;
use super::qemu::{self, QemuVm};

/// CPU readings per VM: four a second resolve a job of a few hundred milliseconds.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// New and gone VMs, and the neighbour table, are looked for this often.
const DISCOVER_EVERY: Duration = Duration::from_secs(5);
/// A profile counts once it averages this many whole minutes.
const KNOWN_AFTER_MINUTES: u32 = 2;
/// A VM placed before its profile is known counts as typical for at most this long (its
/// profile is known two whole minutes after discovery, which precedes its first request).
const PENDING_FOR: Duration = Duration::from_secs(300);
/// A worker meeting an address no VM is known by reads the neighbour table itself, at most
/// this often (server-wide): a flood of new addresses costs a few dumps a second.
const LOOKUP_EVERY: Duration = Duration::from_millis(20);
/// Addresses answered "being placed" and not yet matched, at most; older than
/// [`PLACING_FORGOTTEN`], they make room.
const MAX_PLACING: usize = 4096;
const PLACING_FORGOTTEN: Duration = Duration::from_secs(300);

/// The offset a client address is served now, if the server knows (None: not a client yet).
pub type OffsetOf = Box<dyn Fn(IpAddr, Time) -> Option<Offset> + Send>;

/// One VM as `clients` and the status page show it.
#[derive(Clone, Debug, PartialEq)]
pub struct VmRow {
    pub id: String,
    pub name: String,
    pub pid: u32,
    /// Where its CPU time is read: `cgroup PATH` or `process`.
    pub source: String,
    pub addrs: Vec<IpAddr>,
    /// Its profile and how many minutes it averages (0: not yet known).
    pub profile: Profile,
    pub minutes: u32,
}

struct Vm {
    found: QemuVm,
    addrs: Vec<IpAddr>,
    sampler: Sampler,
    /// Its CPU-time file, open (None: it could not be opened; tried again at discovery).
    cpu: Option<CpuReader>,
}

struct Known {
    by_addr: HashMap<IpAddr, Arc<str>>,
    vms: HashMap<Arc<str>, Vm>,
    /// The host's predicted load and the typical profile (recomputed every second).
    curve: Curve,
    typical: Profile,
    /// VMs' addresses placed lately whose profiles are not known yet, with the shift of the
    /// view each got and when: each counts as typical until its profile is known.
    pending: Vec<(IpAddr, usize, Instant)>,
}

impl Default for Known {
    fn default() -> Self {
        Known {
            by_addr: HashMap::new(),
            vms: HashMap::new(),
            curve: [0.0; 60],
            typical: Profile::FLAT_ZERO,
            pending: Vec::new(),
        }
    }
}

/// What the watcher publishes.
#[derive(Default)]
pub struct Vms {
    known: RwLock<Known>,
    /// Whether any VM has been found: lets the request path skip the lookup on other hosts.
    any: AtomicBool,
    /// Whether any VM's NIC is in this server's neighbour table: its clients can be told
    /// apart by MAC here (a VM's new address is then worth waiting for).
    mapped: AtomicBool,
    watching: AtomicBool,
    /// Lookups made on the request path: when the last one ran, and the addresses answered
    /// "being placed" (with when), which are placed by count if the next lookup fails too.
    lookup: Mutex<(Option<Instant>, HashMap<IpAddr, Instant>)>,
    /// VMs the config names (`[[vm]]`): found at each discovery, their addresses theirs.
    configured: RwLock<Vec<VmMapping>>,
}

/// What the host can tell of a new client address.
#[derive(Clone, Debug, PartialEq)]
pub enum Located {
    /// A VM's: every address of it (this one included).
    Vm(Vec<IpAddr>),
    /// No VM's, or the host cannot tell: placed by count.
    Other,
    /// Not in the neighbour table yet: it appears once this client is answered. Answer it
    /// "being placed" once ([`Assigned::placing`](ntp_offset_proto::view::Assigned)).
    Placing,
}

impl Vms {
    /// The config's VMs (`[[vm]]`), from the next discovery on.
    pub fn set_configured(&self, vms: Vec<VmMapping>) {
        *self.configured.write().unwrap_or_else(|p| p.into_inner()) = vms;
    }

    /// Whether the watcher runs (it may have found nothing yet).
    pub fn watching(&self) -> bool {
        self.watching.load(Ordering::Relaxed)
    }

    /// The VM a client address belongs to.
    pub fn vm_of(&self, client: IpAddr) -> Option<Arc<str>> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let k = self.known.read().unwrap_or_else(|p| p.into_inner());
        k.by_addr.get(&client).cloned()
    }

    /// Which VM a new client address is, looking it up in the neighbour table at once if the
    /// watcher has not seen it (rate-limited). Call without holding a balancer's lock.
    pub fn locate(&self, client: IpAddr) -> Located {
        if !self.any.load(Ordering::Relaxed) {
            return Located::Other;
        }
        if let Some(addrs) = self.addrs_of(client) {
            return Located::Vm(addrs);
        }
        if !self.mapped.load(Ordering::Relaxed) || client.is_loopback() {
            return Located::Other;
        }
        let mut l = self.lookup.lock().unwrap_or_else(|p| p.into_inner());
        let due = l.0.is_none_or(|t| t.elapsed() >= LOOKUP_EVERY);
        if due {
            l.0 = Some(Instant::now());
            drop(l);
            let table = neighbour_table(Duration::from_millis(100)).unwrap_or_default();
            if let Some(n) = table.iter().find(|n| n.ip == client) {
                return self.learn(client, n.mac);
            }
            l = self.lookup.lock().unwrap_or_else(|p| p.into_inner());
        }
        let placing = &mut l.1;
        if placing.remove(&client).is_some() {
            // Answered once already and still not in the table: not on this host's links.
            return Located::Other;
        }
        if placing.len() >= MAX_PLACING {
            placing.retain(|_, t| t.elapsed() < PLACING_FORGOTTEN);
            if placing.len() >= MAX_PLACING {
                return Located::Other;
            }
        }
        placing.insert(client, Instant::now());
        Located::Placing
    }

    /// Every address of the VM `client` is known by.
    fn addrs_of(&self, client: IpAddr) -> Option<Vec<IpAddr>> {
        let k = self.known.read().unwrap_or_else(|p| p.into_inner());
        Some(k.vms.get(k.by_addr.get(&client)?)?.addrs.clone())
    }

    /// A neighbour entry found on the request path: the VM with that MAC gains the address.
    fn learn(&self, client: IpAddr, mac: [u8; 6]) -> Located {
        let mut k = self.known.write().unwrap_or_else(|p| p.into_inner());
        let Some(id) = k
            .vms
            .iter()
            .find(|(_, vm)| vm.found.macs.contains(&mac))
            .map(|(id, _)| id.clone())
        else {
            return Located::Other;
        };
        k.by_addr.insert(client, id.clone());
        let vm = k.vms.get_mut(&id).expect("found above");
        vm.addrs.push(client);
        vm.addrs.sort_unstable();
        vm.addrs.dedup();
        Located::Vm(vm.addrs.clone())
    }

    /// A known client's profile (two whole minutes averaged at least).
    pub fn profile_of(&self, client: IpAddr) -> Option<Profile> {
        let k = self.known.read().unwrap_or_else(|p| p.into_inner());
        let vm = k.vms.get(k.by_addr.get(&client)?)?;
        let (p, minutes) = vm.sampler.profile();
        (minutes >= KNOWN_AFTER_MINUTES).then_some(p)
    }

    /// The members (`slots`) a new client should choose among: where its profile, or the
    /// typical one, adds least to the host's predicted peak. Empty when nothing is measured
    /// (the balancer then counts clients).
    pub fn best_views(&self, client: IpAddr, slots: &[Slot]) -> Vec<ViewId> {
        if !self.any.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let own = self.profile_of(client);
        let k = self.known.read().unwrap_or_else(|p| p.into_inner());
        let p = own.unwrap_or(k.typical);
        let pending: Vec<usize> = k.pending.iter().map(|x| x.1).collect();
        let curve = placement::with_pending(&k.curve, &k.typical, &pending);
        placement::best_views(&curve, &p, slots)
    }

    /// A VM's address was just placed at `shift` by load, its profile not known yet: it
    /// counts as typical for the next placements until it is (at most [`PENDING_FOR`]).
    pub fn placed(&self, client: IpAddr, shift: usize) {
        if self.profile_of(client).is_some() {
            return;
        }
        let mut k = self.known.write().unwrap_or_else(|p| p.into_inner());
        k.pending.retain(|x| x.0 != client);
        k.pending.push((client, shift, Instant::now()));
    }

    /// Every VM found, by name.
    pub fn rows(&self) -> Vec<VmRow> {
        let k = self.known.read().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<VmRow> = k
            .vms
            .values()
            .map(|vm| {
                let (profile, minutes) = vm.sampler.profile();
                VmRow {
                    id: vm.found.id.clone(),
                    name: vm.found.name.clone(),
                    pid: vm.found.pid,
                    source: match &vm.found.cgroup {
                        Some(c) => format!("cgroup {}", c.display()),
                        None => "process".to_string(),
                    },
                    addrs: vm.addrs.clone(),
                    profile,
                    minutes,
                }
            })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.pid.cmp(&b.pid)));
        rows
    }

    /// The host's load as the optimizer sees it: every VM with a known profile, keyed by its
    /// first address, at the second its served offset puts it (`offset_of`), and the view
    /// `view_of` says (None: outside any group).
    pub fn host_load(
        &self,
        now: Time,
        offset_of: &dyn Fn(IpAddr, Time) -> Option<Offset>,
        view_of: &dyn Fn(IpAddr) -> Option<ViewId>,
    ) -> (HostLoad<IpAddr>, HashMap<IpAddr, Vec<IpAddr>>) {
        let known: Vec<(Profile, Vec<IpAddr>)> = {
            let k = self.known.read().unwrap_or_else(|p| p.into_inner());
            k.vms
                .values()
                .filter(|vm| vm.sampler.profile().1 >= KNOWN_AFTER_MINUTES && !vm.addrs.is_empty())
                .map(|vm| (vm.sampler.profile().0, vm.addrs.clone()))
                .collect()
        };
        let mut host = HostLoad::default();
        let mut addrs = HashMap::new();
        for (profile, vm_addrs) in known {
            let first = vm_addrs[0];
            let offset = offset_of(first, now).unwrap_or(Offset::ZERO);
            let slot = Slot::new(ViewId(u16::MAX), offset.nanos());
            let view = view_of(first).unwrap_or(ViewId(u16::MAX));
            host.set(
                first,
                Placed {
                    view,
                    shift: slot.shift,
                    profile,
                },
            );
            addrs.insert(first, vm_addrs);
        }
        (host, addrs)
    }
}

/// The watcher thread.
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Starts watching `/proc` (and `/sys/fs/cgroup`) for VMs; `offset_of` says what each
    /// client is served.
    pub fn start(vms: Arc<Vms>, offset_of: OffsetOf) -> std::io::Result<Watch> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        vms.watching.store(true, Ordering::Relaxed);
        let thread = std::thread::Builder::new()
            .name("vm-watch".into())
            .spawn(move || {
                run(
                    &vms,
                    &offset_of,
                    &s,
                    Path::new("/proc"),
                    Path::new("/sys/fs/cgroup"),
                )
            })?;
        Ok(Watch {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn host_ns() -> i64 {
    realtime_ns()
}

fn run(vms: &Vms, offset_of: &OffsetOf, stop: &AtomicBool, proc_root: &Path, cgroups: &Path) {
    let mut next_discovery = Instant::now();
    let mut next_curve = Instant::now();
    let mut neigh_failed = false;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        if started >= next_discovery {
            discover(vms, proc_root, cgroups, &mut neigh_failed);
            next_discovery = started + DISCOVER_EVERY;
        }
        sample(vms, offset_of);
        if started >= next_curve {
            recompute(vms, offset_of);
            next_curve = started + Duration::from_secs(1);
        }
        std::thread::sleep(SAMPLE_EVERY.saturating_sub(started.elapsed()));
    }
}

/// The neighbour table, or nothing (logged once until it reads again).
fn read_neighbours(failed: &mut bool) -> Vec<ntp_offset_proto::neighbours::Neighbour> {
    match neighbour_table(Duration::from_secs(1)) {
        Ok(t) => {
            *failed = false;
            t
        }
        Err(e) => {
            if !*failed {
                warn!("cannot read the neighbour table ({e}): VMs are not matched to their NTP clients until it can be read");
            }
            *failed = true;
            Vec::new()
        }
    }
}

/// Finds VMs and maps client addresses to them; keeps the samplers of VMs still there.
fn discover(vms: &Vms, proc_root: &Path, cgroups: &Path, neigh_failed: &mut bool) {
    let mut found: Vec<(QemuVm, Vec<IpAddr>)> = qemu::scan(proc_root, cgroups)
        .into_iter()
        .map(|q| (q, Vec::new()))
        .collect();
    // Containers: their namespaces' own addresses are theirs.
    let host = machines::addrs_of(proc_root, "self");
    found.extend(
        machines::scan(proc_root, cgroups, &host)
            .into_iter()
            .map(|m| (m.vm, m.addrs)),
    );
    // Named by hand: their addresses are theirs, whatever the neighbour table says (and
    // whatever a container's: these come last, so they win).
    let configured = vms
        .configured
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    found.extend(configured.iter().map(|m| (m.found(), m.addresses.clone())));
    let table = read_neighbours(neigh_failed);
    let mut by_mac: HashMap<[u8; 6], Vec<IpAddr>> = HashMap::new();
    for n in table {
        by_mac.entry(n.mac).or_default().push(n.ip);
    }
    let named: Vec<IpAddr> = configured
        .iter()
        .flat_map(|m| m.addresses.clone())
        .collect();
    let mut k = vms.known.write().unwrap_or_else(|p| p.into_inner());
    let mut old = std::mem::take(&mut k.vms);
    let mut by_addr = HashMap::new();
    let mut neighbours_mapped = false;
    for (q, given) in found {
        let id: Arc<str> = Arc::from(q.id.as_str());
        let mut addrs: Vec<IpAddr> = q
            .macs
            .iter()
            .flat_map(|m| by_mac.get(m).cloned().unwrap_or_default())
            .filter(|a| !named.contains(a))
            .collect();
        neighbours_mapped |= !addrs.is_empty();
        addrs.extend(given);
        addrs.sort_unstable();
        addrs.dedup();
        for a in &addrs {
            by_addr.insert(*a, id.clone());
        }
        // The same VM in the same process keeps its profile; a restarted one starts afresh.
        let (sampler, cpu) = match old.remove(&id) {
            Some(vm) if vm.found.pid == q.pid => (vm.sampler, vm.cpu),
            _ => {
                info!(vm = %q.name, pid = q.pid, macs = q.macs.len(), "found a VM");
                (Sampler::default(), None)
            }
        };
        // A file that no longer reads (a cgroup removed and made again) is opened afresh.
        let cpu = cpu
            .filter(|c| c.read().is_some())
            .or_else(|| CpuReader::open(proc_root, q.pid, q.cgroup.as_deref()));
        k.vms.insert(
            id,
            Vm {
                found: q,
                addrs,
                sampler,
                cpu,
            },
        );
    }
    for gone in old.values() {
        debug!(vm = %gone.found.name, "a VM is gone");
    }
    // Only the neighbour table's matches make a new address worth waiting for.
    vms.mapped.store(neighbours_mapped, Ordering::Relaxed);
    k.by_addr = by_addr;
    vms.any.store(!k.vms.is_empty(), Ordering::Relaxed);
}

/// A VM's CPU reading: its id and process, when (host ns), its first address, CPU time (ns).
type Reading = (Arc<str>, u32, i64, Option<IpAddr>, u64);

/// One CPU reading per VM, into its profile by second of its own minute. The files are read
/// and the offsets asked for without the lock; the samplers are fed under it.
fn sample(vms: &Vms, offset_of: &OffsetOf) {
    // Read under the read lock (files only); ask for offsets after it (see the lock order).
    let mut readings: Vec<Reading> = {
        let k = vms.known.read().unwrap_or_else(|p| p.into_inner());
        k.vms
            .iter()
            .filter_map(|(id, vm)| {
                let cpu = vm.cpu.as_ref()?.read()?;
                Some((
                    id.clone(),
                    vm.found.pid,
                    host_ns(),
                    vm.addrs.first().copied(),
                    cpu,
                ))
            })
            .collect()
    };
    let readings: Vec<_> = readings
        .drain(..)
        .map(|(id, pid, now, addr, cpu)| {
            let offset = addr
                .and_then(|a| offset_of(a, Time::from_unix_nanos(now)))
                .unwrap_or(Offset::ZERO);
            (id, pid, now, offset, cpu)
        })
        .collect();
    let mut k = vms.known.write().unwrap_or_else(|p| p.into_inner());
    for (id, pid, now, offset, cpu) in readings {
        if let Some(vm) = k.vms.get_mut(&id).filter(|vm| vm.found.pid == pid) {
            vm.sampler.sample(now, offset.nanos(), cpu);
        }
    }
}

/// The host's predicted curve and typical profile, from every known profile at its offset.
fn recompute(vms: &Vms, offset_of: &OffsetOf) {
    let now = Time::from_unix_nanos(host_ns());
    let (host, _) = vms.host_load(now, offset_of, &|_| None);
    let mut k = vms.known.write().unwrap_or_else(|p| p.into_inner());
    k.curve = *host.curve();
    k.typical = host.typical();
    let Known {
        pending,
        by_addr,
        vms: found,
        ..
    } = &mut *k;
    pending.retain(|(addr, _, since)| {
        let known = by_addr
            .get(addr)
            .and_then(|id| found.get(id))
            .is_some_and(|vm| vm.sampler.profile().1 >= KNOWN_AFTER_MINUTES);
        !known && since.elapsed() < PENDING_FOR
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vms::configured::CpuSource;

    /// A VM the config names is found at discovery whatever runs on the host: its addresses
    /// are its own, its CPU time is read from its cgroup, and an address nobody names is
    /// not waited for (no neighbour table matched a VM).
    #[test]
    fn a_named_vm_is_found_with_its_addresses_and_cgroup() {
        let root = std::env::temp_dir().join(format!("nto-watch-{}", std::process::id()));
        let (proc_root, cgroup) = (root.join("proc"), root.join("db1.scope"));
        std::fs::create_dir_all(&proc_root).unwrap();
        std::fs::create_dir_all(&cgroup).unwrap();
        std::fs::write(
            cgroup.join("cpu.stat"),
            "usage_usec 1500000\nuser_usec 1000000\n",
        )
        .unwrap();
        let vms = Vms::default();
        let addr: IpAddr = "10.0.0.5".parse().unwrap();
        vms.set_configured(vec![VmMapping {
            name: "db1".into(),
            addresses: vec![addr],
            cpu: CpuSource::Cgroup(cgroup.clone()),
        }]);
        discover(&vms, &proc_root, &root, &mut false);
        assert_eq!(vms.vm_of(addr).as_deref(), Some("config:db1"));
        assert_eq!(vms.locate(addr), Located::Vm(vec![addr]));
        assert_eq!(vms.locate("10.0.0.6".parse().unwrap()), Located::Other);
        let rows = vms.rows();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].name.as_str(), rows[0].pid), ("db1", 0));
        assert!(rows[0].source.starts_with("cgroup "), "{}", rows[0].source);
        let k = vms.known.read().unwrap();
        let cpu = k
            .vms
            .values()
            .next()
            .unwrap()
            .cpu
            .as_ref()
            .expect("its cpu.stat open");
        assert_eq!(cpu.read(), Some(1_500_000_000));
        drop(k);
        // Named no more (a reload): gone at the next discovery.
        vms.set_configured(Vec::new());
        discover(&vms, &proc_root, &root, &mut false);
        assert_eq!(vms.vm_of(addr), None);
        let _ = std::fs::remove_dir_all(&root);
    }
}
