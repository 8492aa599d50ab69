//! The tick protocol, version 1: the wire format of one tick and its follow-up. The full
//! specification, with what receivers reject and why, is `docs/tick-protocol.md`; the shared
//! test vectors are `testvectors/tick-v1.txt`, read by the tests below (and meant for the
//! kernel module's and the firmware's test suites too).
//!
//! A tick marks the start of UTC second `second`, sent as close to that instant as the
//! transmitter can. A follow-up, when announced, carries the transmitter's kernel timestamp of
//! the tick's departure, so receivers can remove the send jitter (two-step, as in PTP).
//!
//! ```text
//! offset size field            (all integers big-endian)
//!  0     4    magic            "NOTK"
//!  4     1    version          1
//!  5     1    kind             1 tick, 2 follow-up
//!  6     1    flags            bit 0: a follow-up comes (ticks); bit 1: hardware timestamp
//!                              (follow-ups); bit 2: the inserted leap second 23:59:60,
//!                              whose `second` repeats 23:59:59's (ticks); other bits 0,
//!                              ignored by receivers
//!  7     1    state            0 synchronized, 1 holdover, 2 unsynchronized
//!  8     1    leap             0 none, 1 insert a second / 2 delete a second at the end of
//!                              the current UTC day
//!  9     1    source           0 system clock, 1 PPS, 2 DCF77, 3 GNSS
//! 10     1    stratum          0 for PPS/DCF77/GNSS; a system clock's NTP stratum; 16 unknown
//! 11     1    reserved         0
//! 12     2    key id           0: unauthenticated, no MAC
//! 14     2    reserved         0
//! 16     4    transmitter id
//! 20     4    session          random, new at each transmitter start
//! 24     4    sequence         0 at session start, +1 per tick; a follow-up repeats its tick's
//! 28     4    error bound      of the source, microseconds; 0xffffffff unknown
//! 32     8    second           Unix seconds (UTC, POSIX scale), signed: era-safe
//! 40     8    tx offset        follow-up: kernel TX time of the tick minus `second`, in ns,
//!                              within +-1 s; ticks: 0
//! 48    16    MAC              present iff key id != 0: HMAC-SHA256(key, bytes 0..48),
//!                              first 16 bytes
//! ```
//!
//! The legacy packet of the original design is the 4-byte payload `time` (UDP port 8000): a
//! pulse with no identity and no second number.

use crate::time::NANOS_PER_SEC;
use crate::wire;
use core::fmt;

/// Where each field starts, as in the table above: named once here for the decoder and the
/// encoder. The firmware (`firmware/arduino/tick.h`) and the kernel module
/// (`kernel/crudepps.c`) name the same offsets `TICK_AT_*`; a test below compares them.
pub mod field {
    use crate::wire::Field;

    pub const MAGIC: Field = 0..4;
    pub const VERSION: usize = 4;
    pub const KIND: usize = 5;
    pub const FLAGS: usize = 6;
    pub const STATE: usize = 7;
    pub const LEAP: usize = 8;
    pub const SOURCE: usize = 9;
    pub const STRATUM: usize = 10;
    pub const KEY_ID: Field = 12..14;
    pub const TRANSMITTER: Field = 16..20;
    pub const SESSION: Field = 20..24;
    pub const SEQUENCE: Field = 24..28;
    pub const ERROR_BOUND: Field = 28..32;
    pub const SECOND: Field = 32..40;
    pub const TX_OFFSET: Field = 40..48;
    pub const MAC: Field = 48..64;
}

pub const MAGIC: [u8; 4] = *b"NOTK";
pub const VERSION: u8 = 1;
/// Length of the MAC-covered part, and of an unauthenticated packet.
pub const BODY_LEN: usize = field::MAC.start;
pub const MAC_LEN: usize = field::MAC.end - field::MAC.start;
/// Length of an authenticated packet.
pub const AUTH_LEN: usize = BODY_LEN + MAC_LEN;
/// The original design's payload.
pub const LEGACY_PAYLOAD: &[u8; 4] = b"time";
/// The original design's UDP port.
pub const LEGACY_PORT: u16 = 8000;
/// ntp-offset's default UDP port for ticks.
pub const DEFAULT_PORT: u16 = 8123;
/// Unknown error bound.
pub const ERROR_UNKNOWN: u32 = u32::MAX;

pub const FLAG_FOLLOW_UP: u8 = 0x01;
pub const FLAG_HW_TIMESTAMP: u8 = 0x02;
/// The tick marks an inserted leap second (23:59:60 UTC): `second` is 23:59:59's again, as on
/// the POSIX scale, and the flag tells the two apart.
pub const FLAG_LEAP_SECOND: u8 = 0x04;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tick = 1,
    FollowUp = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceState {
    Synchronized = 0,
    /// The source lost its reference and runs on its own oscillator.
    Holdover = 1,
    Unsynchronized = 2,
}

impl SourceState {
    /// As status reports and logs say it.
    pub fn name(self) -> &'static str {
        match self {
            SourceState::Synchronized => "synchronized",
            SourceState::Holdover => "holdover",
            SourceState::Unsynchronized => "unsynchronized",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leap {
    None = 0,
    Insert = 1,
    Delete = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    SystemClock = 0,
    Pps = 1,
    Dcf77 = 2,
    Gnss = 3,
}

/// A decoded tick or follow-up (the MAC is checked separately: [`crate::tick_auth`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickPacket {
    pub kind: Kind,
    pub flags: u8,
    pub state: SourceState,
    pub leap: Leap,
    pub source: Source,
    pub stratum: u8,
    pub key_id: u16,
    pub transmitter: u32,
    pub session: u32,
    pub sequence: u32,
    pub error_bound_us: u32,
    pub second: i64,
    pub tx_offset_ns: i64,
}

/// What arrived on a tick socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram {
    Tick(TickPacket),
    /// The original `time` payload.
    Legacy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its kind needs (48 bytes, or 64 with a key id).
    Truncated {
        len: usize,
    },
    /// Longer than its kind allows.
    Oversized {
        len: usize,
    },
    BadMagic,
    UnsupportedVersion(u8),
    /// A field holds a value version 1 does not define.
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { len } => write!(f, "truncated tick: {len} bytes"),
            DecodeError::Oversized { len } => write!(f, "oversized tick: {len} bytes"),
            DecodeError::BadMagic => write!(f, "not a tick packet (bad magic)"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported tick version {v}"),
            DecodeError::Malformed(what) => write!(f, "malformed tick: {what}"),
        }
    }
}

impl DecodeError {
    /// A short stable name, for counters and the test vectors.
    pub fn name(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::BadMagic => "bad-magic",
            DecodeError::UnsupportedVersion(_) => "bad-version",
            DecodeError::Malformed(_) => "malformed",
        }
    }
}

/// Decodes a datagram: a tick, a follow-up or a legacy pulse. The length must match the key id
/// exactly (48 bytes without a key, 64 with one): anything else is dropped, so a receiver never
/// reads past what the MAC covers.
pub fn decode(b: &[u8]) -> Result<Datagram, DecodeError> {
    if b == LEGACY_PAYLOAD {
        return Ok(Datagram::Legacy);
    }
    if b.len() >= 4 && b[field::MAGIC] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if b.len() < BODY_LEN {
        return Err(DecodeError::Truncated { len: b.len() });
    }
    if b[field::VERSION] != VERSION {
        return Err(DecodeError::UnsupportedVersion(b[field::VERSION]));
    }
    let key_id = wire::read(b, field::KEY_ID);
    let want = if key_id == 0 { BODY_LEN } else { AUTH_LEN };
    if b.len() < want {
        return Err(DecodeError::Truncated { len: b.len() });
    }
    if b.len() > want {
        return Err(DecodeError::Oversized { len: b.len() });
    }
    let kind = match b[field::KIND] {
        1 => Kind::Tick,
        2 => Kind::FollowUp,
        _ => return Err(DecodeError::Malformed("kind")),
    };
    let state = match b[field::STATE] {
        0 => SourceState::Synchronized,
        1 => SourceState::Holdover,
        2 => SourceState::Unsynchronized,
        _ => return Err(DecodeError::Malformed("state")),
    };
    let leap = match b[field::LEAP] {
        0 => Leap::None,
        1 => Leap::Insert,
        2 => Leap::Delete,
        _ => return Err(DecodeError::Malformed("leap")),
    };
    let source = match b[field::SOURCE] {
        0 => Source::SystemClock,
        1 => Source::Pps,
        2 => Source::Dcf77,
        3 => Source::Gnss,
        _ => return Err(DecodeError::Malformed("source")),
    };
    let tx_offset_ns: i64 = wire::read(b, field::TX_OFFSET);
    match kind {
        Kind::Tick if tx_offset_ns != 0 => {
            return Err(DecodeError::Malformed("tx offset in a tick"))
        }
        Kind::FollowUp if tx_offset_ns.abs() >= NANOS_PER_SEC => {
            return Err(DecodeError::Malformed("tx offset beyond 1 s"))
        }
        _ => {}
    }
    Ok(Datagram::Tick(TickPacket {
        kind,
        flags: b[field::FLAGS],
        state,
        leap,
        source,
        stratum: b[field::STRATUM],
        key_id,
        transmitter: wire::read(b, field::TRANSMITTER),
        session: wire::read(b, field::SESSION),
        sequence: wire::read(b, field::SEQUENCE),
        error_bound_us: wire::read(b, field::ERROR_BOUND),
        second: wire::read(b, field::SECOND),
        tx_offset_ns,
    }))
}

impl TickPacket {
    /// Length on the wire: 48 bytes, plus the MAC when a key id is set.
    pub fn wire_len(&self) -> usize {
        if self.key_id == 0 {
            BODY_LEN
        } else {
            AUTH_LEN
        }
    }

    /// Writes the 48 MAC-covered bytes ([`crate::tick_auth::encode`] adds the MAC).
    pub fn encode_body(&self, out: &mut [u8; BODY_LEN]) {
        *out = [0; BODY_LEN];
        out[field::MAGIC].copy_from_slice(&MAGIC);
        out[field::VERSION] = VERSION;
        out[field::KIND] = self.kind as u8;
        out[field::FLAGS] = self.flags;
        out[field::STATE] = self.state as u8;
        out[field::LEAP] = self.leap as u8;
        out[field::SOURCE] = self.source as u8;
        out[field::STRATUM] = self.stratum;
        wire::write(out, field::KEY_ID, self.key_id);
        wire::write(out, field::TRANSMITTER, self.transmitter);
        wire::write(out, field::SESSION, self.session);
        wire::write(out, field::SEQUENCE, self.sequence);
        wire::write(out, field::ERROR_BOUND, self.error_bound_us);
        wire::write(out, field::SECOND, self.second);
        wire::write(out, field::TX_OFFSET, self.tx_offset_ns);
    }

    /// A tick for `second`: synchronized, system clock, stratum 16 (unknown), no leap, error
    /// unknown, and transmitter fields 0. Callers override what they know with `..`.
    pub const fn tick(second: i64) -> TickPacket {
        TickPacket {
            kind: Kind::Tick,
            flags: 0,
            state: SourceState::Synchronized,
            leap: Leap::None,
            source: Source::SystemClock,
            stratum: 16,
            key_id: 0,
            transmitter: 0,
            session: 0,
            sequence: 0,
            error_bound_us: ERROR_UNKNOWN,
            second,
            tx_offset_ns: 0,
        }
    }

    /// The follow-up of this tick, carrying its departure time.
    pub fn follow_up(&self, tx_offset_ns: i64, hardware: bool) -> TickPacket {
        TickPacket {
            kind: Kind::FollowUp,
            flags: if hardware { FLAG_HW_TIMESTAMP } else { 0 },
            tx_offset_ns,
            ..*self
        }
    }

    pub fn announces_follow_up(&self) -> bool {
        self.kind == Kind::Tick && self.flags & FLAG_FOLLOW_UP != 0
    }

    /// A tick of the inserted leap second 23:59:60 (its `second` repeats 23:59:59's).
    pub fn is_leap_second(&self) -> bool {
        self.kind == Kind::Tick && self.flags & FLAG_LEAP_SECOND != 0
    }
}

#[cfg(test)]
pub(crate) mod vectors {
    //! Reader of `testvectors/tick-v1.txt` (a format C can read too). One record per line:
    //! `key id=N hex=...` or `vector name=... expect=ok|<error name> hex=... [field=value...]`.
    use std::collections::BTreeMap;

    pub struct Vector {
        pub name: String,
        pub expect: String,
        pub bytes: Vec<u8>,
        pub fields: BTreeMap<String, String>,
    }

    fn hex(s: &str) -> Vec<u8> {
        crate::tick_auth::decode_hex(s).expect("hex in the vectors file")
    }

    /// (keys, vectors)
    pub fn load() -> (Vec<(u16, Vec<u8>)>, Vec<Vector>) {
        let text = include_str!("../../../testvectors/tick-v1.txt");
        let mut keys = Vec::new();
        let mut vectors = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let record = words.next().unwrap();
            let fields: BTreeMap<String, String> = words
                .map(|w| {
                    let (k, v) = w.split_once('=').expect("field=value");
                    (k.to_string(), v.to_string())
                })
                .collect();
            match record {
                "key" => keys.push((fields["id"].parse().unwrap(), hex(&fields["hex"]))),
                "vector" => vectors.push(Vector {
                    name: fields["name"].clone(),
                    expect: fields["expect"].clone(),
                    bytes: hex(&fields["hex"]),
                    fields,
                }),
                other => panic!("unknown record {other}"),
            }
        }
        (keys, vectors)
    }
}

#[cfg(test)]
mod tests {
    /// The C code names the same offsets: the firmware all of them, the kernel module
    /// those it reads. A field moved in one language fails here.
    #[test]
    fn c_field_offsets_match_the_rust_ones() {
        let rust = [
            ("MAGIC", field::MAGIC.start),
            ("VERSION", field::VERSION),
            ("KIND", field::KIND),
            ("FLAGS", field::FLAGS),
            ("STATE", field::STATE),
            ("LEAP", field::LEAP),
            ("SOURCE", field::SOURCE),
            ("STRATUM", field::STRATUM),
            ("KEY_ID", field::KEY_ID.start),
            ("TRANSMITTER", field::TRANSMITTER.start),
            ("SESSION", field::SESSION.start),
            ("SEQUENCE", field::SEQUENCE.start),
            ("ERROR_BOUND", field::ERROR_BOUND.start),
            ("SECOND", field::SECOND.start),
            ("TX_OFFSET", field::TX_OFFSET.start),
            ("MAC", field::MAC.start),
        ];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for (file, all) in [
            ("firmware/arduino/tick.h", true),
            ("kernel/crudepps.c", false),
        ] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let c: Vec<(String, usize)> = text
                .lines()
                .filter_map(|l| l.strip_prefix("#define TICK_AT_"))
                .map(|d| {
                    let (name, at) = d.split_once(' ').unwrap();
                    (name.to_string(), at.trim().parse().unwrap())
                })
                .collect();
            assert!(c.len() >= 10, "{file}: {c:?}");
            for (name, at) in &c {
                let want = rust.iter().find(|(n, _)| n == name);
                assert_eq!(want.map(|w| w.1), Some(*at), "{file}: TICK_AT_{name}");
            }
            if all {
                assert_eq!(c.len(), rust.len(), "{file} names every field");
            }
        }
    }

    use super::vectors::load;
    use super::*;

    fn check_fields(p: &TickPacket, v: &vectors::Vector) {
        for (k, want) in &v.fields {
            let got = match k.as_str() {
                "name" | "expect" | "hex" | "auth" => continue,
                "kind" => format!("{:?}", p.kind)
                    .to_lowercase()
                    .replace("followup", "follow-up"),
                "flags" => p.flags.to_string(),
                "state" => format!("{:?}", p.state).to_lowercase(),
                "leap" => format!("{:?}", p.leap).to_lowercase(),
                "source" => match p.source {
                    Source::SystemClock => "system".into(),
                    s => format!("{s:?}").to_lowercase(),
                },
                "stratum" => p.stratum.to_string(),
                "key" => p.key_id.to_string(),
                "transmitter" => format!("0x{:08x}", p.transmitter),
                "session" => format!("0x{:08x}", p.session),
                "sequence" => p.sequence.to_string(),
                "error_us" => p.error_bound_us.to_string(),
                "second" => p.second.to_string(),
                "tx_offset_ns" => p.tx_offset_ns.to_string(),
                other => panic!("{}: unknown field {other}", v.name),
            };
            assert_eq!(&got, want, "{}: field {k}", v.name);
        }
    }

    #[test]
    fn shared_vectors_decode_as_documented() {
        let (_, vectors) = load();
        assert!(vectors.len() >= 10);
        for v in &vectors {
            match decode(&v.bytes) {
                Ok(Datagram::Legacy) => assert_eq!(v.expect, "legacy", "{}", v.name),
                Ok(Datagram::Tick(p)) => {
                    assert!(
                        v.expect == "ok" || v.expect == "bad-mac" || v.expect == "unknown-key",
                        "{}: decoded, expected {}",
                        v.name,
                        v.expect
                    );
                    check_fields(&p, v);
                    // Re-encoding gives the same bytes: the codec loses nothing.
                    let mut body = [0; BODY_LEN];
                    p.encode_body(&mut body);
                    assert_eq!(body[..], v.bytes[..BODY_LEN], "{}", v.name);
                }
                Err(e) => assert_eq!(e.name(), v.expect, "{}: {e}", v.name),
            }
        }
    }

    #[test]
    fn every_strict_prefix_is_rejected_without_panic() {
        let (_, vectors) = load();
        for v in vectors.iter().filter(|v| v.expect == "ok") {
            for n in 0..v.bytes.len() {
                assert!(decode(&v.bytes[..n]).is_err(), "{} [..{n}]", v.name);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..100)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn valid_packets_round_trip(
            follow in proptest::bool::ANY, flags in 0u8..4, state in 0u8..3, leap in 0u8..3,
            source in 0u8..4, stratum in proptest::num::u8::ANY, key_id in proptest::num::u16::ANY,
            transmitter in proptest::num::u32::ANY, session in proptest::num::u32::ANY,
            sequence in proptest::num::u32::ANY, error in proptest::num::u32::ANY,
            second in proptest::num::i64::ANY, tx in -999_999_999i64..1_000_000_000,
        ) {
            let mut body = [0; BODY_LEN];
            let mut wire = vec![0; AUTH_LEN];
            let p = TickPacket {
                kind: if follow { Kind::FollowUp } else { Kind::Tick },
                flags,
                state: [SourceState::Synchronized, SourceState::Holdover, SourceState::Unsynchronized][state as usize],
                leap: [Leap::None, Leap::Insert, Leap::Delete][leap as usize],
                source: [Source::SystemClock, Source::Pps, Source::Dcf77, Source::Gnss][source as usize],
                stratum, key_id, transmitter, session, sequence, error_bound_us: error, second,
                tx_offset_ns: if follow { tx } else { 0 },
            };
            p.encode_body(&mut body);
            wire[..BODY_LEN].copy_from_slice(&body);
            wire.truncate(p.wire_len());
            proptest::prop_assert_eq!(decode(&wire), Ok(Datagram::Tick(p)));
        }
    }
}
