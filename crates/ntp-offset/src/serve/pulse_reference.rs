//! The pulse reference: a thread receives ticks ([`TickInput`]), feeds their (arrival, tick
//! time) pairs to the [`ClockModel`], and publishes a [`ClockSnapshot`] with the model's
//! served line after every tick and four times a second between them (so dispersion grows and
//! LI=3 arrives on time in holdover). The host clock is only read, never set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver as Inbox, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ntp_offset_proto::clock_model::{ClockModel, ModelState, Reading, Update};
use ntp_offset_proto::leap::{LeapDirection, LeapPolicy, LeapTracker};
use ntp_offset_proto::system::{pulse_refid, PulseClock, ServerState};
use ntp_offset_proto::tick::{Leap, SourceState};
use ntp_offset_proto::tick_receiver::{Event, TickSample};
use ntp_offset_proto::time::{Offset, Time};
use ntp_offset_sys::clock::monotonic_raw_ns;
use tracing::{info, warn};

use super::clock::{ClockSnapshot, ReferenceClock, Timeline};
use super::error::ServeError;
use crate::config::PulseReference;
use crate::ticks::input::{bind_all, log_event, Rebind, TickInput};

/// Between ticks the snapshot is republished this often...
const REPUBLISH: Duration = Duration::from_millis(250);
/// ...and its dispersion covers this much growth ahead, so it is never too small.
const AHEAD_NS: i64 = 1_000_000_000;

/// A reload's new settings; sockets only when the addresses or groups changed.
struct Reconfigure {
    pulse: PulseReference,
    sockets: Option<Rebind>,
    leap: LeapPolicy,
}

pub struct PulseReferenceTask {
    current: PulseReference,
    inbox: Sender<Reconfigure>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    status: Arc<Mutex<PulseStatus>>,
}

impl PulseReferenceTask {
    /// Binds the tick sockets (so a bad address fails the start) and starts the thread.
    pub fn start(
        clock: Arc<ReferenceClock>,
        pulse: PulseReference,
        leap: LeapPolicy,
    ) -> Result<PulseReferenceTask, ServeError> {
        let sockets = bind_all(&pulse.listen, &pulse.join, pulse.share_port)?;
        info!(
            ticks = %crate::text::join_addrs(&pulse.listen),
            "reference: pulse; answering as unsynchronized until locked to ticks"
        );
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(PulseStatus::default()));
        let mut state = PulseState {
            input: TickInput::new(sockets, pulse.receiver.clone()),
            model: ClockModel::new(pulse.model),
            tracker: LeapTracker::new(leap),
            source: None,
            last_tick: None,
            ignored_unsynchronized: 0,
            transmitter_state: None,
            clock,
            status: status.clone(),
        };
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("pulse reference".into())
            .spawn(move || state.run(&rx, &thread_stop))
            .map_err(ServeError::thread("the pulse reference thread"))?;
        Ok(PulseReferenceTask {
            current: pulse,
            inbox: tx,
            stop,
            thread: Some(thread),
            status,
        })
    }

    /// Applies reloaded settings. The clock model keeps its pairs, so answers stay
    /// synchronized; new tick addresses are bound first, and a failure changes nothing.
    pub fn reload(&mut self, pulse: &PulseReference, leap: LeapPolicy) -> Result<(), ServeError> {
        if pulse.share_port != self.current.share_port {
            warn!("reload: a change of share_port applies at the next start");
        }
        let sockets = if (&pulse.listen, &pulse.join) != (&self.current.listen, &self.current.join)
        {
            // New addresses are bound first; those that stay keep their sockets.
            Some(Rebind::prepare(
                &self.current.listen,
                &self.current.join,
                &pulse.listen,
                &pulse.join,
                self.current.share_port,
            )?)
        } else {
            None
        };
        self.inbox
            .send(Reconfigure {
                pulse: pulse.clone(),
                sockets,
                leap,
            })
            .map_err(|_| ServeError::PulseStopped)?;
        self.current = pulse.clone();
        Ok(())
    }

    pub fn status(&self) -> PulseStatus {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The status cell itself, for the monitor to read.
    pub fn status_cell(&self) -> Arc<Mutex<PulseStatus>> {
        self.status.clone()
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the ticks say about their source, from the latest one.
#[derive(Clone, Copy)]
struct SourceInfo {
    stratum: u8,
    error: Option<Offset>,
    refid: [u8; 4],
}

struct PulseState {
    input: TickInput,
    model: ClockModel,
    tracker: LeapTracker,
    source: Option<SourceInfo>,
    /// When the latest tick was taken, in base time.
    last_tick: Option<Time>,
    ignored_unsynchronized: u64,
    /// What the latest tick said of the transmitter's own clock.
    transmitter_state: Option<SourceState>,
    clock: Arc<ReferenceClock>,
    status: Arc<Mutex<PulseStatus>>,
}

/// The pulse reference's state, as the status, metrics and log show it.
#[derive(Clone, Debug, Default)]
pub struct PulseStatus {
    pub state: &'static str,
    pub stratum: u8,
    pub frequency_ppm: Option<f64>,
    pub error_s: Option<f64>,
    /// Tick time minus the host clock, latest tick.
    pub offset_s: Option<f64>,
    pub jitter_s: Option<f64>,
    pub ticks: u64,
    pub missed: u64,
    pub restarts: u64,
    pub rejected: std::collections::BTreeMap<String, u64>,
    pub transmitter: Option<String>,
    /// Monotonic raw ns of the latest sample.
    pub last_sample_mono_ns: Option<i64>,
    pub unsynchronized_ticks: u64,
    pub transmitter_state: Option<&'static str>,
}

impl PulseStatus {
    /// The log's line (SIGUSR1, exit).
    pub fn line(&self) -> String {
        format!(
            "pulse {} stratum={} frequency={} error={} ticks={} rejected={} restarts={} unsynchronized_ticks={}",
            if self.state.is_empty() { "waiting for ticks" } else { self.state },
            self.stratum,
            self.frequency_ppm.map_or("-".into(), |f| format!("{f:+.3}ppm")),
            self.error_s.map_or("-".into(), |e| crate::duration::format(Offset::from_nanos((e * 1e9) as i64))),
            self.ticks,
            self.rejected.values().sum::<u64>(),
            self.restarts,
            self.unsynchronized_ticks,
        )
    }
}

impl PulseState {
    fn run(&mut self, inbox: &Inbox<Reconfigure>, stop: &AtomicBool) {
        let mut events = Vec::with_capacity(16);
        let mut last_state = None;
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = self.input.wait(REPUBLISH, &mut events) {
                warn!("tick input: poll: {e}");
                std::thread::sleep(REPUBLISH);
            }
            let timeout = self.input.receiver.config().timeout;
            for e in events.drain(..) {
                match e {
                    Event::Sample(s) => self.on_sample(&s),
                    other => log_event(&other, timeout, "holding over on the last frequency"),
                }
            }
            while let Ok(r) = inbox.try_recv() {
                self.reconfigure(r);
            }
            let state = self.publish(monotonic_raw_ns());
            if last_state != Some(state) {
                log_state(last_state, state, &self.model);
                last_state = Some(state);
            }
        }
    }

    fn reconfigure(&mut self, r: Reconfigure) {
        if let Some(sockets) = r.sockets {
            self.input.rebind(sockets);
        }
        if *self.input.receiver.config() != r.pulse.receiver {
            // A new key or transmitter: the receiver relocks (3 ticks); the model holds over.
            self.input = TickInput::new(self.input.take_sockets(), r.pulse.receiver);
        }
        self.model.set_config(r.pulse.model);
        if self.tracker.policy() != r.leap {
            self.tracker = LeapTracker::new(r.leap);
        }
    }

    fn on_sample(&mut self, s: &TickSample) {
        self.transmitter_state = Some(s.state);
        if s.state == SourceState::Unsynchronized {
            // The transmitter says its clock is not to be trusted: as if no tick came.
            if self.ignored_unsynchronized == 0 {
                warn!("the transmitter's clock is unsynchronized (start it with --local if it is the reference); ignoring its ticks");
            }
            self.ignored_unsynchronized += 1;
            return;
        }
        let announced = match s.leap {
            Leap::None => None,
            Leap::Insert => Some(LeapDirection::Insert),
            Leap::Delete => Some(LeapDirection::Delete),
        };
        let (update, reference) =
            self.model
                .add_tick(&mut self.tracker, s.rx.mono_ns, s.reference, announced);
        match update {
            Update::Accepted | Update::Outlier => {}
            Update::Stepped(_) if self.last_tick.is_none() => info!(
                "first lock: tick time is {} from the host clock (which is left alone)",
                crate::duration::format(s.offset())
            ),
            Update::Stepped(by) => warn!(
                "tick time moved {} (beyond the step threshold): served time stepped",
                crate::duration::format(Offset::from_nanos(by))
            ),
            Update::Restarted => {
                warn!("ticks moved away from the model's line: the fit started over")
            }
        }
        self.source = Some(SourceInfo {
            stratum: s.stratum,
            error: (s.error_bound_us != u32::MAX)
                .then(|| Offset::from_micros(i64::from(s.error_bound_us))),
            refid: pulse_refid(s.source, self.input.last_sample_from),
        });
        if self.model.served().is_some() {
            self.last_tick = Some(self.tracker.base_from_elapsed(reference));
        }
    }

    /// Publishes the snapshot for `mono` (monotonic raw ns) and returns the model's state.
    fn publish(&mut self, mono: i64) -> ModelState {
        let now = self.model.read(mono);
        // The state is now's; the error bound is the one a second ahead.
        let reading = now
            .zip(self.model.read(mono + AHEAD_NS))
            .map(|(n, a)| Reading {
                error_ns: a.error_ns,
                ..n
            });
        let indicator = now.map_or(ntp_offset_proto::packet::LeapIndicator::NoWarning, |r| {
            self.tracker
                .indicator(self.tracker.base_from_elapsed(r.time))
        });
        let source = self.source.unwrap_or(SourceInfo {
            stratum: 15,
            error: None,
            refid: [0; 4],
        });
        let state = ServerState::from_pulse(
            PulseClock {
                reading,
                source_stratum: source.stratum,
                source_error: source.error,
                reference_id: source.refid,
                last_tick: self.last_tick,
            },
            indicator,
            self.clock.precision,
        );
        self.clock.publish(ClockSnapshot {
            state,
            tracker: self.tracker.clone(),
            timeline: Timeline::Pulse(self.model.served()),
        });
        let model_state = now.map_or(ModelState::Unsynchronized, |r| r.state);
        let stats = self.input.receiver.stats();
        let status = PulseStatus {
            state: model_state.name(),
            stratum: if state.stratum == 0 {
                16
            } else {
                state.stratum
            },
            frequency_ppm: self.model.frequency().map(|f| f * 1e6),
            error_s: now.map(|r| r.error_ns as f64 / 1e9),
            offset_s: stats.last_offset().map(|o| o.nanos() as f64 / 1e9),
            jitter_s: stats
                .offset_mean_jitter()
                .map(|(_, j)| j.nanos() as f64 / 1e9),
            ticks: stats.counts.samples,
            missed: stats.counts.missed,
            restarts: stats.counts.restarts,
            rejected: stats
                .rejected_by_name()
                .map(|(k, n)| (k.to_string(), n))
                .collect(),
            transmitter: stats.transmitter.map(|t| format!("{t:#010x}")),
            last_sample_mono_ns: stats.last_sample_mono_ns,
            unsynchronized_ticks: self.ignored_unsynchronized,
            transmitter_state: self.transmitter_state.map(|s| match s {
                SourceState::Synchronized => "synchronized",
                SourceState::Holdover => "holdover",
                SourceState::Unsynchronized => "unsynchronized",
            }),
        };
        if let Ok(mut s) = self.status.lock() {
            *s = status;
        }
        model_state
    }
}

fn log_state(last: Option<ModelState>, now: ModelState, model: &ClockModel) {
    let freq = model.frequency().map_or(String::new(), |f| {
        format!(" (frequency {:+.3} ppm)", f * 1e6)
    });
    match (last, now) {
        (None, ModelState::Unsynchronized) => {}
        (_, ModelState::Locked) => info!("pulse reference locked{freq}: answering as synchronized"),
        (_, ModelState::Holdover) => warn!(
            "pulse reference in holdover{freq}: root dispersion grows by 15 us/s; unsynchronized after {}",
            crate::duration::format(Offset::from_nanos(model.config().holdover_limit_ns))
        ),
        (_, ModelState::Unsynchronized) => warn!(
            "pulse reference past its holdover limit: answering as unsynchronized (LI=3) until ticks return"
        ),
    }
}
