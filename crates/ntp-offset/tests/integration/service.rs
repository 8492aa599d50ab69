//! Installing and running it as a service: `Type=notify` readiness as systemd reads it (a
//! datagram on $NOTIFY_SOCKET once the sockets are bound), the man pages and completions the
//! packages ship, generated from the command line itself, and the units as systemd checks them.

use ntp_offset_testkit as common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{free_ports, ntp_exchange, peer, run_bounded, run_cli, tempdir, Daemon, BIN};

/// Starts `args` with $NOTIFY_SOCKET set and returns what it sent there first.
fn readiness(dir: &Path, args: &[&str]) -> (Daemon, String) {
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let env = format!("NOTIFY_SOCKET={}", path.display());
    let daemon = Daemon::launch(&["env", &env], args, None, false);
    let mut buf = [0u8; 256];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("{args:?} never said it was ready: {e}"));
    (daemon, String::from_utf8_lossy(&buf[..n]).to_string())
}

#[test]
fn each_daemon_tells_systemd_it_is_ready_once_its_sockets_are_bound() {
    let dir = tempdir("service-notify");
    let [ntp, tick] = free_ports(2)[..] else {
        unreachable!()
    };
    let control = dir.join("serve.sock");
    let listen = format!("127.0.0.1:{ntp}");
    let (_serve, msg) = readiness(
        &dir,
        &[
            "serve",
            "--listen",
            &listen,
            "--local-stratum",
            "10",
            "--control-socket",
            control.to_str().unwrap(),
        ],
    );
    assert_eq!(msg.trim(), "READY=1");
    // Ready means usable: the NTP socket answers and the control socket is there.
    assert!(ntp_exchange(listen.parse().unwrap(), Duration::from_secs(1)).is_some());
    assert!(control.exists());

    let to = format!("127.0.0.1:{tick}");
    let (_listen, msg) = readiness(
        &dir,
        &[
            "pulse",
            "listen",
            "--listen",
            &to,
            "--allow-unauthenticated",
        ],
    );
    assert_eq!(msg.trim(), "READY=1");
    let (_send, msg) = readiness(
        &dir,
        &["pulse", "send", "--local", "--unauthenticated", "--to", &to],
    );
    assert_eq!(msg.trim(), "READY=1");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ntp-offset generate man|completions DIR` (what scripts/package runs), into a folder of
/// `test`'s own (tests run side by side in one process, and each removes its folder).
fn generate(what: &str, test: &str) -> PathBuf {
    let dir = tempdir(&format!("service-{test}-{what}"));
    let (ok, out) = run_cli(&["generate", what, dir.to_str().unwrap()]);
    assert!(ok, "{out}");
    dir
}

#[test]
fn man_pages_come_from_the_command_line_one_per_subcommand() {
    let dir = generate("man", "pages");
    for (page, says) in [
        ("ntp-offset.1", "serve"),
        ("ntp-offset-serve.1", "\\-\\-control\\-socket"),
        ("ntp-offset-status.1", "\\-\\-json"),
        ("ntp-offset-clients.1", "\\-\\-view"),
        ("ntp-offset-pulse.1", "listen"),
        ("ntp-offset-pulse-send.1", "\\-\\-source"),
        ("ntp-offset-pulse-listen.1", "\\-\\-offset"),
        ("ntp-offset-pulse-keygen.1", "\\-\\-id"),
        ("ntp-offset-query.1", "\\-\\-count"),
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: not roff"
        );
        assert!(
            text.contains(says),
            "{page} does not mention {says}:\n{text}"
        );
    }
    assert!(
        !dir.join("ntp-offset-generate.1").exists(),
        "the hidden packaging command has no page"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn completions_come_from_the_command_line_for_bash_zsh_and_fish() {
    let dir = generate("completions", "completions");
    let bash = dir.join("ntp-offset.bash");
    let text = std::fs::read_to_string(&bash).unwrap();
    assert!(text.contains("clients") && text.contains("--control-socket"));
    let out = run_bounded(
        Command::new("bash").arg("-n").arg(&bash),
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["_ntp-offset", "ntp-offset.fish"] {
        let t = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(t.contains("status"), "{f}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `systemd-analyze verify` on every unit, in a root laid out as the package installs it
/// (the binary in /usr/bin, the man pages the units name).
#[test]
fn the_units_verify_clean() {
    let root = tempdir("service-units");
    let man = generate("man", "units");
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::copy(*BIN, root.join("usr/bin/ntp-offset")).unwrap();
    let man1 = root.join("usr/share/man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    for e in std::fs::read_dir(&man).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), man1.join(e.file_name())).unwrap();
    }
    // The host's own units (the targets and slices every service depends on) and kill
    // (ExecReload), as on the Debian the package is for.
    let unit_dir = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(&unit_dir).unwrap();
    std::fs::copy("/bin/kill", root.join("bin/kill")).unwrap();
    let out = run_bounded(
        Command::new("cp")
            .arg("-a")
            .arg("/lib/systemd/system/.")
            .arg(&unit_dir),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for unit in [
        "ntp-offset.service",
        "ntp-offset-pulse-listen@.service",
        "ntp-offset-pulse-send.service",
    ] {
        std::fs::copy(units.join(unit), unit_dir.join(unit)).unwrap();
    }
    for unit in [
        "ntp-offset.service",
        "ntp-offset-pulse-listen@feed.service",
        "ntp-offset-pulse-send.service",
    ] {
        let out = run_bounded(
            Command::new(peer("systemd-analyze"))
                .arg("verify")
                .arg(format!("--root={}", root.display()))
                .arg("--man=no")
                .arg(unit_dir.join(unit.replace("@feed", "@"))),
            Duration::from_secs(30),
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.trim().is_empty(),
            "{unit}:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&man);
}
