//! `workers = N`: N sockets per address in a SO_REUSEPORT group, steered by the client's
//! address. What a user would check: a client that sends from many source ports still gets
//! only its own rate limit (the kernel's default steering, by address and port, would hand it
//! one budget per worker), many clients are all answered, and the count cannot change on a
//! reload.

use ntp_offset_testkit as common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use ntp_offset_proto::packet::Header;
use ntp_offset_proto::time::NtpTimestamp;

fn config(dir: &std::path::Path, listen: &str, workers: u32) -> std::path::PathBuf {
    let cfg = dir.join("serve.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"{listen}\"]\nlocal_stratum = 10\nworkers = {workers}\n\
             [control]\nsocket = \"serve.sock\"\n\
             [rate_limit]\ninterval = \"60s\"\nburst = 4\n\
             [[view]]\nname = \"v\"\noffset = \"15s\"\nlisten = [\"{listen}\"]\n"
        ),
    )
    .unwrap();
    cfg
}

/// One request from `socket`; whether it was answered within `wait`.
fn answered(socket: &UdpSocket, server: SocketAddr, wait: Duration) -> bool {
    let req = Header::client_request(4, NtpTimestamp::from_bits(0xe9a0_0000_0000_0001)).encode();
    socket.send_to(&req, server).unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 512];
    socket.recv_from(&mut buf).is_ok()
}

/// One request from each of `ports` sockets bound to `bind` (one address, many ports): how
/// many were answered.
fn answered_from_ports(bind: &str, ports: usize, server: SocketAddr) -> usize {
    let sockets: Vec<UdpSocket> = (0..ports).map(|_| UdpSocket::bind(bind).unwrap()).collect();
    sockets
        .iter()
        .filter(|s| answered(s, server, Duration::from_millis(200)))
        .count()
}

#[test]
fn a_client_on_many_ports_gets_one_budget_however_many_workers() {
    let dir = tempdir("workers-budget");
    let port = free_ports(1)[0];
    let cfg = config(&dir, &format!("127.0.0.1:{port}"), 4);
    let mut server = ServerProcess::start(&["--config", cfg.to_str().unwrap()]);
    let line = server.wait_for_log("serving", Duration::from_secs(5));
    assert!(line.contains("workers=4"), "{line}");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    // 32 source ports of one address, one request each: the burst is 4.
    let got = answered_from_ports("127.0.0.1:0", 32, addr);
    assert_eq!(
        got, 4,
        "one client's budget (burst 4) across 32 source ports and 4 workers"
    );

    // 64 clients (other loopback addresses), one request each: all answered, whichever
    // worker each one meets.
    let mut missed = Vec::new();
    for i in 0..64u8 {
        let s = UdpSocket::bind((std::net::Ipv4Addr::new(127, 3, 0, i + 1), 0)).unwrap();
        if !answered(&s, addr, Duration::from_secs(1)) {
            missed.push(i);
        }
    }
    assert!(missed.is_empty(), "clients not answered: {missed:?}");

    // One socket in the status, with every worker's counts.
    let st = control_json("status", &dir.join("serve.sock"), &[]);
    let sockets = st["serve"]["sockets"].as_array().unwrap();
    assert_eq!(sockets.len(), 1, "{st}");
    assert_eq!(sockets[0]["received"], 32 + 64, "{st}");
    assert_eq!(sockets[0]["answered"], 4 + 64, "{st}");
    // Spread over the workers by address: with 64 addresses, more than one worker has work
    // (all on one would mean the steering program reads no address).
    let by_worker: Vec<u64> = sockets[0]["received_by_worker"]
        .as_array()
        .unwrap_or_else(|| panic!("no received_by_worker: {st}"))
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(by_worker.len(), 4, "{st}");
    assert!(
        by_worker.iter().filter(|&&n| n >= 8).count() >= 3,
        "64 addresses spread over 4 workers: {by_worker:?}"
    );

    // The number of workers cannot change on a reload: the running configuration stays.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("workers = 4", "workers = 2"),
    )
    .unwrap();
    let mark = server.mark();
    server.signal("HUP");
    let line = server.log_since(mark, "reload failed", Duration::from_secs(5));
    assert!(line.contains("restart"), "{line}");
    let s = UdpSocket::bind("127.4.0.1:0").unwrap();
    assert!(answered(&s, addr, Duration::from_secs(1)), "still serving");
}

#[test]
fn workers_accept_a_number_or_auto_and_nothing_else() {
    for (value, ok) in [
        ("1", true),
        ("\"auto\"", true),
        ("64", true),
        ("0", false),
        ("65", false),
        ("\"many\"", false),
    ] {
        let (passed, out) = run_cli(&["serve", "--check", "--config", &{
            let dir = tempdir(&format!("workers-check-{}", value.replace('"', "")));
            let cfg = dir.join("c.toml");
            std::fs::write(
                    &cfg,
                    format!("[server]\nlisten = [\"127.0.0.1:1123\"]\ndefault_view = \"v\"\nworkers = {value}\n[[view]]\nname = \"v\"\noffset = \"0s\"\n"),
                )
                .unwrap();
            cfg.to_str().unwrap().to_string()
        }]);
        assert_eq!(passed, ok, "workers = {value}: {out}");
        if !ok {
            assert!(
                out.contains("server.workers") && out.contains("auto"),
                "{out}"
            );
        }
    }
    let (passed, out) = run_cli(&[
        "serve",
        "--listen",
        "127.0.0.1:1123",
        "--workers",
        "0",
        "--check",
    ]);
    assert!(!passed && out.contains("--workers"), "{out}");
}

/// The same over IPv6, whose steering program reads the longer source address.
#[test]
fn ipv6_clients_on_many_ports_get_one_budget_too() {
    let dir = tempdir("workers-budget-v6");
    let port = free_ports(1)[0];
    let cfg = config(&dir, &format!("[::1]:{port}"), 3);
    let _server = ServerProcess::start(&["--config", cfg.to_str().unwrap()]);
    let addr: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let got = answered_from_ports("[::1]:0", 24, addr);
    assert_eq!(
        got, 4,
        "one IPv6 client's budget (burst 4) across 24 source ports and 3 workers"
    );
}
