//! `pulse send` and `pulse listen` with real NTP daemons on several namespaced hosts:
//! chronyd (SOCK refclock, `-x`: never touches the clock) and ntpsec's ntpd (SHM refclock,
//! `disable ntp` and no CAP_SYS_TIME: cannot touch the clock), both locked to one transmitter.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::lan::{wait_until, Background, IpcNamespace, Lan};
use common::{peer, run_bounded, tempdir, BIN};

fn s(v: &str) -> String {
    v.to_string()
}

fn write_key_file(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let out = run_bounded(
        Command::new(BIN).args(["pulse", "keygen", "--id", "7"]),
        Duration::from_secs(5),
    );
    let path = dir.join("tick.keys");
    std::fs::write(&path, &out.stdout).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn status(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn field(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

/// chronyc -c sources: (selected, measured offset of TICK in seconds, chrony's sign: local
/// clock minus source).
fn chrony_tick(chronyc: &Path, sock: &Path) -> Option<(bool, f64)> {
    let out = Command::new(chronyc)
        .args(["-h", sock.to_str().unwrap(), "-n", "-c", "sources"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains(",TICK,"))?;
    let f: Vec<&str> = line.split(',').collect();
    Some((f[1] == "*", f[8].parse().ok()?))
}

/// ntpq -n -c peers in the namespace: (selected, offset in ms) of SHM(0).
fn ntpq_shm(prefix: &[String]) -> Option<(bool, f64)> {
    let out = Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(peer("ntpq"))
        .args(["-n", "-c", "peers", "127.0.0.1"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("SHM(0)"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    // tally+remote, refid, st, t, when, poll, reach, delay, offset, jitter
    let reach = u32::from_str_radix(f[6], 8).ok()?;
    (reach != 0).then_some((line.starts_with('*'), f[8].parse().ok()?))
}

#[test]
fn chrony_and_ntpd_hosts_lock_to_one_transmitter_their_offsets_apart() {
    let lan = Lan::new("pl", 1, &["tx", "a", "b"]);
    let dir = tempdir("pulse-lan");
    let keys = write_key_file(&dir);
    let keys = keys.to_str().unwrap();

    // Host a: chronyd -x with a SOCK refclock; its command socket needs a private directory.
    let cdir = dir.join("chrony");
    std::fs::create_dir_all(&cdir).unwrap();
    std::fs::set_permissions(&cdir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let tick_sock = cdir.join("tick.sock");
    let cmd_sock = cdir.join("cmd.sock");
    std::fs::write(
        cdir.join("chrony.conf"),
        format!(
            "refclock SOCK {} refid TICK poll 0\nport 0\ncmdport 0\nbindcmdaddress {}\npidfile {}\n",
            tick_sock.display(),
            cmd_sock.display(),
            cdir.join("chronyd.pid").display()
        ),
    )
    .unwrap();
    let mut argv = lan.enter(1, None);
    argv.extend([
        peer("chronyd").display().to_string(),
        s("-x"),
        s("-d"),
        s("-u"),
        s("root"),
        s("-f"),
        cdir.join("chrony.conf").display().to_string(),
    ]);
    let mut chronyd = Background::start(&dir, "chronyd", &argv);

    // Host b: ntpd with the clock discipline off and without the capability to set the clock,
    // reading SHM unit 0 in an IPC namespace of its own.
    let ipc = IpcNamespace::new();
    let ndir = dir.join("ntpd");
    std::fs::create_dir_all(&ndir).unwrap();
    std::fs::write(
        ndir.join("ntp.conf"),
        "refclock shm unit 0 refid TICK minpoll 0 maxpoll 0\ndisable ntp\ndisable kernel\n\
         restrict default kod nomodify nopeer noquery limited\nrestrict 127.0.0.1\n",
    )
    .unwrap();
    let in_b = lan.enter(2, Some(&ipc));
    let mut argv = in_b.clone();
    argv.extend([
        s("setpriv"),
        s("--bounding-set=-sys_time"),
        s("--inh-caps=-sys_time"),
        peer("ntpd").display().to_string(),
        s("-n"),
        s("-c"),
        ndir.join("ntp.conf").display().to_string(),
    ]);
    let mut ntpd = Background::start(&dir, "ntpd", &argv);

    // The receivers: host a at +250 ms into chronyd, host b at +15 s into ntpd.
    let status_a = dir.join("a.json");
    let status_b = dir.join("b.json");
    let mut argv = lan.enter(1, None);
    argv.extend(
        [
            BIN,
            "pulse",
            "listen",
            "--key-file",
            keys,
            "--offset",
            "250ms",
            "--sock",
        ]
        .map(s),
    );
    argv.extend([
        tick_sock.display().to_string(),
        s("--status-file"),
        status_a.display().to_string(),
    ]);
    let mut listen_a = Background::start(&dir, "listen-a", &argv);
    let mut argv = in_b.clone();
    argv.extend(
        [
            BIN,
            "pulse",
            "listen",
            "--key-file",
            keys,
            "--offset",
            "15s",
            "--shm",
            "0",
        ]
        .map(s),
    );
    argv.extend([s("--status-file"), status_b.display().to_string()]);
    let mut listen_b = Background::start(&dir, "listen-b", &argv);

    let sender_argv = {
        let mut v = lan.enter(0, None);
        v.extend([BIN, "pulse", "send", "--local", "--key-file", keys, "--to"].map(s));
        v.push(lan.broadcast(8123));
        v.extend([s("--count"), s("120")]);
        v
    };
    let mut sender = Background::start(&dir, "send", &sender_argv);

    let chronyc = peer("chronyc");
    let locked = wait_until(Duration::from_secs(45), || {
        for p in [
            &mut chronyd,
            &mut ntpd,
            &mut listen_a,
            &mut listen_b,
            &mut sender,
        ] {
            p.assert_running();
        }
        let c = chrony_tick(&chronyc, &cmd_sock).filter(|c| c.0)?;
        let n = ntpq_shm(&in_b).filter(|n| n.0)?;
        Some((c, n))
    });
    let Some(((_, chrony_measured), (_, ntpd_ms))) = locked else {
        panic!(
            "not both selected in 45 s; chronyc: {:?}, ntpq: {:?}\nlisten-a:\n{}\nlisten-b:\n{}\nntpd:\n{}",
            chrony_tick(&chronyc, &cmd_sock),
            ntpq_shm(&in_b),
            listen_a.log_text(),
            listen_b.log_text(),
            ntpd.log_text()
        )
    };
    // chrony's "measured offset" is local minus source: the source is 0.25 s ahead.
    let chrony_offset = -chrony_measured;
    let ntpd_offset = ntpd_ms / 1000.0;
    eprintln!("chronyd: source {chrony_offset:+.6} s; ntpd: {ntpd_offset:+.6} s");
    assert!(
        (chrony_offset - 0.25).abs() < 0.001,
        "chronyd sees {chrony_offset}"
    );
    assert!(
        (ntpd_offset - 15.0).abs() < 0.001,
        "ntpd sees {ntpd_offset}"
    );
    let apart = ntpd_offset - chrony_offset;
    assert!(
        (apart - 14.75).abs() < 0.001,
        "hosts are {apart} s apart, configured 14.75 s"
    );

    // Kill the transmitter: both receivers stop feeding within 2 s and say so.
    let before = [status(&status_a).unwrap(), status(&status_b).unwrap()];
    sender.stop();
    let killed = std::time::Instant::now();
    let lost = wait_until(Duration::from_secs(3), || {
        let a = status(&status_a)?;
        let b = status(&status_b)?;
        (a["state"] == "lost" && b["state"] == "lost").then_some((a, b))
    })
    .unwrap_or_else(|| {
        panic!(
            "receivers did not report the loss:\n{}",
            listen_a.log_text()
        )
    });
    assert!(
        killed.elapsed() < Duration::from_millis(2600),
        "{:?}",
        killed.elapsed()
    );
    for (b, a) in before.iter().zip([&lost.0, &lost.1]) {
        assert!(field(a, "samples") >= field(b, "samples"));
    }
    assert!(listen_a.log_text().contains("samples stopped"));
    let frozen = [field(&lost.0, "samples"), field(&lost.1, "samples")];
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        field(&status(&status_a).unwrap(), "samples"),
        frozen[0],
        "fed after loss"
    );
    assert_eq!(
        field(&status(&status_b).unwrap(), "samples"),
        frozen[1],
        "fed after loss"
    );

    // Restart it: both relock by themselves, as a restarted transmitter.
    let mut sender = Background::start(&dir, "send-again", &sender_argv);
    let relocked = wait_until(Duration::from_secs(8), || {
        sender.assert_running();
        let a = status(&status_a)?;
        let b = status(&status_b)?;
        (a["state"] == "locked"
            && b["state"] == "locked"
            && field(&a, "samples") > frozen[0]
            && field(&b, "samples") > frozen[1])
            .then_some((a, b))
    })
    .expect("receivers did not relock after the transmitter restarted");
    assert_eq!(field(&relocked.0, "restarts"), 1);
    assert_eq!(field(&relocked.1, "restarts"), 1);
    assert!(
        relocked.0["rejected"].as_object().unwrap().is_empty(),
        "{}",
        relocked.0
    );
    sender.stop();
    drop(lan);
    let _ = std::fs::remove_dir_all(&dir);
}
