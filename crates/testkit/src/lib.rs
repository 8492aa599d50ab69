//! Helpers shared by ntp-offset's integration tests (`crates/ntp-offset/tests/`): the program
//! as a child process, the real peers, and network namespaces. Every wait is bounded; every
//! child and namespace is cleaned up on drop. A crate of its own, so every helper is compiled
//! once and none hides behind `allow(dead_code)`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ntp_offset_proto::client::{evaluate, Sample};
use ntp_offset_proto::packet::Header;
use ntp_offset_proto::time::{NtpTimestamp, Time};

pub mod etcd;
pub mod lan;
pub mod netns;
pub mod nts;
pub mod process;

pub use netns::NetnsPair;
pub use process::{own_runtime_dir, run_bounded, spawn, Background};

/// The `ntp-offset` binary cargo built for the running integration test: beside the test's
/// own `deps/` folder.
pub static BIN: std::sync::LazyLock<&'static str> = std::sync::LazyLock::new(|| {
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .join("ntp-offset");
    assert!(bin.exists(), "{} is not built", bin.display());
    Box::leak(bin.display().to_string().into_boxed_str())
});

pub fn now() -> Time {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    Time::from_unix_nanos(d.as_nanos() as i64)
}

/// `n` UDP ports on 127.0.0.1 that were free a moment ago.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

/// chronyd in the foreground with `conf`, as root, never touching the clock (-x): the argv
/// for [`lan::Background`].
pub fn chronyd_without_clock(conf: &Path) -> Vec<String> {
    [
        peer("chronyd").display().to_string(),
        s("-x"),
        s("-d"),
        s("-u"),
        s("root"),
        s("-f"),
        conf.display().to_string(),
    ]
    .into()
}

/// A peer program, found or the test fails saying how to get it: never skipped.
pub fn peer(name: &str) -> PathBuf {
    if name == "chronyd" {
        if let Ok(p) = std::env::var("NTP_OFFSET_CHRONYD") {
            return PathBuf::from(p);
        }
        let unpacked =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.peers/chrony/usr/sbin/chronyd");
        if unpacked.exists() {
            return unpacked;
        }
    }
    let peers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.peers");
    match name {
        "chronyc" => {
            // Next to the chronyd in use.
            let chronyd = peer("chronyd");
            let c = chronyd.parent().unwrap().join("../bin/chronyc");
            if c.exists() {
                return c;
            }
        }
        "ntpd" | "ntpq" => {
            let dir = if name == "ntpd" {
                "usr/sbin"
            } else {
                "usr/bin"
            };
            let p = peers.join("ntpsec").join(dir).join(name);
            if p.exists() {
                return p;
            }
        }
        // Debian 13's chrony (AES-128-GCM-SIV), run through its own loader.
        "chronyd-4.6" | "chronyc-4.6" => {
            let p = peers.join("chrony-4.6").join(name.trim_end_matches("-4.6"));
            if p.exists() {
                return p;
            }
        }
        _ => {}
    }
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .unwrap();
    if found.status.success() {
        return PathBuf::from(String::from_utf8_lossy(&found.stdout).trim());
    }
    panic!("{name} is not installed: run ./scripts/test (it installs the test peers via scripts/install-peers)");
}

/// Fails a test that needs root (namespaces, mounts) when run without it.
pub fn require_root() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test creates namespaces: run it as root (./scripts/test)"
    );
}

/// An `ntp-offset` daemon (`serve`, `pulse send`, `pulse listen`) as a child; killed on drop.
/// Its stderr (the log) is collected by a thread; its stdout is piped when asked.
pub struct Daemon {
    pub child: Child,
    pub log: mpsc::Receiver<String>,
    pub lines: Vec<String>,
}

/// `serve` is the daemon most tests start.
pub type ServerProcess = Daemon;

/// `ntp-offset` run under `prefix` (e.g. `ip netns exec NS`), or directly.
pub fn command<S: AsRef<std::ffi::OsStr>>(prefix: &[S]) -> Command {
    match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(*BIN);
            c
        }
        None => Command::new(*BIN),
    }
}

/// An owned string, for argv vectors built from literals and formatted values.
pub fn s(v: &str) -> String {
    v.to_string()
}

impl Daemon {
    /// Starts `ntp-offset ARGS` and, with `ready`, waits for a log line containing it.
    /// `stdout`: pipe it (for --report) instead of discarding it.
    pub fn launch(prefix: &[&str], args: &[&str], ready: Option<&str>, stdout: bool) -> Daemon {
        let out = if stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let mut child = spawn(command(prefix).args(args), out, Stdio::piped());
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Daemon {
            child,
            log: rx,
            lines: Vec::new(),
        };
        if let Some(ready) = ready {
            d.wait_for_log(ready, Duration::from_secs(10));
        }
        d
    }

    /// Starts `ntp-offset serve ARGS` (optionally prefixed) and waits for its "serving" line.
    pub fn start_with(prefix: &[&str], args: &[&str]) -> Daemon {
        let argv: Vec<&str> = std::iter::once("serve")
            .chain(args.iter().copied())
            .collect();
        Self::launch(prefix, &argv, Some("serving"), false)
    }

    pub fn start(args: &[&str]) -> Daemon {
        Self::start_with(&[], args)
    }

    /// Waits for a log line containing `needle`; panics with the log so far after `timeout`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        self.log_since(0, needle, timeout)
    }

    /// How many log lines have come so far: give it to [`Self::log_since`] to wait for a
    /// line that comes after something the test does next (a signal).
    pub fn mark(&mut self) -> usize {
        while let Ok(line) = self.log.try_recv() {
            self.lines.push(line);
        }
        self.lines.len()
    }

    /// Waits for a log line containing `needle` among those after `mark`.
    pub fn log_since(&mut self, mark: usize, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        self.mark();
        if let Some(l) = self.lines[mark.min(self.lines.len())..]
            .iter()
            .find(|l| l.contains(needle))
        {
            return l.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.lines.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!("no log line with `{needle}` within {timeout:?} (exit: {status:?}); log:\n{}", self.lines.join("\n"));
                }
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ntp-offset ARGS` to its end (20 s at most): whether it succeeded, and stdout then stderr.
pub fn run_cli(args: &[&str]) -> (bool, String) {
    let out = run_bounded(command::<&str>(&[]).args(args), Duration::from_secs(20));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// One SNTP exchange with `addr`; None on timeout.
pub fn ntp_exchange(addr: SocketAddr, timeout: Duration) -> Option<Sample> {
    let any: std::net::IpAddr = if addr.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    ntp_exchange_from(any, addr, timeout)
}

/// One SNTP exchange with `addr` from the local address `from` (any of 127.0.0.0/8 works on
/// loopback: a test's stand-in for many clients); None on timeout.
pub fn ntp_exchange_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    timeout: Duration,
) -> Option<Sample> {
    let s = UdpSocket::bind(SocketAddr::new(from, 0)).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    let cookie = NtpTimestamp::from_bits(now().unix_nanos() as u64 ^ 0x5a5a_0000_1234_0000);
    let t1 = now();
    s.send_to(&Header::client_request(4, cookie).encode(), addr)
        .unwrap();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let Ok((n, _)) = s.recv_from(&mut buf) else {
            return None;
        };
        let t4 = now();
        if let Ok(sample) = evaluate(&buf[..n], cookie, t1, t4) {
            return Some(sample);
        }
    }
    None
}

/// Asserts that `addr` serves `expected` seconds from this host's clock, as an SNTP client
/// would check: of four exchanges, the one with the least round trip must be within 1 ms, or
/// within half its round trip (plus 0.1 ms) on a machine too busy for that. The true offset
/// lies within half the round trip of a measured one, and a single exchange on a loaded machine
/// can be preempted between its stamp and its send.
pub fn assert_serves_offset(addr: SocketAddr, expected: f64) -> Sample {
    let best = (0..4)
        .filter_map(|_| ntp_exchange(addr, Duration::from_secs(2)))
        .min_by_key(|s| s.delay.nanos())
        .unwrap_or_else(|| panic!("{addr} did not answer"));
    let (offset, delay) = (best.offset.as_secs_f64(), best.delay.as_secs_f64());
    assert!(
        (offset - expected).abs() < (delay / 2.0 + 1e-4).max(1e-3),
        "{addr} serves {offset:+.6} s, not {expected:+} s (round trip {delay:.6} s)"
    );
    best
}

/// Runs `ip ARGS` (iproute2); panics with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Parses chronyd -Q's "System clock wrong by X seconds" line.
pub fn chrony_offset(stderr_and_stdout: &str) -> Option<f64> {
    let line = stderr_and_stdout
        .lines()
        .find(|l| l.contains("System clock wrong by"))?;
    let rest = line.split("wrong by ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// `chronyd -Q` against `server port`: measures once (4 iburst samples), never sets the clock.
/// chrony reports "system clock wrong by X": X is the server's time minus ours.
pub fn chrony_measure(prefix: &[&str], server: &str, port: u16) -> f64 {
    chrony_query(prefix, server, port, "", &[], 15)
        .unwrap_or_else(|text| panic!("chronyd -Q measured nothing from {server}:{port}:\n{text}"))
}

/// `chronyd -Q` with `server SERVER port PORT iburst OPTIONS` (e.g. `key 1`) and more
/// directives (e.g. `keyfile PATH`), waiting at most `timeout_s`: the offset it measured, or
/// all it printed when it measured nothing.
pub fn chrony_query(
    prefix: &[&str],
    server: &str,
    port: u16,
    options: &str,
    directives: &[String],
    timeout_s: u32,
) -> Result<f64, String> {
    let chronyd = peer("chronyd");
    chrony_query_with(
        &chronyd, prefix, server, port, options, directives, timeout_s,
    )
}

/// [`chrony_query`] with this chronyd (e.g. `peer("chronyd-4.6")`).
pub fn chrony_query_with(
    chronyd: &Path,
    prefix: &[&str],
    server: &str,
    port: u16,
    options: &str,
    directives: &[String],
    timeout_s: u32,
) -> Result<f64, String> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = tempdir(&format!("chrony-{server}-{port}-{run}"));
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(chronyd);
            c
        }
        None => Command::new(chronyd),
    };
    cmd.args(["-Q", "-u", "root", "-t", &timeout_s.to_string()])
        .arg(format!("server {server} port {port} iburst {options}"))
        .arg(format!("pidfile {}/chronyd.pid", dir.display()))
        .args(directives);
    let out = run_bounded(&mut cmd, Duration::from_secs(u64::from(timeout_s) + 10));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    chrony_offset(&text).ok_or(text)
}

/// A new folder for one test's files. All integration tests share one process, so the tag
/// alone (which names the folder for a reader) need not be unique: a counter makes it so.
pub fn tempdir(tag: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("ntp-offset-test-{}-{n}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fresh tick key file (`pulse keygen --id ID`, mode 600) in `dir`.
pub fn write_key_file(dir: &Path, id: u16) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let out = run_bounded(
        Command::new(*BIN).args(["pulse", "keygen", "--id", &id.to_string()]),
        Duration::from_secs(5),
    );
    let path = dir.join("tick.keys");
    std::fs::write(&path, &out.stdout).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// ntpsec's ntpdig against `server` (port 123), run after `prefix` (e.g. `ip netns exec NS`):
/// the offset of 4 samples, in seconds.
pub fn ntpdig_offset<S: AsRef<std::ffi::OsStr>>(prefix: &[S], server: &str) -> f64 {
    let (first, rest) = prefix.split_first().expect("a namespace prefix");
    let out = run_bounded(
        Command::new(first)
            .args(rest)
            .arg(peer("ntpdig"))
            .args(["-j", "-p", "4", "-g", "50", "-t", "3", server]),
        Duration::from_secs(15),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ntpdig {server} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // {"time":"...","offset":-0.250194,"precision":...,"stratum":10,"leap":"no-leap",...}
    text.split("\"offset\":")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no offset in ntpdig's answer: {text}"))
}

/// Polls `f` every 200 ms until it returns Some, for at most `timeout`.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// GET `url` with curl (10 s at most): the HTTP status and the body.
pub fn http_get(url: &str) -> (u16, String) {
    let out = run_bounded(
        Command::new(peer("curl")).args(["-s", "-m", "10", "-w", "\n%{http_code}", url]),
        Duration::from_secs(15),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

impl Daemon {
    /// The web listener's address, from its "web listener ready" log line.
    pub fn web_addr(&mut self) -> SocketAddr {
        let line = self.wait_for_log("web listener ready", Duration::from_secs(10));
        let url = line
            .split("metrics=http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("no address in {line}"));
        url.parse().unwrap()
    }
}

/// `promtool check metrics`: Prometheus' own linter passes the exposition.
pub fn promtool_check(metrics: &str) {
    let mut child = Command::new(peer("promtool"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ntp-offset status|clients ARGS --json` against a control socket, parsed.
pub fn control_json(command: &str, socket: &Path, args: &[&str]) -> serde_json::Value {
    let sock = socket.to_str().unwrap();
    let mut argv = vec![command, "--socket", sock, "--json"];
    argv.extend_from_slice(args);
    let (ok, out) = run_cli(&argv);
    assert!(ok, "ntp-offset {argv:?} failed:\n{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}
