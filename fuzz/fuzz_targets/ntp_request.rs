//! `responder::decide` on arbitrary datagrams: never panics, and an answer is never longer
//! than its request (no amplification), whatever the bytes, addresses and rate limiter say.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use ntp_offset_proto::packet::LeapIndicator;
use ntp_offset_proto::ratelimit::{RateLimitParams, RateLimiter};
use ntp_offset_proto::responder::{decide, Decision, Request, Unmatched};
use ntp_offset_proto::system::ServerState;
use ntp_offset_proto::time::{NtpShort, Offset, Time};
use ntp_offset_proto::view::{HashOnly, ViewTable};

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
        },
        (1, 2),
    );
    let req = Request {
        packet,
        local: SocketAddr::from(([127, 0, 0, 1], 123)),
        client: IpAddr::from([198, 18, h[2], h[3]]),
        receive: Time::from_unix_nanos(1_767_225_600_000_000_000),
        now_mono_ns: 1_000_000_000,
    };
    for unmatched in [Unmatched::Ignore, Unmatched::Deny] {
        for limiter in [None, Some(&mut limiter)] {
            if let Decision::Respond(mut r) = decide(&req, &views, &HashOnly, &state, unmatched, limiter) {
                let answer = r.finish(Time::from_unix_nanos(1_767_225_600_000_100_000));
                assert!(
                    answer.len() <= packet.len(),
                    "{} bytes answer {}",
                    answer.len(),
                    packet.len()
                );
            }
        }
    }
});
