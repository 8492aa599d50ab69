//! The server's decision for one request: [`decide`]. Everything the server does with a datagram
//! is decided here, from plain values, so it is tested without sockets.
//!
//! Order of checks: size, version, mode (only client requests, mode 3, are ever answered; mode
//! 6/7 and everything else are dropped), view, rate. The answer is always exactly 48 bytes and
//! every request that gets one has at least 48, so an answer is never larger than its request.

use core::net::{IpAddr, SocketAddr};

use crate::packet::{set_transmit_timestamp, Header, LeapIndicator, Mode, HEADER_LEN};
use crate::ratelimit::{RateLimiter, RateVerdict};
use crate::system::ServerState;
use crate::time::{NtpShort, NtpTimestamp, Offset, Time};
use crate::view::{Assigner, ViewId, ViewTable};

/// The largest request considered. NTP requests are 48 bytes, plus extension fields or a legacy
/// MAC; nothing a client sends for time comes near this.
pub const MAX_REQUEST_LEN: usize = 1024;

/// What to do with a request that matches no view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Unmatched {
    /// Drop it silently (the default: reveal nothing to strangers).
    #[default]
    Ignore,
    /// Answer with a KoD DENY, so a misconfigured client stops asking.
    Deny,
}

/// One received datagram, as the IO edge hands it over.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub packet: &'a [u8],
    /// The address the request arrived on.
    pub local: SocketAddr,
    pub client: IpAddr,
    /// Kernel receive time, already mapped to base time (see `leap`).
    pub receive: Time,
    /// Monotonic clock, for rate limiting.
    pub now_mono_ns: u64,
}

/// Why a request gets no answer. The IO edge counts these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    Truncated,
    Oversized,
    /// Not a whole number of 32-bit words: no NTP packet looks like that.
    Malformed,
    BadVersion,
    NotClientMode,
    NoView,
    RateLimited,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::Malformed,
        DropReason::BadVersion,
        DropReason::NotClientMode,
        DropReason::NoView,
        DropReason::RateLimited,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::Malformed => "malformed",
            DropReason::BadVersion => "bad_version",
            DropReason::NotClientMode => "not_client_mode",
            DropReason::NoView => "no_view",
            DropReason::RateLimited => "rate_limited",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseKind {
    Time,
    KodRate,
    KodDeny,
}

/// An answer, complete but for its transmit timestamp, which [`Response::finish`] writes as
/// late as possible.
#[derive(Clone, Copy, Debug)]
pub struct Response {
    packet: [u8; HEADER_LEN],
    offset: Offset,
    pub view: Option<ViewId>,
    pub kind: ResponseKind,
}

#[derive(Clone, Copy, Debug)]
pub enum Decision {
    Respond(Response),
    Ignore(DropReason),
    /// Dropped by the rate limiter (counted as [`DropReason::RateLimited`]); the view the
    /// request would have had, for per-view counts and the client log.
    Limited(Option<ViewId>),
}

impl Response {
    /// The finished packet, transmit time `transmit` (base time) shifted into the view.
    /// KoD packets keep the request's own timestamp and tell no time.
    pub fn finish(&mut self, transmit: Time) -> &[u8; HEADER_LEN] {
        if self.kind == ResponseKind::Time {
            set_transmit_timestamp(&mut self.packet, transmit.add(self.offset).to_ntp());
        }
        &self.packet
    }
}

/// Decides what to answer to one request. `limiter` is None when rate limiting is off.
pub fn decide(
    req: &Request<'_>,
    views: &ViewTable,
    assigner: &dyn Assigner,
    state: &ServerState,
    unmatched: Unmatched,
    limiter: Option<&mut RateLimiter>,
) -> Decision {
    let len = req.packet.len();
    if len < HEADER_LEN {
        return Decision::Ignore(DropReason::Truncated);
    }
    if len > MAX_REQUEST_LEN {
        return Decision::Ignore(DropReason::Oversized);
    }
    if !len.is_multiple_of(4) {
        return Decision::Ignore(DropReason::Malformed);
    }
    let Ok(request) = Header::parse(req.packet) else {
        return Decision::Ignore(DropReason::Truncated);
    };
    // Version 1 had no modes; 5-7 do not exist. 2, 3 and 4 clients all get an answer in kind.
    if !(2..=4).contains(&request.version) {
        return Decision::Ignore(DropReason::BadVersion);
    }
    if request.mode != Mode::Client {
        return Decision::Ignore(DropReason::NotClientMode);
    }

    let view = views.select_with(req.local, req.client, assigner);
    if view.is_none() && unmatched == Unmatched::Ignore {
        return Decision::Ignore(DropReason::NoView);
    }
    let mut kind = if view.is_some() {
        ResponseKind::Time
    } else {
        ResponseKind::KodDeny
    };
    if let Some(limiter) = limiter {
        match limiter.check(req.client, req.now_mono_ns) {
            RateVerdict::Allow => {}
            RateVerdict::Drop => return Decision::Limited(view),
            RateVerdict::Kod => kind = ResponseKind::KodRate,
        }
    }

    let header = match (kind, view) {
        (ResponseKind::Time, Some(id)) => {
            time_header(&request, state, views.view(id).offset, req.receive)
        }
        (ResponseKind::KodRate, _) => kod_header(&request, state, *b"RATE"),
        _ => kod_header(&request, state, *b"DENY"),
    };
    let offset = view.map_or(Offset::ZERO, |id| views.view(id).offset);
    Decision::Respond(Response {
        packet: header.encode(),
        offset,
        view,
        kind,
    })
}

fn time_header(request: &Header, state: &ServerState, offset: Offset, receive: Time) -> Header {
    Header {
        leap: state.leap,
        version: request.version,
        mode: Mode::Server,
        stratum: state.stratum,
        poll: request.poll,
        precision: state.precision,
        root_delay: state.root_delay,
        root_dispersion: state.root_dispersion,
        reference_id: state.reference_id,
        reference_timestamp: state
            .reference_time
            .map_or(NtpTimestamp::ZERO, |t| t.add(offset).to_ntp()),
        origin_timestamp: request.transmit_timestamp,
        receive_timestamp: receive.add(offset).to_ntp(),
        transmit_timestamp: NtpTimestamp::ZERO,
    }
}

/// A kiss-o'-death (RFC 5905 §7.4): stratum 0, the code in the reference ID, no time.
fn kod_header(request: &Header, state: &ServerState, code: [u8; 4]) -> Header {
    Header {
        leap: LeapIndicator::Unsynchronized,
        version: request.version,
        mode: Mode::Server,
        stratum: 0,
        poll: request.poll,
        precision: state.precision,
        root_delay: NtpShort::from_bits(0),
        root_dispersion: NtpShort::from_bits(0),
        reference_id: code,
        reference_timestamp: NtpTimestamp::ZERO,
        origin_timestamp: request.transmit_timestamp,
        receive_timestamp: request.transmit_timestamp,
        transmit_timestamp: request.transmit_timestamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::RateLimitParams;
    use crate::system::REFID_LOCAL;
    use crate::view::{HashOnly, LocalAddr, Rule, Target, View};
    use proptest::prelude::*;

    const RX: Time = Time::from_unix_nanos(1_795_000_000_123_456_789);
    const CLIENT_TX: u64 = 0xecd4_1c39_8000_0000;

    fn state() -> ServerState {
        ServerState {
            leap: LeapIndicator::NoWarning,
            stratum: 10,
            reference_id: REFID_LOCAL,
            root_delay: NtpShort::from_bits(0),
            root_dispersion: NtpShort::from_bits(7),
            precision: -24,
            reference_time: Some(RX),
        }
    }

    fn views() -> ViewTable {
        let offsets = [
            ("zero", Offset::ZERO),
            ("plus15", Offset::from_secs(15)),
            ("minus250ms", Offset::from_nanos(-250_000_000)),
        ];
        let rules = (0..3)
            .map(|i| Rule {
                listen: vec![LocalAddr::Socket(
                    format!("127.0.0.1:{}", 11123 + i).parse().unwrap(),
                )],
                clients: vec![],
                target: Target::View(ViewId(i)),
            })
            .collect();
        let views = offsets
            .iter()
            .map(|(n, o)| View {
                name: n.to_string(),
                offset: *o,
            })
            .collect();
        ViewTable::new(views, rules, None)
    }

    fn request(bytes: &[u8], port: u16) -> Request<'_> {
        Request {
            packet: bytes,
            local: format!("127.0.0.1:{port}").parse().unwrap(),
            client: "127.0.0.1".parse().unwrap(),
            receive: RX,
            now_mono_ns: 5_000_000_000,
        }
    }

    fn client_packet(version: u8) -> [u8; 48] {
        Header::client_request(version, NtpTimestamp::from_bits(CLIENT_TX)).encode()
    }

    fn answer(bytes: &[u8], port: u16) -> Decision {
        decide(
            &request(bytes, port),
            &views(),
            &HashOnly,
            &state(),
            Unmatched::Ignore,
            None,
        )
    }

    #[test]
    fn answers_a_client_with_the_views_time() {
        let tx = RX.add(Offset::from_micros(12));
        for (port, offset) in [
            (11123, Offset::ZERO),
            (11124, Offset::from_secs(15)),
            (11125, Offset::from_nanos(-250_000_000)),
        ] {
            let Decision::Respond(mut r) = answer(&client_packet(4), port) else {
                panic!("no answer")
            };
            let h = Header::parse(r.finish(tx)).unwrap();
            assert_eq!(
                (h.leap, h.version, h.mode, h.stratum),
                (LeapIndicator::NoWarning, 4, Mode::Server, 10)
            );
            assert_eq!(
                h.origin_timestamp.to_bits(),
                CLIENT_TX,
                "origin echoes the client's transmit"
            );
            assert_eq!(h.receive_timestamp, RX.add(offset).to_ntp());
            assert_eq!(h.transmit_timestamp, tx.add(offset).to_ntp());
            assert_eq!(h.reference_timestamp, RX.add(offset).to_ntp());
            assert_eq!(
                (h.precision, h.reference_id, h.root_dispersion.to_bits()),
                (-24, *b"LOCL", 7)
            );
        }
    }

    #[test]
    fn a_ten_year_view_crosses_the_2036_era() {
        let ten_years = Offset::from_secs(3650 * 86_400);
        let table = ViewTable::single("decade", ten_years);
        let packet = client_packet(4);
        let req = request(&packet, 123);
        let Decision::Respond(mut r) =
            decide(&req, &table, &HashOnly, &state(), Unmatched::Ignore, None)
        else {
            panic!()
        };
        let h = Header::parse(r.finish(RX)).unwrap();
        // 2026-11 + 10 years is past 2036-02-07: era 1, and the client resolves it correctly.
        assert_eq!(h.transmit_timestamp.to_time_near(RX), RX.add(ten_years));
        assert!(
            h.transmit_timestamp.to_bits() < RX.to_ntp().to_bits(),
            "wrapped into era 1"
        );
    }

    #[test]
    fn answers_v2_v3_v4_in_kind_and_drops_others() {
        for v in 2..=4 {
            let Decision::Respond(mut r) = answer(&client_packet(v), 11123) else {
                panic!("v{v}")
            };
            assert_eq!(Header::parse(r.finish(RX)).unwrap().version, v);
        }
        for v in [0, 1, 5, 7] {
            assert!(
                matches!(
                    answer(&client_packet(v), 11123),
                    Decision::Ignore(DropReason::BadVersion)
                ),
                "v{v}"
            );
        }
    }

    #[test]
    fn only_client_mode_is_answered() {
        for mode in [0u8, 1, 2, 4, 5, 6, 7] {
            let mut p = client_packet(4);
            p[0] = (p[0] & !7) | mode;
            assert!(
                matches!(
                    answer(&p, 11123),
                    Decision::Ignore(DropReason::NotClientMode)
                ),
                "mode {mode}"
            );
        }
    }

    #[test]
    fn sizes_are_checked() {
        let p = client_packet(4);
        assert!(matches!(
            answer(&p[..47], 11123),
            Decision::Ignore(DropReason::Truncated)
        ));
        assert!(matches!(
            answer(&[], 11123),
            Decision::Ignore(DropReason::Truncated)
        ));
        let mut odd = p.to_vec();
        odd.push(0);
        assert!(matches!(
            answer(&odd, 11123),
            Decision::Ignore(DropReason::Malformed)
        ));
        let big = [p.as_slice(), &[0u8; MAX_REQUEST_LEN]].concat();
        assert!(matches!(
            answer(&big, 11123),
            Decision::Ignore(DropReason::Oversized)
        ));
        // A legacy MAC (key id + 16 bytes) is fine: the answer is 48 bytes, smaller.
        let with_mac = [p.as_slice(), &[0u8; 20]].concat();
        assert!(matches!(answer(&with_mac, 11123), Decision::Respond(_)));
    }

    #[test]
    fn unmatched_is_ignored_or_denied() {
        let p = client_packet(4);
        assert!(matches!(
            answer(&p, 9999),
            Decision::Ignore(DropReason::NoView)
        ));
        let Decision::Respond(mut r) = decide(
            &request(&p, 9999),
            &views(),
            &HashOnly,
            &state(),
            Unmatched::Deny,
            None,
        ) else {
            panic!()
        };
        assert_eq!(r.kind, ResponseKind::KodDeny);
        let h = Header::parse(r.finish(RX)).unwrap();
        assert_eq!(
            (h.leap, h.stratum, h.reference_id),
            (LeapIndicator::Unsynchronized, 0, *b"DENY")
        );
        assert_eq!(
            h.transmit_timestamp.to_bits(),
            CLIENT_TX,
            "a KoD tells no time"
        );
    }

    #[test]
    fn rate_limit_drops_or_kisses() {
        let p = client_packet(4);
        let params = RateLimitParams {
            interval_ns: 1_000_000_000,
            burst: 2,
            kod: true,
            table_size: 16,
        };
        let mut rl = RateLimiter::new(params, (1, 2));
        let mut kinds = Vec::new();
        for _ in 0..4 {
            match decide(
                &request(&p, 11123),
                &views(),
                &HashOnly,
                &state(),
                Unmatched::Ignore,
                Some(&mut rl),
            ) {
                Decision::Respond(r) => kinds.push(format!("{:?}", r.kind)),
                Decision::Ignore(d) => kinds.push(format!("{d:?}")),
                Decision::Limited(_) => kinds.push("RateLimited".into()),
            }
        }
        assert_eq!(kinds, ["Time", "Time", "KodRate", "RateLimited"]);
    }

    #[test]
    fn unsynchronized_state_is_passed_on() {
        let unsync = ServerState::unsynchronized(-24);
        let packet = client_packet(4);
        let req = request(&packet, 11123);
        let Decision::Respond(mut r) =
            decide(&req, &views(), &HashOnly, &unsync, Unmatched::Ignore, None)
        else {
            panic!()
        };
        let h = Header::parse(r.finish(RX)).unwrap();
        assert_eq!((h.leap, h.stratum), (LeapIndicator::Unsynchronized, 0));
    }

    proptest! {
        #[test]
        fn any_datagram_is_dropped_or_answered_smaller(
            bytes in proptest::collection::vec(any::<u8>(), 0..1200),
            port in 11120u16..11128,
        ) {
            if let Decision::Respond(mut r) = answer(&bytes, port) {
                prop_assert!(r.finish(RX).len() <= bytes.len());
                prop_assert_eq!(bytes[0] & 7, 3, "only mode 3 is answered");
            }
        }

        #[test]
        fn mutated_requests_never_panic(flip in 0usize..48, bit in 0u8..8, extra in 0usize..64) {
            let mut p = client_packet(4).to_vec();
            p[flip] ^= 1 << bit;
            p.extend(std::iter::repeat_n(0xa5u8, extra));
            let _ = answer(&p, 11123);
        }
    }
}
