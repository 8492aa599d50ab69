//! NTS (RFC 8915) as real clients see it: `chronyd -Q` (it measures, never sets the clock)
//! with `server ... nts` and `ntstrustedcerts` pointing at a CA the test makes; its cookies
//! kept across a server restart (`ntsdumpdir`); ntpsec's ntpd as a second NTS client; and
//! the test's own NTS client
//! (`testkit::nts`) for what chronyd will not do: a tampered cookie, slow and excess KE
//! clients, a certificate swapped under a running server.

use ntp_offset_testkit as common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::nts::{key_exchange, key_exchange_offering, make_pki, Pki};
use common::*;
use ntp_offset_proto::nts::extension as ef;
use ntp_offset_proto::nts::Aead;
use ntp_offset_proto::packet::{Header, HEADER_LEN};
use ntp_offset_proto::time::NtpTimestamp;

/// A server with three views, one per port: `open` (no auth), `locked` (+15 s, NTS only) and
/// `either` (-250 ms, a key or NTS), and an NTS-KE listener.
struct Setup {
    dir: std::path::PathBuf,
    cfg: std::path::PathBuf,
    open: u16,
    locked: u16,
    either: u16,
    ke: u16,
}

fn setup(tag: &str, pki: &Pki, extra_nts: &str) -> Setup {
    let dir = tempdir(tag);
    let [open, locked, either, ke]: [u16; 4] = free_ports(4).try_into().unwrap();
    let cfg = dir.join("serve.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{open}\", \"127.0.0.1:{locked}\", \"127.0.0.1:{either}\"]\n\
             local_stratum = 10\nstate_dir = \"state\"\n\
             [control]\nsocket = \"serve.sock\"\n\
             [nts]\nlisten = [\"127.0.0.1:{ke}\"]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n{extra_nts}\n\
             [[view]]\nname = \"open\"\noffset = \"0s\"\nlisten = [\"127.0.0.1:{open}\"]\n\
             [[view]]\nname = \"locked\"\noffset = \"15s\"\nlisten = [\"127.0.0.1:{locked}\"]\nauth = \"nts\"\n\
             [[view]]\nname = \"either\"\noffset = \"-250ms\"\nlisten = [\"127.0.0.1:{either}\"]\nauth = \"any\"\n",
            pki.cert.display(),
            pki.key.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    Setup {
        dir,
        cfg,
        open,
        locked,
        either,
        ke,
    }
}

impl Setup {
    fn start(&self) -> ServerProcess {
        ServerProcess::start(&["--config", self.cfg.to_str().unwrap()])
    }

    fn status(&self) -> serde_json::Value {
        control_json("status", &self.dir.join("serve.sock"), &[])
    }

    fn ke_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ke))
    }

    /// chronyd -Q over NTS against the view on `port`: the offset it measures.
    fn chrony(&self, port: u16, ca: &Path, dump: Option<&Path>) -> Result<f64, String> {
        self.chrony_for(port, ca, dump, 15)
    }

    /// The same, giving up after `timeout_s` (a run expected to get nothing waits it all).
    fn chrony_for(
        &self,
        port: u16,
        ca: &Path,
        dump: Option<&Path>,
        timeout_s: u32,
    ) -> Result<f64, String> {
        let mut directives = vec![format!("ntstrustedcerts {}", ca.display())];
        if let Some(d) = dump {
            std::fs::create_dir_all(d).unwrap();
            directives.push(format!("ntsdumpdir {}", d.display()));
        }
        chrony_query(
            &[],
            "127.0.0.1",
            port,
            &format!("nts ntsport {}", self.ke),
            &directives,
            timeout_s,
        )
    }
}

fn assert_near(measured: f64, want: f64, what: &str) {
    assert!(
        (measured - want).abs() < 0.001,
        "{what}: chronyd measured {measured:+.6} s, the view is {want:+} s (allowed 1 ms)"
    );
}

#[test]
fn chrony_measures_each_nts_view_and_a_plain_client_gets_no_time_from_them() {
    let dir = tempdir("nts-chrony");
    let pki = make_pki(&dir, "a");
    let s = setup("nts-chrony-views", &pki, "");
    let _server = s.start();
    // Side by side: each chronyd takes a few seconds, a refused one its whole timeout.
    let other_ca = make_pki(&dir, "other");
    let (s, pki) = (&s, &pki);
    let locked = std::thread::scope(|sc| {
        let l = sc.spawn(|| s.chrony(s.locked, &pki.ca, None));
        let e = sc.spawn(|| s.chrony(s.either, &pki.ca, None));
        let plain = sc.spawn(|| chrony_query(&[], "127.0.0.1", s.locked, "", &[], 8));
        let wrong = sc.spawn(|| s.chrony_for(s.locked, &other_ca.ca, None, 8));
        assert_near(
            e.join().unwrap().expect("NTS on the `any` view"),
            -0.25,
            "either",
        );
        assert!(
            plain.join().unwrap().is_err(),
            "a client without NTS got time from the NTS-only view"
        );
        assert!(
            wrong.join().unwrap().is_err(),
            "chronyd trusted a certificate its CA did not sign"
        );
        l.join().unwrap()
    });
    assert_near(locked.expect("NTS on the `nts` view"), 15.0, "locked");
    // The open view answers NTS too: an NTS client gets authenticated time everywhere.
    assert_near(s.chrony(s.open, &pki.ca, None).unwrap(), 0.0, "open");

    let st = &s.status()["serve"];
    let nts = &st["nts"];
    assert!(nts["ke_sessions"].as_u64() >= Some(3), "{nts}");
    assert_eq!(nts["master_keys"], 1, "{nts}");
    assert!(
        st["totals"]["dropped"]["unauthenticated"].as_u64() > Some(0),
        "the plain client's requests were counted: {st}"
    );
}

#[test]
fn cookies_survive_a_restart_and_a_tampered_cookie_gets_an_nts_nak() {
    let dir = tempdir("nts-restart");
    let pki = make_pki(&dir, "a");
    let s = setup("nts-restart-views", &pki, "");
    let dump = dir.join("chrony-dump");
    {
        let _server = s.start();
        assert_near(
            s.chrony(s.locked, &pki.ca, Some(&dump)).unwrap(),
            15.0,
            "first",
        );
        assert!(
            std::fs::read_dir(&dump).unwrap().next().is_some(),
            "chronyd dumped its cookies"
        );
    }
    let keys = s.dir.join("state/nts-master-keys");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the master keys are secret");

    // Age the key by two days, as if the server had been down that long: it rotates at
    // start (key_rotation is 1 day), and the old key still opens chronyd's cookies.
    let text = std::fs::read_to_string(&keys).unwrap();
    let aged: String = text
        .lines()
        .map(|l| match l.split(' ').collect::<Vec<_>>()[..] {
            [id, created, key] if !l.starts_with('#') => {
                let created: u64 = created.parse().unwrap();
                format!("{id} {} {key}\n", created - 2 * 86_400)
            }
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&keys, aged).unwrap();

    let _server = s.start();
    assert_near(
        s.chrony(s.locked, &pki.ca, Some(&dump)).unwrap(),
        15.0,
        "after the restart",
    );
    let nts = &s.status()["serve"]["nts"];
    assert_eq!(
        nts["ke_sessions"], 0,
        "chronyd went back to key establishment after the restart: {nts}"
    );
    assert_eq!(
        nts["master_keys"], 2,
        "rotated at start, the old key kept: {nts}"
    );
    assert!(nts["master_key_age_s"].as_u64() < Some(60), "{nts}");

    // The test's own client: a good cookie gets authenticated time and fresh cookies; the
    // same cookie with one bit changed gets an NTS-NAK that echoes the identifier.
    let session = key_exchange(s.ke_addr(), &pki.ca).unwrap();
    assert_eq!(session.cookies.len(), 8);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let server: SocketAddr = ([127, 0, 0, 1], s.locked).into();
    let ask = |packet: &[u8]| -> Vec<u8> {
        sock.send_to(packet, server).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = sock.recv_from(&mut buf).expect("an answer");
        buf[..n].to_vec()
    };
    let uid = [0x42; 32];
    let tx = NtpTimestamp::from_bits(0xe9a0_0000_0000_0001);
    let request = session.request(&session.cookies[0], &uid, tx);
    let answer = ask(&request);
    assert!(answer.len() <= request.len());
    let fresh = ef::read_response(&answer, &uid, &session.keys).expect("an authenticated answer");
    assert_eq!(fresh.len(), 1, "one cookie for the one spent");
    let h = Header::parse(&answer).unwrap();
    assert_eq!((h.stratum, h.origin_timestamp), (10, tx));

    let mut tampered = session.cookies[1].clone();
    tampered[40] ^= 0x01;
    let answer = ask(&session.request(&tampered, &uid, tx));
    let h = Header::parse(&answer).unwrap();
    assert_eq!((h.stratum, &h.reference_id), (0, b"NTSN"), "an NTS-NAK");
    assert_eq!(
        &answer[HEADER_LEN + 4..HEADER_LEN + 36],
        &uid,
        "with the identifier"
    );
    let totals = &s.status()["serve"]["totals"];
    assert_eq!(totals["nts_nak"], 1, "{totals}");
}

/// A secret file for `key_secret_file`: 32 bytes of `byte`, mode 600.
fn secret_file(dir: &Path, name: &str, byte: u8) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "# a cluster's NTS secret\n{}\n",
            format!("{byte:02x}").repeat(32)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Servers that share `key_secret_file` open each other's cookies: chronyd's key
/// establishment with A names B's NTP port (A's Server and Port records), and B answers it
/// with NTS without a KE of its own; the test's client takes A's cookie to B (an
/// authenticated answer) and to C, whose secret differs (an NTS-NAK).
#[test]
fn servers_with_one_secret_open_each_others_cookies_and_others_nak_them() {
    let dir = tempdir("nts-cluster");
    let pki = make_pki(&dir, "a");
    let ours = secret_file(&dir, "cluster.key", 0x5a);
    let theirs = secret_file(&dir, "other.key", 0xa5);
    let secret = |f: &Path| format!("key_secret_file = \"{}\"\n", f.display());
    let b = setup("nts-cluster-b", &pki, &secret(&ours));
    let a = setup(
        "nts-cluster-a",
        &pki,
        &format!(
            "{}ntp_server = \"127.0.0.1\"\nntp_port = {}\n",
            secret(&ours),
            b.locked
        ),
    );
    let c = setup("nts-cluster-c", &pki, &secret(&theirs));
    let (_a, _b, _c) = (a.start(), b.start(), c.start());

    // chronyd's `server` line names a port nobody answers on: only B's, from A's records,
    // can give it time.
    let nobody = free_ports(1)[0];
    let measured = chrony_query(
        &[],
        "127.0.0.1",
        nobody,
        &format!("nts ntsport {}", a.ke),
        &[format!("ntstrustedcerts {}", pki.ca.display())],
        15,
    )
    .unwrap_or_else(|text| panic!("chronyd measured nothing through A's KE and B:\n{text}"));
    assert_near(measured, 15.0, "B's locked view, with A's cookies");
    let (sa, sb) = (&a.status()["serve"], &b.status()["serve"]);
    assert!(
        sa["nts"]["ke_sessions"].as_u64() >= Some(1),
        "{}",
        sa["nts"]
    );
    assert_eq!(sb["nts"]["ke_sessions"], 0, "B made no KE: {}", sb["nts"]);
    assert_eq!(sb["totals"]["nts_nak"], 0, "{}", sb["totals"]);

    let session = key_exchange(a.ke_addr(), &pki.ca).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let uid = [0x17; 32];
    let tx = NtpTimestamp::from_bits(0xe9a0_0000_0000_0002);
    let ask = |port: u16, cookie: &[u8]| -> Vec<u8> {
        let server: SocketAddr = ([127, 0, 0, 1], port).into();
        sock.send_to(&session.request(cookie, &uid, tx), server)
            .unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = sock.recv_from(&mut buf).expect("an answer");
        buf[..n].to_vec()
    };
    let at_b = ask(b.locked, &session.cookies[0]);
    ef::read_response(&at_b, &uid, &session.keys).expect("B's authenticated answer to A's cookie");
    let at_c = ask(c.locked, &session.cookies[1]);
    let h = Header::parse(&at_c).unwrap();
    assert_eq!((h.stratum, &h.reference_id), (0, b"NTSN"), "C: an NTS-NAK");
    assert!(
        !b.dir.join("state/nts-master-keys").exists(),
        "derived keys are never written"
    );
}

/// Whether the server closes a KE connection within `limit` (whatever it sends first, such
/// as a TLS alert).
fn closed_within(mut c: &TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        c.set_read_timeout(Some(left)).unwrap();
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn slow_and_excess_ke_clients_are_cut_off_and_a_new_certificate_takes_without_a_restart() {
    let dir = tempdir("nts-limits");
    let a = make_pki(&dir, "a");
    let s = setup(
        "nts-limits-views",
        &a,
        "max_connections = 2\ntimeout = \"1s\"",
    );
    let mut server = s.start();
    let open: SocketAddr = ([127, 0, 0, 1], s.open).into();

    // Two silent clients take both sessions; two more are closed at once.
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(s.ke_addr()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    for _ in 0..2 {
        let extra = TcpStream::connect(s.ke_addr()).unwrap();
        assert!(
            closed_within(&extra, Duration::from_millis(500)),
            "an excess client was kept"
        );
    }
    assert!(t0.elapsed() < Duration::from_millis(900));
    // The silent ones are cut off by the 1 s timeout, and the server takes new clients.
    for c in &idle {
        assert!(
            closed_within(c, Duration::from_secs(3)),
            "a silent client was kept past the timeout"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    key_exchange(s.ke_addr(), &a.ca).expect("KE after the slow clients");
    // Not TLS at all.
    {
        use std::io::Write;
        let mut junk = TcpStream::connect(s.ke_addr()).unwrap();
        junk.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(closed_within(&junk, Duration::from_secs(3)));
    }
    let nts = &s.status()["serve"]["nts"];
    assert!(nts["ke_busy"].as_u64() >= Some(2), "{nts}");
    assert!(nts["ke_timeouts"].as_u64() >= Some(2), "{nts}");
    assert!(nts["ke_failed"].as_u64() >= Some(1), "{nts}");
    assert_eq!(nts["ke_sessions"], 1, "{nts}");

    // A renewal: new certificate and key from another CA, in place, then SIGHUP. NTP
    // answers go on throughout, and KE now presents the new certificate.
    let b = make_pki(&dir, "b");
    let answered_before = ntp_exchange(open, Duration::from_secs(2)).is_some();
    std::fs::copy(&b.cert, &a.cert).unwrap();
    std::fs::copy(&b.key, &a.key).unwrap();
    let mark = server.mark();
    server.signal("HUP");
    server.log_since(mark, "reloaded", Duration::from_secs(5));
    assert!(answered_before && ntp_exchange(open, Duration::from_secs(2)).is_some());
    key_exchange(s.ke_addr(), &b.ca).expect("KE with the new certificate");
    assert!(
        key_exchange(s.ke_addr(), &a.ca).is_err(),
        "the old certificate is still presented"
    );
    assert_near(
        s.chrony(s.locked, &b.ca, None).unwrap(),
        15.0,
        "after the renewal",
    );
}

/// ntpsec's ntpd, a second NTS client (OpenSSL where chronyd uses GnuTLS): the discipline off
/// and no CAP_SYS_TIME, so it cannot touch the clock; in a namespace of its own, as it binds
/// port 123. The view needs NTS, so any time it measures came over NTS; and it is on port
/// 1123, which ntpd learns only from the KE answer's Port record.
#[test]
fn ntpsec_measures_an_nts_view_from_another_namespace() {
    let net = NetnsPair::new("nts", 1);
    let dir = tempdir("nts-ntpsec");
    let pki = make_pki(&dir, "a");
    let cfg = dir.join("serve.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"198.18.0.1:1123\"]\nlocal_stratum = 10\nstate_dir = \".\"\n\
             [control]\nsocket = \"serve.sock\"\n\
             [nts]\nlisten = [\"198.18.0.1:4460\"]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\
             [[view]]\nname = \"locked\"\noffset = \"15s\"\nlisten = [\"198.18.0.1:1123\"]\nauth = \"nts\"\n",
            pki.cert.display(),
            pki.key.display()
        ),
    )
    .unwrap();
    let _server =
        ServerProcess::start_with(&net.exec(&net.server), &["--config", cfg.to_str().unwrap()]);

    let conf = dir.join("ntp.conf");
    std::fs::write(
        &conf,
        format!(
            "server 198.18.0.1 nts ca {} iburst minpoll 3 maxpoll 3\ndisable ntp\ndisable kernel\n\
             restrict default kod nomodify nopeer noquery limited\nrestrict 127.0.0.1\n",
            pki.ca.display()
        ),
    )
    .unwrap();
    let argv: Vec<String> = [
        "ip",
        "netns",
        "exec",
        &net.client,
        "setpriv",
        "--bounding-set=-sys_time",
        "--inh-caps=-sys_time",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([
        peer("ntpd").display().to_string(),
        s("-n"),
        s("-c"),
        conf.display().to_string(),
    ])
    .collect();
    // Killed on drop, also when an assertion fails.
    let ntpd = common::Background::start(&dir, "ntpd", &argv);
    let ntpq = peer("ntpq").display().to_string();
    let peers = || {
        let out = run_bounded(
            std::process::Command::new("ip").args([
                "netns",
                "exec",
                &net.client,
                &ntpq,
                "-n",
                "-c",
                "peers",
                "127.0.0.1",
            ]),
            Duration::from_secs(10),
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // remote, refid, st, t, when, poll, reach, delay, offset (ms), jitter
    let measured = wait_until(Duration::from_secs(60), || {
        let text = peers();
        let line = text.lines().find(|l| l.contains("198.18.0.1"))?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let reach = u32::from_str_radix(f.get(6)?, 8).ok()?;
        (reach.count_ones() >= 3)
            .then(|| f.get(8)?.parse::<f64>().ok())
            .flatten()
    });
    let Some(ms) = measured else {
        panic!(
            "ntpd measured nothing in 60 s:\n{}\n{}",
            peers(),
            ntpd.log_text()
        )
    };
    assert!(
        (ms - 15_000.0).abs() < 1.0,
        "ntpd measured {ms} ms, the view is +15 s (allowed 1 ms)"
    );
    let st = control_json("status", &dir.join("serve.sock"), &[]);
    assert_eq!(st["serve"]["nts"]["ke_sessions"], 1, "{st}");
    assert_eq!(
        st["serve"]["totals"]["dropped"]["unauthenticated"], 0,
        "{st}"
    );
}

/// `serve --check` says what is wrong with an `[nts]` section, and what a good one does.
#[test]
fn check_explains_nts_mistakes() {
    let dir = tempdir("nts-check");
    let pki = make_pki(&dir, "a");
    let check = |nts: &str, auth: &str| {
        let cfg = dir.join("check.toml");
        std::fs::write(
            &cfg,
            format!(
                "[server]\nlisten = [\"127.0.0.1:1123\"]\nstate_dir = \".\"\n{nts}\n\
                 [[view]]\nname = \"v\"\noffset = \"15s\"\nlisten = [\"127.0.0.1:1123\"]\nauth = \"{auth}\"\n"
            ),
        )
        .unwrap();
        run_cli(&["serve", "--check", "--config", cfg.to_str().unwrap()])
    };
    let section = |cert: &Path, key: &Path| {
        format!(
            "[nts]\nlisten = [\"127.0.0.1:4460\"]\ncertificate = \"{}\"\nprivate_key = \"{}\"",
            cert.display(),
            key.display()
        )
    };
    let (ok, out) = check(&section(&pki.cert, &pki.key), "nts");
    assert!(ok, "{out}");
    assert!(
        out.contains("auth nts") && out.contains("NTS-KE on 127.0.0.1:4460"),
        "{out}"
    );

    let (ok, out) = check("", "nts");
    assert!(
        !ok && out.contains("needs NTS, but there is no [nts] section"),
        "{out}"
    );
    let (ok, out) = check("", "any");
    assert!(!ok && out.contains("neither [keys] nor [nts]"), "{out}");

    // A private key others can read; a certificate that is not one; a key of another pair.
    use std::os::unix::fs::PermissionsExt;
    let loose = dir.join("loose.key");
    std::fs::copy(&pki.key, &loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = check(&section(&pki.cert, &loose), "nts");
    assert!(
        !ok && out.contains("nts.private_key") && out.contains("chmod 600"),
        "{out}"
    );
    let (ok, out) = check(&section(&pki.ca.with_extension("srl"), &pki.key), "nts");
    assert!(!ok && out.contains("nts.certificate"), "{out}");
    let other = make_pki(&dir, "b");
    let (ok, out) = check(&section(&pki.cert, &other.key), "nts");
    assert!(
        !ok && out.contains("does not go with the certificate"),
        "{out}"
    );

    // The cluster's secret: readable by others, too short, missing.
    let secret = secret_file(&dir, "cluster.key", 0x11);
    let with = |f: &Path| {
        format!(
            "{}\nkey_secret_file = \"{}\"",
            section(&pki.cert, &pki.key),
            f.display()
        )
    };
    let (ok, out) = check(&with(&secret), "nts");
    assert!(ok, "{out}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = check(&with(&secret), "nts");
    assert!(
        !ok && out.contains("nts.key_secret_file") && out.contains("chmod 600"),
        "{out}"
    );
    std::fs::write(&secret, "00112233\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, out) = check(&with(&secret), "nts");
    assert!(
        !ok && out.contains("a secret of 4 bytes") && out.contains("openssl rand -hex 32"),
        "{out}"
    );
    let (ok, out) = check(&with(&dir.join("missing.key")), "nts");
    assert!(
        !ok && out.contains("nts.key_secret_file") && out.contains("missing.key"),
        "{out}"
    );
}

/// chrony 4.6 (Debian 13) offers AES-128-GCM-SIV before AES-SIV-CMAC-256 and gets it: half
/// the keys, 68-byte cookies. Those open after a restart as chrony 4.3's 100-byte ones do,
/// and `status` counts the sessions by AEAD.
#[test]
fn chrony_4_6_gets_aes_128_gcm_siv_and_its_shorter_cookies_open_after_a_restart() {
    let dir = tempdir("nts-gcm-siv");
    let pki = make_pki(&dir, "g");
    let s = setup("nts-gcm-siv-views", &pki, "");
    let chronyd = peer("chronyd-4.6");
    let dump = dir.join("chrony-dump");
    std::fs::create_dir_all(&dump).unwrap();
    let measure = || {
        chrony_query_with(
            &chronyd,
            &[],
            "127.0.0.1",
            s.locked,
            &format!("nts ntsport {}", s.ke),
            &[
                format!("ntstrustedcerts {}", pki.ca.display()),
                format!("ntsdumpdir {}", dump.display()),
            ],
            15,
        )
        .unwrap_or_else(|text| panic!("chrony 4.6 measured nothing:\n{text}"))
    };
    {
        let _server = s.start();
        assert_near(measure(), 15.0, "chrony 4.6");
        let nts = &s.status()["serve"]["nts"];
        assert_eq!(nts["ke_sessions"], 1, "{nts}");
        assert_eq!(
            nts["ke_sessions_by_aead"]["AEAD_AES_128_GCM_SIV"], 1,
            "chrony 4.6 negotiated AES-128-GCM-SIV: {nts}"
        );
        let sock = s.dir.join("serve.sock");
        let (ok, text) = run_cli(&["status", "--socket", sock.to_str().unwrap()]);
        assert!(ok, "{text}");
        assert!(
            text.contains("1 sessions (1 AES_128_GCM_SIV)"),
            "status names the AEAD:\n{text}"
        );
    }
    let files: Vec<_> = std::fs::read_dir(&dump).unwrap().collect();
    assert_eq!(files.len(), 1, "chronyd dumped its cookies");
    // chronyd's dump: a context line "ID AEAD C2S S2C" (keys in hex), then one cookie a line.
    let text = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let context = lines
        .iter()
        .find(|w| w.len() == 4 && w[1] == "30")
        .unwrap_or_else(|| panic!("no AES-128-GCM-SIV context in chronyd's dump:\n{text}"));
    assert_eq!(
        (context[2].len(), context[3].len()),
        (32, 32),
        "16-byte keys:\n{text}"
    );
    let cookies: Vec<usize> = lines
        .iter()
        .filter(|w| w.len() == 1 && w[0].len() > 64)
        .map(|w| w[0].len() / 2)
        .collect();
    assert!(
        !cookies.is_empty() && cookies.iter().all(|&n| n == 68),
        "68-byte cookies: {cookies:?}\n{text}"
    );

    let _server = s.start();
    assert_near(measure(), 15.0, "after the restart");
    let nts = &s.status()["serve"]["nts"];
    assert_eq!(
        nts["ke_sessions"], 0,
        "chronyd's 68-byte cookies did not open after the restart: {nts}"
    );

    // A client that asks for RFC 8915's exporter context (chrony's record) and one that does
    // not (as chrony 4.6 above) both get keys that authenticate the answers.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for compliant in [true, false] {
        let aeads = [Aead::Aes128GcmSiv];
        let session = key_exchange_offering(s.ke_addr(), &pki.ca, &aeads, compliant).unwrap();
        let uid = [0x42; 32];
        let tx = NtpTimestamp::from_bits(0xe9a0_0000_0000_0001);
        let request = session.request(&session.cookies[0], &uid, tx);
        sock.send_to(&request, ("127.0.0.1", s.locked)).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = sock.recv_from(&mut buf).expect("an answer");
        let fresh = ef::read_response(&buf[..n], &uid, &session.keys)
            .unwrap_or_else(|e| panic!("compliant {compliant}: {e:?}"));
        assert_eq!(fresh.iter().map(Vec::len).collect::<Vec<_>>(), [68]);
    }
}
