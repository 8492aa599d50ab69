//! Balanced spread groups against a running server: clients are loopback addresses
//! (127.0.0.1-200 all reach a server on 127.0.0.1), each asks once, and its view is read off
//! the offset of the answer. The table lives in a temporary `state_dir`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ntp_offset_testkit::{
    self as common, control_json, ntp_exchange_from, tempdir, wait_until, ServerProcess,
};

const OFFSETS: [(&str, i64); 4] = [("s00", 0), ("s15", 15), ("s30", 30), ("s45", 45)];

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8))
}

/// A config: views s00-s45 (those in `members` form the group), one pinned view `pinned` for
/// 127.0.0.250, the spread over 127.0.0.0/8.
fn config(dir: &Path, port: u16, members: &[&str], extra: &str) -> PathBuf {
    let mut text = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nlocal_stratum = 10\nstate_dir = \"state\"\n\
         [rate_limit]\nenabled = false\n\
         [[view]]\nname = \"pinned\"\noffset = \"-600s\"\nclients = [\"127.0.0.250\"]\n"
    );
    for (name, secs) in OFFSETS {
        if members.contains(&name) {
            text += &format!("[[view]]\nname = \"{name}\"\noffset = \"{secs}s\"\n");
        }
    }
    let list: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
    text += &format!(
        "[[spread]]\nname = \"vms\"\nviews = [{}]\nclients = [\"127.0.0.0/8\"]\n{extra}",
        list.join(", ")
    );
    let path = dir.join("serve.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The view (by offset, in seconds) each client gets.
fn views_of(port: u16, clients: impl Iterator<Item = u32>) -> BTreeMap<u32, i64> {
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    clients
        .map(|i| {
            let sample = (0..3)
                .find_map(|_| ntp_exchange_from(client(i), server, Duration::from_secs(1)))
                .unwrap_or_else(|| panic!("no answer for client {i}"));
            (i, (sample.offset.as_secs_f64()).round() as i64)
        })
        .collect()
}

fn counts(views: &BTreeMap<u32, i64>) -> BTreeMap<i64, usize> {
    let mut c = BTreeMap::new();
    for v in views.values() {
        *c.entry(*v).or_default() += 1;
    }
    c
}

fn table_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("state/spread-vms.table"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// A test's directory, a free port, and the config of `members` in it.
fn setup(tag: &str, members: &[&str]) -> (PathBuf, u16, PathBuf) {
    let dir = tempdir(tag);
    let port = common::free_ports(1)[0];
    let cfg = config(&dir, port, members, "");
    (dir, port, cfg)
}

/// How many of the server's log lines so far say `needle`.
fn log_count(server: &ServerProcess, needle: &str) -> usize {
    server.lines.iter().filter(|l| l.contains(needle)).count()
}

fn start(cfg: &Path) -> ServerProcess {
    ServerProcess::start(&["--config", cfg.to_str().unwrap()])
}

#[test]
fn new_clients_spread_evenly_and_keep_their_view_across_restarts_and_kill_9() {
    let (dir, port, cfg) = setup("spread-even", &["s00", "s15", "s30", "s45"]);
    let mut server = start(&cfg);
    let first = views_of(port, 1..=100);
    assert_eq!(
        counts(&first),
        BTreeMap::from([(0, 25), (15, 25), (30, 25), (45, 25)]),
        "100 clients over 4 views"
    );
    // Asking again changes nothing; the table reaches the disk within about a second.
    assert_eq!(views_of(port, 1..=100), first);
    wait_until(Duration::from_secs(5), || {
        (table_lines(&dir).len() == 100).then_some(())
    })
    .expect("the table is written within a second or so");
    // kill -9: nothing is written at stop, yet every client keeps its view.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let server = start(&cfg);
    assert_eq!(
        views_of(port, 1..=100),
        first,
        "after kill -9 and a restart"
    );
    // A pinned client is never the balancer's: it gets its view and is not in the table.
    assert_eq!(views_of(port, [250].into_iter())[&250], -600);
    drop(server);
    assert!(!table_lines(&dir)
        .iter()
        .any(|l| l.starts_with("127.0.0.250 ")));
    // Newcomers keep the group even: 7 more make it 27/27/27/26 in some order.
    let server = start(&cfg);
    let all = views_of(port, 1..=107);
    let mut c: Vec<usize> = counts(&all).into_values().collect();
    c.sort_unstable();
    assert_eq!(c, [26, 27, 27, 27]);
    drop(server);
}

/// kill -9 while new clients keep arriving and tables are being written: every time, the
/// table on disk is whole (every line parses, no client twice), and a restart reads it all.
#[test]
fn kill_9_at_any_moment_leaves_a_whole_table() {
    let (dir, port, cfg) = setup("spread-kill9", &["s00", "s15", "s30", "s45"]);
    let server_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut next = 1u32;
    let mut seen = 0usize;
    for (round, wait_ms) in [130u64, 1010, 470, 1900, 60, 1250].into_iter().enumerate() {
        let mut server = start(&cfg);
        let deadline = std::time::Instant::now() + Duration::from_millis(wait_ms);
        // New clients until the kill: 127.0.x.y, a fresh address each time.
        while std::time::Instant::now() < deadline {
            let ip = IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + 256 + next));
            next += 1;
            ntp_exchange_from(ip, server_addr, Duration::from_millis(500));
        }
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let lines = table_lines(&dir);
        let mut addrs: Vec<&str> = Vec::new();
        for l in &lines {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(
                f.len() == 4
                    && f[0].parse::<IpAddr>().is_ok()
                    && OFFSETS.iter().any(|(n, _)| *n == f[1])
                    && f[2].parse::<u64>().is_ok()
                    && f[3].parse::<u64>().is_ok(),
                "round {round}: a broken line `{l}`"
            );
            addrs.push(f[0]);
        }
        let n = addrs.len();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), n, "round {round}: a client twice");
        assert!(
            n >= seen,
            "round {round}: the table shrank from {seen} to {n}"
        );
        seen = n;
    }
    assert!(seen > 0, "nothing was ever written");
    let mut server = start(&cfg);
    let log = server.wait_for_log("assignment table read", Duration::from_secs(5));
    assert!(
        log.contains(&format!("clients={seen}")) && log.contains("dropped=0"),
        "{log}"
    );
}

#[test]
fn a_reload_that_removes_a_view_moves_only_its_clients() {
    let dir = tempdir("spread-remove");
    let port = common::free_ports(1)[0];
    let step = "move = \"step\"\n";
    let cfg = config(&dir, port, &["s00", "s15", "s30", "s45"], step);
    let mut server = start(&cfg);
    let before = views_of(port, 1..=40);
    let mark = server.mark();
    config(&dir, port, &["s00", "s30", "s45"], step);
    server.signal("HUP");
    let moved = server.log_since(mark, "clients moved", Duration::from_secs(5));
    assert!(moved.contains("moved=10"), "{moved}");
    server.log_since(mark, "reloaded", Duration::from_secs(5));
    let after = views_of(port, 1..=40);
    for (i, v) in &before {
        if *v != 15 {
            assert_eq!(after[i], *v, "client {i} moved needlessly");
        }
    }
    let mut c: Vec<usize> = counts(&after).into_values().collect();
    c.sort_unstable();
    assert_eq!(
        c,
        [13, 13, 14],
        "the removed view's 10 clients, spread evenly"
    );
}

/// With `move = "smear"` (the default) a removed view's clients are served the time they had,
/// walking to their new views at `move_rate` from the next whole second: two answers seconds
/// apart differ by the walk's rate, within what their round trips allow. Everybody else keeps their view. `clients`
/// shows each walker in the view it walks to, with the walk left, 15 s or 30 s less a little
/// (a group that places by count, where no VM is watched, once showed none).
#[test]
fn a_removed_views_clients_walk_to_their_new_views() {
    let dir = tempdir("spread-walk");
    let port = common::free_ports(1)[0];
    let sock = dir.join("serve.sock");
    let pace = format!(
        "move_rate = 400\nmove_ramp = \"0s\"\nplace = \"count\"\n[control]\nsocket = \"{}\"\n",
        sock.display()
    );
    let pace = pace.as_str();
    let cfg = config(&dir, port, &["s00", "s15", "s30", "s45"], pace);
    let mut server = start(&cfg);
    let before = views_of(port, 1..=40);
    let mark = server.mark();
    config(&dir, port, &["s00", "s30", "s45"], pace);
    server.signal("HUP");
    let moved = server.log_since(mark, "clients moved", Duration::from_secs(5));
    assert!(
        moved.contains("moved=10") && moved.contains("walks"),
        "{moved}"
    );
    server.log_since(mark, "reloaded", Duration::from_secs(5));
    // A walk starts at the whole second after its move (never before it: the client would
    // step): from then on the served time moves at the rate.
    std::thread::sleep(Duration::from_millis(1100));
    let walkers: Vec<u32> = before
        .iter()
        .filter(|(_, v)| **v == 15)
        .map(|(i, _)| *i)
        .collect();
    let srv = SocketAddr::from(([127, 0, 0, 1], port));
    let ask = |i: u32| {
        (0..3)
            .find_map(|_| ntp_exchange_from(client(i), srv, Duration::from_secs(1)))
            .unwrap_or_else(|| panic!("no answer for client {i}"))
    };
    let first: Vec<_> = walkers
        .iter()
        .map(|&i| (ask(i), std::time::Instant::now()))
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    for (&i, (a, t0)) in walkers.iter().zip(&first) {
        let b = ask(i);
        let elapsed = t0.elapsed().as_secs_f64();
        let walked = (b.offset.as_secs_f64() - a.offset.as_secs_f64()).abs();
        // Each measured offset is within half its round trip of the served one.
        let slack = (a.delay.as_secs_f64() + b.delay.as_secs_f64()) / 2.0 + 1e-4;
        assert!(
            (a.offset.as_secs_f64() - 15.0).abs() < 0.05,
            "client {i} still near its old view's 15 s: {:?}",
            a.offset
        );
        assert!(
            (walked - 400e-6 * elapsed).abs() <= slack + 400e-6 * 0.05,
            "client {i} walked {walked} s in {elapsed} s (rate 400 ppm, slack {slack})"
        );
    }
    let after = views_of(port, 1..=40);
    for (i, v) in &before {
        if *v != 15 {
            assert_eq!(after[i], *v, "client {i} moved needlessly");
        }
    }
    let shown = control_json("clients", &sock, &[]);
    for &i in &walkers {
        let address = client(i).to_string();
        let c = shown
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["address"] == address.as_str())
            .unwrap_or_else(|| panic!("{address} not in `clients`: {shown}"));
        let left = c["walk_left_s"].as_f64().unwrap_or(0.0).abs();
        assert!(
            c["view"] != "s15" && left > 14.0 && left < 30.0,
            "{address} shown as {c}"
        );
    }
}

#[test]
fn a_state_dir_that_cannot_be_written_is_one_clear_error_and_the_server_serves_on() {
    let (dir, port, cfg) = setup("spread-rofs", &["s00", "s15"]);
    // `state` is a file, so the directory cannot be created (ENOTDIR for everything in it).
    std::fs::write(dir.join("state"), "not a directory").unwrap();
    let mut server = start(&cfg);
    let first = views_of(port, 1..=10);
    assert_eq!(counts(&first), BTreeMap::from([(0, 5), (15, 5)]));
    server.wait_for_log("cannot write the assignment table", Duration::from_secs(5));
    // More clients, more seconds: still one error line, and answers go on.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(views_of(port, 1..=20).len(), 20);
    assert_eq!(views_of(port, 1..=10), first);
    server.signal("USR1");
    server.wait_for_log("spread `vms`: 20 clients", Duration::from_secs(5));
    let errors = log_count(&server, "cannot write the assignment table");
    assert_eq!(errors, 1, "{:#?}", server.lines);
}

/// A full disk: the state directory is a 16 KiB tmpfs (in a mount namespace of the server's
/// own) that a table of 400 clients outgrows. The write fails with one error, the table
/// written before stays whole, and answers go on.
#[test]
fn a_full_disk_keeps_the_previous_table_and_the_server_serving() {
    common::require_root();
    let (dir, port, cfg) = setup("spread-full", &["s00", "s15"]);
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let state = dir.join("state");
    // `sh -c SCRIPT BIN ARGS`: the binary is $0.
    let script = format!(
        "mount -t tmpfs -o size=16k tmpfs {} && exec \"$0\" \"$@\"",
        state.display()
    );
    let mut server = ServerProcess::launch(
        &[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
        &["serve", "--config", cfg.to_str().unwrap()],
        Some("serving"),
        false,
    );
    let first = views_of(port, 1..=10);
    // The table can be read only from inside the namespace: ask the server's mount.
    let pid = server.child.id();
    let read_table = || {
        let out = std::process::Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "cat"])
            .arg(state.join("spread-vms.table"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count()
    };
    wait_until(Duration::from_secs(5), || {
        (read_table() == 10).then_some(())
    })
    .expect("the first 10 clients are written");
    // 400 clients make a table of about 16 KiB: it no longer fits.
    let server_addr = SocketAddr::from(([127, 0, 0, 1], port));
    for i in 0..400u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x7f01_0000 + i));
        ntp_exchange_from(ip, server_addr, Duration::from_secs(1)).expect("answered");
    }
    server.wait_for_log("cannot write the assignment table", Duration::from_secs(5));
    assert_eq!(read_table(), 10, "the previous table is intact");
    assert_eq!(
        views_of(port, 1..=10),
        first,
        "and the server still answers as before"
    );
    let errors = log_count(&server, "cannot write the assignment table");
    assert_eq!(errors, 1);
    assert!(
        server
            .lines
            .iter()
            .any(|l| l.contains("No space left on device")),
        "{:#?}",
        server.lines
    );
}

#[test]
fn an_unreadable_table_is_left_alone() {
    let (dir, port, cfg) = setup("spread-unreadable", &["s00", "s15"]);
    // A directory where the table should be: it cannot be read, and must not be replaced.
    std::fs::create_dir_all(dir.join("state/spread-vms.table")).unwrap();
    let mut server = start(&cfg);
    server.wait_for_log("cannot read the assignment table", Duration::from_secs(5));
    assert_eq!(views_of(port, 1..=4).len(), 4);
    std::thread::sleep(Duration::from_millis(1500));
    drop(server);
    assert!(dir.join("state/spread-vms.table").is_dir());
}

#[test]
fn explain_says_which_view_and_why() {
    let (dir, port, cfg) = setup("spread-explain", &["s00", "s15", "s30", "s45"]);
    let server = start(&cfg);
    let views = views_of(port, 1..=8);
    wait_until(Duration::from_secs(5), || {
        (table_lines(&dir).len() == 8).then_some(())
    })
    .expect("table written");
    drop(server);
    let c = cfg.to_str().unwrap();
    let (ok, out) = common::run_cli(&[
        "serve",
        "--check",
        "--config",
        c,
        "--explain",
        "127.0.0.3",
        "--explain",
        "127.0.0.9",
        "--explain",
        "127.0.0.250",
    ]);
    assert!(ok, "{out}");
    let line = |client: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{client}:")))
            .unwrap_or_else(|| panic!("no line for {client}: {out}"))
            .to_string()
    };
    let third = line("127.0.0.3");
    let name = OFFSETS.iter().find(|(_, s)| *s == views[&3]).unwrap().0;
    assert!(
        third.contains(&format!("view `{name}`")) && third.contains("assigned in the table since"),
        "{third}"
    );
    assert!(third.contains("spread `vms` (line "), "{third}");
    let ninth = line("127.0.0.9");
    assert!(
        ninth.contains("would go to the member with the fewest active clients")
            && ninth.contains("s00 2, s15 2, s30 2, s45 2"),
        "{ninth}"
    );
    let pinned = line("127.0.0.250");
    assert!(
        pinned.contains("view `pinned` (-10m)") && pinned.contains("selects it"),
        "{pinned}"
    );
}

#[test]
fn config_errors_for_spread_settings_name_the_line() {
    let dir = tempdir("spread-errors");
    for (extra, needle) in [
        ("assign = \"round-robin\"\n", "use \"balanced\""),
        ("rebalance = \"sometimes\"\n", "use \"never\""),
        ("forget_after = \"5m\"\n", "between 1h and 3650d"),
        ("max_clients = 0\n", "must be 1-10000000"),
        ("move = \"teleport\"\n", "use \"smear\""),
        ("move_rate = 90000\n", "must be 1-50000"),
        ("move_ramp = \"2d\"\n", "between 0s and 24h"),
        (
            "move = \"step\"\nmove_rate = 100\n",
            "are for move = \"smear\"",
        ),
    ] {
        let cfg = config(&dir, 123, &["s00", "s15"], extra);
        let (ok, out) = common::run_cli(&["serve", "--check", "--config", cfg.to_str().unwrap()]);
        assert!(
            !ok && out.contains(needle) && out.contains("serve.toml:"),
            "{extra}: {out}"
        );
    }
    let cfg = config(&dir, 123, &["s00", "s15"], "move_rate = 5000\n");
    let (ok, out) = common::run_cli(&["serve", "--check", "--config", cfg.to_str().unwrap()]);
    assert!(ok && out.contains("only chronyd follows"), "{out}");
    let cfg = config(
        &dir,
        123,
        &["s00", "s15"],
        "assign = \"hash\"\nforget_after = \"2d\"\n",
    );
    let (ok, out) = common::run_cli(&["serve", "--check", "--config", cfg.to_str().unwrap()]);
    assert!(
        ok && out.contains("has no effect with assign = \"hash\""),
        "{out}"
    );
}
