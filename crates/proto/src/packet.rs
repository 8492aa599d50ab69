//! The NTP packet header (RFC 5905 §7.3), 48 bytes, big-endian:
//!
//! ```text
//!  0  LI(2) VN(3) Mode(3) | Stratum | Poll | Precision
//!  4  Root Delay (16.16)
//!  8  Root Dispersion (16.16)
//! 12  Reference ID
//! 16  Reference Timestamp (32.32)
//! 24  Origin Timestamp
//! 32  Receive Timestamp
//! 40  Transmit Timestamp
//! ```
//!
//! Anything after the header (extension fields, a legacy MAC) is the caller's business: the
//! server never echoes it, so a response is never larger than its request.

use crate::time::{NtpShort, NtpTimestamp};
use crate::wire;

/// The header's fields, as the diagram above lays them out.
pub mod field {
    use crate::wire::Field;

    /// Leap indicator (2 bits), version (3) and mode (3).
    pub const LI_VN_MODE: usize = 0;
    pub const STRATUM: usize = 1;
    pub const POLL: usize = 2;
    pub const PRECISION: usize = 3;
    pub const ROOT_DELAY: Field = 4..8;
    pub const ROOT_DISPERSION: Field = 8..12;
    pub const REFERENCE_ID: Field = 12..16;
    pub const REFERENCE_TIMESTAMP: Field = 16..24;
    pub const ORIGIN_TIMESTAMP: Field = 24..32;
    pub const RECEIVE_TIMESTAMP: Field = 32..40;
    pub const TRANSMIT_TIMESTAMP: Field = 40..48;
}

pub const HEADER_LEN: usize = field::TRANSMIT_TIMESTAMP.end;

/// The stratum of a server that is not synchronized (RFC 5905, figure 11).
pub const UNSYNCHRONIZED_STRATUM: u8 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeapIndicator {
    NoWarning = 0,
    /// The last minute of the current UTC day has 61 seconds.
    InsertSecond = 1,
    /// The last minute of the current UTC day has 59 seconds.
    DeleteSecond = 2,
    /// The sender's clock is not synchronized: do not trust its time.
    Unsynchronized = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Reserved = 0,
    SymmetricActive = 1,
    SymmetricPassive = 2,
    Client = 3,
    Server = 4,
    Broadcast = 5,
    /// NTP control messages (ntpq): never answered here.
    Control = 6,
    /// ntpd's private mode (ntpdc, the monlist amplifier): never answered here.
    Private = 7,
}

/// A parsed header. Field names follow RFC 5905.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub leap: LeapIndicator,
    pub version: u8,
    pub mode: Mode,
    pub stratum: u8,
    pub poll: i8,
    pub precision: i8,
    pub root_delay: NtpShort,
    pub root_dispersion: NtpShort,
    pub reference_id: [u8; 4],
    pub reference_timestamp: NtpTimestamp,
    pub origin_timestamp: NtpTimestamp,
    pub receive_timestamp: NtpTimestamp,
    pub transmit_timestamp: NtpTimestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer than 48 bytes.
    Truncated { len: usize },
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ParseError::Truncated { len } => {
                write!(
                    f,
                    "NTP packet truncated: {len} bytes, a header needs {HEADER_LEN}"
                )
            }
        }
    }
}

impl std::error::Error for ParseError {}

impl LeapIndicator {
    const fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => LeapIndicator::NoWarning,
            1 => LeapIndicator::InsertSecond,
            2 => LeapIndicator::DeleteSecond,
            _ => LeapIndicator::Unsynchronized,
        }
    }
}

impl Mode {
    const fn from_bits(bits: u8) -> Self {
        match bits & 7 {
            0 => Mode::Reserved,
            1 => Mode::SymmetricActive,
            2 => Mode::SymmetricPassive,
            3 => Mode::Client,
            4 => Mode::Server,
            5 => Mode::Broadcast,
            6 => Mode::Control,
            _ => Mode::Private,
        }
    }
}

fn timestamp(b: &[u8], f: wire::Field) -> NtpTimestamp {
    NtpTimestamp::from_bits(wire::read(b, f))
}

impl Header {
    /// Reads the first 48 bytes of `buf`. Every bit pattern is a header; judging whether it
    /// makes sense (version, mode) is the responder's job.
    pub fn parse(buf: &[u8]) -> Result<Header, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::Truncated { len: buf.len() });
        }
        Ok(Header {
            leap: LeapIndicator::from_bits(buf[field::LI_VN_MODE] >> 6),
            version: (buf[field::LI_VN_MODE] >> 3) & 7,
            mode: Mode::from_bits(buf[field::LI_VN_MODE]),
            stratum: buf[field::STRATUM],
            poll: buf[field::POLL] as i8,
            precision: buf[field::PRECISION] as i8,
            root_delay: NtpShort::from_bits(wire::read(buf, field::ROOT_DELAY)),
            root_dispersion: NtpShort::from_bits(wire::read(buf, field::ROOT_DISPERSION)),
            reference_id: buf[field::REFERENCE_ID].try_into().expect("4 bytes"),
            reference_timestamp: timestamp(buf, field::REFERENCE_TIMESTAMP),
            origin_timestamp: timestamp(buf, field::ORIGIN_TIMESTAMP),
            receive_timestamp: timestamp(buf, field::RECEIVE_TIMESTAMP),
            transmit_timestamp: timestamp(buf, field::TRANSMIT_TIMESTAMP),
        })
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[field::LI_VN_MODE] = (self.leap as u8) << 6 | (self.version & 7) << 3 | self.mode as u8;
        b[field::STRATUM] = self.stratum;
        b[field::POLL] = self.poll as u8;
        b[field::PRECISION] = self.precision as u8;
        wire::write(&mut b, field::ROOT_DELAY, self.root_delay.to_bits());
        wire::write(
            &mut b,
            field::ROOT_DISPERSION,
            self.root_dispersion.to_bits(),
        );
        b[field::REFERENCE_ID].copy_from_slice(&self.reference_id);
        let stamps = [
            (field::REFERENCE_TIMESTAMP, self.reference_timestamp),
            (field::ORIGIN_TIMESTAMP, self.origin_timestamp),
            (field::RECEIVE_TIMESTAMP, self.receive_timestamp),
        ];
        for (f, t) in stamps {
            wire::write(&mut b, f, t.to_bits());
        }
        set_transmit_timestamp(&mut b, self.transmit_timestamp);
        b
    }

    /// A client request as SNTP sends it (RFC 4330): everything zero but the transmit timestamp.
    pub fn client_request(version: u8, transmit: NtpTimestamp) -> Header {
        Header {
            leap: LeapIndicator::NoWarning,
            version,
            mode: Mode::Client,
            stratum: 0,
            poll: 0,
            precision: 0,
            root_delay: NtpShort::from_bits(0),
            root_dispersion: NtpShort::from_bits(0),
            reference_id: [0; 4],
            reference_timestamp: NtpTimestamp::ZERO,
            origin_timestamp: NtpTimestamp::ZERO,
            receive_timestamp: NtpTimestamp::ZERO,
            transmit_timestamp: transmit,
        }
    }
}

/// Writes the transmit timestamp into an encoded header: the server fills it in last, right
/// before the packet leaves, so it is as late (and as true) as possible.
pub fn set_transmit_timestamp(packet: &mut [u8; HEADER_LEN], ts: NtpTimestamp) {
    wire::write(packet, field::TRANSMIT_TIMESTAMP, ts.to_bits());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SNTPv4 request as ntpsec's ntpdig sends it: first byte 0x23 (LI 0, VN 4, mode 3),
    /// everything zero except the transmit timestamp.
    const NTPDIG_REQUEST: [u8; 48] = [
        0x23, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
        0, 0, 0, 0, 0, 0, 0, 0, 0xec, 0xd4, 0x1c, 0x39, 0x80, 0x00, 0x00, 0x00,
    ];

    /// A server response: LI 0, VN 4, mode 4, stratum 2, poll 6, precision -25 (0xe7), root
    /// delay 0.5 s, root dispersion 1/65536 s, refid 198.18.0.1, and four timestamps.
    const SERVER_RESPONSE: [u8; 48] = [
        0x24, 0x02, 0x06, 0xe7, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x01, 198, 18, 0,
        1, //
        0xec, 0xd4, 0x1c, 0x00, 0x00, 0x00, 0x00, 0x00, 0xec, 0xd4, 0x1c, 0x39, 0x80, 0x00, 0x00,
        0x00, //
        0xec, 0xd4, 0x1c, 0x48, 0x40, 0x00, 0x00, 0x00, 0xec, 0xd4, 0x1c, 0x48, 0x40, 0x00, 0x10,
        0x00,
    ];

    #[test]
    fn parses_an_ntpdig_request() {
        let h = Header::parse(&NTPDIG_REQUEST).unwrap();
        assert_eq!(h.leap, LeapIndicator::NoWarning);
        assert_eq!(h.version, 4);
        assert_eq!(h.mode, Mode::Client);
        assert_eq!(h.transmit_timestamp.to_bits(), 0xecd4_1c39_8000_0000);
        assert_eq!(h, Header::client_request(4, h.transmit_timestamp));
        assert_eq!(h.encode(), NTPDIG_REQUEST);
    }

    #[test]
    fn parses_a_server_response_field_by_field() {
        let h = Header::parse(&SERVER_RESPONSE).unwrap();
        assert_eq!(
            (h.leap, h.version, h.mode),
            (LeapIndicator::NoWarning, 4, Mode::Server)
        );
        assert_eq!((h.stratum, h.poll, h.precision), (2, 6, -25));
        assert_eq!(h.root_delay.to_bits(), 0x0000_8000);
        assert_eq!(h.root_dispersion.to_bits(), 1);
        assert_eq!(h.reference_id, [198, 18, 0, 1]);
        assert_eq!(h.reference_timestamp.to_bits(), 0xecd4_1c00_0000_0000);
        assert_eq!(h.origin_timestamp.to_bits(), 0xecd4_1c39_8000_0000);
        assert_eq!(h.receive_timestamp.to_bits(), 0xecd4_1c48_4000_0000);
        assert_eq!(h.transmit_timestamp.to_bits(), 0xecd4_1c48_4000_1000);
        assert_eq!(h.encode(), SERVER_RESPONSE);
    }

    #[test]
    fn first_byte_packs_leap_version_mode() {
        let mut h = Header::parse(&NTPDIG_REQUEST).unwrap();
        h.leap = LeapIndicator::Unsynchronized;
        h.version = 3;
        h.mode = Mode::Private;
        assert_eq!(h.encode()[0], 0b11_011_111);
        let back = Header::parse(&h.encode()).unwrap();
        assert_eq!(
            (back.leap, back.version, back.mode),
            (LeapIndicator::Unsynchronized, 3, Mode::Private)
        );
    }

    #[test]
    fn short_packets_are_truncated_not_panics() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Header::parse(&NTPDIG_REQUEST[..len]),
                Err(ParseError::Truncated { len })
            );
        }
    }

    #[test]
    fn trailing_bytes_are_ignored_by_the_header() {
        let mut long = NTPDIG_REQUEST.to_vec();
        long.extend_from_slice(&[0xaa; 20]); // a legacy MAC's size
        assert_eq!(
            Header::parse(&long).unwrap(),
            Header::parse(&NTPDIG_REQUEST).unwrap()
        );
    }

    #[test]
    fn every_bit_pattern_round_trips() {
        // The header has no reserved bits: any 48 bytes parse and encode back unchanged.
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..1000 {
            let mut b = [0u8; 48];
            for byte in &mut b {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            assert_eq!(Header::parse(&b).unwrap().encode(), b);
        }
    }
}
