//! The tick receiver's decisions, sans IO: which datagrams become samples for the NTP daemon.
//!
//! The IO edge hands in each datagram with its kernel receive time ([`RxStamp`]) and calls
//! [`Receiver::poll`] when [`Receiver::next_deadline`] passes. Out come [`Event`]s: samples,
//! rejections (also counted in [`Stats`]), and changes of lock state.
//!
//! Rules, in order (docs/tick-protocol.md, "Receiving"):
//! 1. Decode; authenticate (key id 0 only where unauthenticated ticks are allowed; legacy `time`
//!    pulses only where enabled).
//! 2. Follow one transmitter at a time; another is taken only once the current one is lost.
//! 3. Per transmitter, the second and the sequence must increase (else duplicate or replay). A
//!    new session id is a transmitter restart: sequences start again, seconds must still rise.
//! 4. The second must be the one the elapsed time predicts, and the tick must arrive within
//!    `outlier` of where the previous ticks put it. Elapsed time is measured on the monotonic
//!    raw clock, so a system clock being slewed or stepped by the NTP daemon we feed does not
//!    look like tick jitter. Three rejections in a row mean the transmitter really changed:
//!    start over from the latest tick.
//!    A tick that announces a follow-up is judged when the follow-up comes (at most
//!    `follow_up_wait`): its arrival minus the follow-up's TX offset, so a tick that left
//!    late (an ARP lookup, a DCF77 holdover second sent when its slot closed) is not an
//!    outlier; only the path's own jitter is.
//! 5. Samples flow after `lock_after` consistent ticks, and stop when no tick was accepted for
//!    `timeout` (the daemon then sees the source go unreachable).
//! 6. The follow-up's TX offset also corrects the sample: the transmitter's send jitter is
//!    removed. A tick whose follow-up does not come in time is judged as it arrived.

use crate::tick::{decode, Datagram, Kind, Leap, Source, SourceState, TickPacket};
use crate::tick_auth::{verify, AuthError, KeyRing};
use crate::time::{Offset, Time, NANOS_PER_SEC};

pub use crate::tick_stats::{LockState, Reject, Stats, TickCounts};

/// Consecutive inconsistent ticks after which the receiver starts over from the latest one.
const RESTART_AFTER_REJECTS: u32 = 3;

/// When a datagram arrived: the kernel's CLOCK_REALTIME stamp, and the same instant on
/// CLOCK_MONOTONIC_RAW (what the receiver measures intervals with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxStamp {
    pub real: Time,
    pub mono_ns: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverConfig {
    pub keys: KeyRing,
    pub allow_unauthenticated: bool,
    pub allow_legacy: bool,
    /// Follow only this transmitter id.
    pub transmitter: Option<u32>,
    /// Added to the tick time: this host's view of time (e.g. +15 s).
    pub offset: Offset,
    /// The ticks' travel time from transmitter to here, added to the tick time.
    pub path_delay: Offset,
    /// Largest deviation of a tick's arrival from where previous ticks put it.
    pub outlier: Offset,
    pub follow_up_wait: Offset,
    /// No accepted tick for this long: the source is lost.
    pub timeout: Offset,
    /// Consistent ticks needed before samples flow.
    pub lock_after: u32,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            keys: KeyRing::default(),
            allow_unauthenticated: false,
            allow_legacy: false,
            transmitter: None,
            offset: Offset::ZERO,
            path_delay: Offset::ZERO,
            outlier: Offset::from_nanos(20_000_000),
            follow_up_wait: Offset::from_nanos(100_000_000),
            timeout: Offset::from_nanos(1_500_000_000),
            lock_after: 3,
        }
    }
}

/// One tick turned into a measurement of the local clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickSample {
    /// None for a legacy pulse.
    pub transmitter: Option<u32>,
    /// The second the tick marks (for a legacy pulse: inferred, see [`Receiver`]).
    pub second: i64,
    pub rx: RxStamp,
    /// The tick's departure minus its second, from the follow-up.
    pub tx_offset_ns: Option<i64>,
    /// Reference time at the instant `rx`: second + TX correction + path delay + offset.
    pub reference: Time,
    pub leap: Leap,
    pub state: SourceState,
    pub source: Source,
    pub stratum: u8,
    pub error_bound_us: u32,
    /// A legacy pulse: marks a second boundary, but its second number is the local clock's
    /// guess, so only the fraction of the offset is a measurement.
    pub legacy: bool,
}

impl TickSample {
    /// Reference time minus local system time: how far the local clock is behind the ticks
    /// (plus the configured offset).
    pub fn offset(&self) -> Offset {
        self.reference.since(self.rx.real)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Sample(TickSample),
    Rejected(Reject),
    /// Samples start flowing from this transmitter (None: legacy pulses).
    Locked {
        transmitter: Option<u32>,
    },
    /// The transmitter started a new session (it restarted).
    Restarted {
        transmitter: u32,
        session: u32,
    },
    /// No tick for the timeout: samples stop.
    Lost,
}

/// A tick (counted as `second` on `track`) that repeats or goes back: the same sequence, the
/// same second, or an earlier one, within one session of the transmitter.
fn out_of_order(c: &Claim, second: i64, track: &Track, restarted: bool) -> Option<Reject> {
    if !restarted && c.second.is_some() && c.sequence == track.sequence {
        return Some(if second == track.second {
            Reject::Duplicate
        } else {
            Reject::Replay
        });
    }
    if second == track.second && c.second.is_none() {
        return Some(Reject::Duplicate);
    }
    if second <= track.second || (!restarted && c.sequence < track.sequence) {
        return Some(Reject::Replay);
    }
    None
}

/// The transmitter being followed.
#[derive(Clone, Copy, Debug)]
struct Track {
    transmitter: Option<u32>,
    session: u32,
    sequence: u32,
    /// Seconds counted on this track: the POSIX second plus `leaps`, so an inserted leap
    /// second, whose POSIX second repeats, still counts one.
    second: i64,
    /// Leap seconds inserted since this track began.
    leaps: i64,
    /// Monotonic arrival of the last accepted tick.
    mono_ns: i64,
    consistent: u32,
    bad_streak: u32,
    locked: bool,
    lost: bool,
}

/// A tick's arrival, and when it left (from its follow-up's TX offset, if one came).
#[derive(Clone, Copy, Debug)]
struct Arrival {
    rx: RxStamp,
    tx_offset: Option<i64>,
}

impl Arrival {
    /// A tick taken as it arrived (no follow-up, or none in time).
    fn as_received(rx: RxStamp) -> Arrival {
        Arrival {
            rx,
            tx_offset: None,
        }
    }

    /// When the tick would have arrived had it left on its mark (our monotonic clock): what
    /// the gate compares.
    fn departed_ns(&self) -> i64 {
        self.rx.mono_ns - self.tx_offset.unwrap_or(0)
    }
}

/// A tick waiting for its follow-up, to be judged by when it left.
#[derive(Clone, Copy, Debug)]
struct Deferred {
    claim: Claim,
    rx: RxStamp,
    deadline_ns: i64,
}

/// How many transmitters' last sampled seconds are remembered.
const REMEMBERED: usize = 8;

pub struct Receiver {
    cfg: ReceiverConfig,
    track: Option<Track>,
    deferred: Option<Deferred>,
    stats: Stats,
    /// The highest second sampled from each of the last transmitters followed (id, POSIX
    /// second). It outlives the track: when a track is lost and another source (another
    /// transmitter, legacy pulses) took over, recorded ticks of the first must still not
    /// lock again and move the clock back (found by fuzzing: fuzz/fuzz_targets/tick_receiver).
    sampled: [(u32, i64); REMEMBERED],
    sampled_next: usize,
}

/// What a tick or legacy pulse claims, after decoding and authentication.
#[derive(Clone, Copy, Debug)]
struct Claim {
    transmitter: Option<u32>,
    session: u32,
    sequence: u32,
    /// None for a legacy pulse: inferred from the track or the local clock.
    second: Option<i64>,
    packet: Option<TickPacket>,
}

impl Claim {
    /// The inserted 23:59:60, whose POSIX second repeats 23:59:59's.
    fn is_leap_second(&self) -> bool {
        self.packet.is_some_and(|p| p.is_leap_second())
    }
}

impl Receiver {
    pub fn new(cfg: ReceiverConfig) -> Receiver {
        Receiver {
            cfg,
            track: None,
            deferred: None,
            stats: Stats::new(),
            sampled: [(0, i64::MIN); REMEMBERED],
            sampled_next: 0,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn config(&self) -> &ReceiverConfig {
        &self.cfg
    }

    /// New keys (a reloaded key file); the transmitter followed and its state stay.
    pub fn set_keys(&mut self, keys: KeyRing) {
        self.cfg.keys = keys;
    }

    /// Handles one datagram. `from_legacy_port`: it came in on the legacy port, where only
    /// legacy pulses are expected (they are accepted on either port when enabled).
    pub fn on_datagram(&mut self, data: &[u8], rx: RxStamp, events: &mut Vec<Event>) {
        self.stats.counts.datagrams += 1;
        let packet = match decode(data) {
            Ok(Datagram::Legacy) => {
                if !self.cfg.allow_legacy {
                    return self.reject(Reject::Legacy, events);
                }
                None
            }
            Ok(Datagram::Tick(p)) => Some(p),
            Err(e) => {
                let r = match e {
                    crate::tick::DecodeError::Truncated { .. } => Reject::Truncated,
                    crate::tick::DecodeError::Oversized { .. } => Reject::Oversized,
                    _ => Reject::Malformed,
                };
                return self.reject(r, events);
            }
        };
        let Some(p) = packet else {
            self.judge_deferred(events);
            let legacy = Claim {
                transmitter: None,
                session: 0,
                sequence: 0,
                second: None,
                packet: None,
            };
            return self.on_claim(legacy, Arrival::as_received(rx), events);
        };
        if p.key_id == 0 {
            if !self.cfg.allow_unauthenticated {
                return self.reject(Reject::Unauthenticated, events);
            }
        } else if let Err(e) = verify(data, p.key_id, &self.cfg.keys) {
            let r = match e {
                AuthError::UnknownKey(_) => Reject::UnknownKey,
                AuthError::BadMac => Reject::BadMac,
                AuthError::Unauthenticated => Reject::Unauthenticated,
            };
            return self.reject(r, events);
        }
        if self.cfg.transmitter.is_some_and(|t| t != p.transmitter) {
            return self.reject(Reject::OtherTransmitter, events);
        }
        match p.kind {
            Kind::FollowUp => self.on_follow_up(&p, events),
            Kind::Tick => {
                let claim = Claim {
                    transmitter: Some(p.transmitter),
                    session: p.session,
                    sequence: p.sequence,
                    second: Some(p.second),
                    packet: Some(p),
                };
                self.judge_deferred(events);
                if p.announces_follow_up() {
                    self.deferred = Some(Deferred {
                        claim,
                        rx,
                        deadline_ns: rx.mono_ns + self.cfg.follow_up_wait.nanos(),
                    });
                } else {
                    self.on_claim(claim, Arrival::as_received(rx), events);
                }
            }
        }
    }

    /// Judges a tick whose follow-up did not come (before the next datagram, or in time) by
    /// its arrival alone.
    fn judge_deferred(&mut self, events: &mut Vec<Event>) {
        if let Some(d) = self.deferred.take() {
            self.on_claim(d.claim, Arrival::as_received(d.rx), events);
        }
    }

    fn reject(&mut self, r: Reject, events: &mut Vec<Event>) {
        self.stats.counts.rejected[r.index()] += 1;
        events.push(Event::Rejected(r));
    }

    /// The tick is judged by its departure when its follow-up came (`at.tx_offset`).
    fn on_claim(&mut self, c: Claim, at: Arrival, events: &mut Vec<Event>) {
        let rx = at.rx;
        let legacy_second = |cfg: &ReceiverConfig| {
            // The second boundary nearest to the local clock, in tick time.
            let t = rx.real.unix_nanos() - cfg.offset.nanos() - cfg.path_delay.nanos();
            t.div_euclid(NANOS_PER_SEC)
                + i64::from(t.rem_euclid(NANOS_PER_SEC) >= NANOS_PER_SEC / 2)
        };
        let leap_second = i64::from(c.is_leap_second());
        if self.replays_a_lost_track(&c) {
            return self.reject(Reject::Replay, events);
        }
        let track = match &mut self.track {
            Some(t) if t.transmitter == c.transmitter => t,
            Some(t) if !t.lost => return self.reject(Reject::OtherTransmitter, events),
            _ => {
                let second = c.second.unwrap_or_else(|| legacy_second(&self.cfg));
                self.start_track(&c, second, at, events);
                return;
            }
        };
        let elapsed = at.departed_ns() - track.mono_ns;
        let predicted = track.second + (elapsed + NANOS_PER_SEC / 2).div_euclid(NANOS_PER_SEC);
        let second = c
            .second
            .map_or(predicted, |s| s + track.leaps + leap_second);
        let restarted = c.transmitter.is_some() && c.session != track.session;
        if let Some(r) = out_of_order(&c, second, track, restarted) {
            return self.reject(r, events);
        }
        if !track.lost {
            let phase_error = elapsed - (second - track.second) * NANOS_PER_SEC;
            let verdict = if second != predicted {
                Some(Reject::UnexpectedSecond)
            } else if phase_error.abs() > self.cfg.outlier.nanos() {
                Some(Reject::Outlier)
            } else {
                None
            };
            if let Some(r) = verdict {
                track.bad_streak += 1;
                let (start_over, was_locked) =
                    (track.bad_streak >= RESTART_AFTER_REJECTS, track.locked);
                self.reject(r, events);
                if start_over {
                    // The transmitter (or our clock) really moved: start over from this tick.
                    if was_locked {
                        events.push(Event::Lost);
                    }
                    let posix = c.second.unwrap_or(second);
                    self.start_track(&c, posix, at, events);
                }
                return;
            }
            self.stats.counts.missed += (second - track.second - 1) as u64;
        }
        if restarted {
            self.stats.note_restart(c.session);
            events.push(Event::Restarted {
                transmitter: c.transmitter.unwrap_or(0),
                session: c.session,
            });
        }
        let was_lost = track.lost;
        if was_lost {
            self.stats.state = LockState::Searching;
        }
        *track = Track {
            session: c.session,
            sequence: c.sequence,
            second,
            leaps: track.leaps + leap_second,
            mono_ns: at.departed_ns(),
            consistent: if was_lost { 1 } else { track.consistent + 1 },
            bad_streak: 0,
            lost: false,
            ..*track
        };
        self.accept(&c, at, events);
    }

    /// A second already sampled from this transmitter, on a track since lost (a live track
    /// judges its own: duplicate, replay). The inserted leap second may repeat the last one:
    /// it makes no sample.
    fn replays_a_lost_track(&self, c: &Claim) -> bool {
        let followed = self
            .track
            .is_some_and(|t| t.transmitter == c.transmitter && !t.lost);
        match (c.transmitter, c.second, followed) {
            (Some(id), Some(second), false) => {
                let last = self.last_sampled(id);
                second < last || (second == last && !c.is_leap_second())
            }
            _ => false,
        }
    }

    /// The highest second sampled from transmitter `id` (i64::MIN: none remembered).
    fn last_sampled(&self, id: u32) -> i64 {
        self.sampled
            .iter()
            .find(|(t, s)| *t == id && *s != i64::MIN)
            .map_or(i64::MIN, |&(_, s)| s)
    }

    fn remember_sampled(&mut self, id: u32, second: i64) {
        if let Some(e) = self
            .sampled
            .iter_mut()
            .find(|(t, s)| *t == id && *s != i64::MIN)
        {
            e.1 = e.1.max(second);
            return;
        }
        self.sampled[self.sampled_next] = (id, second);
        self.sampled_next = (self.sampled_next + 1) % REMEMBERED;
    }

    /// Follows `c`'s transmitter from this tick on; `second`: its POSIX second.
    fn start_track(&mut self, c: &Claim, second: i64, at: Arrival, events: &mut Vec<Event>) {
        let leaps = i64::from(c.is_leap_second());
        self.track = Some(Track {
            transmitter: c.transmitter,
            session: c.session,
            sequence: c.sequence,
            second: second + leaps,
            leaps,
            mono_ns: at.departed_ns(),
            consistent: 1,
            bad_streak: 0,
            locked: false,
            lost: false,
        });
        self.stats.state = LockState::Searching;
        self.stats.transmitter = c.transmitter;
        self.stats.session = c.transmitter.map(|_| c.session);
        self.accept(c, at, events);
    }

    /// Counts the tick the track just took, and makes its sample once locked.
    fn accept(&mut self, c: &Claim, at: Arrival, events: &mut Vec<Event>) {
        let Arrival { rx, tx_offset } = at;
        self.stats.counts.ticks += 1;
        let track = self.track.as_mut().expect("accept follows a track");
        let second = track.second - track.leaps; // POSIX again
        if c.is_leap_second() {
            // 23:59:60 has no POSIX time of its own: the NTP daemon inserts the second itself
            // from the leap announcement; a sample here would look a second off.
            self.stats.counts.leap_seconds += 1;
            return;
        }
        if !track.locked && track.consistent >= self.cfg.lock_after.max(1) {
            track.locked = true;
            self.stats.state = LockState::Locked;
            events.push(Event::Locked {
                transmitter: c.transmitter,
            });
        }
        if !track.locked {
            return;
        }
        let p = c.packet;
        let sample = TickSample {
            transmitter: c.transmitter,
            second,
            rx,
            tx_offset_ns: tx_offset,
            reference: Time::from_unix_nanos(second.saturating_mul(NANOS_PER_SEC))
                .add(self.cfg.path_delay)
                .add(self.cfg.offset)
                .add(Offset::from_nanos(tx_offset.unwrap_or(0))),
            leap: p.map_or(Leap::None, |p| p.leap),
            state: p.map_or(SourceState::Synchronized, |p| p.state),
            source: p.map_or(Source::Dcf77, |p| p.source),
            stratum: p.map_or(0, |p| p.stratum),
            error_bound_us: p.map_or(crate::tick::ERROR_UNKNOWN, |p| p.error_bound_us),
            legacy: p.is_none(),
        };
        if tx_offset.is_none() && p.is_some_and(|p| p.announces_follow_up()) {
            self.stats.counts.follow_ups_missing += 1;
        }
        self.emit(sample, events);
    }

    fn emit(&mut self, sample: TickSample, events: &mut Vec<Event>) {
        if let Some(id) = sample.transmitter {
            self.remember_sampled(id, sample.second);
        }
        self.stats.counts.samples += 1;
        self.stats.record(sample.offset());
        self.stats.last_sample_mono_ns = Some(sample.rx.mono_ns);
        events.push(Event::Sample(sample));
    }

    fn on_follow_up(&mut self, p: &TickPacket, events: &mut Vec<Event>) {
        let matches = self.deferred.is_some_and(|d| {
            d.claim.transmitter == Some(p.transmitter)
                && d.claim.session == p.session
                && d.claim.sequence == p.sequence
                && d.claim.second == Some(p.second)
        });
        if !matches {
            return self.reject(Reject::UnmatchedFollowUp, events);
        }
        let d = self.deferred.take().expect("checked");
        self.stats.counts.follow_ups += 1;
        let arrival = Arrival {
            rx: d.rx,
            tx_offset: Some(p.tx_offset_ns),
        };
        self.on_claim(d.claim, arrival, events);
    }

    /// When [`poll`](Self::poll) has something to do (monotonic raw ns), if anything.
    pub fn next_deadline(&self) -> Option<i64> {
        let follow_up = self.deferred.map(|d| d.deadline_ns);
        let timeout = self
            .track
            .filter(|t| !t.lost)
            .map(|t| t.mono_ns + self.cfg.timeout.nanos());
        match (follow_up, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Judges a tick whose follow-up did not come in time, and notices lost ticks.
    pub fn poll(&mut self, now_mono_ns: i64, events: &mut Vec<Event>) {
        if self.deferred.is_some_and(|d| now_mono_ns >= d.deadline_ns) {
            self.judge_deferred(events);
        }
        if let Some(t) = self.track.as_mut() {
            if !t.lost && now_mono_ns >= t.mono_ns + self.cfg.timeout.nanos() {
                t.lost = true;
                t.locked = false;
                t.consistent = 0;
                self.stats.state = LockState::Lost;
                events.push(Event::Lost);
            }
        }
    }
}

#[cfg(test)]
#[path = "tick_receiver_tests.rs"]
mod tests;
