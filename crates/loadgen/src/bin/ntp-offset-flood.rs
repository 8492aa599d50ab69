//! `ntp-offset-flood`: a bounded flood of NTP requests from many IPv6 source addresses, and a
//! legitimate client polling through it (scripts/bench-flood).
//!
//! Every request leaves one socket from its own source address in a /49 that the test's
//! namespaces route back to this one (IPV6_PKTINFO with IPV6_FREEBIND; a local route for the
//! /49 delivers the replies to the same socket). Three phases, each bounded in time:
//! 1. saturate: as fast as this loop sends, each request from an address never used before,
//!    spread over the /49's other 32,767 /64s (so no rate limit applies, per address or per
//!    prefix): the server's saturated answering rate, S;
//! 2. flood: `--factor` x S requests a second, evenly paced, from `--sources` addresses of the
//!    /49's first /64 in turn, while a legitimate client (its own socket and address) asks
//!    once a second;
//! 3. recover: as in 1, at once after the flood: how soon the server answers at full rate again.
//!
//! Prints one line of `key=value` pairs per phase, then the legitimate client's, for scripts.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ntp_offset_proto::packet::{Header, Mode, HEADER_LEN};
use ntp_offset_proto::time::NtpTimestamp;
use ntp_offset_sys::batch::{allow_any_source, RecvBatch, SendBatch};
use ntp_offset_sys::clock::monotonic_ns;

#[derive(Parser)]
#[command(about = "Bounded NTP flood from many IPv6 sources (test namespaces only)")]
struct Args {
    /// The server, [IPv6]:PORT, in a benchmarking prefix (2001:2::/48, RFC 5180).
    #[arg(long)]
    server: SocketAddrV6,
    /// The /49 the requests come from (routed back to this namespace), e.g. 2001:2:0:8000::;
    /// the flood comes from its first /64.
    #[arg(long)]
    prefix: Ipv6Addr,
    /// The local port every request is sent from and every reply comes back to.
    #[arg(long, default_value_t = 40_123)]
    port: u16,
    /// Seconds of phase 1, which measures the saturated rate S.
    #[arg(long, default_value_t = 3.0)]
    saturate_seconds: f64,
    /// Seconds of the flood.
    #[arg(long, default_value_t = 60.0)]
    flood_seconds: f64,
    /// The flood's rate as a multiple of S.
    #[arg(long, default_value_t = 2.0)]
    factor: f64,
    /// Distinct source addresses of the flood, used in turn.
    #[arg(long, default_value_t = 100_000)]
    sources: u32,
    /// Seconds of phase 3, after the flood.
    #[arg(long, default_value_t = 3.0)]
    recover_seconds: f64,
    /// The legitimate client's own address (on this namespace's interface), polling once a
    /// second during the flood.
    #[arg(long)]
    legit: Ipv6Addr,
    /// The server's process: its namespace's UDP receive drops (/proc/PID/net/snmp6) and its
    /// memory (/proc/PID/status) are read around the flood.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Hard cap on requests sent in all.
    #[arg(long, default_value_t = 100_000_000)]
    max_requests: u64,
}

/// Requests carry this in the top 16 bits of their transmit timestamp (echoed as the reply's
/// origin), the phase in the next 8 and a sequence number below: replies are told apart
/// without keeping a table per request.
const MAGIC: u64 = 0xf10d;
const BATCH: usize = 32;
/// Replies are counted in bins of this length, from the start of a phase.
const BIN_NS: u64 = 100_000_000;

fn cookie(phase: u8, seq: u64) -> u64 {
    MAGIC << 48 | u64::from(phase) << 40 | (seq & 0xff_ffff_ffff)
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Saturate = 1,
    Flood = 2,
    Recover = 3,
}

struct Counts {
    sent: u64,
    refused: u64,
    /// Valid replies to this phase's requests, per bin of arrival since the phase began.
    bins: Vec<u64>,
}

impl Counts {
    fn answered(&self) -> u64 {
        self.bins.iter().sum()
    }
}

struct Flood {
    socket: UdpSocket,
    server: SocketAddrV6,
    prefix: u128,
    out: SendBatch,
    rx: RecvBatch,
    /// Replies per phase (index = phase).
    counts: [Counts; 4],
    starts: [u64; 4],
    total_sent: u64,
    max_requests: u64,
    invalid: u64,
    /// Source addresses used by phases 1 and 3 so far.
    fresh: u64,
}

impl Flood {
    fn source(&self, index: u64) -> Ipv6Addr {
        Ipv6Addr::from(self.prefix | u128::from(index))
    }

    /// Sends up to `n` requests of `phase`, the i-th of the phase from source `src(i)`.
    fn send(&mut self, phase: Phase, n: usize, src: &mut dyn FnMut(&mut Self, u64) -> Ipv6Addr) {
        let n = n
            .min(BATCH)
            .min((self.max_requests - self.total_sent) as usize);
        let p = phase as usize;
        for _ in 0..n {
            let seq = self.counts[p].sent;
            let from = src(self, seq);
            let req = Header::client_request(4, NtpTimestamp::from_bits(cookie(p as u8, seq)));
            self.out
                .push_from(HEADER_LEN, self.server, from)
                .expect("a batch of BATCH")
                .copy_from_slice(&req.encode());
            self.counts[p].sent += 1;
        }
        let accepted = self.out.send(&self.socket).unwrap_or(0);
        self.counts[p].refused += (n - accepted) as u64;
        self.total_sent += n as u64;
    }

    /// Reads every reply waiting, into its phase's bins.
    fn drain(&mut self) {
        loop {
            let k = match self.rx.recv(&self.socket) {
                Ok(k) => k,
                Err(_) => return,
            };
            let now = monotonic_ns();
            for i in 0..k {
                let origin = self
                    .rx
                    .get(i)
                    .and_then(|r| Header::parse(r.data).ok())
                    .filter(|h| h.mode == Mode::Server && h.stratum != 0)
                    .map(|h| h.origin_timestamp.to_bits())
                    .filter(|c| c >> 48 == MAGIC);
                let Some(c) = origin else {
                    self.invalid += 1;
                    continue;
                };
                let p = ((c >> 40) & 0xff) as usize;
                if !(1..=3).contains(&p) || self.starts[p] == 0 {
                    self.invalid += 1;
                    continue;
                }
                let bin = (now.saturating_sub(self.starts[p]) / BIN_NS) as usize;
                let bins = &mut self.counts[p].bins;
                if bins.len() <= bin {
                    bins.resize(bin + 1, 0);
                }
                bins[bin] += 1;
            }
            if k < BATCH {
                return;
            }
        }
    }

    /// Runs `phase` for `seconds`: at `rate` requests a second (0: as fast as it goes).
    fn run(
        &mut self,
        phase: Phase,
        seconds: f64,
        rate: f64,
        src: &mut dyn FnMut(&mut Self, u64) -> Ipv6Addr,
    ) -> f64 {
        let start = monotonic_ns();
        self.starts[phase as usize] = start;
        let end = start + (seconds * 1e9) as u64;
        loop {
            let now = monotonic_ns();
            if now >= end || self.total_sent >= self.max_requests {
                break;
            }
            let due = if rate > 0.0 {
                let target = ((now - start) as f64 * rate / 1e9) as u64;
                target.saturating_sub(self.counts[phase as usize].sent) as usize
            } else {
                BATCH
            };
            if due > 0 {
                self.send(phase, due, src);
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
            self.drain();
        }
        // Replies still on their way count for the phase (they are told apart by cookie).
        (monotonic_ns() - start) as f64 / 1e9
    }
}

/// The legitimate client: one request a second from its own socket, each answered in time
/// if its reply comes before the next is due.
fn legit_client(bind: Ipv6Addr, server: SocketAddrV6, stop: Arc<AtomicBool>) -> (u64, u64, u64) {
    let socket = UdpSocket::bind(SocketAddr::from((bind, 0))).expect("bind the legitimate client");
    let (mut sent, mut answered, mut worst_us) = (0u64, 0u64, 0u64);
    let start = monotonic_ns();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let due = start + sent * 1_000_000_000;
        let now = monotonic_ns();
        if now < due {
            std::thread::sleep(Duration::from_nanos(due - now));
        }
        let c = 0x6c65_6769_7400_0000 | sent;
        let req = Header::client_request(4, NtpTimestamp::from_bits(c)).encode();
        let t0 = monotonic_ns();
        sent += 1;
        if socket.send_to(&req, SocketAddr::V6(server)).is_err() {
            continue;
        }
        let deadline = due + 1_000_000_000;
        loop {
            let now = monotonic_ns();
            if now >= deadline {
                break;
            }
            socket
                .set_read_timeout(Some(Duration::from_nanos(deadline - now)))
                .ok();
            match socket.recv(&mut buf) {
                Ok(n) => {
                    let ok = Header::parse(&buf[..n])
                        .is_ok_and(|h| h.mode == Mode::Server && h.origin_timestamp.to_bits() == c);
                    if ok {
                        answered += 1;
                        worst_us = worst_us.max((monotonic_ns() - t0) / 1000);
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
    (sent, answered, worst_us)
}

/// Datagrams the kernel dropped for a full receive buffer in `pid`'s network namespace.
fn udp6_receive_drops(pid: u32) -> u64 {
    let snmp = std::fs::read_to_string(format!("/proc/{pid}/net/snmp6"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/net/snmp6: {e}"));
    snmp.lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .filter(|(k, _)| *k == "Udp6RcvbufErrors")
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

/// A `/proc/PID/status` field in KiB (VmHWM: the peak resident set).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The flood's one socket: any source address of the prefix (IPV6_FREEBIND), non-blocking,
/// with deep buffers.
fn flood_socket(port: u16) -> UdpSocket {
    let socket = UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
        .expect("bind the flood's socket");
    allow_any_source(&socket).expect("IPV6_FREEBIND");
    socket.set_nonblocking(true).unwrap();
    let socket2 = socket2::SockRef::from(&socket);
    let _ = socket2.set_recv_buffer_size(8 << 20);
    let _ = socket2.set_send_buffer_size(8 << 20);
    socket
}

/// Recovery: the first 100-ms bin after the flood in which the server answered at 90 % of
/// its steady rate after it (the median bin of the phase). The rate before the flood is no
/// yardstick: this 2-core VM's speed drifts by tens of percent between 3-s phases.
fn print_recovery(f: &Flood, secs_recover: f64, flood_end: u64) {
    let r = &f.counts[Phase::Recover as usize];
    let whole = (secs_recover * 1e9) as usize / BIN_NS as usize;
    let mut sorted: Vec<u64> = r.bins.iter().take(whole).copied().collect();
    sorted.resize(whole.max(1), 0);
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let recovered_ms = r
        .bins
        .iter()
        .position(|&b| b > 0 && b as f64 >= 0.9 * median as f64)
        .map(|i| ((i as u64 + 1) * BIN_NS + f.starts[3].saturating_sub(flood_end)) / 1_000_000);
    let steady: u64 = r.bins.iter().skip(1).sum();
    println!(
        "phase=recover seconds={secs_recover:.3} sent={} answered={} rate={:.0} recovered_within_ms={}",
        r.sent,
        r.answered(),
        steady as f64 / (secs_recover - BIN_NS as f64 / 1e9).max(0.1),
        recovered_ms.map_or("never".to_string(), |m| m.to_string())
    );
}

/// The addresses it may use: all in the benchmarking prefix, which only the test's namespaces
/// route; the flood's own sources a /49 of it. Returns that prefix.
fn checked_prefix(args: &Args) -> u128 {
    let ip = u128::from(*args.server.ip());
    let prefix = u128::from(args.prefix);
    // 2001:2::/48: the IPv6 benchmarking prefix (RFC 5180), routed only where the test's
    // namespaces route it.
    let bench = |a: u128| a >> 80 == 0x2001_0002_0000;
    assert!(
        bench(ip) && bench(prefix) && bench(u128::from(args.legit)),
        "ntp-offset-flood only targets 2001:2::/48 (RFC 5180) in test namespaces"
    );
    assert!(
        prefix & ((1 << 79) - 1) == 0,
        "--prefix: a /49 (its low 79 bits zero)"
    );
    assert!(args.sources > 0 && args.factor > 0.0);
    prefix
}

impl Flood {
    fn new(args: &Args, prefix: u128) -> Flood {
        Flood {
            socket: flood_socket(args.port),
            server: args.server,
            prefix,
            out: SendBatch::new(BATCH, HEADER_LEN),
            rx: RecvBatch::new(BATCH, 512),
            counts: std::array::from_fn(|_| Counts {
                sent: 0,
                refused: 0,
                bins: Vec::new(),
            }),
            starts: [0; 4],
            total_sent: 0,
            max_requests: args.max_requests,
            invalid: 0,
            fresh: 1 << 40,
        }
    }
}

fn main() {
    let args = Args::parse();
    let prefix = checked_prefix(&args);
    let mut f = Flood::new(&args, prefix);
    // Subnet 1-32767 of the /49 in turn, then the next address in each.
    let mut fresh = |f: &mut Flood, _seq: u64| {
        f.fresh += 1;
        let (subnet, host) = (1 + f.fresh % 32_767, 1 + f.fresh / 32_767);
        Ipv6Addr::from(f.prefix | u128::from(subnet) << 64 | u128::from(host))
    };
    let sources = u64::from(args.sources);
    let mut flood = |f: &mut Flood, seq: u64| f.source(1 + seq % sources);

    let secs = f.run(Phase::Saturate, args.saturate_seconds, 0.0, &mut fresh);
    std::thread::sleep(Duration::from_millis(200));
    f.drain();
    let s = &f.counts[Phase::Saturate as usize];
    // The first bin is the server's start from idle: the rate is taken from the rest.
    let steady: u64 = s.bins.iter().skip(1).sum();
    let saturated = steady as f64 / (secs - BIN_NS as f64 / 1e9).max(0.1);
    println!(
        "phase=saturate seconds={secs:.3} sent={} refused={} answered={} rate={saturated:.0}",
        s.sent,
        s.refused,
        s.answered()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let legit = {
        let stop = stop.clone();
        let (bind, server) = (args.legit, args.server);
        std::thread::spawn(move || legit_client(bind, server, stop))
    };
    let target = saturated * args.factor;
    let drops_before = args.server_pid.map(udp6_receive_drops);
    let secs = f.run(Phase::Flood, args.flood_seconds, target, &mut flood);
    stop.store(true, Ordering::Relaxed);
    let flood_end = monotonic_ns();
    let drops = args
        .server_pid
        .map(udp6_receive_drops)
        .zip(drops_before)
        .map(|(after, before)| after.saturating_sub(before));
    let memory = args.server_pid.map(|pid| status_kib(pid, "VmHWM:"));
    let secs_recover = f.run(Phase::Recover, args.recover_seconds, 0.0, &mut fresh);
    std::thread::sleep(Duration::from_millis(200));
    f.drain();
    let (legit_sent, legit_answered, legit_worst_us) = legit.join().expect("legitimate client");

    let fl = &f.counts[Phase::Flood as usize];
    println!(
        "phase=flood seconds={secs:.3} sources={} target_rate={target:.0} offered_rate={:.0} refused={} answered_rate={:.0} kernel_drops={} kernel_drop_share={} server_peak_rss_kib={}",
        args.sources,
        fl.sent as f64 / secs,
        fl.refused,
        fl.answered() as f64 / secs,
        drops.map_or("?".into(), |d| d.to_string()),
        drops.map_or("?".into(), |d| format!("{:.4}", d as f64 / fl.sent.max(1) as f64)),
        memory.flatten().map_or("?".into(), |k| k.to_string()),
    );
    print_recovery(&f, secs_recover, flood_end);
    println!(
        "legit sent={legit_sent} answered={legit_answered} share={:.4} worst_us={legit_worst_us} invalid_replies={}",
        legit_answered as f64 / legit_sent.max(1) as f64,
        f.invalid
    );
}
