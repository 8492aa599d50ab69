//! What workers read the time from. A reference thread ([`super::system_reference`] or
//! [`super::pulse_reference`]) publishes a [`ClockSnapshot`]; a worker loads it once per batch
//! and reads time through it, so no lock or status system call is on the request path.

use std::sync::Arc;

use arc_swap::ArcSwap;
use ntp_offset_proto::clock_model::ServedLine;
use ntp_offset_proto::leap::{LeapPolicy, LeapTracker};
use ntp_offset_proto::system::{precision_log2, ServerState};
use ntp_offset_proto::time::{Offset, Time};
use ntp_offset_sys::clock::{
    kernel_ntp_status, monotonic_raw_ns, realtime, realtime_and_raw, realtime_precision_ns,
};

/// Where time comes from.
#[derive(Clone, Copy, Debug)]
pub enum Timeline {
    /// The host's CLOCK_REALTIME.
    System,
    /// The pulse-disciplined clock: a line on CLOCK_MONOTONIC_RAW. None before the first lock
    /// (answers then carry the host clock, marked unsynchronized).
    Pulse(Option<ServedLine>),
}

/// What every answer needs to know about the reference, at one moment.
#[derive(Clone, Debug)]
pub struct ClockSnapshot {
    pub state: ServerState,
    pub tracker: LeapTracker,
    pub timeline: Timeline,
}

impl ClockSnapshot {
    pub fn unsynchronized(precision: i8, leap: LeapPolicy, timeline: Timeline) -> ClockSnapshot {
        ClockSnapshot {
            state: ServerState::unsynchronized(precision),
            tracker: LeapTracker::new(leap),
            timeline,
        }
    }

    /// Reads the clocks a batch needs once: for the pulse timeline, where CLOCK_REALTIME
    /// (the kernel's receive stamps) stands against CLOCK_MONOTONIC_RAW.
    pub fn batch(&self) -> BatchClock<'_> {
        let anchor = match self.timeline {
            Timeline::Pulse(Some(line)) => {
                let ((s, ns), mono) = realtime_and_raw();
                Some((line, Time::from_timespec(s, ns), mono))
            }
            _ => None,
        };
        BatchClock { snap: self, anchor }
    }

    /// Base time (what view offsets are added to) for a host-clock reading `u`.
    fn system_base(&self, u: Time) -> Time {
        // Only in the one second before an inserted leap is the reading ambiguous; only then
        // is the kernel asked whether it is repeating that second.
        let repeating = self.tracker.is_ambiguous(u)
            && kernel_ntp_status()
                .map(|k| k.in_inserted_second())
                .unwrap_or(false);
        self.tracker.base_time(u, repeating)
    }
}

fn timespec((secs, nanos): (i64, i64)) -> Time {
    Time::from_timespec(secs, nanos)
}

/// A snapshot with the clock readings of one batch.
pub struct BatchClock<'a> {
    snap: &'a ClockSnapshot,
    anchor: Option<(ServedLine, Time, i64)>,
}

impl BatchClock<'_> {
    /// Base time at a kernel receive (or transmit) stamp (CLOCK_REALTIME; None: not stamped,
    /// read now).
    pub fn receive(&self, kernel: Option<(i64, i64)>) -> Time {
        let real = timespec(kernel.unwrap_or_else(realtime));
        match self.anchor {
            None => self.snap.system_base(real),
            Some((line, anchor_real, anchor_mono)) => {
                let mono = anchor_mono - anchor_real.since(real).nanos();
                self.pulse_base(line.at(mono))
            }
        }
    }

    /// Base time now (for transmit timestamps).
    pub fn now(&self) -> Time {
        match self.anchor {
            None => self.snap.system_base(timespec(realtime())),
            Some((line, _, _)) => self.pulse_base(line.at(monotonic_raw_ns())),
        }
    }

    fn pulse_base(&self, tick_ns: i64) -> Time {
        // The model's time is continuous (it counts a leap second), so no kernel question.
        self.snap
            .tracker
            .base_from_elapsed(Time::from_unix_nanos(tick_ns))
    }
}

/// The published snapshot, and the host clock's precision (measured once at start).
pub struct ReferenceClock {
    pub precision: i8,
    current: ArcSwap<ClockSnapshot>,
}

impl ReferenceClock {
    pub fn new(leap: LeapPolicy, timeline: Timeline) -> Arc<ReferenceClock> {
        let precision = precision_log2(Offset::from_nanos(realtime_precision_ns()));
        Arc::new(ReferenceClock {
            precision,
            current: ArcSwap::from_pointee(ClockSnapshot::unsynchronized(
                precision, leap, timeline,
            )),
        })
    }

    pub fn snapshot(&self) -> Arc<ClockSnapshot> {
        self.current.load_full()
    }

    pub fn publish(&self, snapshot: ClockSnapshot) {
        self.current.store(Arc::new(snapshot));
    }
}
