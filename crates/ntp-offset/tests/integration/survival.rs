//! The daemons survive what users do to them: log and report readers that go away, SIGHUP
//! and SIGUSR1 on every long-running subcommand, a tick port already taken, flags beyond the
//! config file's limits, files that are not what they should be, and servers that answer
//! with a kiss-o'-death or not at all. Each test failed before its fix.

use ntp_offset_testkit as common;

use common::*;
use ntp_offset_proto::tick::{SourceState, TickPacket};
use ntp_offset_proto::tick_auth::encode;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// A log line containing `needle` within 5 s, else None (no panic: for "must not appear").
fn maybe_log(d: &mut Daemon, needle: &str) -> Option<String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        d.wait_for_log(needle, Duration::from_secs(5))
    }))
    .ok()
}

#[test]
fn serve_outlives_its_log_reader() {
    // `serve ... 2>&1 | head -1`: the log's reader reads a line and goes away.
    let port = free_ports(1)[0];
    let mut server = Daemon::launch(
        &[],
        &["serve", "--listen", &addr(port), "--local-stratum", "10"],
        None,
        false,
    );
    server.wait_for_log("serving", Duration::from_secs(10));
    // Close the read end: the collector thread's receiver goes, and with it the pipe.
    drop(std::mem::replace(
        &mut server.log,
        std::sync::mpsc::channel().1,
    ));
    let stderr_thread_gone = wait_until(Duration::from_secs(2), || {
        server.signal("USR1");
        std::thread::sleep(Duration::from_millis(100));
        (!server.is_running()).then_some(())
    });
    assert!(
        stderr_thread_gone.is_none(),
        "serve died when its log reader went away: {:?}",
        server.child.try_wait()
    );
    let sample = ntp_exchange(addr(port).parse().unwrap(), Duration::from_secs(2));
    assert!(sample.is_some(), "serve no longer answers");
}

/// Starts a `pulse` daemon with stdout piped; reads one --report line, then closes stdout.
fn report_then_close(args: &[&str]) -> Daemon {
    let mut d = Daemon::launch(&[], args, None, true);
    let stdout = d.child.stdout.take().unwrap();
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    assert!(first.starts_with('{'), "not a report line: {first:?}");
    // BufReader and the pipe are dropped here: the reader has gone away.
    d
}

#[test]
fn a_closed_report_reader_stops_the_report_not_the_program() {
    let port = free_ports(1)[0];
    let to = addr(port);
    let mut listen = Daemon::launch(
        &[],
        &[
            "pulse",
            "listen",
            "--listen",
            &to,
            "--allow-unauthenticated",
            "--report",
        ],
        Some("waiting for ticks"),
        true,
    );
    let mut send = report_then_close(&[
        "pulse",
        "send",
        "--local",
        "--unauthenticated",
        "--to",
        &to,
        "--report",
    ]);
    send.wait_for_log("--report: stdout is closed", Duration::from_secs(5));
    let stdout = listen.child.stdout.take().unwrap();
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    listen.wait_for_log("--report: stdout is closed", Duration::from_secs(5));
    // Both go on: the receiver still takes the transmitter's ticks.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(send.is_running() && listen.is_running());
    listen.signal("USR1");
    let status = listen.wait_for_log("status:", Duration::from_secs(5));
    assert!(status.contains("locked"), "{status}");
}

#[test]
fn hup_reloads_the_key_file_and_usr1_reports_on_pulse_send_and_listen() {
    let dir = tempdir("hup");
    let keys = write_key_file(&dir, 1);
    let keys = keys.to_str().unwrap();
    let port = free_ports(1)[0];
    let to = addr(port);
    let mut listen = Daemon::launch(
        &[],
        &["pulse", "listen", "--listen", &to, "--key-file", keys],
        Some("waiting for ticks"),
        false,
    );
    let mut send = Daemon::launch(
        &[],
        &["pulse", "send", "--local", "--key-file", keys, "--to", &to],
        Some("sending ticks"),
        false,
    );
    listen.wait_for_log("locked to transmitter", Duration::from_secs(8));
    // A key rotation: key 2 goes first in the file, key 1 stays for ticks still signed with
    // it. After HUP the receiver knows both, then the transmitter signs with key 2; the
    // receiver stays locked throughout.
    let key1 = std::fs::read_to_string(keys).unwrap();
    let key2 = std::fs::read_to_string(write_key_file(&tempdir("hup-new-key"), 2)).unwrap();
    std::fs::write(keys, format!("{key2}{key1}")).unwrap();
    for d in [&mut listen, &mut send] {
        d.signal("HUP");
        d.wait_for_log("SIGHUP: key file reloaded", Duration::from_secs(5));
        let m = d.mark();
        d.signal("USR1");
        let status = d.log_since(m, "status:", Duration::from_secs(5));
        assert!(d.is_running(), "{status}");
    }
    send.wait_for_log("key=2", Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(2500));
    let m = listen.mark();
    listen.signal("USR1");
    let later = listen.log_since(m, "status:", Duration::from_secs(5));
    assert!(
        later.contains("locked") && !later.contains("rejected"),
        "{later}"
    );
    assert!(
        !listen.lines.iter().any(|l| l.contains("unknown-key")),
        "{:?}",
        listen.lines
    );
    // A broken key file on HUP keeps the key in use.
    std::fs::write(keys, "not a key\n").unwrap();
    send.signal("HUP");
    send.wait_for_log("keeping the key in use", Duration::from_secs(5));
    assert!(send.is_running());
}

#[test]
fn a_tick_port_in_use_is_an_error_unless_both_share_it() {
    let port = free_ports(1)[0];
    let ntp = free_ports(1)[0];
    let _server = Daemon::start(&[
        "--listen",
        &addr(ntp),
        "--reference",
        "pulse",
        "--allow-unauthenticated",
        "--tick-listen",
        &addr(port),
    ]);
    // `pulse listen` runs until stopped: run_bounded would kill a listener that started, so
    // a failed start must come quickly.
    let mut listen = Daemon::launch(
        &[],
        &[
            "pulse",
            "listen",
            "--listen",
            &addr(port),
            "--allow-unauthenticated",
        ],
        None,
        false,
    );
    let exited = wait_until(Duration::from_secs(3), || listen.child.try_wait().unwrap());
    assert!(
        exited.is_some_and(|s| !s.success()),
        "a second receiver took the busy tick port: {:?}",
        listen.lines
    );
    let line = listen.wait_for_log("cannot listen on", Duration::from_secs(1));
    assert!(
        line.contains(&addr(port)) && line.contains("--share-port"),
        "{line}"
    );
    // Shared on purpose: both ask for it.
    let shared_port = free_ports(1)[0];
    let _shared = Daemon::start(&[
        "--listen",
        &addr(free_ports(1)[0]),
        "--reference",
        "pulse",
        "--allow-unauthenticated",
        "--share-tick-port",
        "--tick-listen",
        &addr(shared_port),
    ]);
    let mut second = Daemon::launch(
        &[],
        &[
            "pulse",
            "listen",
            "--listen",
            &addr(shared_port),
            "--share-port",
            "--allow-unauthenticated",
        ],
        Some("waiting for ticks"),
        false,
    );
    assert!(second.is_running());
}

#[test]
fn flags_have_the_limits_of_the_config_file() {
    let cases: &[(&[&str], bool, &str)] = &[
        (
            &["serve", "--listen", "127.0.0.1:1", "--offset", "99999d"],
            false,
            "the command line: --offset: offsets are limited to ±68 years",
        ),
        (
            &[
                "serve",
                "--check",
                "--listen",
                "127.0.0.1:1",
                "--local-stratum",
                "0",
            ],
            false,
            "--local-stratum: 0: a stratum is 1-15",
        ),
        (
            &[
                "serve",
                "--check",
                "--listen",
                "127.0.0.1:1",
                "--offset",
                "-3650d",
            ],
            true,
            "the command line: OK: 1 views (cli -3650d)",
        ),
        (
            &[
                "pulse",
                "listen",
                "--allow-unauthenticated",
                "--offset",
                "99999d",
            ],
            false,
            "--offset: offsets are limited",
        ),
        (
            &[
                "pulse",
                "listen",
                "--allow-unauthenticated",
                "--outlier",
                "2s",
            ],
            false,
            "--outlier: must be between +10us and +500ms",
        ),
        (
            &[
                "pulse",
                "listen",
                "--allow-unauthenticated",
                "--join",
                "8.8.8.8",
            ],
            false,
            "`8.8.8.8` is not a multicast group address",
        ),
        (
            &[
                "pulse",
                "send",
                "--unauthenticated",
                "--to",
                "127.0.0.1:9",
                "--ttl",
                "300",
            ],
            false,
            "300 is not in 1..=255",
        ),
        (
            &["pulse", "listen", "--key-file", "/tmp"],
            false,
            "key file /tmp: not a file",
        ),
        (
            &["query", "-n", "0", "127.0.0.1:9"],
            false,
            "0 is not in 1..=1000",
        ),
    ];
    for &(args, succeeds, says) in cases {
        let (ok, out) = run_cli(args);
        assert!(ok == succeeds && out.contains(says), "{args:?}: {out}");
    }
}

#[test]
fn check_reports_views_that_never_answer_and_addresses_that_select_none() {
    let dir = tempdir("check");
    let shadowed = dir.join("shadowed.toml");
    std::fs::write(&shadowed, "[server]\nlisten = [\"127.0.0.1:11123\"]\n[[view]]\nname = \"a\"\noffset = \"0s\"\nlisten = [\"127.0.0.1:11123\"]\n[[view]]\nname = \"b\"\noffset = \"15s\"\nlisten = [\"127.0.0.1:11123\"]\n").unwrap();
    let (ok, out) = run_cli(&["serve", "--check", "--config", shadowed.to_str().unwrap()]);
    assert!(
        !ok && out.contains(":7: view `b`: would never answer"),
        "{out}"
    );
    let idle = dir.join("idle.toml");
    std::fs::write(&idle, "[server]\nlisten = [\"127.0.0.1:11123\", \"127.0.0.1:11124\"]\n[[view]]\nname = \"a\"\noffset = \"0s\"\nlisten = [\"127.0.0.1:11123\"]\n").unwrap();
    let (ok, out) = run_cli(&["serve", "--check", "--config", idle.to_str().unwrap()]);
    assert!(
        ok && out.contains("warning: ")
            && out.contains("`127.0.0.1:11124` selects no view")
            && out.contains(
                "OK: 1 views (a 0s), listening on 127.0.0.1:11123, 127.0.0.1:11124; 1 warning"
            ),
        "{out}"
    );
}

#[test]
fn files_that_are_not_what_they_should_be_are_refused_at_once() {
    let (ok, out) = run_cli(&["serve", "--check", "--config", "/dev/zero"]);
    assert!(
        !ok && out.contains("/dev/zero: larger than 1024 KiB"),
        "{out}"
    );
    let (ok, out) = run_cli(&[
        "pulse",
        "listen",
        "--allow-unauthenticated",
        "--listen",
        &addr(free_ports(1)[0]),
        "--status-file",
        "/nonexistent-dir/status.json",
    ]);
    assert!(
        !ok && out.contains("--status-file /nonexistent-dir/status.json: No such file"),
        "{out}"
    );
}

#[test]
fn query_says_what_became_of_every_request() {
    // A port that takes requests and never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap().to_string();
    let (ok, out) = run_cli(&["query", "-n", "2", "-t", "300ms", &silent]);
    assert!(
        !ok && out.contains("no time from 2 requests: 2 unanswered within 0.3 s each"),
        "{out}"
    );
    // A server that denies this client: every request gets a KoD DENY.
    let port = free_ports(1)[0];
    let dir = tempdir("query-kod");
    let config = dir.join("deny.toml");
    std::fs::write(&config, format!("[server]\nlisten = [\"{}\"]\nunmatched = \"deny\"\nlocal_stratum = 10\n[[view]]\nname = \"lab\"\noffset = \"0s\"\nclients = [\"198.18.0.0/15\"]\n", addr(port))).unwrap();
    let _server = Daemon::start(&["--config", config.to_str().unwrap()]);
    let (ok, out) = run_cli(&["query", "-n", "3", "-t", "1s", &addr(port)]);
    assert!(
        !ok && out.contains(
            "no time from 3 requests: 3 kiss-o'-death DENY (the server refuses this client)"
        ),
        "{out}"
    );
    let (_, json) = run_cli(&["query", "--json", "-n", "2", "-t", "1s", &addr(port)]);
    let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(v["kiss_codes"], serde_json::json!(["DENY", "DENY"]), "{v}");
}

/// A server that answers some requests and rate-limits the rest: the table's row says what
/// became of the others, as `--json` does.
#[test]
fn a_partly_answered_query_names_its_kiss_codes() {
    let port = free_ports(1)[0];
    let dir = tempdir("query-rate");
    let config = dir.join("rate.toml");
    std::fs::write(&config, format!("[server]\nlisten = [\"{}\"]\nlocal_stratum = 10\ndefault_view = \"lab\"\n[rate_limit]\nburst = 1\ninterval = \"1h\"\nkod = true\n[[view]]\nname = \"lab\"\noffset = \"1s\"\n", addr(port))).unwrap();
    let _server = Daemon::start(&["--config", config.to_str().unwrap()]);
    // One answer (the burst), one KoD RATE (at most one per interval), two unanswered.
    let (_, out) = run_cli(&["query", "-n", "4", "-t", "300ms", &addr(port)]);
    assert!(
        out.contains("(1 of 4 answered; 2 unanswered within 0.3 s each, 1 kiss-o'-death RATE (the server rate-limits this client: ask less often))"),
        "{out}"
    );
}

/// The transmitter's own state reaches `pulse listen`'s log and status, once per change.
#[test]
fn an_unsynchronized_transmitter_is_reported_by_the_receiver() {
    let port = free_ports(1)[0];
    let dir = tempdir("unsync");
    let status_file = dir.join("status.json");
    let mut listen = Daemon::launch(
        &[],
        &[
            "pulse",
            "listen",
            "--listen",
            &addr(port),
            "--allow-unauthenticated",
            "--status-file",
            status_file.to_str().unwrap(),
        ],
        Some("waiting for ticks"),
        false,
    );
    // Ticks as an unsynchronized transmitter sends them, one a second at the second.
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to: SocketAddr = addr(port).parse().unwrap();
    let mut wire = [0u8; 64];
    for i in 0..5u32 {
        let (s, ns) = ntp_offset_sys::clock::realtime();
        std::thread::sleep(Duration::from_nanos((1_000_000_000 - ns) as u64));
        let tick = TickPacket {
            state: SourceState::Unsynchronized,
            stratum: 16,
            transmitter: 0x5eed_0001,
            session: 7,
            sequence: i,
            ..TickPacket::tick(s + 1)
        };
        tx.send_to(encode(&tick, None, &mut wire), to).unwrap();
    }
    let line = listen.wait_for_log(
        "transmitter says its clock is unsynchronized",
        Duration::from_secs(3),
    );
    assert!(line.contains("--local"), "{line}");
    let mut text = String::new();
    std::fs::File::open(&status_file)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["transmitter_state"], "unsynchronized", "{v}");
    listen.signal("USR1");
    let status = listen.wait_for_log("status:", Duration::from_secs(3));
    assert!(status.contains("(transmitter unsynchronized)"), "{status}");
    assert_eq!(
        listen
            .lines
            .iter()
            .filter(|l| l.contains("transmitter says its clock is unsynchronized"))
            .count(),
        1,
        "said once"
    );
}

/// `pulse send` says once when the system clock it marks is unsynchronized, and only then.
#[test]
fn pulse_send_says_when_its_clock_is_unsynchronized() {
    let unsynchronized = ntp_offset_sys::clock::kernel_ntp_status()
        .unwrap()
        .unsynchronized();
    let port = free_ports(1)[0];
    let mut send = Daemon::launch(
        &[],
        &["pulse", "send", "--unauthenticated", "--to", &addr(port)],
        Some("sending ticks"),
        false,
    );
    let said = maybe_log(&mut send, "the system clock is not synchronized");
    assert_eq!(said.is_some(), unsynchronized, "{:?}", send.lines);
    send.signal("USR1");
    let status = send.wait_for_log("status:", Duration::from_secs(3));
    let clock = if unsynchronized {
        "clock unsynchronized"
    } else {
        "clock synchronized"
    };
    assert!(status.contains(clock), "{status}");
}
