//! A cluster's shared assignments (`[cluster]`, docs/clusters.md): this host's copy of what
//! etcd holds for its balanced groups, and the two threads that keep it.
//!
//! - The watcher reads everything under the prefix once, then follows etcd's watch from that
//!   revision; a compaction or a long break means reading everything again. Each change
//!   lands in the copy, and clients whose view changed are queued for the balancers
//!   ([`Cluster::take_changed`], applied by the tables thread: `serve/tables.rs`).
//! - The writer records what this host decides: a new client's view (create-if-absent, so
//!   two hosts never give one client two views: the loser follows the winner), a move made
//!   here (conditional on the record being the one this host last saw), coarse last-seen
//!   refreshes, deletes of clients idle everywhere, and each view's offset. Idle, it checks
//!   every few seconds that a quorum answers, and saves the copy to `state_dir`.
//!
//! Requests never wait on etcd: workers read the copy and queue writes. A new client is
//! answered only once its view is recorded (its next poll, a few seconds with `iburst`).

pub mod etcd;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ntp_offset_proto::cluster::copy::{Changed, Conflict, Event, StoreCopy, REFRESH_S};
use ntp_offset_proto::cluster::record::{
    cluster_prefix, encode_offset, parse_offset, ClientRecord, Key,
};
use tracing::{debug, error, info, warn};

use crate::config::cluster::{ClusterConfig, OnUnavailable};
use crate::control::status::ClusterStatus;
use etcd::{Created, Etcd, EtcdError, WatchNews};

/// The writer checks that etcd has a quorum this often when it has nothing to write.
const HEALTH_EVERY: Duration = Duration::from_secs(2);
/// After a failed call, the watcher waits this long before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The copy is saved this often when it changed.
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// Writes waiting: past this, new clients wait for the queue to drain (counted).
const MAX_QUEUE: usize = 100_000;

/// What the writer records.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Write {
    /// A new client's view, unless the store has one for it already.
    Create {
        group: String,
        client: IpAddr,
        view: String,
        now_s: u64,
    },
    /// A view or last-seen change to a record, if it is still at `mod_revision`.
    Update {
        group: String,
        client: IpAddr,
        view: String,
        now_s: u64,
        mod_revision: i64,
    },
    /// A client idle everywhere, if nobody refreshed it since `mod_revision`.
    Delete {
        group: String,
        client: IpAddr,
        mod_revision: i64,
    },
    /// A group's views and offsets, each recorded unless it is already.
    Views {
        group: String,
        views: Vec<(String, i64)>,
    },
}

#[derive(Default)]
struct Counters {
    created: AtomicU64,
    lost_races: AtomicU64,
    moves_recorded: AtomicU64,
    moves_followed: AtomicU64,
    refreshed: AtomicU64,
    forgotten: AtomicU64,
    unanswered_unavailable: AtomicU64,
    hashed_unavailable: AtomicU64,
    unknown_view: AtomicU64,
    resyncs: AtomicU64,
    errors: AtomicU64,
}

#[derive(Default)]
struct Queue {
    writes: VecDeque<Write>,
    /// (group, client) with a create or update queued or under way: one at a time.
    pending: HashSet<(String, IpAddr)>,
}

pub struct Cluster {
    cfg: ClusterConfig,
    etcd: Etcd,
    copy: RwLock<StoreCopy>,
    available: AtomicBool,
    /// Logged once per outage.
    outage_logged: AtomicBool,
    queue: Mutex<Queue>,
    wake: Condvar,
    changed: Mutex<Vec<Changed>>,
    /// Per (group, client): the store revision at which this host's view was the store's. A
    /// differing view later is a move made here if the record is still at that revision, and
    /// somebody else's if not.
    synced: Mutex<HashMap<(String, IpAddr), i64>>,
    /// Groups whose views conflict with the store's, and how.
    refused: RwLock<HashMap<String, Vec<Conflict>>>,
    counters: Counters,
    state_file: PathBuf,
    stop: AtomicBool,
}

/// A new client's fate while its view is not in the copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewClient {
    /// Its view is being recorded: not answered with time yet.
    Recording,
    /// etcd is out of reach: not answered with time.
    Unanswered,
    /// etcd is out of reach and the operator chose the keyed hash.
    Hash,
}

impl Cluster {
    /// Loads the saved copy (so known clients are answered before etcd is reached) and
    /// starts the threads.
    pub fn start(
        cfg: &ClusterConfig,
        state_dir: &Path,
    ) -> std::io::Result<(Arc<Cluster>, Threads)> {
        let state_file = state_dir.join("cluster.copy");
        let copy = match crate::files::read_capped(&state_file, 1 << 30) {
            Ok(text) => match StoreCopy::from_text(&cfg.prefix, &text) {
                Ok(c) => {
                    info!(file = %state_file.display(), revision = c.revision, "cluster: known clients from the saved copy until etcd answers");
                    c
                }
                Err(e) => {
                    warn!(file = %state_file.display(), "cluster: the saved copy cannot be read ({e}); starting without it: known clients wait for etcd");
                    StoreCopy::new(&cfg.prefix)
                }
            },
            Err(e) if e.is_not_found() => StoreCopy::new(&cfg.prefix),
            Err(e) => {
                warn!(file = %state_file.display(), "cluster: the saved copy cannot be read ({e}); starting without it");
                StoreCopy::new(&cfg.prefix)
            }
        };
        let cluster = Arc::new(Cluster {
            cfg: cfg.clone(),
            etcd: Etcd::new(cfg),
            copy: RwLock::new(copy),
            available: AtomicBool::new(false),
            outage_logged: AtomicBool::new(false),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            changed: Mutex::new(Vec::new()),
            synced: Mutex::new(HashMap::new()),
            refused: RwLock::new(HashMap::new()),
            counters: Counters::default(),
            state_file,
            stop: AtomicBool::new(false),
        });
        // The first read before serving: a host that reaches etcd starts with the cluster's
        // assignments (and its views checked against them), not with its saved copy's.
        cluster.resync();
        let w = cluster.clone();
        let watcher = std::thread::Builder::new()
            .name("cluster watch".into())
            .spawn(move || w.watch_loop())?;
        let w = cluster.clone();
        let writer = std::thread::Builder::new()
            .name("cluster write".into())
            .spawn(move || w.write_loop())?;
        Ok((
            cluster.clone(),
            Threads {
                cluster,
                threads: vec![watcher, writer],
            },
        ))
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    fn read_copy(&self) -> std::sync::RwLockReadGuard<'_, StoreCopy> {
        self.copy.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The view the store gives `client` in `group`, if any.
    pub fn view_of(&self, group: &str, client: IpAddr) -> Option<(String, i64)> {
        self.read_copy()
            .client(group, client)
            .map(|e| (e.view.clone(), e.mod_revision))
    }

    /// Clients the store has for `group`.
    pub fn group_len(&self, group: &str) -> usize {
        self.read_copy().group(group).map_or(0, |g| g.clients.len())
    }

    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    pub fn is_refused(&self, group: &str) -> bool {
        let r = self.refused.read().unwrap_or_else(|p| p.into_inner());
        !r.is_empty() && r.contains_key(group)
    }

    /// The conflicts between `configured` views and what the store (or the saved copy)
    /// records for `group`: a config check at start and reload.
    pub fn conflicts(&self, group: &str, configured: &[(String, i64)]) -> Vec<Conflict> {
        self.read_copy().conflicts(group, configured)
    }

    /// A group's views as this host serves them: recorded where they are not yet.
    pub fn record_views(&self, group: &str, views: Vec<(String, i64)>) {
        self.enqueue(
            Write::Views {
                group: group.into(),
                views,
            },
            false,
        );
    }

    /// A client this host has just taken from the store's record (revision `mod_revision`).
    pub fn adopted(&self, group: &str, client: IpAddr, mod_revision: i64) {
        self.synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((group.to_string(), client), mod_revision);
    }

    /// A client new to the cluster, whose view this host chose: recorded if etcd answers.
    pub fn propose(&self, group: &str, client: IpAddr, view: &str, now_s: u64) -> NewClient {
        if !self.is_available() {
            return match self.cfg.on_unavailable {
                OnUnavailable::Refuse => {
                    self.counters
                        .unanswered_unavailable
                        .fetch_add(1, Ordering::Relaxed);
                    NewClient::Unanswered
                }
                OnUnavailable::Hash => {
                    self.counters
                        .hashed_unavailable
                        .fetch_add(1, Ordering::Relaxed);
                    NewClient::Hash
                }
            };
        }
        self.enqueue(
            Write::Create {
                group: group.into(),
                client,
                view: view.into(),
                now_s,
            },
            true,
        );
        NewClient::Recording
    }

    /// A known client asked: its last-seen time in the store is refreshed if an hour stale.
    pub fn touch(&self, group: &str, client: IpAddr, now_s: u64) {
        let Some(e) = self.read_copy().client(group, client).cloned() else {
            return;
        };
        if now_s >= e.seen_s.saturating_add(REFRESH_S) {
            self.enqueue(
                Write::Update {
                    group: group.into(),
                    client,
                    view: e.view,
                    now_s,
                    mod_revision: e.mod_revision,
                },
                true,
            );
        }
    }

    /// Counts a client whose recorded view this host does not have.
    pub fn unknown_view(&self) {
        self.counters.unknown_view.fetch_add(1, Ordering::Relaxed);
    }

    fn enqueue(&self, w: Write, one_per_client: bool) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if one_per_client {
            let id = match &w {
                Write::Create { group, client, .. }
                | Write::Update { group, client, .. }
                | Write::Delete { group, client, .. } => (group.clone(), *client),
                Write::Views { .. } => unreachable!("views are not per client"),
            };
            if q.writes.len() >= MAX_QUEUE || !q.pending.insert(id) {
                return;
            }
        }
        q.writes.push_back(w);
        drop(q);
        self.wake.notify_one();
    }

    /// Clients whose view the store changed since the last call.
    pub fn take_changed(&self) -> Vec<Changed> {
        std::mem::take(&mut *self.changed.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Brings one group's local table and the store together: `local` is every client this
    /// host has, with its view's name. Returns the clients to move to the store's view
    /// (changed elsewhere); queues the moves made here (and clients the store lacks).
    pub fn reconcile(
        &self,
        group: &str,
        local: &[(IpAddr, String)],
        now_s: u64,
    ) -> Vec<(IpAddr, String)> {
        let copy = self.read_copy();
        let mut follow = Vec::new();
        let mut writes = Vec::new();
        {
            let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
            for (client, view) in local {
                let key = (group.to_string(), *client);
                match copy.client(group, *client) {
                    None => writes.push(Write::Create {
                        group: group.into(),
                        client: *client,
                        view: view.clone(),
                        now_s,
                    }),
                    Some(e) if &e.view == view => {
                        synced.insert(key, e.mod_revision);
                    }
                    Some(e) if synced.get(&key) == Some(&e.mod_revision) => {
                        writes.push(Write::Update {
                            group: group.into(),
                            client: *client,
                            view: view.clone(),
                            now_s,
                            mod_revision: e.mod_revision,
                        });
                    }
                    Some(e) => follow.push((*client, e.view.clone())),
                }
            }
        }
        drop(copy);
        if self.is_available() {
            for w in writes {
                self.enqueue(w, true);
            }
        }
        follow
    }

    /// A move this host made to follow the store (counted).
    pub fn followed(&self, group: &str, client: IpAddr) {
        self.counters.moves_followed.fetch_add(1, Ordering::Relaxed);
        if let Some((_, rev)) = self.view_of(group, client) {
            self.adopted(group, client, rev);
        }
    }

    /// Clients of `group` idle for `forget_after_s` on every host: deleted from the store.
    /// The store keeps a client at least two refresh periods, so a host that serves it has
    /// refreshed it in between.
    pub fn forget_idle(&self, group: &str, now_s: u64, forget_after_s: u64) {
        if !self.is_available() {
            return;
        }
        let idle = self
            .read_copy()
            .idle(group, now_s, forget_after_s.max(2 * REFRESH_S));
        for (client, mod_revision) in idle {
            self.enqueue(
                Write::Delete {
                    group: group.into(),
                    client,
                    mod_revision,
                },
                true,
            );
        }
    }

    pub fn status(&self) -> ClusterStatus {
        let copy = self.read_copy();
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut refused: Vec<String> = self
            .refused
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        refused.sort();
        ClusterStatus {
            host: self.cfg.host.clone(),
            endpoints: self.cfg.endpoints.clone(),
            available: self.is_available(),
            revision: copy.revision,
            clients: copy.clients() as u64,
            created: get(&c.created),
            lost_races: get(&c.lost_races),
            moves_recorded: get(&c.moves_recorded),
            moves_followed: get(&c.moves_followed),
            refreshed: get(&c.refreshed),
            forgotten: get(&c.forgotten),
            unanswered_unavailable: get(&c.unanswered_unavailable),
            hashed_unavailable: get(&c.hashed_unavailable),
            unknown_view: get(&c.unknown_view),
            resyncs: get(&c.resyncs),
            errors: get(&c.errors),
            foreign: copy.foreign,
            refused_groups: refused,
        }
    }

    fn set_available(&self, ok: bool, why: Option<&EtcdError>) {
        let was = self.available.swap(ok, Ordering::Relaxed);
        if let Some(e) = why {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            if !self.outage_logged.swap(true, Ordering::Relaxed) {
                let new = match self.cfg.on_unavailable {
                    OnUnavailable::Refuse => "new clients are not answered until it is back",
                    OnUnavailable::Hash => "new clients get the keyed hash's view, unrecorded",
                };
                error!(host = %self.cfg.host, "cluster: etcd is out of reach ({e}); known clients are answered from this host's copy, {new}");
            }
        } else if ok && !was && self.outage_logged.swap(false, Ordering::Relaxed) {
            info!(host = %self.cfg.host, "cluster: etcd answers again; resyncing without moving anybody");
        }
    }

    /// Reads everything again; true if it worked.
    fn resync(&self) -> bool {
        match self.etcd.range_prefix(&cluster_prefix(&self.cfg.prefix)) {
            Ok((kvs, revision)) => {
                let changed = self
                    .copy
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .reset(kvs, revision);
                self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
                self.push_changed(changed);
                self.set_available(true, None);
                debug!(revision, "cluster: read the store");
                true
            }
            Err(e) => {
                self.set_available(false, Some(&e));
                false
            }
        }
    }

    fn push_changed(&self, changed: Vec<Changed>) {
        if !changed.is_empty() {
            self.changed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(changed);
        }
    }

    fn apply(&self, events: Vec<Event>, revision: i64) {
        let changed = self
            .copy
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(events, revision);
        self.push_changed(changed);
    }

    fn watch_loop(&self) {
        let prefix = cluster_prefix(&self.cfg.prefix);
        let mut need_resync = !self.is_available();
        while !self.stop.load(Ordering::Relaxed) {
            if need_resync && !self.resync() {
                self.sleep(RETRY_AFTER);
                continue;
            }
            need_resync = false;
            let from = self.read_copy().revision + 1;
            let mut watch = match self.etcd.watch(&prefix, from) {
                Ok(w) => w,
                Err(e) => {
                    self.set_available(false, Some(&e));
                    // Back: whatever happened meanwhile is read whole.
                    need_resync = true;
                    self.sleep(RETRY_AFTER);
                    continue;
                }
            };
            while !self.stop.load(Ordering::Relaxed) {
                match watch.next_news() {
                    Ok(WatchNews::Events { events, revision }) => self.apply(events, revision),
                    Ok(WatchNews::Compacted { revision }) => {
                        warn!(revision, "cluster: etcd compacted the revisions this host had not seen; reading the store again");
                        need_resync = true;
                        break;
                    }
                    // Silent too long, or broken: watch again from where the copy is (the
                    // writer's health check says whether etcd is out of reach).
                    Err(e) => {
                        debug!("cluster: watch ended: {e}");
                        break;
                    }
                }
            }
        }
    }

    fn write_loop(&self) {
        let mut last_health = Instant::now() - HEALTH_EVERY;
        let mut last_save = Instant::now();
        let mut saved_revision = -1;
        while !self.stop.load(Ordering::Relaxed) {
            let next = {
                let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                let (mut q, _) = self
                    .wake
                    .wait_timeout_while(q, Duration::from_millis(500), |q| {
                        q.writes.is_empty() && !self.stop.load(Ordering::Relaxed)
                    })
                    .unwrap_or_else(|p| p.into_inner());
                q.writes.pop_front()
            };
            if let Some(w) = next {
                let id = match &w {
                    Write::Create { group, client, .. }
                    | Write::Update { group, client, .. }
                    | Write::Delete { group, client, .. } => Some((group.clone(), *client)),
                    Write::Views { .. } => None,
                };
                let result = self.write(&w);
                if let Some(id) = id {
                    self.queue
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .pending
                        .remove(&id);
                }
                match result {
                    Ok(()) => {
                        self.set_available(true, None);
                        last_health = Instant::now();
                    }
                    Err(e) => {
                        self.set_available(false, Some(&e));
                        // Views are recorded again once etcd answers; clients ask again.
                        if let Write::Views { .. } = w {
                            self.queue
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .writes
                                .push_back(w);
                        }
                        self.sleep(RETRY_AFTER);
                    }
                }
            } else if last_health.elapsed() >= HEALTH_EVERY {
                last_health = Instant::now();
                match self.etcd.healthy(&self.cfg.prefix) {
                    Ok(_) => {
                        let was = self.is_available();
                        self.set_available(true, None);
                        if !was {
                            // Whatever changed while this host was cut off.
                            self.resync();
                        }
                    }
                    Err(e) => self.set_available(false, Some(&e)),
                }
            }
            let revision = self.read_copy().revision;
            if revision != saved_revision && last_save.elapsed() >= SAVE_EVERY {
                last_save = Instant::now();
                if self.save().is_ok() {
                    saved_revision = revision;
                }
            }
        }
        let _ = self.save();
    }

    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes the copy beside the tables, crash-safe (temporary file, fsync, rename).
    fn save(&self) -> std::io::Result<()> {
        let text = self.read_copy().to_text();
        if let Some(dir) = self.state_file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let r = crate::files::replace(&self.state_file, 0o644, |f| f.write_all(text.as_bytes()));
        if let Err(e) = &r {
            warn!(file = %self.state_file.display(), "cluster: cannot save the copy: {e}");
        }
        r
    }

    fn put_event(&self, key: String, value: String, mod_revision: i64) {
        let rev = self.read_copy().revision;
        self.apply(
            vec![Event::Put {
                key,
                value: value.into_bytes(),
                mod_revision,
            }],
            rev,
        );
    }

    fn write(&self, w: &Write) -> Result<(), EtcdError> {
        match w {
            Write::Create {
                group,
                client,
                view,
                now_s,
            } => self.create(group, *client, view, *now_s),
            Write::Update {
                group,
                client,
                view,
                now_s,
                mod_revision,
            } => self.update(group, *client, view, *now_s, *mod_revision),
            Write::Delete {
                group,
                client,
                mod_revision,
            } => {
                if self
                    .etcd
                    .delete_if(&self.client_key(group, *client), *mod_revision)?
                {
                    self.counters.forgotten.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Write::Views { group, views } => self.define(group, views),
        }
    }

    fn client_key(&self, group: &str, client: IpAddr) -> String {
        Key::Client {
            group: group.to_string(),
            client,
        }
        .encode(&self.cfg.prefix)
    }

    /// A new client's record, unless there is one: whoever recorded it first, the copy has
    /// it at once, so the client's next request is answered without waiting for the watch.
    fn create(&self, group: &str, client: IpAddr, view: &str, now_s: u64) -> Result<(), EtcdError> {
        let key = self.client_key(group, client);
        let value = ClientRecord {
            view: view.to_string(),
            seen_s: now_s,
        }
        .encode();
        match self.etcd.create(&key, &value)? {
            Created::Yes { revision } => {
                self.counters.created.fetch_add(1, Ordering::Relaxed);
                self.put_event(key, value, revision);
                self.adopted(group, client, revision);
            }
            Created::Exists {
                value,
                mod_revision,
            } => {
                self.counters.lost_races.fetch_add(1, Ordering::Relaxed);
                let value = String::from_utf8_lossy(&value).into_owned();
                self.put_event(key, value, mod_revision);
            }
        }
        Ok(())
    }

    /// A move made here, or a refresh: lost to a change made elsewhere meanwhile (the watch
    /// brings that one, and the tables thread follows it).
    fn update(
        &self,
        group: &str,
        client: IpAddr,
        view: &str,
        now_s: u64,
        mod_revision: i64,
    ) -> Result<(), EtcdError> {
        let value = ClientRecord {
            view: view.to_string(),
            seen_s: now_s,
        }
        .encode();
        let moved = self
            .read_copy()
            .client(group, client)
            .is_some_and(|e| e.view != view);
        if self
            .etcd
            .put_if(&self.client_key(group, client), &value, mod_revision)?
        {
            let c = if moved {
                &self.counters.moves_recorded
            } else {
                &self.counters.refreshed
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Records each view's offset unless recorded; a view recorded with another offset
    /// refuses the group here.
    fn define(&self, group: &str, views: &[(String, i64)]) -> Result<(), EtcdError> {
        let mut conflicts = Vec::new();
        for (view, offset) in views {
            let key = Key::View {
                group: group.to_string(),
                view: view.clone(),
            }
            .encode(&self.cfg.prefix);
            if let Created::Exists { value, .. } =
                self.etcd.create(&key, &encode_offset(*offset))?
            {
                let recorded = parse_offset(&value);
                if recorded != Ok(*offset) {
                    conflicts.push(Conflict {
                        view: view.clone(),
                        recorded_ns: recorded.unwrap_or(i64::MIN),
                        configured_ns: *offset,
                    });
                }
            }
        }
        let mut refused = self.refused.write().unwrap_or_else(|p| p.into_inner());
        if conflicts.is_empty() {
            refused.remove(group);
        } else {
            error!(
                group,
                "cluster: {}; this host refuses the group's new clients until its config agrees",
                describe(&conflicts)
            );
            refused.insert(group.to_string(), conflicts);
        }
        Ok(())
    }
}

/// "view `s15` is recorded at +15 s, configured at +16 s".
pub fn describe(conflicts: &[Conflict]) -> String {
    conflicts
        .iter()
        .map(|c| {
            format!(
                "view `{}` is recorded in etcd at {} and configured here at {}",
                c.view,
                crate::duration::format(ntp_offset_proto::time::Offset::from_nanos(c.recorded_ns)),
                crate::duration::format(ntp_offset_proto::time::Offset::from_nanos(
                    c.configured_ns
                ))
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The cluster's threads, stopped with the server.
pub struct Threads {
    cluster: Arc<Cluster>,
    threads: Vec<JoinHandle<()>>,
}

impl Threads {
    /// Stops both threads and saves the copy. The watcher may be blocked in a read for up
    /// to [`etcd::WATCH_IDLE`]: it is not waited for.
    pub fn stop(self) {
        self.cluster.stop.store(true, Ordering::Relaxed);
        self.cluster.wake.notify_all();
        let mut threads = self.threads.into_iter();
        let _watcher = threads.next();
        for t in threads {
            let _ = t.join();
        }
    }
}
