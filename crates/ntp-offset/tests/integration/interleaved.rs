//! Interleaved mode as chronyd uses it: a `chronyd -x` client (it never touches the clock)
//! with `server ... xleave` reports `Interleaved: Yes` in `chronyc ntpdata` for a view and
//! measures the view's offset; a basic client (`chronyd -Q`) is still measured; and a server
//! with `interleaved = false` gives the same xleave client basic answers, still measured.
//! (chronyd tells sources apart by address alone: the servers listen on 127.0.0.1, 127.0.0.2
//! and, for the echoed IPv6 frames, ::1.)

use ntp_offset_testkit as common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Background;
use common::*;

/// A server with one view at +15 s on `addr`; its control socket in `dir`.
fn server(dir: &Path, tag: &str, addr: SocketAddr, interleaved: bool) -> ServerProcess {
    let cfg = dir.join(format!("{tag}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"{addr}\"]\nlocal_stratum = 10\ninterleaved = {interleaved}\n\
             [control]\nsocket = \"{tag}.sock\"\n\
             [[view]]\nname = \"plus15\"\noffset = \"15s\"\nlisten = [\"{addr}\"]\n"
        ),
    )
    .unwrap();
    ServerProcess::start(&["--config", cfg.to_str().unwrap()])
}

/// `chronyd -x` polling each of `servers` every second with `xleave`; its command socket is
/// `dir/chrony/cmd.sock`.
fn xleave_client(dir: &Path, servers: &[SocketAddr]) -> (Background, PathBuf) {
    let cdir = dir.join("chrony");
    std::fs::create_dir_all(&cdir).unwrap();
    std::fs::set_permissions(&cdir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let sock = cdir.join("cmd.sock");
    let servers: String = servers
        .iter()
        .map(|a| {
            format!(
                "server {} port {} xleave minpoll 0 maxpoll 0 iburst\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    std::fs::write(
        cdir.join("chrony.conf"),
        format!(
            "{servers}port 0\ncmdport 0\nbindcmdaddress {}\npidfile {}\n",
            sock.display(),
            cdir.join("chronyd.pid").display()
        ),
    )
    .unwrap();
    let argv = chronyd_without_clock(&cdir.join("chrony.conf"));
    (Background::start(dir, "chronyd", &argv), sock)
}

fn chronyc(sock: &Path, args: &[&str]) -> String {
    let out = Command::new(peer("chronyc"))
        .args(["-h", sock.to_str().unwrap(), "-n"])
        .args(args)
        .output()
        .expect("chronyc runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `chronyc ntpdata ADDRESS` as "Name: value" pairs (None before the first answer).
fn ntpdata(sock: &Path, server: SocketAddr) -> Option<Vec<(String, String)>> {
    let text = chronyc(sock, &["ntpdata", &server.ip().to_string()]);
    let pairs: Vec<_> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (get(&pairs, "Total valid RX").parse::<u64>().unwrap_or(0) > 0).then_some(pairs)
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// An ntpdata field in seconds ("+0.000000042 seconds"). Its "Offset" is the last measurement
/// against chronyd's own estimate of the time (which, with -x, it keeps apart from the clock).
fn seconds(pairs: &[(String, String)], key: &str) -> f64 {
    get(pairs, key)
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `chronyc tracking`'s "System time": how far the untouched system clock is from the time
/// chronyd measured (the view's offset).
fn system_time(sock: &Path) -> f64 {
    chronyc(sock, &["-c", "tracking"])
        .split(',')
        .nth(4)
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn chronyd_with_xleave_gets_interleaved_answers_that_measure_the_view() {
    require_root();
    let dir = tempdir("interleaved");
    let [on, off, v6]: [u16; 3] = free_ports(3).try_into().unwrap();
    let on = SocketAddr::from(([127, 0, 0, 1], on));
    let off = SocketAddr::from(([127, 0, 0, 2], off));
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6));
    let interleaving = server(&dir, "on", on, true);
    let basic_only = server(&dir, "off", off, false);
    let over_ipv6 = server(&dir, "v6", v6, true);
    let (mut chronyd, sock) = xleave_client(&dir, &[on, off, v6]);

    // The third answer is the first that can be interleaved (the first two fill the log); a
    // few more, so that chronyd's estimate rests on interleaved measurements.
    let data = wait_until(Duration::from_secs(30), || {
        let d = ntpdata(&sock, on)?;
        let valid: u64 = get(&d, "Total valid RX").parse().ok()?;
        (get(&d, "Interleaved") == "Yes" && valid >= 6).then_some(d)
    });
    chronyd.assert_running();
    let data = data.unwrap_or_else(|| {
        panic!(
            "chronyd never reported Interleaved: Yes for {on}: {:?}\n{}",
            ntpdata(&sock, on),
            chronyd.log_text()
        )
    });
    let plain = ntpdata(&sock, off).expect("chronyd polls the second server too");
    assert_eq!(get(&plain, "Interleaved"), "No", "{plain:?}");
    let ipv6 = wait_until(Duration::from_secs(10), || {
        ntpdata(&sock, v6).filter(|d| get(d, "Interleaved") == "Yes")
    })
    .unwrap_or_else(|| panic!("over IPv6: {:?}", ntpdata(&sock, v6)));
    // Both agree with chronyd's estimate, which is the views' +15 s: within 1 ms, or half the
    // measurement's round trip on a machine too busy for that (one measurement, unfiltered).
    for (what, d) in [("interleaved", &data), ("basic", &plain), ("IPv6", &ipv6)] {
        let (o, delay) = (seconds(d, "Offset"), seconds(d, "Peer delay"));
        assert!(
            o.abs() < (delay / 2.0 + 1e-4).max(1e-3),
            "{what}: last offset {o} s from chronyd's estimate: {d:?}"
        );
    }
    let measured = system_time(&sock);
    assert!(
        (measured.abs() - 15.0).abs() < 1e-3,
        "chronyd measured {measured} s, the views are +15 s:\n{}",
        chronyc(&sock, &["sourcestats"])
    );

    // A basic client of the interleaving server: measured as ever.
    let basic = chrony_measure(&[], &on.ip().to_string(), on.port());
    assert!((basic - 15.0).abs() < 1e-3, "chronyd -Q measured {basic} s");

    // The counters say what happened: answers interleaved, kernel stamps taken (on loopback
    // every one of them matches its answer); none of that on the server with it off.
    let totals = |tag: &str| {
        control_json("status", &dir.join(format!("{tag}.sock")), &[])["serve"]["totals"].clone()
    };
    for tag in ["on", "v6"] {
        let t = totals(tag);
        assert!(t["interleaved"].as_u64().unwrap() >= 1, "{tag}: {t}");
        assert!(t["tx_stamps"].as_u64().unwrap() >= 2, "{tag}: {t}");
        assert_eq!(t["tx_stamps_unmatched"].as_u64(), Some(0), "{tag}: {t}");
    }
    let t = totals("off");
    assert_eq!(
        (t["interleaved"].as_u64(), t["tx_stamps"].as_u64()),
        (Some(0), Some(0)),
        "{t}"
    );
    chronyd.stop();
    drop((interleaving, basic_only, over_ipv6));
}
