//! DCF77 decoding, sans IO: from a receiver module's pulse edges to second marks with their
//! UTC second (docs/dcf77.md). The signal cases in `testvectors/dcf77-signals.txt` are the
//! specification; the firmware's decoder passes the same file.
//!
//! - **Pulses.** High periods joined across drop-outs shorter than [`MERGE_NS`]; a pulse of
//!   40-150 ms is a 0, 150-250 ms a 1, anything else noise.
//! - **Phase.** Three pulses whole seconds apart lock the phase. From then on each second has a
//!   slot: a pulse starting within [`WINDOW_NS`] of it is the slot's mark (reported at its
//!   rising edge, so a transmitter can send at once); edges elsewhere are noise. A slot that
//!   passes without a pulse is reported from the local oscillator (flywheel).
//! - **Minutes.** The slot without a pulse is second 59 (the minute mark). The 59 bits before
//!   it describe the minute that starts at the next slot: parities, BCD ranges, the weekday
//!   and the CET/CEST bits are checked. Two consecutive valid frames 60 s apart synchronize.
//!   Once synchronized, seconds are counted; a frame that disagrees twice in a row starts over.
//! - **Leap second.** With the announcement bit set, the minute :59 UTC has 61 seconds: second
//!   59 has a pulse and the 61st has none. Its mark repeats 23:59:59's Unix second.

const NS: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;
/// A low period shorter than this inside a pulse is a drop-out, not the pulse's end.
pub const MERGE_NS: i64 = 40 * MS;
/// A pulse must start this close to its second's slot.
pub const WINDOW_NS: i64 = 15 * MS;
const MIN_PULSE_NS: i64 = 40 * MS;
const ONE_PULSE_NS: i64 = 150 * MS;
const MAX_PULSE_NS: i64 = 250 * MS;
/// Pulses whole seconds apart needed to lock the phase.
const LOCK_AFTER: u32 = 3;
/// Slots without a pulse in a row after which an unsynchronized decoder unlocks.
const UNLOCK_AFTER_MISSING: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// The module's demodulation delay: subtracted from every edge.
    pub calibration_ns: i64,
    /// Seconds from the oscillator alone for this long, then unsynchronized.
    pub holdover_limit_ns: i64,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            calibration_ns: 0,
            holdover_limit_ns: 3600 * NS,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkState {
    /// Phase locked, but which second this is is not known yet.
    Unsynchronized,
    Synchronized,
    /// A second from the oscillator where a pulse was missing.
    Holdover,
}

/// One second mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The mark on the edges' clock, calibration removed.
    pub at_ns: i64,
    /// The UTC second (Unix) that starts here, once synchronized.
    pub second: Option<i64>,
    pub state: MarkState,
    /// The inserted leap second (its number repeats the previous second's).
    pub leap_second: bool,
    /// A leap second is announced for the end of this UTC hour.
    pub leap_announced: bool,
}

/// A valid frame: the minute it describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Frame {
    minute_start: i64,
    leap_announced: bool,
}

pub struct Decoder {
    cfg: DecoderConfig,
    high: bool,
    /// The pulse being assembled: first rise, last fall.
    rise: Option<i64>,
    fall: Option<i64>,
    /// Acquisition: the last candidate mark and how many came whole seconds apart.
    candidate: Option<i64>,
    in_a_row: u32,
    /// Locked: the next slot's time, its index in the minute (None: not aligned yet).
    next_slot: Option<i64>,
    index: Option<u32>,
    /// The rise of the pulse that marked the current slot (its bit is read when it ends).
    slot_rise: Option<i64>,
    slot_index: Option<u32>,
    bits: [Option<bool>; 60],
    missing_in_row: u32,
    holdover_since: Option<i64>,
    previous_frame: Option<Frame>,
    /// Synchronized: the Unix second of the current minute's second 0.
    minute_start: Option<i64>,
    leap_announced: bool,
    disagreements: u32,
}

impl Decoder {
    pub fn new(cfg: DecoderConfig) -> Decoder {
        Decoder {
            cfg,
            high: false,
            rise: None,
            fall: None,
            candidate: None,
            in_a_row: 0,
            next_slot: None,
            index: None,
            slot_rise: None,
            slot_index: None,
            bits: [None; 60],
            missing_in_row: 0,
            holdover_since: None,
            previous_frame: None,
            minute_start: None,
            leap_announced: false,
            disagreements: 0,
        }
    }

    pub fn is_synchronized(&self) -> bool {
        self.minute_start.is_some()
    }

    /// An edge of the module's output at `t_ns`; `high`: the level after it (carrier reduced).
    pub fn on_edge(&mut self, t_ns: i64, high: bool, out: &mut Vec<Mark>) {
        let t = t_ns - self.cfg.calibration_ns;
        self.advance(t, out);
        if high == self.high {
            return;
        }
        self.high = high;
        if !high {
            self.fall = Some(t);
            return;
        }
        if self.fall.is_some_and(|f| t - f < MERGE_NS) && self.rise.is_some() {
            self.fall = None; // a drop-out: the same pulse goes on
            return;
        }
        self.rise = Some(t);
        self.fall = None;
        if let Some(slot) = self.next_slot {
            if (t - slot).abs() <= WINDOW_NS {
                self.slot_rise = Some(t);
                self.slot_index = self.index;
                self.emit_slot(t, true, out);
            }
        }
    }

    /// Processes what time alone decides (pulse ends, slots without a pulse) up to `now_ns`.
    pub fn poll(&mut self, now_ns: i64, out: &mut Vec<Mark>) {
        self.advance(now_ns - self.cfg.calibration_ns, out);
    }

    /// When [`Decoder::poll`] next has something to do, on the edges' clock.
    pub fn next_deadline(&self) -> Option<i64> {
        let pulse_end = match (self.high, self.rise, self.fall) {
            (false, Some(_), Some(f)) => Some(f + MERGE_NS),
            _ => None,
        };
        let slot = self.next_slot.map(|s| s + self.slot_grace());
        [pulse_end, slot]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t + self.cfg.calibration_ns)
    }

    /// How long after a slot a missing pulse is declared: at once where none is expected.
    fn slot_grace(&self) -> i64 {
        if self.expects_gap() {
            0
        } else {
            WINDOW_NS + 1
        }
    }

    /// Whether the next slot is the minute's pulse-less second (59, or 60 in a leap minute).
    fn expects_gap(&self) -> bool {
        self.minute_start.is_some() && self.index == Some(self.minute_length() - 1)
    }

    fn minute_length(&self) -> u32 {
        let leap_minute = self.leap_announced
            && self
                .minute_start
                .is_some_and(|s| s.rem_euclid(3600) == 3540);
        if leap_minute {
            61
        } else {
            60
        }
    }

    fn advance(&mut self, t: i64, out: &mut Vec<Mark>) {
        loop {
            let pulse_end = match (self.high, self.rise, self.fall) {
                (false, Some(_), Some(f)) if f + MERGE_NS <= t => Some(f),
                _ => None,
            };
            // A pulse in a slot's window moves next_slot on, so a due slot had none.
            let slot_due = self.next_slot.filter(|s| s + self.slot_grace() <= t);
            match (pulse_end, slot_due) {
                (Some(f), Some(s)) if f + MERGE_NS <= s + self.slot_grace() => self.end_pulse(f),
                (_, Some(s)) => self.missing_slot(s, out),
                (Some(f), None) => self.end_pulse(f),
                (None, None) => return,
            }
        }
    }

    fn end_pulse(&mut self, fall: i64) {
        let rise = self.rise.take().expect("a pulse has a rise");
        self.fall = None;
        let width = fall - rise;
        if !(MIN_PULSE_NS..=MAX_PULSE_NS).contains(&width) {
            return; // noise
        }
        let bit = width >= ONE_PULSE_NS;
        if self.slot_rise == Some(rise) {
            if let Some(slot) = self.slot_index.and_then(|i| self.bits.get_mut(i as usize)) {
                *slot = Some(bit);
            }
            return;
        }
        if self.next_slot.is_some() {
            return; // locked: a pulse outside its slot is noise
        }
        // Acquisition: pulses whole seconds apart lock the phase.
        let apart = self.candidate.map(|c| rise - c);
        let whole = apart.is_some_and(|d| {
            let n = (d + NS / 2).div_euclid(NS);
            (1..=2).contains(&n) && (d - n * NS).abs() <= WINDOW_NS
        });
        self.in_a_row = if whole { self.in_a_row + 1 } else { 1 };
        self.candidate = Some(rise);
        if self.in_a_row >= LOCK_AFTER {
            self.next_slot = Some(rise + NS);
            self.index = None;
            self.missing_in_row = 0;
        }
    }

    /// A slot passed without a pulse in its window.
    fn missing_slot(&mut self, slot: i64, out: &mut Vec<Mark>) {
        let expected = self.expects_gap();
        if !expected {
            self.missing_in_row += 1;
            if self.minute_start.is_none() {
                if self.missing_in_row > UNLOCK_AFTER_MISSING {
                    self.unlock();
                    return;
                }
                // Not synchronized: a gap is taken as the minute mark.
                self.index = Some(59);
            } else {
                let since = *self.holdover_since.get_or_insert(slot);
                if slot - since > self.cfg.holdover_limit_ns {
                    self.unlock();
                    return;
                }
            }
        }
        self.slot_rise = None;
        self.slot_index = self.index;
        self.emit_slot(slot, false, out);
    }

    fn unlock(&mut self) {
        let cfg = self.cfg;
        *self = Decoder::new(cfg);
    }

    /// Reports the mark of the current slot and moves to the next one.
    fn emit_slot(&mut self, at: i64, pulse: bool, out: &mut Vec<Mark>) {
        if pulse {
            self.missing_in_row = 0;
            self.holdover_since = None;
        }
        let gap = !pulse && self.expects_gap();
        let index = self.index;
        let state = match (self.minute_start, pulse || gap) {
            (None, _) => MarkState::Unsynchronized,
            (Some(_), true) => MarkState::Synchronized,
            (Some(_), false) => MarkState::Holdover,
        };
        let length = self.minute_length();
        out.push(Mark {
            at_ns: at,
            second: self
                .minute_start
                .zip(index)
                .map(|(s, i)| s + i64::from(i.min(59))),
            state,
            leap_second: length == 61 && index == Some(60),
            leap_announced: self.leap_announced,
        });
        self.next_slot = Some(at + NS);
        let minute_ends = match self.minute_start {
            Some(_) => index == Some(length - 1),
            // Not synchronized: the pulse-less slot is second 59.
            None => !pulse && index == Some(59),
        };
        if minute_ends {
            self.end_minute();
        } else {
            self.index = index.map(|i| (i + 1).min(60));
        }
    }

    /// At the minute mark: decode the frame, which describes the minute starting now.
    fn end_minute(&mut self) {
        let frame = decode_frame(&self.bits);
        self.bits = [None; 60];
        self.index = Some(0);
        match (self.minute_start, frame) {
            (None, Some(f)) => {
                if self
                    .previous_frame
                    .is_some_and(|p| p.minute_start + 60 == f.minute_start)
                {
                    self.minute_start = Some(f.minute_start);
                    self.leap_announced = f.leap_announced;
                    self.disagreements = 0;
                }
                self.previous_frame = Some(f);
            }
            (None, None) => self.previous_frame = None,
            (Some(start), f) => {
                let expected = start + 60;
                self.minute_start = Some(expected);
                match f {
                    Some(f) if f.minute_start == expected => {
                        self.disagreements = 0;
                        self.leap_announced = f.leap_announced;
                    }
                    Some(f) => {
                        self.disagreements += 1;
                        if self.disagreements >= 2 {
                            self.minute_start = None;
                            self.previous_frame = Some(f);
                        }
                    }
                    // A frame with missing or bad bits: keep counting.
                    None => self.leap_announced &= expected.rem_euclid(3600) != 0,
                }
            }
        }
    }
}

/// The minute a frame describes (Unix seconds of its second 0), if every check passes.
fn decode_frame(bits: &[Option<bool>; 60]) -> Option<Frame> {
    let mut b = [false; 59];
    for (i, slot) in bits[..59].iter().enumerate() {
        b[i] = (*slot)?;
    }
    let even = |r: std::ops::Range<usize>| b[r].iter().filter(|&&x| x).count() % 2 == 0;
    if b[0] || !b[20] || b[17] == b[18] || !even(21..29) || !even(29..36) || !even(36..59) {
        return None;
    }
    let num = |r: std::ops::Range<usize>, weights: &[i64]| -> i64 {
        b[r].iter()
            .zip(weights)
            .filter(|(x, _)| **x)
            .map(|(_, w)| w)
            .sum()
    };
    let digits_ok = |r: std::ops::Range<usize>| num(r, &[1, 2, 4, 8]) <= 9;
    let units = [21..25, 29..33, 36..40, 45..49, 50..54, 54..58];
    if !units.into_iter().all(digits_ok) {
        return None;
    }
    let minute = num(21..28, &[1, 2, 4, 8, 10, 20, 40]);
    let hour = num(29..35, &[1, 2, 4, 8, 10, 20]);
    let day = num(36..42, &[1, 2, 4, 8, 10, 20]);
    let weekday = num(42..45, &[1, 2, 4]);
    let month = num(45..50, &[1, 2, 4, 8, 10]);
    let year = 2000 + num(50..58, &[1, 2, 4, 8, 10, 20, 40, 80]);
    if minute > 59 || hour > 23 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let month_length = days_from_civil(year, month + 1, 1) - days_from_civil(year, month, 1);
    // 1970-01-01 was a Thursday; DCF77 counts Monday as 1.
    if day > month_length || (days + 3).rem_euclid(7) + 1 != weekday {
        return None;
    }
    let zone = if b[17] { 7200 } else { 3600 };
    Some(Frame {
        minute_start: days * 86_400 + hour * 3600 + minute * 60 - zone,
        leap_announced: b[19],
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (month may be 13: January next year).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let (y, m) = if month > 12 {
        (year + 1, month - 12)
    } else {
        (year, month)
    };
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[path = "dcf77_tests.rs"]
mod tests;
