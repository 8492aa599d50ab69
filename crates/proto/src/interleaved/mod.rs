//! Interleaved mode, the server's side (as chrony serves it; draft-ietf-ntp-interleaved-modes).
//!
//! In basic mode an answer's transmit timestamp is read just before the send, so the client's
//! measurement includes the send path. A client that asks for interleaved mode gets, instead,
//! the kernel's transmit timestamp of the *previous* answer it received, which the server kept.
//!
//! - A client asks by sending, as its request's origin, the receive timestamp of the server's
//!   previous answer, with receive ≠ transmit in its request (a basic client sends them equal,
//!   or origin zero).
//! - If that earlier receive timestamp is still in the [`TransmitLog`], the answer is
//!   interleaved: origin = the request's receive field (so the client can tell the modes
//!   apart), receive = now, transmit = the logged transmit time of the earlier answer.
//! - Otherwise the answer is basic, as always.
//!
//! Only answers to requests that [`may_interleave`] are logged, so plain SNTP clients (origin
//! zero) cost nothing. The log is a fixed table: its memory does not grow with clients, and an
//! evicted entry only costs its client one basic answer. Timestamps are kept as the client saw
//! them, in its view's time (offset included).

pub mod echo;
#[cfg(test)]
mod tests;

use crate::packet::Header;
use crate::time::{NtpTimestamp, Offset, Time};

/// Entries of a log (one per worker): 24 bytes each, 96 KiB.
pub const DEFAULT_LOG_SIZE: usize = 4096;

/// How far a kernel transmit stamp may lie from the reading taken before the send and still
/// be taken for that send: anything else (a clock step between the two readings) keeps the
/// reading.
const PLAUSIBLE_BEFORE: Offset = Offset::from_micros(-1_000);
const PLAUSIBLE_AFTER: Offset = Offset::from_micros(1_000_000);

/// True when `request` could be an interleaved client's: such a client's next request may
/// then refer to this answer, so its transmit time is worth logging.
pub fn may_interleave(request: &Header) -> bool {
    !request.origin_timestamp.is_zero() && request.receive_timestamp != request.transmit_timestamp
}

/// The transmit time the server logged for the answer a request's origin names, if the
/// request asks for interleaved mode and the log still has it.
pub fn interleaved_transmit(request: &Header, log: &TransmitLog) -> Option<NtpTimestamp> {
    if !may_interleave(request) {
        return None;
    }
    log.transmit_of(request.origin_timestamp)
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// The answer's receive field (the key); 0: empty.
    receive: u64,
    /// Its transmit time in the view: the reading before the send, then the kernel's stamp.
    transmit: u64,
    /// The view's offset when it was sent, to shift the kernel's stamp (base time) by.
    offset: Offset,
}

/// What the server sent when, for the answers that may be followed by an interleaved request:
/// receive timestamp → transmit timestamp, both as the client saw them.
pub struct TransmitLog {
    slots: Box<[Slot]>,
    shift: u32,
}

/// What became of a kernel transmit stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamped {
    /// The logged answer now has the kernel's transmit time.
    Recorded,
    /// No logged answer has this receive field (evicted, or never logged).
    Unknown,
    /// Too far from the reading before the send (a clock step): the reading stays.
    Implausible,
}

impl core::fmt::Debug for TransmitLog {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TransmitLog")
            .field("size", &self.slots.len())
            .finish()
    }
}

impl TransmitLog {
    /// A log of `size` entries (rounded up to a power of two, at least 2).
    pub fn new(size: usize) -> TransmitLog {
        let size = size.max(2).next_power_of_two();
        TransmitLog {
            slots: vec![Slot::default(); size].into_boxed_slice(),
            shift: 64 - size.trailing_zeros(),
        }
    }

    fn index(&self, receive: u64) -> usize {
        // Fibonacci hashing: the fraction's low bits vary most, the multiply spreads them up.
        (receive.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    /// Logs an answer with receive field `receive`, sent with transmit field `transmit` (the
    /// reading before the send) in a view shifted by `offset`. Replaces whatever held its slot.
    pub fn sent(&mut self, receive: NtpTimestamp, transmit: NtpTimestamp, offset: Offset) {
        if receive.is_zero() {
            return;
        }
        let i = self.index(receive.to_bits());
        self.slots[i] = Slot {
            receive: receive.to_bits(),
            transmit: transmit.to_bits(),
            offset,
        };
    }

    /// The kernel's transmit stamp (base time) of the answer with receive field `receive`.
    pub fn stamped(&mut self, receive: NtpTimestamp, kernel: Time) -> Stamped {
        let i = self.index(receive.to_bits());
        let slot = &mut self.slots[i];
        if receive.is_zero() || slot.receive != receive.to_bits() {
            return Stamped::Unknown;
        }
        let precise = kernel.add(slot.offset).to_ntp();
        let after = precise.wrapping_sub(NtpTimestamp::from_bits(slot.transmit));
        if after.nanos() < PLAUSIBLE_BEFORE.nanos() || after.nanos() > PLAUSIBLE_AFTER.nanos() {
            return Stamped::Implausible;
        }
        slot.transmit = precise.to_bits();
        Stamped::Recorded
    }

    /// The logged transmit time of the answer with receive field `receive`.
    pub fn transmit_of(&self, receive: NtpTimestamp) -> Option<NtpTimestamp> {
        let slot = &self.slots[self.index(receive.to_bits())];
        (!receive.is_zero() && slot.receive == receive.to_bits())
            .then(|| NtpTimestamp::from_bits(slot.transmit))
    }
}
