//! Real NTP clients measure the views: chrony (`chronyd -Q`, which measures and never sets the
//! clock) on loopback, and ntpsec's ntpdig on port 123 inside network namespaces.

use ntp_offset_testkit as common;

use common::*;

/// Views 0, +15 s, -250 ms and +10 years (across the 2036 era rollover).
const VIEWS: [(&str, &str, f64); 4] = [
    ("zero", "0s", 0.0),
    ("plus15", "15s", 15.0),
    ("minus250ms", "-250ms", -0.25),
    ("decade", "3650d", 3650.0 * 86_400.0),
];

fn config(listen: &[String]) -> String {
    let mut c = format!(
        "[server]\nlisten = [{}]\nlocal_stratum = 10\n",
        listen
            .iter()
            .map(|l| format!("\"{l}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for ((name, offset, _), addr) in VIEWS.iter().zip(listen) {
        c +=
            &format!("[[view]]\nname = \"{name}\"\noffset = \"{offset}\"\nlisten = [\"{addr}\"]\n");
    }
    c
}

#[test]
fn chrony_measures_every_view_within_1ms() {
    let ports = free_ports(4);
    let listen: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let dir = tempdir("chrony-views");
    let path = dir.join("serve.toml");
    std::fs::write(&path, config(&listen)).unwrap();
    let _server = ServerProcess::start(&["--config", path.to_str().unwrap()]);
    // The four chronyd runs take ~4 s each; run them side by side.
    let handles: Vec<_> = ports
        .iter()
        .map(|&p| std::thread::spawn(move || chrony_measure(&[], "127.0.0.1", p)))
        .collect();
    for ((name, _, expected), h) in VIEWS.iter().zip(handles) {
        let measured = h.join().unwrap();
        let error = measured - expected;
        println!(
            "chrony: view {name}: measured {measured:.6} s, error {:.1} us",
            error * 1e6
        );
        assert!(
            error.abs() < 1e-3,
            "view {name}: chrony measured {measured}, configured {expected}"
        );
    }
}

#[test]
fn ntpdig_measures_every_view_on_port_123_chosen_by_local_address() {
    // ntpdig has no port option: the server listens on port 123 of four addresses in its own
    // namespace, one view per address, and ntpdig asks from a second namespace over a veth.
    let ns = NetnsPair::new("dig", 4);
    let listen: Vec<String> = (1..=4).map(|i| format!("198.18.0.{i}:123")).collect();
    let dir = tempdir("ntpdig-views");
    let path = dir.join("serve.toml");
    std::fs::write(&path, config(&listen)).unwrap();
    let _server =
        ServerProcess::start_with(&ns.exec(&ns.server), &["--config", path.to_str().unwrap()]);
    for (i, (name, _, expected)) in VIEWS.iter().enumerate() {
        let measured = ntpdig_offset(&ns.exec(&ns.client), &format!("198.18.0.{}", i + 1));
        // ntpdig (ntpsec 1.2.2) resolves no NTP era: it reads every timestamp as era 0
        // (1900-2036), so a view past 2036-02-07 comes out exactly 2^32 s too early. The wire
        // timestamp is right (chrony resolves it, see above); compare modulo one era.
        const ERA: f64 = 4_294_967_296.0;
        let error = (measured - expected + ERA / 2.0).rem_euclid(ERA) - ERA / 2.0;
        println!(
            "ntpdig: view {name}: measured {measured:.6} s, error {:.1} us",
            error * 1e6
        );
        assert!(
            error.abs() < 1e-3,
            "view {name}: ntpdig measured {measured}, configured {expected}"
        );
    }
}

#[test]
fn chrony_through_a_namespace_on_port_123() {
    // A client on another "host" (namespace) reaching the standard port, as a VM would.
    let ns = NetnsPair::new("chr", 1);
    let _server = ServerProcess::start_with(
        &ns.exec(&ns.server),
        &[
            "--listen",
            "198.18.0.1:123",
            "--offset",
            "-250ms",
            "--local-stratum",
            "10",
        ],
    );
    let measured = chrony_measure(&ns.exec(&ns.client), "198.18.0.1", 123);
    assert!((measured + 0.25).abs() < 1e-3, "measured {measured}");
}
