//! `ntp-offset-loadgen`: a bounded NTP load generator for benchmarks.
//!
//! Sends client requests from many source ports in batches (sendmmsg/recvmmsg) and counts only
//! valid replies: server mode, 48 bytes, origin timestamp equal to a request still in flight
//! (with `--key`: requests carry a MAC, and a valid reply must carry one that verifies; with
//! `--nts-ke`: requests are NTS requests after one key establishment, and a valid reply must
//! be authenticated by the session's key and echo the request's identifier).
//! Two modes: saturate (`--rate 0`: keep a window of requests in flight per socket) and fixed
//! rate (open loop, evenly paced). Always stops after `--duration` or `--max-requests`.
//! Prints one line of `key=value` pairs for scripts.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use clap::Parser;
use ntp_offset_proto::nts::extension as nts_ef;
use ntp_offset_proto::nts::Aead;
use ntp_offset_proto::packet::{Header, Mode, HEADER_LEN};
use ntp_offset_proto::symmetric::{self, Key, KeyType, MAX_DIGEST_LEN};
use ntp_offset_proto::time::NtpTimestamp;
use ntp_offset_sys::batch::{enable_rx_timestamps, RecvBatch, SendBatch};
use ntp_offset_sys::clock::{monotonic_ns, realtime_ns};
use ntp_offset_testkit::nts::{key_exchange_offering, NtsSession};

#[derive(Parser)]
#[command(about = "Bounded NTP load generator (loopback or test namespaces only)")]
struct Args {
    /// Server to load, IP:PORT.
    #[arg(long)]
    server: SocketAddr,
    /// Requests per second; 0 saturates (closed loop).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Hard cap on requests sent.
    #[arg(long, default_value_t = 50_000_000)]
    max_requests: u64,
    /// Source sockets (ports).
    #[arg(long, default_value_t = 16)]
    sockets: usize,
    /// Requests in flight per socket when saturating.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Bind source socket i to this IPv4 address plus i x --bind-step (127.x.y.z: many
    /// clients on loopback), instead of the wildcard.
    #[arg(long)]
    bind_base: Option<std::net::Ipv4Addr>,
    #[arg(long, default_value_t = 1)]
    bind_step: u32,
    /// Sign every request with this symmetric key, ID:TYPE:HEX (e.g. 1:AES128:00..0f), as a
    /// chrony client with `key ID` would; replies must carry a MAC by it.
    #[arg(long, value_parser = parse_key)]
    key: Option<Key>,
    /// NTS: establish keys with this NTS-KE server (IP:PORT) first, then send every request
    /// with its first cookie (a server keeps no per-cookie state, so one serves for a load).
    #[arg(long, requires = "nts_ca")]
    nts_ke: Option<SocketAddr>,
    /// The CA certificate (PEM) that signed the NTS-KE server's certificate.
    #[arg(long)]
    nts_ca: Option<std::path::PathBuf>,
    /// The AEAD algorithm to offer in NTS-KE, by its IANA number: 15 (AES-SIV-CMAC-256, what
    /// every NTS server has: the default, so chrony 4.3 compares alike) or 30
    /// (AES-128-GCM-SIV).
    #[arg(long, default_value_t = 15, value_parser = parse_aead)]
    nts_aead: u16,
}

fn parse_aead(s: &str) -> Result<u16, String> {
    let id: u16 = s.parse().map_err(|e| format!("{e}"))?;
    Aead::from_id(id).map(Aead::id).ok_or_else(|| {
        format!("{id}: the AEADs are 15 (AES-SIV-CMAC-256) and 30 (AES-128-GCM-SIV)")
    })
}

fn parse_key(s: &str) -> Result<Key, String> {
    let mut parts = s.splitn(3, ':');
    let (Some(id), Some(kind), Some(hex)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected ID:TYPE:HEX".into());
    };
    let id: u32 = id.parse().map_err(|_| format!("`{id}` is not a key id"))?;
    let kind = KeyType::parse(kind).ok_or_else(|| format!("`{kind}` is not a key type"))?;
    let secret = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or("HEX must be hex digits")?;
    Key::new(id, kind, secret).map_err(|e| e.to_string())
}

/// A request not answered within this time is counted lost and leaves the window.
const LOST_AFTER_NS: u64 = 200_000_000;

struct Source {
    socket: UdpSocket,
    in_flight: HashMap<u64, i64>, // cookie -> send time (CLOCK_REALTIME ns)
}

fn main() {
    let args = Args::parse();
    assert!(
        args.server.ip().is_loopback() || is_test_net(args.server),
        "loadgen only targets loopback or 198.18.0.0/15 test namespaces"
    );
    let mut sources = open_sources(&args);
    let nts: Option<NtsSession> = args.nts_ke.map(|ke| {
        let ca = args.nts_ca.as_deref().expect("clap requires --nts-ca");
        let aead = Aead::from_id(args.nts_aead).expect("checked by clap");
        key_exchange_offering(ke, ca, &[aead], true)
            .unwrap_or_else(|e| panic!("NTS-KE with {ke}: {e}"))
    });
    let mut out = SendBatch::new(32, 1024);
    let mut rx = RecvBatch::new(32, 1024);
    let mut latencies: Vec<u32> = Vec::with_capacity(1 << 20);
    let (mut sent, mut valid, mut invalid, mut lost) = (0u64, 0u64, 0u64, 0u64);
    let mut next_cookie: u64 = 0x6c6f_6164_0000_0000 ^ monotonic_ns().rotate_left(32);
    let start = monotonic_ns();
    let end = start + (args.duration * 1e9) as u64;
    let mut last_expiry = start;
    let mut turn = 0usize;

    loop {
        let now = monotonic_ns();
        if now >= end {
            break;
        }
        // Send: top up the window, or catch up with the fixed schedule.
        let due = if args.rate == 0 {
            usize::MAX
        } else {
            let target = ((now - start) as u128 * args.rate as u128 / 1_000_000_000) as u64;
            target.saturating_sub(sent).min(32) as usize
        };
        let mut budget = due;
        for _ in 0..sources.len() {
            if budget == 0 || sent >= args.max_requests {
                break;
            }
            turn = (turn + 1) % sources.len();
            let src = &mut sources[turn];
            let room = if args.rate == 0 {
                args.window.saturating_sub(src.in_flight.len())
            } else {
                budget.min(4)
            };
            let n = room.min(budget).min(32) as u64;
            let n = n.min(args.max_requests - sent) as usize;
            if n == 0 {
                continue;
            }
            let t = realtime_ns();
            for _ in 0..n {
                next_cookie = next_cookie.wrapping_add(1);
                push_request(&mut out, &args, nts.as_ref(), next_cookie);
                src.in_flight.insert(next_cookie, t);
            }
            let accepted = out.send(&src.socket).unwrap_or(0);
            sent += n as u64;
            lost += (n - accepted) as u64;
            budget = budget.saturating_sub(n);
        }
        // Receive whatever has arrived on every socket.
        for src in &mut sources {
            let (v, i) = receive(src, &mut rx, &args, nts.as_ref(), &mut latencies);
            (valid, invalid) = (valid + v, invalid + i);
        }
        // Expire what will never come back, so the window does not shrink for good.
        if now - last_expiry > 50_000_000 {
            last_expiry = now;
            lost += expire(&mut sources);
        }
        if args.rate != 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let elapsed = (monotonic_ns() - start) as f64 / 1e9;
    report([sent, valid, invalid, lost], elapsed, &mut latencies);
}

/// The line the benchmarks read: counts (sent, valid, invalid, lost), rate and latencies.
fn report([sent, valid, invalid, lost]: [u64; 4], elapsed: f64, latencies: &mut [u32]) {
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "sent={sent} valid={valid} invalid={invalid} lost={lost} seconds={elapsed:.3} rate={:.0} p50_us={} p99_us={}",
        valid as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}

/// Reads every reply waiting on `src`: (valid, invalid). A valid reply is signed as its
/// request was, a server's, and answers a request in flight (its latency is kept).
fn receive(
    src: &mut Source,
    rx: &mut RecvBatch,
    args: &Args,
    nts: Option<&NtsSession>,
    latencies: &mut Vec<u32>,
) -> (u64, u64) {
    let (mut valid, mut invalid) = (0, 0);
    while let Ok(k) = rx.recv(&src.socket) {
        for i in 0..k {
            let Some(r) = rx.get(i) else { continue };
            let t = r
                .rx_time
                .map_or_else(realtime_ns, |(s, ns)| s * 1_000_000_000 + ns);
            let ok = signed(r.data, args, nts)
                && Header::parse(r.data).is_ok_and(|h| h.mode == Mode::Server && h.stratum != 0)
                && match Header::parse(r.data).map(|h| h.origin_timestamp.to_bits()) {
                    Ok(cookie) => match src.in_flight.remove(&cookie) {
                        Some(t0) => {
                            latencies.push(((t - t0).max(0) / 1000).min(u32::MAX as i64) as u32);
                            true
                        }
                        None => false,
                    },
                    Err(_) => false,
                };
            if ok {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        if k < 32 {
            break;
        }
    }
    (valid, invalid)
}

/// Forgets requests whose replies are overdue; how many.
fn expire(sources: &mut [Source]) -> u64 {
    let now_rt = realtime_ns();
    let mut lost = 0;
    for src in sources {
        let before = src.in_flight.len();
        src.in_flight
            .retain(|_, &mut t0| now_rt.saturating_sub(t0) < LOST_AFTER_NS as i64);
        lost += (before - src.in_flight.len()) as u64;
    }
    lost
}

/// One source socket per `--sockets`, non-blocking, with kernel receive stamps (latency is
/// measured to the kernel's stamp, not to when this loop polls).
fn open_sources(args: &Args) -> Vec<Source> {
    let bind = if args.server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    (0..args.sockets.max(1))
        .map(|i| {
            let socket = match args.bind_base {
                Some(base) => {
                    let ip = std::net::Ipv4Addr::from(u32::from(base) + i as u32 * args.bind_step);
                    assert!(ip.is_loopback(), "--bind-base: loopback addresses only");
                    UdpSocket::bind((ip, 0))
                }
                None => UdpSocket::bind(bind),
            }
            .expect("bind a source socket");
            socket.set_nonblocking(true).unwrap();
            enable_rx_timestamps(&socket).unwrap();
            Source {
                socket,
                in_flight: HashMap::with_capacity(args.window * 2),
            }
        })
        .collect()
}

/// Queues one request whose transmit timestamp is `cookie`: plain, with a MAC, or over NTS.
fn push_request(out: &mut SendBatch, args: &Args, nts: Option<&NtsSession>, cookie: u64) {
    let req = Header::client_request(4, NtpTimestamp::from_bits(cookie)).encode();
    match (&args.key, nts) {
        (None, Some(session)) => {
            let packet = nts_ef::client_request(
                &req,
                &uid_of(cookie),
                &session.cookies[0],
                0,
                &session.keys,
                &[0x5a; 16][..session.keys.aead().nonce_len()],
            );
            out.push(packet.len(), args.server)
                .unwrap()
                .copy_from_slice(&packet);
        }
        (None, None) => out
            .push(HEADER_LEN, args.server)
            .unwrap()
            .copy_from_slice(&req),
        (Some(key), _) => {
            let mut digest = [0u8; MAX_DIGEST_LEN];
            let d = key.digest(&req, &mut digest);
            let buf = out.push(HEADER_LEN + 4 + d, args.server).unwrap();
            buf[..HEADER_LEN].copy_from_slice(&req);
            buf[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&key.id().to_be_bytes());
            buf[HEADER_LEN + 4..].copy_from_slice(&digest[..d]);
        }
    }
}

/// The reply is signed as its request was: by the key, over NTS, or (plain) not at all.
fn signed(reply: &[u8], args: &Args, nts: Option<&NtsSession>) -> bool {
    match (&args.key, nts) {
        (None, Some(session)) => Header::parse(reply).is_ok_and(|h| {
            let uid = uid_of(h.origin_timestamp.to_bits());
            nts_ef::read_response(reply, &uid, &session.keys).is_ok_and(|c| c.len() == 1)
        }),
        (None, None) => reply.len() == HEADER_LEN,
        (Some(key), _) => symmetric::find_mac(reply)
            .is_some_and(|m| m.key_id == key.id() && key.verify(m.data, m.digest)),
    }
}

/// An NTS request's 32-byte identifier, from the request's own cookie (its transmit
/// timestamp), so a reply can be checked against it without keeping it.
fn uid_of(cookie: u64) -> [u8; 32] {
    let mut uid = [0x75u8; 32];
    uid[..8].copy_from_slice(&cookie.to_be_bytes());
    uid
}

fn is_test_net(addr: SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.octets()[0] == 198 && (v4.octets()[1] & 0xfe) == 18,
        std::net::IpAddr::V6(_) => false,
    }
}
