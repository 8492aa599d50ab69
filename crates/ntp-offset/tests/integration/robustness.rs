//! Bad input and honest headers, against the real server process: random and mutated
//! datagrams, modes other than client, rate limiting, and the unsynchronized host clock.

use ntp_offset_testkit as common;

use common::*;
use ntp_offset_proto::packet::{Header, LeapIndicator, Mode};
use ntp_offset_proto::time::NtpTimestamp;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// xorshift64*: reproducible noise without a dependency.
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The kernel clock's sync state, as `serve` reads it (adjtimex, read-only).
fn kernel_unsynchronized() -> bool {
    ntp_offset_sys::clock::kernel_ntp_status()
        .unwrap()
        .unsynchronized()
}

/// Every answer of a server without keys is 48 bytes, and only requests of 48+ bytes are
/// answered; or, to a request that ends in what reads as a MAC (by a key it does not have),
/// a 52-byte crypto-NAK: a KoD CRYP with a zero key id, shorter than any such request.
fn plain_or_crypto_nak(answer: &[u8]) -> bool {
    answer.len() == 48
        || (answer.len() == 52 && answer[12..16] == *b"CRYP" && answer[48..] == [0; 4])
}

#[test]
fn hundred_thousand_bad_packets_then_still_correct() {
    let port = free_ports(1)[0];
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut server = ServerProcess::start(&[
        "--listen",
        &addr.to_string(),
        "--offset",
        "15s",
        "--local-stratum",
        "10",
        "--no-rate-limit",
    ]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_nonblocking(true).unwrap();
    let valid = Header::client_request(4, NtpTimestamp::from_bits(0x1234_5678)).encode();
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let (mut wrong_size, mut answers, mut sent) = (None, 0u64, 0u64);
    let mut buf = [0u8; 2048];
    let started = Instant::now();
    for i in 0..100_000u64 {
        let mut pkt: Vec<u8> = if i % 2 == 0 {
            // Random bytes of random length, 0..1500 (over the 1024 the server considers).
            let len = (noise.next() % 1500) as usize;
            (0..len).map(|_| noise.next() as u8).collect()
        } else {
            // A valid request with a few bytes flipped, maybe cut or extended.
            let mut p = valid.to_vec();
            for _ in 0..1 + noise.next() % 4 {
                let at = (noise.next() % 48) as usize;
                p[at] ^= noise.next() as u8;
            }
            match noise.next() % 4 {
                0 => p.truncate((noise.next() % 48) as usize),
                1 => p.extend((0..noise.next() % 200).map(|_| noise.next() as u8)),
                _ => {}
            }
            p
        };
        if pkt.is_empty() {
            pkt.push(0);
        }
        if client.send_to(&pkt, addr).is_ok() {
            sent += 1;
        }
        // Bounded: never more than 30 s on this loop.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "fuzz loop too slow"
        );
        while let Ok((n, _)) = client.recv_from(&mut buf) {
            answers += 1;
            if !plain_or_crypto_nak(&buf[..n]) {
                wrong_size = Some(n);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    while let Ok((n, _)) = client.recv_from(&mut buf) {
        answers += 1;
        if !plain_or_crypto_nak(&buf[..n]) {
            wrong_size = Some(n);
        }
    }
    assert_eq!(
        wrong_size, None,
        "an answer was neither 48 bytes nor a crypto-NAK"
    );
    assert!(server.is_running(), "the server died");
    // The mutated half includes requests that stay valid: some answers must have come.
    assert!(
        answers > 0 && answers < sent / 2,
        "answers {answers} of {sent}"
    );

    // Still serving correctly afterwards.
    let s = assert_serves_offset(addr, 15.0);
    assert_eq!(s.header.leap, LeapIndicator::NoWarning);

    // Its counters saw the junk.
    server.signal("USR1");
    let stats = server.wait_for_log("stats:", Duration::from_secs(5));
    for field in [
        "truncated=",
        "oversized=",
        "malformed=",
        "bad_version=",
        "not_client_mode=",
    ] {
        let n: u64 = stats
            .split(field)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(n > 0, "{field}0 after 100k bad packets: {stats}");
    }
    println!("fuzz: sent {sent}, answered {answers}; {stats}");
}

#[test]
fn control_and_private_modes_get_no_answer() {
    let port = free_ports(1)[0];
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _server = ServerProcess::start(&["--listen", &addr.to_string(), "--local-stratum", "10"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for mode in [
        Mode::SymmetricActive,
        Mode::Server,
        Mode::Broadcast,
        Mode::Control,
        Mode::Private,
    ] {
        let mut h = Header::client_request(4, NtpTimestamp::from_bits(7));
        h.mode = mode;
        // ntpq/ntpdc requests are short; send both a short and a full-size one.
        client.send_to(&h.encode()[..12], addr).unwrap();
        client.send_to(&h.encode(), addr).unwrap();
        let mut buf = [0u8; 600];
        assert!(
            client.recv_from(&mut buf).is_err(),
            "mode {mode:?} got an answer"
        );
    }
}

#[test]
fn answers_say_unsynchronized_unless_the_host_is_the_reference() {
    let ports = free_ports(2);
    let plain: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let local: SocketAddr = format!("127.0.0.1:{}", ports[1]).parse().unwrap();
    let _a = ServerProcess::start(&["--listen", &plain.to_string()]);
    let _b = ServerProcess::start(&["--listen", &local.to_string(), "--local-stratum", "10"]);
    let a = ntp_exchange(plain, Duration::from_secs(2)).expect("answer");
    let b = ntp_exchange(local, Duration::from_secs(2)).expect("answer");
    if kernel_unsynchronized() {
        // The case on fresh hosts and CI machines: no daemon keeps the clock.
        assert_eq!(
            (a.header.leap, a.header.stratum),
            (LeapIndicator::Unsynchronized, 0)
        );
    } else {
        assert_ne!(a.header.leap, LeapIndicator::Unsynchronized);
        assert_eq!(a.header.stratum, 3);
    }
    assert_eq!(
        (b.header.leap, b.header.stratum, &b.header.reference_id),
        (LeapIndicator::NoWarning, 10, b"LOCL")
    );
}

#[test]
fn rate_limited_clients_get_a_kod_then_silence() {
    let port = free_ports(1)[0];
    let dir = tempdir("ratelimit");
    let path = dir.join("rl.toml");
    std::fs::write(&path, format!("[server]\nlisten = [\"127.0.0.1:{port}\"]\nlocal_stratum = 10\ndefault_view = \"v\"\n[rate_limit]\ninterval = \"10s\"\nburst = 3\nkod = true\n[[view]]\nname = \"v\"\noffset = \"1s\"\n")).unwrap();
    let _server = ServerProcess::start(&["--config", path.to_str().unwrap()]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut seen = Vec::new();
    for i in 0..6u64 {
        client
            .send_to(
                &Header::client_request(4, NtpTimestamp::from_bits(100 + i)).encode(),
                addr,
            )
            .unwrap();
        let mut buf = [0u8; 64];
        seen.push(match client.recv_from(&mut buf) {
            Ok((n, _)) => {
                let h = Header::parse(&buf[..n]).unwrap();
                if h.stratum == 0 {
                    String::from_utf8_lossy(&h.reference_id).to_string()
                } else {
                    "time".into()
                }
            }
            Err(_) => "none".into(),
        });
    }
    assert_eq!(seen, ["time", "time", "time", "RATE", "none", "none"]);
}
