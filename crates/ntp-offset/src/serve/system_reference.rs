//! The system reference: the host clock, as the kernel reports it. A thread reads the kernel's
//! NTP status once a second and publishes a [`ClockSnapshot`] with the [`Timeline::System`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use ntp_offset_proto::leap::{LeapDirection, LeapPolicy, LeapTracker};
use ntp_offset_proto::system::{ClockPolicy, KernelClock, ServerState};
use ntp_offset_proto::time::{Offset, Time};
use ntp_offset_sys::clock::kernel_ntp_status;
use tracing::{info, warn};

use super::clock::{ClockSnapshot, ReferenceClock, Timeline};

pub struct SystemReference {
    clock: Arc<ReferenceClock>,
    tracker: Mutex<(LeapTracker, Option<LastSeen>)>,
}

/// What was last logged, so each change is logged once.
#[derive(Clone, Copy, PartialEq)]
struct LastSeen {
    synchronized: bool,
    leap: Option<LeapDirection>,
}

impl SystemReference {
    pub fn new(
        clock: Arc<ReferenceClock>,
        policy: ClockPolicy,
        leap: LeapPolicy,
    ) -> SystemReference {
        let system = SystemReference {
            clock,
            tracker: Mutex::new((LeapTracker::new(leap), None)),
        };
        system.refresh(policy, leap);
        system
    }

    /// Reads the kernel and publishes a new snapshot. Called once a second, and on reload.
    pub fn refresh(&self, policy: ClockPolicy, leap: LeapPolicy) {
        let mut guard = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        let (tracker, last) = &mut *guard;
        if tracker.policy() != leap {
            *tracker = LeapTracker::new(leap);
        }
        let state = match kernel_ntp_status() {
            Ok(k) => {
                let now = Time::from_timespec(k.time.0, k.time.1);
                let announced = match (k.insert_leap(), k.delete_leap(), k.leap_done()) {
                    (_, _, true) => None,
                    (true, _, _) => Some(LeapDirection::Insert),
                    (_, true, _) => Some(LeapDirection::Delete),
                    _ => None,
                };
                tracker.observe(now, announced);
                let kernel = KernelClock {
                    synchronized: !k.unsynchronized(),
                    max_error: Offset::from_micros(k.max_error_us),
                    est_error: Offset::from_micros(k.est_error_us),
                };
                let seen = LastSeen {
                    synchronized: kernel.synchronized,
                    leap: announced,
                };
                if *last != Some(seen) {
                    log_change(*last, seen, &policy);
                    *last = Some(seen);
                }
                let base_now = tracker.base_time(now, k.in_inserted_second());
                let indicator = tracker.indicator(now);
                ServerState::from_kernel(kernel, policy, indicator, self.clock.precision, base_now)
            }
            Err(e) => {
                warn!("cannot read the kernel clock status (adjtimex): {e}; answering as unsynchronized");
                ServerState::unsynchronized(self.clock.precision)
            }
        };
        self.clock.publish(ClockSnapshot {
            state,
            tracker: tracker.clone(),
            timeline: Timeline::System,
        });
    }
}

fn log_change(last: Option<LastSeen>, seen: LastSeen, policy: &ClockPolicy) {
    if last.map(|l| l.synchronized) != Some(seen.synchronized) {
        match (seen.synchronized, policy.local_stratum) {
            (_, Some(s)) => info!(local_stratum = s, kernel_synchronized = seen.synchronized, "this host is the reference (local_stratum): answering as synchronized"),
            (true, None) => info!("host clock is synchronized (kernel STA_UNSYNC clear): answering at stratum {}", policy.stratum),
            (false, None) => warn!("host clock is not synchronized (kernel STA_UNSYNC set): answers say LI=3 (unsynchronized) until a daemon such as chronyd keeps the clock, or set local_stratum if this host is the reference"),
        }
    }
    if last.map(|l| l.leap) != Some(seen.leap) {
        if let Some(dir) = seen.leap {
            info!(direction = ?dir, "kernel announces a leap second at the next UTC midnight");
        }
    }
}

/// Runs `refresh` about once a second until `stop` is set.
pub fn spawn_refresher(
    system: Arc<SystemReference>,
    policies: Arc<ArcSwap<(ClockPolicy, LeapPolicy)>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("clock".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let p = **policies.load();
                system.refresh(p.0, p.1);
                for _ in 0..10 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        })
}
