//! One socket's loop: receive a batch (with kernel receive timestamps), decide each request,
//! read the clock once, stamp every answer's transmit time, send the batch. With interleaved
//! mode on, the answers whose clients may ask for it next are logged, and the kernel's
//! transmit stamps of those answers, echoed back on the socket's error queue, refine the log.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ntp_offset_proto::interleaved::{self, Stamped, TransmitLog};
use ntp_offset_proto::packet::Header;
use ntp_offset_proto::ratelimit::{RateLimitParams, RateLimiter};
use ntp_offset_proto::responder::{
    decide, Credentials, Decision, DropReason, Request, Response, ResponseKind, MAX_REQUEST_LEN,
    MAX_RESPONSE_LEN,
};
use ntp_offset_proto::time::{NtpTimestamp, Offset};
use ntp_offset_sys::batch::{is_retryable, RecvBatch, SendBatch};
use ntp_offset_sys::clock::monotonic_ns;
use ntp_offset_sys::txstamp::next_tx_echo;
use tracing::warn;

use crate::entropy::OsEntropy;

use super::assignments::BatchAssigner;
use super::clock::BatchClock;
use super::stats::{same_names, Batch, WorkerStats};
use super::Shared;

/// Datagrams per system call: enough to amortize the call under load, small enough that the
/// first answer of a batch does not wait long for the last.
const BATCH: usize = 32;

/// Stamps come within microseconds of the send (milliseconds behind a busy device queue): one
/// still missing this long after the last stamped send is lost, and no longer waited for (so
/// it does not cost a system call per batch for ever).
const STAMP_LOST_NS: u64 = 1_000_000_000;

/// Counts a worker could not add (a reader held the lock) are added with its next batch; with
/// this many clients seen still held, it waits for the lock instead.
const MAX_DEFERRED_SEEN: usize = 4096;

pub struct Worker {
    pub socket: UdpSocket,
    pub local: SocketAddr,
    pub shared: Arc<Shared>,
    pub stats: Arc<WorkerStats>,
    pub stop: Arc<AtomicBool>,
    /// Serve interleaved mode: the socket reports transmit stamps (`SocketPlan`).
    pub interleaved: bool,
}

/// The worker's log of transmit times and the stamps it still waits for.
struct Interleave {
    log: TransmitLog,
    /// Stamps asked for and not yet read: the error queue is read before each batch while
    /// there are any, however long ago they were asked for (a client polling every 64 s finds
    /// its previous answer's stamp read just before its request is decided).
    outstanding: u64,
    /// Monotonic time of the last send that asked for a stamp.
    last_sent_ns: u64,
    /// An echoed frame: the answer's bytes behind the device's headers.
    frame: Vec<u8>,
}

impl Interleave {
    fn new() -> Interleave {
        Interleave {
            log: TransmitLog::new(interleaved::DEFAULT_LOG_SIZE),
            outstanding: 0,
            last_sent_ns: 0,
            frame: vec![0; MAX_RESPONSE_LEN + 128],
        }
    }

    /// Reads the transmit stamps waiting on the error queue into the log.
    fn collect(
        &mut self,
        socket: &UdpSocket,
        clock: &BatchClock<'_>,
        counts: &mut Batch,
        now: u64,
    ) {
        if self.outstanding == 0 {
            return;
        }
        while let Ok(Some(echo)) = next_tx_echo(socket, &mut self.frame) {
            self.outstanding = self.outstanding.saturating_sub(1);
            let receive = interleaved::echo::udp_payload(&self.frame[..echo.len])
                .ok()
                .filter(|_| !echo.truncated)
                .and_then(|p| Header::parse(p).ok())
                .map(|h| h.receive_timestamp);
            let Some(receive) = receive else {
                counts.totals.tx_stamps_unmatched += 1;
                continue;
            };
            match self.log.stamped(receive, clock.receive(Some(echo.time))) {
                Stamped::Recorded => counts.totals.tx_stamps += 1,
                Stamped::Unknown | Stamped::Implausible => counts.totals.tx_stamps_unmatched += 1,
            }
        }
        if now.saturating_sub(self.last_sent_ns) > STAMP_LOST_NS {
            self.outstanding = 0;
        }
    }

    /// Logs an answer that asked for its transmit stamp.
    fn sent(&mut self, receive: NtpTimestamp, transmit: NtpTimestamp, offset: Offset, now: u64) {
        self.log.sent(receive, transmit, offset);
        self.outstanding += 1;
        self.last_sent_ns = now;
    }
}

/// The answering half of a worker: the batch being sent, and what it logs for interleaved mode.
struct Answering {
    tx: SendBatch,
    pending: Vec<(Response, SocketAddr)>,
    rng: OsEntropy,
    xleave: Option<Interleave>,
}

impl Answering {
    /// Stamps every pending answer with one clock reading, as late as possible, and sends the
    /// batch; counts what went out.
    fn send(
        &mut self,
        socket: &UdpSocket,
        clock: &BatchClock<'_>,
        creds: &Credentials<'_>,
        counts: &mut Batch,
        now_mono_ns: u64,
    ) {
        let transmit = clock.now();
        for (resp, peer) in &mut self.pending {
            count_answer(counts, resp);
            let log_as = resp.log_as.filter(|_| self.xleave.is_some());
            if let Some(buf) = self.tx.push_with(resp.len(), *peer, log_as.is_some()) {
                let in_view = resp.finish_into(transmit, creds, &mut self.rng, buf);
                if let (Some(x), Some(receive)) = (self.xleave.as_mut(), log_as) {
                    x.sent(receive, in_view, resp.offset(), now_mono_ns);
                }
            }
        }
        let queued = self.tx.len();
        match self.tx.send(socket) {
            Ok(sent) => counts.totals.send_errors += (queued - sent) as u64,
            Err(_) => counts.totals.send_errors += queued as u64,
        }
        // On loopback and veth the stamps are there as soon as the send returns.
        if let Some(x) = self.xleave.as_mut() {
            x.collect(socket, clock, counts, now_mono_ns);
        }
    }
}

fn count_answer(counts: &mut Batch, resp: &Response) {
    counts.totals.responded(resp.kind);
    counts.totals.interleaved += u64::from(resp.is_interleaved());
    if let Some(v) = resp.view {
        let c = counts.view(v);
        match resp.kind {
            ResponseKind::KodRate => c.kod_rate += 1,
            ResponseKind::CryptoNak | ResponseKind::NtsNak | ResponseKind::Placing => {}
            _ => c.answered += 1,
        }
    }
}

/// The worker's rate limiter, keyed per worker, if rate limiting is on.
struct Limiter {
    table: Option<RateLimiter>,
    key: (u64, u64),
}

impl Default for Limiter {
    fn default() -> Limiter {
        let keys = RandomState::new();
        Limiter {
            table: None,
            key: (keys.hash_one(1u8), keys.hash_one(2u8)),
        }
    }
}

impl Limiter {
    /// A reload that changes the rate-limit parameters starts a fresh table.
    fn follow(&mut self, params: Option<RateLimitParams>) {
        if self.table.as_ref().map(RateLimiter::params) != params {
            self.table = params.map(|p| RateLimiter::new(p, self.key));
        }
    }
}

/// A request's decision: an answer to send, or a drop counted.
fn record(
    decision: Decision,
    peer: SocketAddr,
    counts: &mut Batch,
    pending: &mut Vec<(Response, SocketAddr)>,
) {
    match decision {
        Decision::Respond(resp) => {
            counts.client(peer.ip(), resp.view, false);
            pending.push((resp, peer))
        }
        Decision::Ignore(reason) => counts.totals.drop_for(reason),
        Decision::Limited(view) => {
            counts.totals.drop_for(DropReason::RateLimited);
            if let Some(v) = view {
                counts.view(v).rate_limited += 1;
            }
            counts.client(peer.ip(), view, true);
        }
    }
}

impl Worker {
    /// A batch of datagrams; None after a timeout or an error (logged, then a short pause).
    fn receive(&self, rx: &mut RecvBatch) -> Option<usize> {
        match rx.recv(&self.socket) {
            Ok(n) => Some(n),
            Err(e) if is_retryable(&e) => None,
            Err(e) => {
                warn!(local = %self.local, "receive failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
                None
            }
        }
    }

    /// Counts for a new batch: those held back are kept (with the same view names) or added
    /// now (a reload renamed the views).
    fn start_counts(
        &self,
        counts: &mut Batch,
        deferred: Option<Vec<Arc<str>>>,
        names: &[Arc<str>],
        now_s: u64,
    ) {
        match deferred {
            Some(held) if same_names(&held, names) => {}
            Some(held) => {
                self.stats.add(counts, &held, now_s);
                counts.reset(names.len());
            }
            None => counts.reset(names.len()),
        }
    }

    /// The batch's counts added, unless a reader holds the lock: then they are held back
    /// (their view names returned) and added with the next batch.
    fn add_counts(&self, counts: &Batch, names: &[Arc<str>], now_s: u64) -> Option<Vec<Arc<str>>> {
        if counts.seen.len() >= MAX_DEFERRED_SEEN {
            self.stats.add(counts, names, now_s);
        } else if !self.stats.try_add(counts, names, now_s) {
            return Some(names.to_vec());
        }
        None
    }

    pub fn run(self) {
        // One byte more than the largest request, so anything larger shows as truncated.
        let mut rx = RecvBatch::new(BATCH, MAX_REQUEST_LEN + 1);
        let mut out = Answering {
            tx: SendBatch::new(BATCH, MAX_RESPONSE_LEN),
            pending: Vec::with_capacity(BATCH),
            rng: OsEntropy::default(),
            xleave: self.interleaved.then(Interleave::new),
        };
        let mut limiter = Limiter::default();
        let mut counts = Batch::default();
        // The view names of counts held back from a busy lock (see `MAX_DEFERRED_SEEN`).
        let mut deferred: Option<Vec<Arc<str>>> = None;

        while !self.stop.load(Ordering::Relaxed) {
            let Some(n) = self.receive(&mut rx) else {
                continue;
            };
            let runtime = self.shared.runtime.load();
            let master_keys = self.shared.nts_keys.load();
            let creds = Credentials {
                symmetric: &runtime.auth,
                nts: master_keys.as_deref(),
            };
            let snapshot = self.shared.clock.snapshot();
            let clock = snapshot.batch();
            limiter.follow(runtime.rate_limit);
            let now_mono_ns = monotonic_ns();
            let now_s = super::unix_seconds();
            self.start_counts(&mut counts, deferred.take(), &runtime.view_names, now_s);
            if let Some(x) = out.xleave.as_mut() {
                x.collect(&self.socket, &clock, &mut counts, now_mono_ns);
            }
            let assigner = BatchAssigner {
                groups: &runtime.groups,
                now_s,
                vms: &self.shared.vms,
                cluster: self.shared.cluster.as_deref().map(|c| (c, &runtime.views)),
            };
            counts.totals.received += n as u64;
            out.pending.clear();
            for i in 0..n {
                let Some(r) = rx.get(i) else {
                    counts.totals.drop_for(DropReason::Malformed);
                    continue;
                };
                if r.truncated {
                    counts.totals.drop_for(DropReason::Oversized);
                    continue;
                }
                let req = Request {
                    packet: r.data,
                    local: self.local,
                    client: r.peer.ip(),
                    receive: clock.receive(r.rx_time),
                    now_mono_ns,
                    sent: out.xleave.as_ref().map(|x| &x.log),
                };
                let decision = decide(
                    &req,
                    &runtime.views,
                    &assigner,
                    &snapshot.state,
                    runtime.unmatched,
                    &creds,
                    limiter.table.as_mut(),
                );
                record(decision, r.peer, &mut counts, &mut out.pending);
            }
            if !out.pending.is_empty() {
                out.send(&self.socket, &clock, &creds, &mut counts, now_mono_ns);
            }
            deferred = self.add_counts(&counts, &runtime.view_names, now_s);
        }
        if let Some(names) = deferred {
            self.stats.add(&counts, &names, super::unix_seconds());
        }
    }
}
