//! The Arduino transmitter firmware, end to end: built for the ATmega328P (within its flash and
//! RAM), run in simavr with a DCF77 signal case on its input pin and a W5100 model on SPI
//! (firmware/test/sim_w5100.c). Every datagram it sends must be a valid, authenticated tick
//! for the right second, one per second, including second 59, holdover seconds and the leap
//! second, checked with the project's own tick decoder and MAC.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use ntp_offset_proto::tick::{decode, Datagram, Kind, Leap, Source, SourceState, TickPacket};
use ntp_offset_proto::tick_auth::{verify, KeyRing};
use ntp_offset_proto::tick_receiver::{Event, Receiver, ReceiverConfig, RxStamp};
use ntp_offset_proto::time::Time;

use common::run_bounded;
use ntp_offset_testkit as common;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs make; the tests of this file run in parallel, so each build output folder is built by
/// one test at a time (two makes into one folder left an empty ELF in a fresh clone once).
fn make_with(dir: &str, target: &str, vars: &[&str]) -> String {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let out = run_bounded(
        Command::new("make")
            .args(["-s", "-C", dir, target])
            .args(vars)
            .current_dir(root()),
        Duration::from_secs(300),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "make -C {dir} {target} failed (run ./scripts/test, which installs gcc-avr, avr-libc, \
         arduino-core-avr and libsimavr-dev):\n{text}"
    );
    text
}

/// The firmware built with `extra_defs` into its own folder, and the simavr harness; each
/// once per test process. Returns the ELF.
fn firmware(extra_defs: &'static str) -> PathBuf {
    static BUILT: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let build = root().join(match extra_defs {
        "" => "target/firmware".to_string(),
        defs => format!(
            "target/firmware-{}",
            defs.replace(|c: char| !c.is_ascii_alphanumeric(), "")
        ),
    });
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.contains(&extra_defs) {
        let size = make_with(
            "firmware/arduino",
            "all",
            &[
                &format!("BUILD={}", build.display()),
                &format!("EXTRA_DEFS={extra_defs}"),
            ],
        );
        eprintln!("{extra_defs}: {}", size.trim());
        if built.is_empty() {
            make_with("firmware/test", "sim", &[]);
        }
        built.push(extra_defs);
    }
    build.join("arduino.elf")
}

struct Expected {
    mark_ms: i64,
    second: i64,
    holdover: bool,
    leap: bool,
}

fn expected(case: &str) -> Vec<Expected> {
    let text = std::fs::read_to_string(root().join("testvectors/dcf77-signals.txt")).unwrap();
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("case ") {
            inside = line.contains(&format!("name={case} "));
        } else if inside && line.starts_with("expect ") {
            let w: Vec<&str> = line.split_whitespace().collect();
            out.push(Expected {
                mark_ms: w[1].parse().unwrap(),
                second: w[2].parse().unwrap(),
                holdover: w[3] == "holdover",
                leap: w.get(4) == Some(&"leap"),
            });
        }
    }
    assert!(!out.is_empty(), "no case {case}");
    out
}

/// What the firmware did on the network besides ticks: (case ms, "dhcp WHAT" or "address IP").
type NetworkEvents = Vec<(i64, String)>;

/// One simavr run: the datagrams socket 0 sent, (case ms, bytes); the sends the model's
/// ARP timed out, (case ms, "IP PORT"); DHCP and address events; resets; the serial console.
struct Run {
    packets: Vec<(i64, Vec<u8>)>,
    timeouts: Vec<(i64, String)>,
    network: NetworkEvents,
    resets: Vec<i64>,
    serial: String,
}

fn simulate(case: &str) -> Run {
    simulate_with(&firmware(""), case, None)
}

/// Runs the case in simavr, resetting the AVR at `reset_at_ms` on the case's clock.
fn simulate_with(elf: &Path, case: &str, reset_at_ms: Option<i64>) -> Run {
    let dir = common::tempdir(&format!("firmware-{case}"));
    let out = dir.join("packets.txt");
    let mut cmd = Command::new(root().join("target/firmware-test/sim_w5100"));
    cmd.arg(elf)
        .arg(root().join("testvectors/dcf77-signals.txt"))
        .arg(case)
        .arg(&out);
    if let Some(ms) = reset_at_ms {
        cmd.arg(ms.to_string());
    }
    // A bound for a hang, not a benchmark: beside the suite's QEMU guests, on a VM with 7 %
    // steal time, one afternoon case took over 300 s.
    let run = run_bounded(&mut cmd, Duration::from_secs(600));
    let serial = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "simavr run failed:\n{serial}");
    let text = std::fs::read_to_string(&out).unwrap();
    let mut r = Run {
        packets: Vec::new(),
        timeouts: Vec::new(),
        network: Vec::new(),
        resets: Vec::new(),
        serial,
    };
    for l in text.lines() {
        // KIND SIM_US CASE_MS ...
        let w: Vec<&str> = l.split_whitespace().collect();
        let ms: i64 = w[2].parse().unwrap();
        match w[0] {
            "packet" => {
                // packet SIM_US CASE_MS IP PORT HEX
                assert_eq!((w[3], w[4]), ("255.255.255.255", "8123"), "{l}");
                let hex = w[5];
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                r.packets.push((ms, bytes));
            }
            "timeout" => r.timeouts.push((ms, format!("{} {}", w[3], w[4]))),
            "reset" => r.resets.push(ms),
            // dhcp SIM_US CASE_MS WHAT | address SIM_US CASE_MS IP
            _ => r.network.push((ms, format!("{} {}", w[0], w[3]))),
        }
    }
    r
}

/// The address comes from the harness's DHCP server before the first tick, and the lease
/// (60 s) is renewed every 30 s while ticks go on (their timing is checked with the ticks).
fn check_dhcp(case: &str, network: &NetworkEvents, first_tick_ms: i64, last_tick_ms: i64) {
    let names: Vec<&str> = network.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "address 0.0.0.0",
            "dhcp discover",
            "dhcp request",
            "address 198.18.1.77"
        ],
        "{case}: {network:?}"
    );
    assert!(
        network[3].0 < first_tick_ms,
        "{case}: bound before the first tick"
    );
    let renewals: Vec<i64> = network
        .iter()
        .filter(|(_, n)| n == "dhcp renew")
        .map(|(ms, _)| *ms)
        .collect();
    assert_eq!(
        names.len(),
        4 + renewals.len(),
        "{case}: nothing but renewals once bound: {network:?}"
    );
    let gaps: Vec<i64> = renewals.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        renewals.len() as i64 >= (last_tick_ms - network[3].0) / 30_000 - 1
            && gaps.iter().all(|g| (29_000..=32_000).contains(g)),
        "{case}: renewals every 30 s: {renewals:?}"
    );
    eprintln!(
        "{case}: DHCP bound {} ms after boot, then {} renewals while ticking",
        network[3].0 - network[0].0,
        renewals.len()
    );
}

fn check(case: &str) {
    let keys = default_keys();
    let Run {
        packets: all,
        network,
        ..
    } = simulate(case);
    // Each tick is followed by its follow-up: the departure minus the mark.
    let (packets, follow_ups): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|(_, b)| matches!(decode(b), Ok(Datagram::Tick(t)) if t.kind == Kind::Tick));
    let want = expected(case);
    assert_eq!(
        follow_ups.len(),
        packets.len(),
        "{case}: a follow-up per tick"
    );
    for (i, ((sent_ms, tick), (_, fu))) in packets.iter().zip(&follow_ups).enumerate() {
        let (Ok(Datagram::Tick(t)), Ok(Datagram::Tick(f))) = (decode(tick), decode(fu)) else {
            panic!("{case}: undecodable follow-up")
        };
        verify(fu, f.key_id, &keys).unwrap_or_else(|e| panic!("{case}: follow-up: {e:?}"));
        assert_eq!(
            (f.kind, f.sequence, f.second),
            (Kind::FollowUp, t.sequence, t.second)
        );
        // The mark the follow-up implies is the true one, to the simulated SPI's resolution.
        let mark_ms = want[i.min(want.len() - 1)].mark_ms;
        let implied = sent_ms * 1_000_000 - f.tx_offset_ns;
        assert!(
            (implied - mark_ms * 1_000_000).abs() < 2_000_000,
            "{case}: second {}: the follow-up puts the mark {} ms off",
            t.second,
            (implied - mark_ms * 1_000_000) as f64 / 1e6
        );
    }
    assert_eq!(
        packets.len(),
        want.len(),
        "{case}: one tick per synchronized second"
    );
    check_dhcp(case, &network, packets[0].0, packets[packets.len() - 1].0);
    let mut first = None;
    let mut worst_ms = [0; 2];
    for (i, ((at_ms, bytes), e)) in packets.iter().zip(&want).enumerate() {
        let Ok(Datagram::Tick(t)) = decode(bytes) else {
            panic!("{case}: datagram {i} is not a tick: {bytes:02x?}")
        };
        verify(bytes, t.key_id, &keys).unwrap_or_else(|e| panic!("{case}: tick {i}: {e:?}"));
        let (session, sequence0) = *first.get_or_insert((t.session, t.sequence));
        assert_eq!(
            (t.kind, t.source, t.stratum, t.transmitter),
            (Kind::Tick, Source::Dcf77, 0, 0xdcf7_7001),
            "{case}: tick {i}"
        );
        assert_eq!(
            (t.session, t.sequence),
            (session, sequence0.wrapping_add(i as u32)),
            "{case}: tick {i}"
        );
        assert_eq!(t.second, e.second, "{case}: tick {i}: second");
        let state = if e.holdover {
            SourceState::Holdover
        } else {
            SourceState::Synchronized
        };
        assert_eq!(t.state, state, "{case}: tick {i} (second {})", e.second);
        if e.leap {
            assert_eq!(t.leap, Leap::Insert, "{case}: the leap second is announced");
        }
        assert_eq!(
            t.is_leap_second(),
            e.leap,
            "{case}: tick {i}: the leap-second flag"
        );
        // Sent at its mark, the SPI bus at the real chip's speed (sim_w5100.c): a tick at its
        // pulse's rising edge within a few ms (the loop, then the SEND command); a holdover
        // tick 15 ms after its mark, the window a late pulse may still come in, plus as much.
        let late = at_ms - e.mark_ms;
        let allowed = if e.holdover { 15..=20 } else { 0..=5 };
        assert!(
            allowed.contains(&late),
            "{case}: tick {i} (holdover: {}) sent {late} ms after its mark, allowed {allowed:?}",
            e.holdover
        );
        let worst = &mut worst_ms[usize::from(e.holdover)];
        *worst = (*worst).max(late);
    }
    eprintln!(
        "{case}: {} ticks, each valid and authenticated; sent at worst {} ms after their marks \
         ({} ms in holdover)",
        packets.len(),
        worst_ms[0],
        worst_ms[1]
    );

    // What `pulse listen` and `serve` would make of them: the receiver, fed each datagram at
    // its send time (the case's clock standing in for both of the receiver's clocks).
    let mut rx = Receiver::new(ReceiverConfig {
        keys,
        ..ReceiverConfig::default()
    });
    let mut events = Vec::new();
    let leaps = want.iter().filter(|e| e.leap).count();
    let mut samples = 0;
    for (i, ((at_ms, tick), (fu_ms, fu))) in packets.iter().zip(&follow_ups).enumerate() {
        // The local clock, its kernel inserting the leap second too, repeats 23:59:59 as the
        // tick's number does.
        for (ms, bytes) in [(*at_ms, tick), (*fu_ms, fu)] {
            let at = RxStamp {
                real: Time::from_unix_nanos(
                    want[i].second * 1_000_000_000 + (ms - want[i].mark_ms) * 1_000_000,
                ),
                mono_ns: ms * 1_000_000,
            };
            rx.poll(ms * 1_000_000, &mut events);
            rx.on_datagram(bytes, at, &mut events);
        }
        for e in events.drain(..) {
            match e {
                Event::Sample(s) => {
                    samples += 1;
                    // Taken at the mark: the follow-up removed the send delay.
                    let late_ns =
                        s.rx.mono_ns - s.tx_offset_ns.unwrap_or(0) - want[i].mark_ms * 1_000_000;
                    assert!(
                        late_ns.abs() < 2_000_000,
                        "{case}: sample {i}: {late_ns} ns"
                    );
                }
                Event::Rejected(r) => {
                    panic!("{case}: tick {i} rejected by the receiver: {}", r.name())
                }
                _ => {}
            }
        }
    }
    let fed = packets.len();
    assert_eq!(
        samples,
        fed - 2 - leaps,
        "{case}: every tick from the third is a sample, but a leap second's"
    );
    assert_eq!(rx.stats().counts.leap_seconds, leaps as u64, "{case}");
    eprintln!(
        "{case}: the tick receiver took {samples} samples from {fed} ticks ({leaps} leap second), rejecting none"
    );
}

#[test]
fn firmware_in_simavr_sends_a_tick_per_second_through_a_leap_second() {
    check("leap-second-2016");
}

#[test]
fn firmware_in_simavr_flywheels_missing_pulses_as_holdover() {
    check("missing-pulses-flywheel");
}

#[test]
fn firmware_with_a_static_address_builds_within_size_too() {
    // The simulated runs use DHCP (config.h's default); the static variant must build as well.
    let elf = firmware("-DCONFIG_DHCP=0");
    assert!(elf.exists(), "{}", elf.display());
}

/// The key compiled into the firmware by default: the test vectors' key 1.
fn default_keys() -> KeyRing {
    KeyRing::parse("1 101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f\n").unwrap()
}

/// 15:56-16:02 CEST: seconds right in the afternoon (on the AVR `int` has 16 bits, and the
/// hour's seconds once overflowed it from 10:00 on), and a restart: reset after the first
/// synchronized minute, the firmware synchronizes again with a new session (its boot
/// counter in EEPROM), its sequence from 0, and a receiver takes it as a restart.
#[test]
fn firmware_in_simavr_restarts_with_a_new_session_in_the_afternoon() {
    let case = "afternoon-cest-15h-restart";
    let want = expected(case);
    let reset_ms = want[0].mark_ms + 70_500;
    let run = simulate_with(&firmware(""), case, Some(reset_ms));
    assert_eq!(run.resets.len(), 1, "{case}");
    let keys = default_keys();
    let ticks: Vec<(i64, TickPacket)> = run
        .packets
        .iter()
        .filter_map(|(ms, b)| match decode(b) {
            Ok(Datagram::Tick(t)) if t.kind == Kind::Tick => {
                verify(b, t.key_id, &keys).unwrap_or_else(|e| panic!("{case}: {e:?}"));
                Some((*ms, t))
            }
            _ => None,
        })
        .collect();
    let (before, after): (Vec<&(i64, TickPacket)>, Vec<_>) =
        ticks.iter().partition(|(ms, _)| *ms < reset_ms);
    assert!(
        before.len() >= 60 && after.len() >= 60,
        "{case}: {} ticks before the reset, {} after",
        before.len(),
        after.len()
    );
    for (ms, t) in &ticks {
        let e = want
            .iter()
            .find(|e| (ms - e.mark_ms) >= 0 && (ms - e.mark_ms) < 100)
            .unwrap_or_else(|| panic!("{case}: a tick at {ms} ms, at no mark"));
        assert_eq!(t.second, e.second, "{case}: the tick sent at {ms} ms");
    }
    let (s1, s2) = (before[0].1.session, after[0].1.session);
    assert_ne!(s1, s2, "{case}: the same session after a restart");
    assert_eq!(
        s2 >> 16,
        (s1 >> 16).wrapping_add(1),
        "{case}: the boot counter: {s1:08x} then {s2:08x}"
    );
    for (i, (_, t)) in after.iter().enumerate() {
        assert_eq!((t.session, t.sequence), (s2, i as u32), "{case}");
    }

    let mut rx = Receiver::new(ReceiverConfig {
        keys,
        ..ReceiverConfig::default()
    });
    let mut events = Vec::new();
    for (ms, bytes) in &run.packets {
        let e = want.iter().rfind(|e| e.mark_ms <= *ms).unwrap();
        let at = RxStamp {
            real: Time::from_unix_nanos(e.second * 1_000_000_000 + (ms - e.mark_ms) * 1_000_000),
            mono_ns: ms * 1_000_000,
        };
        rx.poll(ms * 1_000_000, &mut events);
        rx.on_datagram(bytes, at, &mut events);
    }
    for e in &events {
        if let Event::Rejected(r) = e {
            panic!("{case}: rejected by the receiver: {}", r.name())
        }
    }
    assert_eq!(rx.stats().counts.restarts, 1, "{case}");
    eprintln!(
        "{case}: {} ticks in session {s1:08x}, reset at {reset_ms} ms, {} in session {s2:08x}; the receiver saw one restart",
        before.len(),
        after.len()
    );
}

/// A directed broadcast makes the chip ARP for it (the model, like a real segment, answers
/// no ARP for 198.18.1.255): every send ends in TIMEOUT. The firmware must not take that
/// for success: it counts the failures and says so on the serial console, once a minute.
#[test]
fn firmware_in_simavr_reports_sends_that_fail() {
    let case = "hour-cest-15";
    let run = simulate_with(&firmware("-DCONFIG_DESTINATION={198,18,1,255}"), case, None);
    let want = expected(case);
    assert!(
        run.packets.is_empty(),
        "{case}: a datagram left: {:?}",
        run.packets[0]
    );
    assert!(
        run.timeouts.len() + 1 >= want.len()
            && run.timeouts.iter().all(|(_, d)| d == "198.18.1.255 8123"),
        "{case}: {} timeouts for {} marks: {:?}",
        run.timeouts.len(),
        want.len(),
        &run.timeouts[..run.timeouts.len().min(3)]
    );
    let reports: Vec<&str> = run
        .serial
        .lines()
        // simavr echoes each console line in color after it: the part before.
        .map(|l| l.split('\x1b').next().unwrap_or(""))
        .filter_map(|l| l.find("w5100: sends failed: ").map(|i| &l[i..]))
        .collect();
    assert!(
        reports.len() >= 2 && reports[0].starts_with("w5100: sends failed: 1 "),
        "{case}: the serial console says: {reports:?}\n{}",
        run.serial
    );
    eprintln!(
        "{case}: {} sends timed out; the console said {reports:?}",
        run.timeouts.len()
    );
}
