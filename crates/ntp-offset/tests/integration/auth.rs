//! Answers authenticated with symmetric keys (RFC 8573 AES-CMAC, keyed SHA digests), measured
//! by a real client: `chronyd -Q` (it measures, never sets the clock) with `server ... key N`
//! and a keyfile in chrony's own format, the same file the server reads.

use ntp_offset_testkit as common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// The server's keys: one of each kind chrony clients use today.
const KEYS: &str = "# chrony's key file format\n\
    1 AES128 HEX:000102030405060708090a0b0c0d0e0f\n\
    2 AES256 HEX:603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4\n\
    3 SHA256 HEX:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\n\
    4 SHA1 ASCII:an-older-client\n";

fn write_keys(dir: &Path, name: &str, text: &str, mode: u32) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn chrony_with_a_key_measures_a_view_that_needs_one_and_nothing_else_gets_its_time() {
    let dir = tempdir("auth-chrony");
    // Group-readable, as the packaged service reads it (root:ntp-offset 0640).
    let server_keys = write_keys(&dir, "server.keys", KEYS, 0o640);
    let [open, locked]: [u16; 2] = free_ports(2).try_into().unwrap();
    let cfg = dir.join("serve.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{open}\", \"127.0.0.1:{locked}\"]\nlocal_stratum = 10\n\
             [control]\nsocket = \"serve.sock\"\n\
             [keys]\nfile = \"{server_keys}\"\n\
             [[view]]\nname = \"open\"\noffset = \"0s\"\nlisten = [\"127.0.0.1:{open}\"]\n\
             [[view]]\nname = \"locked\"\noffset = \"15s\"\nlisten = [\"127.0.0.1:{locked}\"]\nauth = \"key\"\n"
        ),
    )
    .unwrap();
    let _server = ServerProcess::start(&["--config", cfg.to_str().unwrap()]);

    let client_keys = write_keys(&dir, "client.keys", KEYS, 0o600);
    let wrong_keys = write_keys(
        &dir,
        "wrong.keys",
        "1 AES128 HEX:ffeeddccbbaa99887766554433221100\n9 AES128 HEX:000102030405060708090a0b0c0d0e0f\n",
        0o600,
    );
    let keyfile = |f: &str| vec![format!("keyfile {f}")];
    // Each chronyd waits up to its timeout when it gets no time; run them side by side.
    let runs: Vec<(&str, u16, String, Vec<String>, u32)> = vec![
        (
            "AES128, locked view",
            locked,
            "key 1".into(),
            keyfile(&client_keys),
            15,
        ),
        (
            "AES256, locked view",
            locked,
            "key 2".into(),
            keyfile(&client_keys),
            15,
        ),
        (
            "SHA256, locked view",
            locked,
            "key 3".into(),
            keyfile(&client_keys),
            15,
        ),
        (
            "SHA1, locked view",
            locked,
            "key 4".into(),
            keyfile(&client_keys),
            15,
        ),
        (
            "AES128, open view",
            open,
            "key 1".into(),
            keyfile(&client_keys),
            15,
        ),
        ("no key, open view", open, String::new(), vec![], 15),
        ("no key, locked view", locked, String::new(), vec![], 6),
        (
            "wrong key 1, locked view",
            locked,
            "key 1".into(),
            keyfile(&wrong_keys),
            6,
        ),
        (
            "wrong key 1, open view",
            open,
            "key 1".into(),
            keyfile(&wrong_keys),
            6,
        ),
        (
            "unknown key 9, open view",
            open,
            "key 9".into(),
            keyfile(&wrong_keys),
            6,
        ),
    ];
    let handles: Vec<_> = runs
        .into_iter()
        .map(|(what, port, options, directives, timeout)| {
            let h = std::thread::spawn(move || {
                chrony_query(&[], "127.0.0.1", port, &options, &directives, timeout)
            });
            (what, port, h)
        })
        .collect();
    for (what, port, h) in handles {
        let result = h.join().unwrap();
        let expected = if port == locked { 15.0 } else { 0.0 };
        let should_measure = !what.starts_with("no key, locked")
            && !what.starts_with("wrong")
            && !what.starts_with("unknown");
        match result {
            Ok(measured) => {
                println!("chrony: {what}: measured {measured:.6} s");
                assert!(
                    should_measure,
                    "{what}: chrony got time ({measured}) it must not"
                );
                assert!(
                    (measured - expected).abs() < 1e-3,
                    "{what}: measured {measured}, configured {expected}"
                );
            }
            Err(text) => {
                println!("chrony: {what}: no time");
                assert!(!should_measure, "{what}: chrony measured nothing:\n{text}");
            }
        }
    }

    // The server counted what it turned away, by reason.
    let st = control_json("status", &dir.join("serve.sock"), &[]);
    let totals = &st["serve"]["totals"];
    let dropped = &totals["dropped"];
    assert!(dropped["unauthenticated"].as_u64() > Some(0), "{totals}");
    assert!(dropped["bad_mac"].as_u64() > Some(0), "{totals}");
    assert!(totals["crypto_nak"].as_u64() > Some(0), "{totals}");
}

#[test]
fn key_files_are_checked_like_tick_keys() {
    let dir = tempdir("auth-check");
    let cfg = |keys: &str, extra: &str| {
        let path = dir.join("serve.toml");
        std::fs::write(
            &path,
            format!(
                "[server]\nlisten = [\"127.0.0.1:1123\"]\ndefault_view = \"v\"\n[keys]\nfile = \"{keys}\"\n{extra}\n\
                 [[view]]\nname = \"v\"\noffset = \"0s\"\n"
            ),
        )
        .unwrap();
        let (ok, out) = run_cli(&["serve", "--check", "--config", path.to_str().unwrap()]);
        (ok, out)
    };
    let good = write_keys(&dir, "good.keys", KEYS, 0o600);
    assert!(cfg(&good, "").0);
    let open = write_keys(&dir, "open.keys", KEYS, 0o644);
    let (ok, out) = cfg(&open, "");
    assert!(
        !ok && out.contains("mode 0644") && out.contains("chmod 600"),
        "{out}"
    );
    let md5 = write_keys(&dir, "md5.keys", "1 tulip\n", 0o600);
    let (ok, out) = cfg(&md5, "");
    assert!(
        !ok && out.contains("allow_md5") && out.contains("line 1"),
        "{out}"
    );
    let (ok, out) = cfg(&md5, "allow_md5 = true");
    assert!(ok && out.contains("MD5 is broken"), "{out}");
    let (ok, out) = cfg(&good, "unknown_key = \"shrug\"");
    assert!(!ok && out.contains("keys.unknown_key"), "{out}");
}
