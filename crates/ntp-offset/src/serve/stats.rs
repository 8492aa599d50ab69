//! Counters of what `serve` did with the datagrams it received. Workers add per batch; the
//! totals are logged on SIGUSR1 and at exit.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ntp_offset_proto::responder::{DropReason, ResponseKind};

#[derive(Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub answered: AtomicU64,
    pub kod_rate: AtomicU64,
    pub kod_deny: AtomicU64,
    pub send_errors: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

/// One worker's counts for one batch, added to [`Stats`] at once.
#[derive(Default)]
pub struct BatchCounts {
    pub received: u64,
    pub answered: u64,
    pub kod_rate: u64,
    pub kod_deny: u64,
    pub send_errors: u64,
    pub drops: [u64; DropReason::ALL.len()],
}

impl BatchCounts {
    pub fn responded(&mut self, kind: ResponseKind) {
        match kind {
            ResponseKind::Time => self.answered += 1,
            ResponseKind::KodRate => self.kod_rate += 1,
            ResponseKind::KodDeny => self.kod_deny += 1,
        }
    }

    pub fn dropped(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }
}

impl Stats {
    pub fn add(&self, b: &BatchCounts) {
        self.received.fetch_add(b.received, Relaxed);
        self.answered.fetch_add(b.answered, Relaxed);
        self.kod_rate.fetch_add(b.kod_rate, Relaxed);
        self.kod_deny.fetch_add(b.kod_deny, Relaxed);
        self.send_errors.fetch_add(b.send_errors, Relaxed);
        for (total, n) in self.drops.iter().zip(b.drops) {
            total.fetch_add(n, Relaxed);
        }
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Relaxed)
    }
}

impl fmt::Display for Stats {
    /// `received=… answered=… kod_rate=… kod_deny=… send_errors=… dropped: truncated=… …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received={} answered={} kod_rate={} kod_deny={} send_errors={} dropped:",
            self.received.load(Relaxed),
            self.answered.load(Relaxed),
            self.kod_rate.load(Relaxed),
            self.kod_deny.load(Relaxed),
            self.send_errors.load(Relaxed)
        )?;
        for r in DropReason::ALL {
            write!(f, " {}={}", r.name(), self.dropped(r))?;
        }
        Ok(())
    }
}
