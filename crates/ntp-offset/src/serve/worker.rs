//! One socket's loop: receive a batch (with kernel receive timestamps), decide each request,
//! read the clock once, stamp every answer's transmit time, send the batch.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ntp_offset_proto::ratelimit::RateLimiter;
use ntp_offset_proto::responder::{
    decide, Credentials, Decision, DropReason, Request, Response, ResponseKind, MAX_REQUEST_LEN,
    MAX_RESPONSE_LEN,
};
use ntp_offset_sys::batch::{is_retryable, RecvBatch, SendBatch};
use ntp_offset_sys::clock::monotonic_ns;
use tracing::warn;

use crate::entropy::OsEntropy;

use super::assignments::BatchAssigner;
use super::stats::{Batch, WorkerStats};
use super::Shared;

/// Datagrams per system call: enough to amortize the call under load, small enough that the
/// first answer of a batch does not wait long for the last.
const BATCH: usize = 32;

pub struct Worker {
    pub socket: UdpSocket,
    pub local: SocketAddr,
    pub shared: Arc<Shared>,
    pub stats: Arc<WorkerStats>,
    pub stop: Arc<AtomicBool>,
}

impl Worker {
    pub fn run(self) {
        // One byte more than the largest request, so anything larger shows as truncated.
        let mut rx = RecvBatch::new(BATCH, MAX_REQUEST_LEN + 1);
        let mut tx = SendBatch::new(BATCH, MAX_RESPONSE_LEN);
        let mut pending: Vec<(Response, SocketAddr)> = Vec::with_capacity(BATCH);
        let mut limiter: Option<RateLimiter> = None;
        let keys = RandomState::new();
        let key = (keys.hash_one(1u8), keys.hash_one(2u8));
        let mut counts = Batch::default();
        let mut rng = OsEntropy::default();

        while !self.stop.load(Ordering::Relaxed) {
            let n = match rx.recv(&self.socket) {
                Ok(n) => n,
                Err(e) if is_retryable(&e) => continue,
                Err(e) => {
                    warn!(local = %self.local, "receive failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
            };
            let runtime = self.shared.runtime.load();
            let master_keys = self.shared.nts_keys.load();
            let creds = Credentials {
                symmetric: &runtime.auth,
                nts: master_keys.as_deref(),
            };
            let snapshot = self.shared.clock.snapshot();
            let clock = snapshot.batch();
            // A reload that changes the rate-limit parameters starts a fresh table.
            if limiter.as_ref().map(RateLimiter::params) != runtime.rate_limit {
                limiter = runtime.rate_limit.map(|p| RateLimiter::new(p, key));
            }
            let now_mono_ns = monotonic_ns();
            let now_s = super::unix_seconds();
            let assigner = BatchAssigner {
                groups: &runtime.groups,
                now_s,
            };
            counts.reset(runtime.view_names.len());
            counts.totals.received = n as u64;
            pending.clear();
            for i in 0..n {
                let Some(r) = rx.get(i) else {
                    counts.totals.drop_for(DropReason::Malformed);
                    continue;
                };
                if r.truncated {
                    counts.totals.drop_for(DropReason::Oversized);
                    continue;
                }
                let receive = clock.receive(r.rx_time);
                let req = Request {
                    packet: r.data,
                    local: self.local,
                    client: r.peer.ip(),
                    receive,
                    now_mono_ns,
                };
                match decide(
                    &req,
                    &runtime.views,
                    &assigner,
                    &snapshot.state,
                    runtime.unmatched,
                    &creds,
                    limiter.as_mut(),
                ) {
                    Decision::Respond(resp) => {
                        counts.client(r.peer.ip(), resp.view, false);
                        pending.push((resp, r.peer))
                    }
                    Decision::Ignore(reason) => counts.totals.drop_for(reason),
                    Decision::Limited(view) => {
                        counts.totals.drop_for(DropReason::RateLimited);
                        if let Some(v) = view {
                            counts.view(v).rate_limited += 1;
                        }
                        counts.client(r.peer.ip(), view, true);
                    }
                }
            }
            if !pending.is_empty() {
                // The transmit timestamp: one clock reading, as late as possible, for the batch.
                let transmit = clock.now();
                for (resp, peer) in &mut pending {
                    counts.totals.responded(resp.kind);
                    if let Some(v) = resp.view {
                        let c = counts.view(v);
                        match resp.kind {
                            ResponseKind::KodRate => c.kod_rate += 1,
                            ResponseKind::CryptoNak | ResponseKind::NtsNak => {}
                            _ => c.answered += 1,
                        }
                    }
                    if let Some(buf) = tx.push(resp.len(), *peer) {
                        resp.finish_into(transmit, &creds, &mut rng, buf);
                    }
                }
                let queued = tx.len();
                match tx.send(&self.socket) {
                    Ok(sent) => counts.totals.send_errors += (queued - sent) as u64,
                    Err(_) => counts.totals.send_errors += queued as u64,
                }
            }
            self.stats.add(&counts, &runtime.view_names, now_s);
        }
    }
}
