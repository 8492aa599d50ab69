//! The benchmark's baseline: a tick receiver as most code would write it, blocking `recv()`
//! then `clock_gettime()`, no kernel timestamp and no follow-up. Prints, per tick, the user
//! space time of arrival minus the tick's second, as a JSON line. Stops after `--count` ticks
//! or `--seconds`.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use ntp_offset_proto::tick::{decode, Datagram, Kind};
use socket2::{Domain, Protocol, Socket, Type};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "0.0.0.0:8123")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 60)]
    count: u64,
    #[arg(long, default_value_t = 120)]
    seconds: u64,
}

fn main() {
    let args = Args::parse();
    let s = Socket::new(
        Domain::for_address(args.listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .expect("socket");
    s.set_reuse_address(true).expect("SO_REUSEADDR");
    s.bind(&args.listen.into()).expect("bind");
    let socket: UdpSocket = s.into();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut buf = [0u8; 128];
    let mut seen = 0;
    while seen < args.count && Instant::now() < end {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        if let Ok(Datagram::Tick(t)) = decode(&buf[..n]) {
            if t.kind == Kind::Tick {
                let err = now.as_nanos() as i128 - t.second as i128 * 1_000_000_000;
                println!(r#"{{"second":{},"naive_ns":{err}}}"#, t.second);
                seen += 1;
            }
        }
    }
}
