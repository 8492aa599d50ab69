//! The balanced groups' tables on disk: `STATE_DIR/spread-NAME.table`, read at start (and
//! for a group a reload adds), written by one thread at most once a second and at stop,
//! never on the request path.
//!
//! A write is crash-safe (`files::replace`): a temporary file beside the table, fsync, rename
//! over the table, fsync of the directory. kill -9 at any moment leaves the old table or the new one. A
//! write that fails (full disk, read-only directory) leaves the previous table intact and
//! the server serving from memory; the failure is logged once, and again when writing works.
//! A table that exists but cannot be read at start is never overwritten: fix it (or move it
//! away) and restart.
//!
//! The format (docs/configuration.md): `#` comment lines, then one client a line,
//! `ADDRESS VIEW FIRST-SEEN LAST-SEEN`, times in Unix seconds, sorted by address.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ntp_offset_proto::balancer::table_line;
use ntp_offset_proto::view::{ViewId, ViewTable};
use tracing::{error, info, warn};

use super::assignments::{balanced_groups, member_id, Group, Groups};
use super::Shared;
use crate::cluster::Cluster;

/// Only last-seen times changed: written this often (they decide when an idle client is
/// forgotten, which is hours away).
const TOUCHED_EVERY: Duration = Duration::from_secs(300);
/// Tables are written at most this often.
const WRITE_EVERY: Duration = Duration::from_secs(1);
/// After a failed write, the next try waits this long.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// A VM's addresses are brought into one view at the watcher's discovery cadence.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// Groups whose table and the cluster's store did not change are compared whole this often
/// (a write lost to an outage is made again).
const CLUSTER_RECHECK_EVERY: Duration = Duration::from_secs(30);
/// How often idle clients are looked for.
const FORGET_EVERY: Duration = Duration::from_secs(600);
/// A table line is at most this long (an IPv6 address, a view name, two times).
const MAX_LINE_BYTES: u64 = 160;

pub fn path(dir: &Path, group: &str) -> PathBuf {
    dir.join(format!("spread-{group}.table"))
}

fn header(group: &str) -> String {
    format!(
        "# ntp-offset spread table, group `{group}`: one client a line,\n\
         # ADDRESS VIEW FIRST-SEEN LAST-SEEN (Unix seconds). Written by `ntp-offset serve`;\n\
         # edit it only while the server is stopped.\n"
    )
}

/// Reads the table text of `group` from `dir`: Ok(None) if there is none yet.
pub fn read(
    dir: &Path,
    group: &str,
    max_clients: usize,
) -> Result<Option<String>, crate::files::FileError> {
    let p = path(dir, group);
    let cap = 4096 + max_clients as u64 * MAX_LINE_BYTES;
    match fs::metadata(&p) {
        // No table, or no directory for one: nothing to read, nothing to protect.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        _ => {}
    }
    crate::files::read_capped(&p, cap).map(Some)
}

/// Fills the groups of `views` that have no clients yet from their files in `dir`.
pub fn load(groups: &Groups, views: &ViewTable, dir: &Path) {
    for (spread, b) in balanced_groups(views) {
        let Some(group) = groups.iter().find(|g| g.name == b.name) else {
            continue;
        };
        let mut bal = group.balancer.write().unwrap_or_else(|p| p.into_inner());
        if !bal.is_empty() {
            continue; // kept across a reload: memory is newer than the file
        }
        match read(dir, &b.name, b.max_clients) {
            Ok(None) => {
                info!(group = %b.name, file = %path(dir, &b.name).display(), "no assignment table yet: starting empty")
            }
            Ok(Some(text)) => {
                let dropped = bal.load_table(&text, |name| member_id(views, spread, name));
                bal.recount_active(super::unix_seconds());
                info!(group = %b.name, clients = bal.len(), dropped, file = %path(dir, &b.name).display(), "assignment table read");
                if dropped > 0 {
                    warn!(group = %b.name, dropped, "table lines dropped: views no longer in the group (their clients are assigned again), malformed or repeated lines, or lines past max_clients");
                    group.changed.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => {
                group.keep_file.store(true, Ordering::Relaxed);
                error!(group = %b.name, "cannot read the assignment table: {e}; serving from an empty table in memory and leaving the file as it is (fix or move it, then restart)");
            }
        }
    }
}

/// Writes one group's table crash-safely.
pub fn write(dir: &Path, group: &Group, names: &HashMap<ViewId, String>) -> io::Result<()> {
    // A copy of the rows (40 bytes a client), taken under the read lock and written out
    // after it: new clients wait for the copy, never for the disk.
    let rows = group
        .balancer
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .assignments();
    fs::create_dir_all(dir)?;
    crate::files::replace(&path(dir, &group.name), 0o644, |out| {
        out.write_all(header(&group.name).as_bytes())?;
        for (client, a) in &rows {
            let view = names.get(&a.view).map_or("", String::as_str);
            out.write_all(table_line(*client, view, a).as_bytes())?;
        }
        Ok(())
    })
}

/// Ends the walks that are over (within a second of their end: `clients` stops showing them,
/// the optimizer may move their VMs again, the table drops their `from=`).
fn settle_walks(runtime: &super::Runtime) {
    let now_s = super::unix_seconds();
    for g in runtime.groups.iter() {
        let due = g
            .balancer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .next_walk_end_s()
            .is_some_and(|end| end <= now_s);
        if due {
            let ended = g
                .balancer
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .settle(now_s);
            if ended > 0 {
                g.changed.store(true, Ordering::Relaxed);
                info!(group = %g.name, ended, "walks ended: these clients are served their views' offsets");
            }
        }
    }
}

/// Brings the balanced groups and the cluster's store together: moves made elsewhere are
/// followed here (a walk, with `move = "smear"`), moves and new clients made here are
/// recorded there. Groups whose table or store records changed, or all with `full`.
fn sync_with_cluster(runtime: &super::Runtime, cluster: &Cluster, now_s: u64, full: bool) {
    let changed: HashSet<String> = cluster
        .take_changed()
        .into_iter()
        .map(|c| c.group)
        .collect();
    let names = super::assignments::names(&runtime.views);
    for (spread, b) in balanced_groups(&runtime.views) {
        let Some(g) = runtime.groups.iter().find(|g| g.name == b.name) else {
            continue;
        };
        if !(full || changed.contains(&g.name) || g.changed.load(Ordering::Relaxed)) {
            continue;
        }
        let local: Vec<(IpAddr, String)> = g
            .balancer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .assignments()
            .into_iter()
            .filter_map(|(c, a)| Some((c, names.get(&a.view)?.clone())))
            .collect();
        let follow = cluster.reconcile(&g.name, &local, now_s);
        if follow.is_empty() {
            continue;
        }
        let mut bal = g.balancer.write().unwrap_or_else(|p| p.into_inner());
        // The second the moves are made in (a walk starts at the next one).
        let now_s = super::unix_seconds();
        let mut moved = 0;
        for (client, view) in follow {
            match member_id(&runtime.views, spread, &view) {
                Some(id) if bal.follow(client, id, now_s) => {
                    cluster.followed(&g.name, client);
                    moved += 1;
                }
                Some(_) => {}
                None => cluster.unknown_view(),
            }
        }
        drop(bal);
        if moved > 0 {
            g.changed.store(true, Ordering::Relaxed);
            info!(group = %g.name, moved, "cluster: clients moved by another host follow their new views");
        }
    }
}

/// The thread that writes tables and forgets idle clients.
pub struct TableWriter {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

struct State {
    /// Groups whose last write failed, by name: the error (logged once) and when.
    failing: HashMap<String, (String, Instant)>,
    last_write: Instant,
    last_touched_write: Instant,
    last_forget: Instant,
    /// When each group's load optimizer last looked.
    optimized: HashMap<String, Instant>,
    /// When the VMs' addresses were last brought into one view each.
    reconciled: Instant,
    /// When every group was last compared with the cluster's store whole.
    cluster_checked: Instant,
}

impl TableWriter {
    pub fn start(shared: Arc<Shared>) -> io::Result<TableWriter> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("spread tables".into())
            .spawn(move || {
                let mut state = State {
                    failing: HashMap::new(),
                    last_write: Instant::now(),
                    last_touched_write: Instant::now(),
                    last_forget: Instant::now(),
                    optimized: HashMap::new(),
                    reconciled: Instant::now(),
                    cluster_checked: Instant::now(),
                };
                while !thread_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    state.tick(&shared, false);
                }
                state.tick(&shared, true);
            })?;
        Ok(TableWriter { stop, thread })
    }

    /// Writes what changed and stops.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

impl State {
    fn tick(&mut self, shared: &Shared, last: bool) {
        let runtime = shared.runtime.load();
        if runtime.groups.is_empty() {
            return;
        }
        let now = Instant::now();
        if !last && now.duration_since(self.last_write) < WRITE_EVERY {
            return;
        }
        self.last_write = now;
        // Load-aware moves: housekeeping like forgetting, on the same thread.
        let t = ntp_offset_proto::time::Time::from_unix_nanos(ntp_offset_sys::clock::realtime_ns());
        settle_walks(&runtime);
        if let Some(c) = &shared.cluster {
            let full = now.duration_since(self.cluster_checked) >= CLUSTER_RECHECK_EVERY;
            if full {
                self.cluster_checked = now;
            }
            sync_with_cluster(&runtime, c, super::unix_seconds(), full);
        }
        super::placement::optimize(&runtime, &shared.vms, t, &mut self.optimized);
        if shared.vms.watching() && now.duration_since(self.reconciled) >= RECONCILE_EVERY {
            self.reconciled = now;
            super::placement::reconcile(&runtime, &shared.vms);
        }
        if now.duration_since(self.last_forget) >= FORGET_EVERY {
            self.last_forget = now;
            let now_s = super::unix_seconds();
            for (_, b) in balanced_groups(&runtime.views) {
                if let Some(g) = runtime.groups.iter().find(|g| g.name == b.name) {
                    g.forget_idle(now_s, b.forget_after_s);
                }
                if let Some(c) = &shared.cluster {
                    c.forget_idle(&b.name, now_s, b.forget_after_s);
                }
            }
        }
        let touched_due = last || now.duration_since(self.last_touched_write) >= TOUCHED_EVERY;
        if touched_due {
            self.last_touched_write = now;
        }
        let names = super::assignments::names(&runtime.views);
        for g in runtime.groups.iter() {
            if g.keep_file.load(Ordering::Relaxed) {
                continue;
            }
            let retry_later = self
                .failing
                .get(&g.name)
                .is_some_and(|(_, at)| now.duration_since(*at) < RETRY_AFTER);
            if retry_later && !last {
                continue;
            }
            let changed = g.changed.swap(false, Ordering::Relaxed);
            let touched = touched_due && g.touched.swap(false, Ordering::Relaxed);
            if !changed && !touched {
                continue;
            }
            match write(&runtime.state_dir, g, &names) {
                Ok(()) => {
                    if self.failing.remove(&g.name).is_some() {
                        info!(group = %g.name, dir = %runtime.state_dir.display(), "assignment table written again");
                    }
                }
                Err(e) => {
                    // Try again next time; say so once.
                    g.changed.store(true, Ordering::Relaxed);
                    let message = e.to_string();
                    if self.failing.get(&g.name).map(|(m, _)| m) != Some(&message) {
                        error!(group = %g.name, dir = %runtime.state_dir.display(), "cannot write the assignment table: {message}; the previous table is intact and the server goes on from memory (clients keep their views until a restart); retrying every {}s", RETRY_AFTER.as_secs());
                    }
                    self.failing.insert(g.name.clone(), (message, now));
                }
            }
        }
    }
}
