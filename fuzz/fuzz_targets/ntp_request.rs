//! `responder::decide` on arbitrary datagrams: never panics, and an answer is never longer
//! than its request (no amplification), whatever the bytes, addresses, rate limiter and keys
//! say (MACs by known and unknown keys, crypto-NAKs, NTS fields, NTS-NAKs, views that need a
//! key, interleaved mode). An interleaved answer carries the logged transmit time and echoes
//! the request's receive field. `nts_exchange` fuzzes NTS requests that start out valid.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use ntp_offset_proto::interleaved::TransmitLog;
use ntp_offset_proto::nts::cookie::MasterKeys;
use ntp_offset_proto::nts::Entropy;
use ntp_offset_proto::packet::{Header, LeapIndicator};
use ntp_offset_proto::ratelimit::{RateLimitParams, RateLimiter};
use ntp_offset_proto::responder::{decide, Credentials, Decision, Request, Unmatched};
use ntp_offset_proto::symmetric::{Auth, Key, KeyType, SymmetricKeys, UnknownKey};
use ntp_offset_proto::system::ServerState;
use ntp_offset_proto::time::{NtpShort, NtpTimestamp, Offset, Time};
use ntp_offset_proto::view::{HashOnly, ViewTable};

struct Zeros;
impl Entropy for Zeros {
    fn fill(&mut self, out: &mut [u8]) {
        out.fill(0);
    }
}

fuzz_target!(|data: &[u8]| {
    // The first 4 bytes choose the client's address and the limiter's state; the rest is
    // the datagram.
    let (head, packet) = data.split_at(data.len().min(4));
    let mut h = [0u8; 4];
    h[..head.len()].copy_from_slice(head);
    let views = ViewTable::single("v", Offset::from_secs(15));
    let state = ServerState {
        leap: LeapIndicator::NoWarning,
        stratum: 3,
        reference_id: *b"OFFS",
        root_delay: NtpShort::from_bits(0),
        root_dispersion: NtpShort::from_bits(7),
        precision: -24,
        reference_time: Some(Time::from_unix_nanos(1_767_225_600_000_000_000)),
    };
    let mut limiter = RateLimiter::new(
        RateLimitParams {
            interval_ns: 2_000_000_000,
            burst: 1 + u32::from(h[0] & 3),
            kod: h[1] & 1 == 1,
            table_size: 16,
            // Bit 3 of the second byte: IPv6 clients limited per /64 as well, or not.
            ipv6_prefix: if h[1] & 8 == 8 { 64 } else { 128 },
            prefix_factor: 256,
        },
        (1, 2),
    );
    // Bit 2 of the second byte: the log holds the request's origin, so a request that asks
    // for interleaved mode gets it.
    let logged = NtpTimestamp::from_bits(0x0123_4567_89ab_cdef);
    let mut log = TransmitLog::new(16);
    let request = Header::parse(packet).ok();
    if let Some(r) = request.filter(|_| h[1] & 4 != 0) {
        log.sent(r.origin_timestamp, logged, Offset::ZERO);
    }
    let req = Request {
        packet,
        local: SocketAddr::from(([127, 0, 0, 1], 123)),
        client: IpAddr::from([198, 18, h[2], h[3]]),
        receive: Time::from_unix_nanos(1_767_225_600_000_000_000),
        now_mono_ns: 1_000_000_000,
        sent: Some(&log),
    };
    let keys = SymmetricKeys::new(vec![
        Key::new(1, KeyType::Aes128, vec![7; 16]).unwrap(),
        Key::new(2, KeyType::Sha1, b"secret".to_vec()).unwrap(),
        Key::new(3, KeyType::Md5, b"old".to_vec()).unwrap(),
    ])
    .unwrap();
    let unknown_key = if h[1] & 2 == 0 {
        UnknownKey::Nak
    } else {
        UnknownKey::Drop
    };
    let auth = Auth { keys, unknown_key };
    let master = MasterKeys::generate(1_767_225_600, &mut Zeros);
    let creds = Credentials {
        symmetric: &auth,
        nts: Some(&master),
    };
    for unmatched in [Unmatched::Ignore, Unmatched::Deny] {
        let mut limiter = Some(&mut limiter);
        for limited in [false, true] {
            let l = if limited { limiter.take() } else { None };
            if let Decision::Respond(mut r) =
                decide(&req, &views, &HashOnly, &state, unmatched, &creds, l)
            {
                let answer = r.finish(
                    Time::from_unix_nanos(1_767_225_600_000_100_000),
                    &creds,
                    &mut Zeros,
                );
                assert!(
                    answer.len() <= packet.len(),
                    "{} bytes answer {}",
                    answer.len(),
                    packet.len()
                );
                if r.is_interleaved() {
                    let (q, a) = (
                        request.expect("answered, so parsed"),
                        Header::parse(&answer).unwrap(),
                    );
                    assert_eq!(a.transmit_timestamp, logged);
                    assert_eq!(a.origin_timestamp, q.receive_timestamp);
                    assert_ne!(q.receive_timestamp, q.transmit_timestamp);
                }
            }
        }
    }
});
