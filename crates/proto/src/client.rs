//! The client side of one NTP exchange (RFC 5905 §8): from the four timestamps to the server's
//! offset and the round-trip delay. Used by `query` and the load generator.

use crate::packet::{Header, LeapIndicator, Mode};
use crate::time::{NtpTimestamp, Offset, Time};

/// One measured exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Server time minus local time.
    pub offset: Offset,
    /// Round trip, less the server's processing time.
    pub delay: Offset,
    pub header: Header,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseError {
    /// Not a server-mode packet.
    NotServerMode,
    /// The origin timestamp is not the transmit timestamp we sent: not an answer to us.
    OriginMismatch,
    /// A kiss-o'-death with its code (RATE, DENY, ...).
    Kiss([u8; 4]),
    /// A packet that cannot be parsed.
    Truncated,
}

impl core::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ResponseError::NotServerMode => write!(f, "not a server response"),
            ResponseError::OriginMismatch => {
                write!(f, "origin timestamp does not match our request")
            }
            ResponseError::Kiss(code) => {
                write!(f, "kiss-o'-death {}", String::from_utf8_lossy(code))
            }
            ResponseError::Truncated => write!(f, "truncated response"),
        }
    }
}

/// Checks a response to a request whose transmit timestamp was `sent` (on the wire) and
/// computes offset and delay. `t1` is when it left and `t4` when the answer arrived, local time.
pub fn evaluate(
    response: &[u8],
    sent: NtpTimestamp,
    t1: Time,
    t4: Time,
) -> Result<Sample, ResponseError> {
    let header = Header::parse(response).map_err(|_| ResponseError::Truncated)?;
    if header.mode != Mode::Server {
        return Err(ResponseError::NotServerMode);
    }
    if header.origin_timestamp != sent {
        return Err(ResponseError::OriginMismatch);
    }
    if header.stratum == 0
        && header.leap == LeapIndicator::Unsynchronized
        && header.reference_id != [0; 4]
    {
        return Err(ResponseError::Kiss(header.reference_id));
    }
    // Differences of wire timestamps: exact across eras for any offset below 68 years.
    let t1n = t1.to_ntp();
    let t4n = t4.to_ntp();
    let a = header.receive_timestamp.wrapping_sub(t1n); // T2 - T1
    let b = header.transmit_timestamp.wrapping_sub(t4n); // T3 - T4
    let offset = Offset::from_nanos(((a.nanos() as i128 + b.nanos() as i128) / 2) as i64);
    let delay = t4.since(t1).add(
        header
            .transmit_timestamp
            .wrapping_sub(header.receive_timestamp)
            .neg(),
    );
    Ok(Sample {
        offset,
        delay,
        header,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::HEADER_LEN;
    use crate::time::NtpShort;

    fn response(origin: NtpTimestamp, t2: Time, t3: Time) -> [u8; HEADER_LEN] {
        Header {
            leap: LeapIndicator::NoWarning,
            version: 4,
            mode: Mode::Server,
            stratum: 2,
            poll: 0,
            precision: -20,
            root_delay: NtpShort::from_bits(0),
            root_dispersion: NtpShort::from_bits(0),
            reference_id: *b"LOCL",
            reference_timestamp: NtpTimestamp::ZERO,
            origin_timestamp: origin,
            receive_timestamp: t2.to_ntp(),
            transmit_timestamp: t3.to_ntp(),
        }
        .encode()
    }

    #[test]
    fn offset_and_delay_from_four_timestamps() {
        let t1 = Time::from_unix_nanos(1_795_000_000_000_000_000);
        let server_offset = Offset::from_secs(15);
        // 100 us each way, 10 us in the server.
        let t2 = t1.add(Offset::from_micros(100)).add(server_offset);
        let t3 = t2.add(Offset::from_micros(10));
        let t4 = t1.add(Offset::from_micros(210));
        let sent = NtpTimestamp::from_bits(0x1234);
        let s = evaluate(&response(sent, t2, t3), sent, t1, t4).unwrap();
        assert!(
            (s.offset.nanos() - server_offset.nanos()).abs() <= 2,
            "{}",
            s.offset
        );
        assert!((s.delay.nanos() - 200_000).abs() <= 2, "{}", s.delay);
    }

    #[test]
    fn decades_ahead_across_2036() {
        let t1 = Time::from_unix_nanos(1_795_000_000_000_000_000);
        let decade = Offset::from_secs(3650 * 86_400);
        let t2 = t1.add(decade);
        let s = evaluate(
            &response(NtpTimestamp::from_bits(1), t2, t2),
            NtpTimestamp::from_bits(1),
            t1,
            t1,
        )
        .unwrap();
        assert!((s.offset.nanos() - decade.nanos()).abs() <= 2);
    }

    #[test]
    fn rejects_foreign_and_kod_answers() {
        let t = Time::from_unix_nanos(1_795_000_000_000_000_000);
        let r = response(NtpTimestamp::from_bits(5), t, t);
        assert_eq!(
            evaluate(&r, NtpTimestamp::from_bits(6), t, t),
            Err(ResponseError::OriginMismatch)
        );
        let mut kod = Header::parse(&r).unwrap();
        kod.stratum = 0;
        kod.leap = LeapIndicator::Unsynchronized;
        kod.reference_id = *b"RATE";
        assert_eq!(
            evaluate(&kod.encode(), NtpTimestamp::from_bits(5), t, t),
            Err(ResponseError::Kiss(*b"RATE"))
        );
        assert_eq!(
            evaluate(&r[..40], NtpTimestamp::from_bits(5), t, t),
            Err(ResponseError::Truncated)
        );
    }
}
