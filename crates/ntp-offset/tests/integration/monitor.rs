//! Watching a running daemon as an operator would: `ntp-offset status` and `clients` over the
//! control socket (and what it does with bad, slow or competing clients), `/metrics` as
//! Prometheus itself scrapes and queries it, and the status page in a real browser.

use ntp_offset_testkit as common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    control_json, free_ports, http_get, ntp_exchange, ntp_exchange_from, peer, promtool_check,
    run_bounded, run_cli, tempdir, wait_until, Background, Daemon,
};

/// Two views: `a` for the one client 127.0.0.2 (a pin), `b` (+15 s) for everyone else.
fn two_views(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let cfg = dir.join("serve.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = ["127.0.0.1:{port}"]
local_stratum = 10
default_view = "b"
state_dir = "{dir}"

[control]
socket = "{dir}/serve.sock"

[[view]]
name = "a"
offset = "0s"
clients = ["127.0.0.2"]

[[view]]
name = "b"
offset = "15s"
{extra}
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    cfg
}

fn serve(cfg: &Path) -> Daemon {
    Daemon::start(&["--config", cfg.to_str().unwrap()])
}

fn view<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["serve"]["views"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no view {name} in {status}"))
}

#[test]
fn status_and_clients_show_each_view_socket_and_client() {
    let dir = tempdir("monitor-status");
    let port = free_ports(1)[0];
    let cfg = two_views(&dir, port, "");
    let _server = serve(&cfg);
    let sock = dir.join("serve.sock");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..3 {
        ntp_exchange_from("127.0.0.2".parse().unwrap(), addr, Duration::from_secs(2))
            .expect("view a answers");
    }
    for _ in 0..5 {
        ntp_exchange(addr, Duration::from_secs(2)).expect("view b answers");
    }
    // 127.0.0.3 asks far faster than the default limit (burst 16, then one per 2 s).
    for _ in 0..30 {
        let _ = ntp_exchange_from(
            "127.0.0.3".parse().unwrap(),
            addr,
            Duration::from_millis(20),
        );
    }

    let st = control_json("status", &sock, &[]);
    assert_eq!(st["serve"]["reference"]["source"], "system");
    assert_eq!(st["serve"]["reference"]["state"], "local", "{st}");
    let (a, b) = (view(&st, "a"), view(&st, "b"));
    assert_eq!(
        (a["requests"].as_u64(), a["answered"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(a["offset"], "0s");
    assert_eq!(b["offset"], "+15s");
    assert_eq!(b["requests"], 35, "{b}");
    let limited = b["rate_limited"].as_u64().unwrap();
    assert!((13..=14).contains(&limited), "{b}");
    assert_eq!(b["answered"].as_u64().unwrap() + limited, 35);
    assert_eq!(
        (
            a["clients_last_hour"].as_u64(),
            b["clients_last_hour"].as_u64()
        ),
        (Some(1), Some(2))
    );
    let socket = &st["serve"]["sockets"][0];
    assert_eq!(socket["address"], addr.to_string());
    assert_eq!(socket["received"], 38);
    assert_eq!(st["serve"]["totals"]["dropped"]["rate_limited"], limited);
    let worst = &st["serve"]["most_rate_limited"][0];
    assert_eq!(
        (worst["address"].as_str(), worst["rate_limited"].as_u64()),
        (Some("127.0.0.3"), Some(limited))
    );

    let clients = control_json("clients", &sock, &[]);
    let by_addr = |ip: &str| {
        clients
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["address"] == ip)
            .unwrap_or_else(|| panic!("{ip} missing from {clients}"))
            .clone()
    };
    let pinned = by_addr("127.0.0.2");
    assert_eq!(
        (pinned["view"].as_str(), pinned["chosen_by"].as_str()),
        (Some("a"), Some("pin"))
    );
    assert_eq!(pinned["requests"], 3);
    let other = by_addr("127.0.0.1");
    assert_eq!(
        (other["view"].as_str(), other["chosen_by"].as_str()),
        (Some("b"), Some("default"))
    );
    let only_a = control_json("clients", &sock, &["--view", "a"]);
    assert_eq!(only_a.as_array().unwrap().len(), 1, "{only_a}");

    // The text forms, as a person reads them.
    let (ok, text) = run_cli(&["status", "--socket", sock.to_str().unwrap()]);
    assert!(
        ok && text.contains("Reference       : system, local (stratum 10"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with('b') && l.contains("+15s")),
        "{text}"
    );
    let (ok, text) = run_cli(&["clients", "--socket", sock.to_str().unwrap()]);
    assert!(
        ok && text
            .lines()
            .any(|l| l.starts_with("127.0.0.2") && l.contains(" pin ")),
        "{text}"
    );
    let (ok, text) = run_cli(&[
        "clients",
        "--socket",
        sock.to_str().unwrap(),
        "--view",
        "nope",
    ]);
    assert!(
        !ok && text.contains("no view `nope` (views: a, b)"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `request` on a fresh connection and returns the daemon's answer.
fn exchange(sock: &Path, request: &[u8]) -> String {
    let mut c = UnixStream::connect(sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(request);
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

#[test]
fn bad_slow_and_too_many_control_clients_are_refused_and_never_slow_answers() {
    let dir = tempdir("monitor-abuse");
    let port = free_ports(1)[0];
    let sock = dir.join("control.sock");
    let listen = format!("127.0.0.1:{port}");
    let _server = Daemon::start(&[
        "--listen",
        &listen,
        "--local-stratum",
        "10",
        "--no-rate-limit",
        "--control-socket",
        sock.to_str().unwrap(),
    ]);
    // Malformed, oversized, a newer version, an unknown command: each gets a clear error.
    for (request, want) in [
        (b"hello\n".to_vec(), "not a request"),
        (vec![b'x'; 10_000], "request longer than 4096 bytes"),
        (
            br#"{"version":9,"command":"status"}"#.to_vec(),
            "this daemon speaks version 1",
        ),
        (
            br#"{"version":1,"command":"stop"}"#.to_vec(),
            "unknown command `stop`",
        ),
    ] {
        let mut request = request;
        if request.len() < 100 {
            request.push(b'\n');
        }
        let answer = exchange(&sock, &request);
        assert!(
            answer.contains(want) && answer.contains("\"error\""),
            "{want}: {answer}"
        );
    }

    // Clients that connect and say nothing hold every slot...
    let started = Instant::now();
    let mut stalled: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // ...so one more is told the daemon is busy, at once,
    let busy = exchange(&sock, b"");
    assert!(busy.contains("busy"), "{busy}");
    // and NTP answers meanwhile are as quick as ever.
    let addr: SocketAddr = listen.parse().unwrap();
    let mut worst = Duration::ZERO;
    for _ in 0..50 {
        let s = ntp_exchange(addr, Duration::from_secs(1)).expect("answered while stalled");
        worst = worst.max(Duration::from_secs_f64(s.delay.as_secs_f64()));
    }
    assert!(
        worst < Duration::from_millis(50),
        "an answer took {worst:?}"
    );
    // The silent ones are cut off after the request timeout (2 s), not kept forever.
    for c in &mut stalled {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
    }
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(1900) && held < Duration::from_secs(4),
        "{held:?}"
    );
    // And the daemon answers again.
    let st = control_json("status", &sock, &[]);
    assert_eq!(st["serve"]["totals"]["answered"], 50);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_live_control_socket_refuses_a_second_daemon_and_a_stale_one_is_replaced() {
    let dir = tempdir("monitor-stale");
    let [p1, p2] = free_ports(2)[..] else {
        unreachable!()
    };
    let sock = dir.join("serve.sock");
    let args = |port: u16| {
        vec![
            "serve".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--control-socket".into(),
            sock.display().to_string(),
        ]
    };
    let argv1 = args(p1);
    let mut first = Daemon::launch(
        &[],
        &argv1.iter().map(String::as_str).collect::<Vec<_>>(),
        Some("control socket ready"),
        false,
    );
    let argv2 = args(p2);
    let (ok, out) = run_cli(&argv2.iter().map(String::as_str).collect::<Vec<_>>()[..]);
    assert!(
        !ok && out.contains("another process is answering there"),
        "{out}"
    );
    // Killed without cleaning up: the socket file stays, and nobody answers on it.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(sock.exists());
    let mut second = Daemon::launch(
        &[],
        &argv2.iter().map(String::as_str).collect::<Vec<_>>(),
        Some("control socket ready"),
        false,
    );
    second.wait_for_log("replaced a stale control socket", Duration::from_secs(1));
    let st = control_json("status", &sock, &[]);
    assert_eq!(
        st["serve"]["sockets"][0]["address"],
        format!("127.0.0.1:{p2}")
    );
    // A stop removes its socket.
    second.signal("TERM");
    second.child.wait().unwrap();
    assert!(!sock.exists(), "the socket is removed at exit");
    // The default path is never taken from a live daemon either, but a second one on it still
    // serves, without a control socket, and says so (several `pulse send`, one per line).
    let rt = dir.join("rt");
    let env = format!("RUNTIME_DIRECTORY={}", rt.display());
    let [p3, p4] = free_ports(2)[..] else {
        unreachable!()
    };
    let (l1, l2) = (format!("127.0.0.1:{p3}"), format!("127.0.0.1:{p4}"));
    let mut a = Daemon::launch(
        &["env", &env],
        &["serve", "--listen", &l1],
        Some("serving"),
        false,
    );
    a.wait_for_log("control socket ready", Duration::from_secs(1));
    let mut b = Daemon::launch(
        &["env", &env],
        &["serve", "--listen", &l2],
        Some("serving"),
        false,
    );
    b.wait_for_log("belongs to another running daemon", Duration::from_secs(1));
    let st = control_json("status", &rt.join("serve.sock"), &[]);
    assert_eq!(
        st["serve"]["sockets"][0]["address"], l1,
        "the first keeps it"
    );
    drop((a, b));
    // Something that is not a socket is never removed.
    std::fs::write(&sock, "mine").unwrap();
    let (ok, out) = run_cli(&argv2.iter().map(String::as_str).collect::<Vec<_>>()[..]);
    assert!(!ok && out.contains("exists and is not a socket"), "{out}");
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "mine");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `pulse send` to `pulse listen` and to `serve --reference pulse`, each with its control
/// socket (and listen with metrics): all three tell their state.
#[test]
fn pulse_listen_pulse_send_and_a_pulse_reference_report_their_state() {
    let dir = tempdir("monitor-pulse");
    let [t1, t2, ntp] = free_ports(3)[..] else {
        unreachable!()
    };
    let socket = |name: &str| dir.join(format!("{name}.sock"));
    let (s_listen, s_send, s_serve) = (socket("listen"), socket("send"), socket("serve"));
    let to1 = format!("127.0.0.1:{t1}");
    let to2 = format!("127.0.0.1:{t2}");
    let mut listen = Daemon::launch(
        &[],
        &[
            "pulse",
            "listen",
            "--listen",
            &to1,
            "--allow-unauthenticated",
            "--control-socket",
            s_listen.to_str().unwrap(),
            "--metrics",
            "127.0.0.1:0",
        ],
        Some("waiting for ticks"),
        false,
    );
    let serve = Daemon::start(&[
        "--listen",
        &format!("127.0.0.1:{ntp}"),
        "--reference",
        "pulse",
        "--tick-listen",
        &to2,
        "--allow-unauthenticated",
        "--control-socket",
        s_serve.to_str().unwrap(),
    ]);
    let _send = Daemon::launch(
        &[],
        &[
            "pulse",
            "send",
            "--local",
            "--unauthenticated",
            "--to",
            &to1,
            "--to",
            &to2,
            "--control-socket",
            s_send.to_str().unwrap(),
        ],
        Some("control socket ready"),
        false,
    );
    let locked = wait_until(Duration::from_secs(15), || {
        let st = control_json("status", &s_listen, &[]);
        (st["listen"]["state"] == "locked" && st["listen"]["samples"].as_u64() >= Some(3))
            .then_some(st)
    })
    .expect("pulse listen locks and says so");
    assert!(locked["listen"]["jitter_ns"].as_i64().is_some(), "{locked}");
    let sent = control_json("status", &s_send, &[]);
    assert!(sent["send"]["ticks_sent"].as_u64() >= Some(3), "{sent}");
    assert_eq!(sent["send"]["clock"], "synchronized");
    assert_eq!(sent["send"]["destinations"].as_array().unwrap().len(), 2);
    let reference = wait_until(Duration::from_secs(15), || {
        let st = control_json("status", &s_serve, &[]);
        (st["serve"]["reference"]["state"] == "locked").then_some(st)
    })
    .expect("serve's pulse reference locks and says so");
    let r = &reference["serve"]["reference"];
    assert_eq!(r["source"], "pulse");
    assert!(
        r["frequency_ppm"].as_f64().is_some() && r["ticks"].as_u64() >= Some(3),
        "{r}"
    );
    let (ok, text) = run_cli(&["status", "--socket", s_serve.to_str().unwrap()]);
    assert!(
        ok && text.contains("Reference       : pulse, locked"),
        "{text}"
    );
    // pulse listen's metrics, as promtool reads them.
    let web = listen.web_addr();
    let (code, metrics) = http_get(&format!("http://{web}/metrics"));
    assert_eq!(code, 200);
    assert!(
        metrics.contains("ntp_offset_listen_state{state=\"locked\"} 1"),
        "{metrics}"
    );
    promtool_check(&metrics);
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `per_s` requests a second to `addr` from `from` until `stop`.
fn load(
    from: &'static str,
    addr: SocketAddr,
    per_s: u32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            if ntp_exchange_from(from.parse().unwrap(), addr, Duration::from_millis(200)).is_some()
            {
                n += 1;
            }
            std::thread::sleep(Duration::from_secs_f64(1.0 / f64::from(per_s)));
        }
        n
    })
}

/// Prometheus (Debian's), started on loopback with a scrape config pointing at `serve`'s
/// listener, stores the series; a PromQL query through its HTTP API gives the per-view request
/// rate while requests come in.
#[test]
fn prometheus_scrapes_and_queries_the_per_view_request_rate() {
    let dir = tempdir("monitor-prometheus");
    let port = free_ports(1)[0];
    let cfg = two_views(&dir, port, "");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap().replace(
            "[control]",
            "[rate_limit]\nenabled = false\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[control]",
        ),
    )
    .unwrap();
    let mut server = serve(&cfg);
    let web = server.web_addr();
    let (code, metrics) = http_get(&format!("http://{web}/metrics"));
    assert_eq!(code, 200);
    promtool_check(&metrics);

    // Prometheus' own port: a free TCP port on loopback.
    let prom_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prom_cfg = dir.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: ntp-offset\n    static_configs:\n      - targets: ['{web}']\n"
        ),
    )
    .unwrap();
    let argv = [
        peer("prometheus").display().to_string(),
        format!("--config.file={}", prom_cfg.display()),
        format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
        format!("--web.listen-address=127.0.0.1:{prom_port}"),
    ];
    let mut prometheus = Background::start(&dir, "prometheus", &argv);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // View a (127.0.0.2) at about 20 requests/s; view b gets none.
    let loader = load("127.0.0.2", addr, 20, stop.clone());
    let query = |q: &str| -> Option<f64> {
        let (code, body) = http_get(&format!(
            "http://127.0.0.1:{prom_port}/api/v1/query?query={}",
            q.replace('{', "%7B")
                .replace('}', "%7D")
                .replace('"', "%22")
                .replace('[', "%5B")
                .replace(']', "%5D")
        ));
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let rate = wait_until(Duration::from_secs(60), || {
        query(r#"rate(ntp_offset_requests_total{view="a"}[10s])"#).filter(|r| *r > 5.0)
    });
    let rate_b = query(r#"rate(ntp_offset_requests_total{view="b"}[10s])"#);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = loader.join().unwrap();
    prometheus.stop();
    let log = prometheus.log_text();
    let rate = rate.unwrap_or_else(|| {
        panic!("Prometheus never had view a's rate ({sent} requests sent):\n{log}")
    });
    assert!(rate < 40.0, "rate {rate}/s for about 20/s sent");
    assert_eq!(rate_b, Some(0.0), "view b had no requests");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The status page in headless Chromium (Debian's): served by a `serve` on a pulse reference
/// under load, every plot shows data, the page updates itself live, and a screenshot is
/// saved as target/status-page.png for review.
#[test]
fn the_status_page_shows_every_plot_with_data_in_a_real_browser() {
    let dir = tempdir("monitor-page");
    let [tick, ntp] = free_ports(2)[..] else {
        unreachable!()
    };
    let to = format!("127.0.0.1:{tick}");
    let listen = format!("127.0.0.1:{ntp}");
    let mut server = Daemon::start(&[
        "--listen",
        &listen,
        "--offset",
        "15s",
        "--reference",
        "pulse",
        "--tick-listen",
        &to,
        "--allow-unauthenticated",
        "--control-socket",
        "none",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let web = server.web_addr();
    let _send = Daemon::launch(
        &[],
        &[
            "pulse",
            "send",
            "--local",
            "--unauthenticated",
            "--to",
            &to,
            "--control-socket",
            "none",
        ],
        Some("sending"),
        false,
    );
    let addr: SocketAddr = listen.parse().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Steady clients, and one that asks too fast (rate-limited drops).
    let loaders = [
        load("127.0.0.1", addr, 5, stop.clone()),
        load("127.0.0.2", addr, 5, stop.clone()),
        load("127.0.0.3", addr, 30, stop.clone()),
    ];
    // Hour-long plots have a point every 10 s: wait for two.
    std::thread::sleep(Duration::from_secs(25));
    let url = format!("http://{web}/");
    let chromium = |extra: &[&str]| {
        let profile = dir.join(format!("chromium-{}", extra.len()));
        let mut c = Command::new(peer("chromium"));
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1600",
            // The page's script runs on virtual time: its first refresh at 1 s, then every 5 s.
            "--virtual-time-budget=7000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(&url);
        run_bounded(&mut c, Duration::from_secs(90))
    };
    let out = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    let shot = PathBuf::from(*common::BIN)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("status-page.png");
    let _ = chromium(&[&format!("--screenshot={}", shot.display())]);
    // And as a phone shows it (one column), for review beside it.
    let phone = shot.with_file_name("status-page-phone.png");
    let _ = chromium(&[
        "--window-size=390,2600",
        &format!("--screenshot={}", phone.display()),
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loaders {
        l.join().unwrap();
    }
    assert!(
        dom.contains("<body data-updates=\""),
        "not the page:\n{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let updates: u32 = dom
        .split("data-updates=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(updates >= 1, "the page never refreshed its plots itself");
    for id in ["requests", "clients", "drops", "reference", "ticks", "cpu"] {
        let at = dom
            .find(&format!("id=\"plot-{id}\""))
            .unwrap_or_else(|| panic!("no plot {id} in\n{dom}"));
        let figure = &dom[at..at + dom[at..].find("</figure>").unwrap()];
        let points: usize = figure
            .split("data-points=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(points > 0, "plot {id} is empty:\n{figure}");
        assert!(
            figure.contains("<path d=\"M") || figure.contains("<rect "),
            "plot {id} draws nothing:\n{figure}"
        );
    }
    // The plot this project exists for marks where the view's minute starts: +15 s at :45.
    let cpu = &dom[dom.find("id=\"plot-cpu\"").unwrap()..];
    assert!(
        cpu.contains("<g class=\"view-start\">"),
        "no view's minute marked on the CPU plot:\n{cpu}"
    );
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    let _ = std::fs::remove_dir_all(&dir);
}
