//! Counters of what `serve` did with the datagrams it received, kept per worker (one per
//! listening socket) and summed only when read: a worker takes its own, uncontended lock once
//! per batch, so counting costs the NTP path nothing it would notice, however often the
//! counters are read (status, metrics, the status page).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use ntp_offset_proto::view::ViewId;

use super::client_log::{ClientLog, Seen};
pub use crate::control::counters::{Counts, ViewCounts};

/// What a worker gathers over one batch, before it takes its lock once.
pub struct Batch {
    pub totals: Counts,
    /// Indexed by [`ViewId`] of the batch's configuration.
    pub views: Vec<ViewCounts>,
    pub seen: Vec<Seen>,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            totals: Counts::default(),
            views: Vec::new(),
            seen: Vec::with_capacity(32),
        }
    }
}

impl Batch {
    pub fn reset(&mut self, views: usize) {
        self.totals = Counts::default();
        self.views.clear();
        self.views.resize(views, ViewCounts::default());
        self.seen.clear();
    }

    /// A request that chose `view` (answered, KoD or rate-limited).
    pub fn view(&mut self, view: ViewId) -> &mut ViewCounts {
        let v = &mut self.views[view.0 as usize];
        v.requests += 1;
        v
    }

    pub fn client(&mut self, ip: IpAddr, view: Option<ViewId>, limited: bool) {
        self.seen.push(Seen { ip, view, limited });
    }
}

/// One worker's counts since the server started.
pub struct WorkerStats {
    pub local: SocketAddr,
    inner: Mutex<WorkerCounts>,
}

#[derive(Default)]
pub struct WorkerCounts {
    pub totals: Counts,
    /// By view id of the configuration named by `names` (the batch's, usually).
    by_id: Vec<ViewCounts>,
    names: Vec<Arc<str>>,
    /// Counts of earlier configurations, by view name: they stay with a view across reloads
    /// that renumber it.
    by_name: BTreeMap<String, ViewCounts>,
    pub clients: ClientLog,
}

/// The same configuration's view names: the same shared names (pointers compared).
pub fn same_names(a: &[Arc<str>], b: &[Arc<str>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| Arc::ptr_eq(a, b))
}

impl WorkerCounts {
    fn add(&mut self, b: &Batch, names: &[Arc<str>], now_s: u64) {
        self.totals.add(&b.totals);
        if !same_names(&self.names, names) {
            self.switch_to(names);
        }
        for (c, v) in self.by_id.iter_mut().zip(&b.views) {
            c.add(v);
        }
        for s in &b.seen {
            self.clients.record(s, names, now_s);
        }
    }

    /// Per view name, everything counted.
    pub fn views(&self) -> BTreeMap<String, ViewCounts> {
        let mut out = self.by_name.clone();
        for (name, c) in self.names.iter().zip(&self.by_id) {
            if c.requests > 0 {
                out.entry(name.to_string()).or_default().add(c);
            }
        }
        out
    }

    /// A batch from another configuration (a reload): fold the counts by name, start anew.
    fn switch_to(&mut self, names: &[Arc<str>]) {
        for (name, c) in self.names.iter().zip(&self.by_id) {
            if c.requests > 0 {
                self.by_name.entry(name.to_string()).or_default().add(c);
            }
        }
        self.names = names.to_vec();
        self.by_id = vec![ViewCounts::default(); names.len()];
    }
}

impl WorkerStats {
    pub fn new(local: SocketAddr, client_log_capacity: usize) -> Arc<WorkerStats> {
        Arc::new(WorkerStats {
            local,
            inner: Mutex::new(WorkerCounts {
                clients: ClientLog::new(client_log_capacity),
                ..WorkerCounts::default()
            }),
        })
    }

    /// Adds a batch; `names` are the batch's view names by id, `now_s` its wall-clock second.
    pub fn add(&self, b: &Batch, names: &[Arc<str>], now_s: u64) {
        self.lock().add(b, names, now_s);
    }

    /// [`add`](Self::add) unless a reader holds the lock (the monitor summarizes the client
    /// log under it, about a millisecond a second): then false, and the worker keeps the
    /// batch's counts to add with its next, rather than let its socket's queue overflow.
    pub fn try_add(&self, b: &Batch, names: &[Arc<str>], now_s: u64) -> bool {
        let mut w = match self.inner.try_lock() {
            Ok(w) => w,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        w.add(b, names, now_s);
        true
    }

    pub fn lock(&self) -> MutexGuard<'_, WorkerCounts> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every worker's counts, and those of workers that have stopped (a removed listen address).
#[derive(Default)]
pub struct Stats {
    workers: Mutex<Vec<Arc<WorkerStats>>>,
    retired: Mutex<(Counts, BTreeMap<String, ViewCounts>)>,
}

/// The sums, read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub all: Counts,
    pub sockets: Vec<(SocketAddr, Counts)>,
    /// Per socket address, what each of its workers received (one entry per worker).
    pub received_by_worker: Vec<Vec<u64>>,
    pub views: BTreeMap<String, ViewCounts>,
}

impl Stats {
    pub fn register(&self, w: Arc<WorkerStats>) {
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(w);
    }

    /// A worker stopped: its counts stay in the totals (its clients leave the log).
    pub fn retire(&self, local: SocketAddr) {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        workers.retain(|w| {
            if w.local != local {
                return true;
            }
            let c = w.lock();
            retired.0.add(&c.totals);
            for (name, v) in c.views() {
                retired.1.entry(name).or_default().add(&v);
            }
            false
        });
    }

    pub fn workers(&self) -> Vec<Arc<WorkerStats>> {
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        {
            let r = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            t.all = r.0;
            t.views = r.1.clone();
        }
        for w in self.workers() {
            let c = w.lock();
            t.all.add(&c.totals);
            // Workers sharing an address (`workers = N`) show as one socket.
            match t.sockets.iter().position(|(a, _)| *a == w.local) {
                Some(i) => {
                    t.sockets[i].1.add(&c.totals);
                    t.received_by_worker[i].push(c.totals.received);
                }
                None => {
                    t.sockets.push((w.local, c.totals));
                    t.received_by_worker.push(vec![c.totals.received]);
                }
            }
            for (name, v) in c.views() {
                t.views.entry(name).or_default().add(&v);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntp_offset_proto::responder::{DropReason, ResponseKind};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_batch_that_finds_the_lock_held_is_kept_not_waited_for() {
        let names: Vec<Arc<str>> = vec!["a".into()];
        let w = WorkerStats::new(sa("127.0.0.1:1"), 16);
        let mut b = Batch::default();
        b.reset(1);
        b.totals.received = 2;
        b.client("198.18.0.1".parse().unwrap(), Some(ViewId(0)), false);
        {
            let _reader = w.lock();
            assert!(!w.try_add(&b, &names, 100), "a reader holds the lock");
        }
        // The worker adds to the batch it kept, and adds both once the lock is free.
        b.totals.received += 1;
        b.client("198.18.0.2".parse().unwrap(), Some(ViewId(0)), true);
        assert!(w.try_add(&b, &names, 101));
        let c = w.lock();
        assert_eq!((c.totals.received, c.clients.len()), (3, 2));
    }

    #[test]
    fn workers_are_summed_on_read_and_kept_when_they_stop() {
        let stats = Stats::default();
        let names: Vec<Arc<str>> = vec!["a".into(), "b".into()];
        let (w1, w2) = (
            WorkerStats::new(sa("127.0.0.1:1"), 16),
            WorkerStats::new(sa("127.0.0.1:2"), 16),
        );
        stats.register(w1.clone());
        stats.register(w2.clone());
        let mut b = Batch::default();
        b.reset(2);
        b.totals.received = 3;
        b.totals.responded(ResponseKind::Time);
        b.totals.drop_for(DropReason::NoView);
        b.view(ViewId(1)).answered += 1;
        b.client("198.18.0.1".parse().unwrap(), Some(ViewId(1)), false);
        w1.add(&b, &names, 100);
        w2.add(&b, &names, 100);
        let t = stats.totals();
        assert_eq!(t.all.received, 6);
        assert_eq!(t.all.dropped(DropReason::NoView), 2);
        assert_eq!(t.sockets.len(), 2);
        assert_eq!(t.views["b"].requests, 2);
        assert!(!t.views.contains_key("a"));
        // A reload renumbers the views: `b` is now id 0, and its counts carry on by name.
        let reloaded: Vec<Arc<str>> = vec!["b".into()];
        let mut b2 = Batch::default();
        b2.reset(1);
        b2.view(ViewId(0)).answered += 1;
        w2.add(&b2, &reloaded, 101);
        assert_eq!(stats.totals().views["b"].requests, 3);
        stats.retire(sa("127.0.0.1:1"));
        let t = stats.totals();
        assert_eq!(
            (t.all.received, t.sockets.len(), t.views["b"].answered),
            (6, 1, 3)
        );
    }
}
