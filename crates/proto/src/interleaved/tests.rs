//! The interleaved log, the responder's use of it in whole exchanges, and the echoed frames.

use super::echo::{udp_payload, EchoError};
use super::*;
use crate::packet::HEADER_LEN;
use crate::responder::tests::{request, state, views, Counter, RX};
use crate::responder::{decide, Credentials, Decision, Response, Unmatched};
use crate::symmetric::Auth;
use crate::view::HashOnly;
use proptest::prelude::*;

const PLUS15: u16 = 11124; // the responder tests' view at +15 s

fn ts(bits: u64) -> NtpTimestamp {
    NtpTimestamp::from_bits(bits)
}

#[test]
fn the_log_keeps_a_transmit_time_per_receive_timestamp_and_takes_the_kernels_stamp() {
    let mut log = TransmitLog::new(64);
    let offset = Offset::from_secs(15);
    let receive = RX.add(offset).to_ntp();
    let before = RX.add(Offset::from_micros(5)).add(offset).to_ntp();
    log.sent(receive, before, offset);
    assert_eq!(log.transmit_of(receive), Some(before));
    assert_eq!(log.transmit_of(ts(receive.to_bits() + 1)), None);

    // The kernel stamped it 40 µs after the reading: the log now says so, in the view's time.
    let kernel = RX.add(Offset::from_micros(45));
    assert_eq!(log.stamped(receive, kernel), Stamped::Recorded);
    assert_eq!(log.transmit_of(receive), Some(kernel.add(offset).to_ntp()));
    assert_eq!(log.stamped(ts(7), kernel), Stamped::Unknown);
}

#[test]
fn a_stamp_far_from_the_reading_before_the_send_is_not_taken() {
    let mut log = TransmitLog::new(64);
    let receive = RX.to_ntp();
    let before = RX.add(Offset::from_micros(5)).to_ntp();
    log.sent(receive, before, Offset::ZERO);
    // A clock step between the reading and the stamp: 2 s later, or 10 ms earlier.
    for kernel in [Offset::from_secs(2), Offset::from_micros(-10_000)] {
        assert_eq!(log.stamped(receive, RX.add(kernel)), Stamped::Implausible);
        assert_eq!(log.transmit_of(receive), Some(before));
    }
}

#[test]
fn zero_is_never_a_key() {
    let mut log = TransmitLog::new(4);
    log.sent(NtpTimestamp::ZERO, ts(5), Offset::ZERO);
    assert_eq!(log.transmit_of(NtpTimestamp::ZERO), None);
    assert_eq!(log.stamped(NtpTimestamp::ZERO, RX), Stamped::Unknown);
}

#[test]
fn the_log_has_a_fixed_size_and_keeps_the_newest_of_colliding_answers() {
    let mut log = TransmitLog::new(1000);
    assert_eq!(log.slots.len(), 1024);
    for i in 1..=100_000u64 {
        log.sent(ts(i << 20), ts(i), Offset::ZERO);
    }
    assert_eq!(log.slots.len(), 1024);
    // The latest answers are nearly all still there; every hit is right.
    let kept = (99_001..=100_000u64)
        .filter(|&i| log.transmit_of(ts(i << 20)) == Some(ts(i)))
        .count();
    assert!(kept > 500, "{kept} of the last 1000 kept");
    for i in 1..=100_000u64 {
        if let Some(t) = log.transmit_of(ts(i << 20)) {
            assert_eq!(t, ts(i));
        }
    }
}

fn packet(origin: u64, receive: u64, transmit: u64) -> [u8; HEADER_LEN] {
    let mut h = Header::client_request(4, ts(transmit));
    h.origin_timestamp = ts(origin);
    h.receive_timestamp = ts(receive);
    h.encode()
}

fn respond(bytes: &[u8], log: &TransmitLog, receive: Time) -> Response {
    let mut req = request(bytes, PLUS15);
    req.sent = Some(log);
    req.receive = receive;
    let auth = Auth::default();
    match decide(
        &req,
        &views(),
        &HashOnly,
        &state(),
        Unmatched::Ignore,
        &Credentials::keys_only(&auth),
        None,
    ) {
        Decision::Respond(r) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn which_requests_are_logged_and_which_are_answered_interleaved() {
    let mut log = TransmitLog::new(64);
    let auth = Auth::default();
    let creds = Credentials::keys_only(&auth);
    // An SNTP client (origin zero): basic, not logged.
    let r = respond(&packet(0, 0, 0x1234), &log, RX);
    assert_eq!((r.log_as, r.is_interleaved()), (None, false));
    // A basic chrony-like client (receive = transmit): not logged either.
    let r = respond(&packet(0x55, 0x1234, 0x1234), &log, RX);
    assert_eq!((r.log_as, r.is_interleaved()), (None, false));

    // An interleaved client's request refers to an answer the log does not have: basic, and
    // this answer is logged under its receive field (the view's time).
    let mut r = respond(&packet(0x55, 0xaaaa, 0xbbbb), &log, RX);
    let first_rx = RX.add(Offset::from_secs(15)).to_ntp();
    assert_eq!((r.log_as, r.is_interleaved()), (Some(first_rx), false));
    let tx = RX.add(Offset::from_micros(3));
    let in_view = r.finish_into(tx, &creds, &mut Counter(0), &mut [0; HEADER_LEN]);
    assert_eq!(in_view, tx.add(Offset::from_secs(15)).to_ntp());
    log.sent(first_rx, in_view, r.offset());

    // Its next request names that answer: interleaved.
    let next_rx = RX.add(Offset::from_secs(1));
    let mut r = respond(&packet(first_rx.to_bits(), 0xcccc, 0xdddd), &log, next_rx);
    assert!(r.is_interleaved());
    let out = r.finish(next_rx.add(Offset::from_micros(3)), &creds, &mut Counter(0));
    let h = Header::parse(&out).unwrap();
    assert_eq!(
        h.origin_timestamp,
        ts(0xcccc),
        "echoes the client's receive field"
    );
    assert_eq!(
        h.receive_timestamp,
        next_rx.add(Offset::from_secs(15)).to_ntp()
    );
    assert_eq!(
        h.transmit_timestamp, in_view,
        "the earlier answer's transmit time"
    );
    assert_eq!(
        r.log_as,
        Some(h.receive_timestamp),
        "and this one is logged in turn"
    );

    // Receive = transmit says "basic" even when the origin is in the log.
    let r = respond(&packet(first_rx.to_bits(), 0xdddd, 0xdddd), &log, next_rx);
    assert!(!r.is_interleaved());
}

/// A client and the server in simulated time, as the interleaved client of the draft works:
/// the server's software adds 40 µs between its transmit reading and the kernel's stamp. In
/// basic mode the client's offset is off by half of that; in interleaved mode it is exact.
#[test]
fn interleaved_exchanges_measure_the_views_offset_without_the_send_paths_delay() {
    const PATH: Offset = Offset::from_micros(100); // each way
    const READ: Offset = Offset::from_micros(5); // receive to transmit reading
    const SEND: Offset = Offset::from_micros(40); // transmit reading to kernel stamp
    let auth = Auth::default();
    let creds = Credentials::keys_only(&auth);
    let mut log = TransmitLog::new(64);
    let view = Offset::from_secs(15);
    // (client transmit T1, client receive T4, server receive T2) of the previous exchange.
    let mut prev: Option<(Time, Time, NtpTimestamp)> = None;
    let mut offsets = Vec::new();
    for round in 0..4i64 {
        let t1 = RX.add(Offset::from_secs(round * 16));
        let (cookie_basic, cookie_xleave) = (0x1000 + round as u64, 0x2000 + round as u64);
        let bytes = match prev {
            Some((_, _, server_rx)) => packet(server_rx.to_bits(), cookie_xleave, cookie_basic),
            None => packet(0, 0, cookie_basic),
        };
        let server_rx = t1.add(PATH);
        let mut r = respond(&bytes, &log, server_rx);
        let reading = server_rx.add(READ);
        let out = r.finish(reading, &creds, &mut Counter(0));
        let kernel = reading.add(SEND);
        if let Some(k) = r.log_as {
            log.sent(k, reading.add(r.offset()).to_ntp(), r.offset());
            assert_eq!(log.stamped(k, kernel), Stamped::Recorded);
        }
        let t4 = kernel.add(PATH);
        let h = Header::parse(&out).unwrap();
        let offset = |t1: Time, t2: NtpTimestamp, t3: NtpTimestamp, t4: Time| {
            let a = t2.wrapping_sub(t1.to_ntp()).nanos();
            let b = t3.wrapping_sub(t4.to_ntp()).nanos();
            (a + b) / 2
        };
        let measured = if h.origin_timestamp == ts(cookie_xleave) {
            let (p1, p4, p2) = prev.unwrap();
            ("interleaved", offset(p1, p2, h.transmit_timestamp, p4))
        } else {
            assert_eq!(h.origin_timestamp, ts(cookie_basic));
            (
                "basic",
                offset(t1, h.receive_timestamp, h.transmit_timestamp, t4),
            )
        };
        offsets.push(measured);
        prev = Some((t1, t4, h.receive_timestamp));
    }
    // The first request (origin zero) is not logged, the second is: the third answer is the
    // first that can be interleaved, as with chronyd.
    let error = |ns: i64| ns - view.nanos();
    for (mode, ns) in &offsets[..2] {
        assert_eq!(*mode, "basic");
        assert!((error(*ns) + SEND.nanos() / 2).abs() <= 1, "{offsets:?}");
    }
    for (mode, ns) in &offsets[2..] {
        assert_eq!(*mode, "interleaved");
        assert!(error(*ns).abs() <= 1, "{offsets:?}");
    }
}

fn udp(payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0, 123, 0x9c, 0x40];
    u.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn ipv4(udp: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&(20 + udp.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
    p.extend_from_slice(udp);
    p
}

fn ipv6(udp: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(&[0; 32]);
    p.extend_from_slice(udp);
    p
}

fn ethernet(dst_first: u8, kind: u16, vlan: bool, ip: &[u8]) -> Vec<u8> {
    let mut f = vec![dst_first, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2];
    if vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    }
    f.extend_from_slice(&kind.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

#[test]
fn the_answer_is_found_behind_every_framing_the_kernel_echoes() {
    let ntp: Vec<u8> = (0..68u8).collect();
    let u = udp(&ntp);
    let frames = [
        ("loopback, IPv4", ethernet(0, 0x0800, false, &ipv4(&u))),
        ("loopback, IPv6", ethernet(0, 0x86dd, false, &ipv6(&u))),
        (
            "veth with a VLAN tag",
            ethernet(0x02, 0x0800, true, &ipv4(&u)),
        ),
        (
            "a MAC starting like IPv4",
            ethernet(0x45, 0x0800, false, &ipv4(&u)),
        ),
        (
            "a MAC starting like IPv6",
            ethernet(0x66, 0x86dd, false, &ipv6(&u)),
        ),
        ("tun, IPv4", ipv4(&u)),
        ("tun, IPv6", ipv6(&u)),
    ];
    for (what, frame) in frames {
        assert_eq!(udp_payload(&frame), Ok(&ntp[..]), "{what}");
    }
    // IPv4 options, and Ethernet padding after the packet.
    let mut opt = ipv4(&u);
    opt[0] = 0x46;
    opt.splice(20..20, [1, 1, 1, 1]);
    let total = u16::from_be_bytes([opt[2], opt[3]]) + 4;
    opt[2..4].copy_from_slice(&total.to_be_bytes());
    let mut padded = ethernet(0, 0x0800, false, &opt);
    padded.extend_from_slice(&[0; 6]);
    assert_eq!(udp_payload(&padded), Ok(&ntp[..]));
}

#[test]
fn frames_that_are_not_an_answer_are_errors() {
    let u = udp(&[1; 48]);
    let mut tcp = ipv4(&u);
    tcp[9] = 6;
    assert_eq!(udp_payload(&tcp), Err(EchoError::NotUdp));
    assert_eq!(
        udp_payload(&ethernet(0, 0x0806, false, &ipv4(&u))),
        Err(EchoError::NotIp),
        "ARP"
    );
    let mut short = ipv4(&u);
    short[0] = 0x44;
    assert_eq!(udp_payload(&short), Err(EchoError::BadLength));
    let mut long_udp = ipv6(&u);
    long_udp[40 + 5] = 200;
    assert_eq!(udp_payload(&long_udp), Err(EchoError::BadLength));
    // Cut anywhere: an error, never a panic or a payload beyond the bytes.
    let whole = ethernet(0, 0x0800, false, &ipv4(&u));
    for cut in 0..whole.len() {
        assert!(udp_payload(&whole[..cut]).is_err(), "cut at {cut}");
    }
}

proptest! {
    #[test]
    fn any_bytes_give_a_payload_within_them_or_an_error(
        frame in proptest::collection::vec(any::<u8>(), 0..200)
    ) {
        if let Ok(p) = udp_payload(&frame) {
            let start = p.as_ptr() as usize - frame.as_ptr() as usize;
            prop_assert!(start >= 28 && start + p.len() <= frame.len());
        }
    }
}
