#!/usr/bin/env python3
"""Drives `ntp-offset pulse send --source dcf77` in the test guest (kernel/test/run builds
it) on the inputs a DCF77 module is wired to: the test module signal_lines plays three
DCF77 signal cases from testvectors/dcf77-signals.txt, two on GPIO lines (the kernel stamps
their edges through the GPIO character device) and one on the DCD line of a serial port
(/dev/ttySIG0: TIOCMIWAIT). One transmitter per line decodes its case and sends signed ticks
to the host, where `ntp-offset pulse listen` verifies and reports them.

Checks, per line: every mark the case expects is decoded once, with its UTC second, state
and leap flag, stamped within MARK_TOLERANCE_MS of when the module played it; the host's
receiver accepts the ticks with their follow-ups. Also: a busy line and a missing chip give clear
errors, and the lines unload once the transmitters have stopped.

Traffic: the guest sends to 10.0.2.2, which QEMU's user-mode networking delivers to
127.0.0.1 on the host. Every wait has a timeout; QEMU and the receivers are killed on exit.
"""

import bisect
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "lib"))
from qemu_guest import (  # noqa: E402 (found through the path above)
    arguments,
    BOOT_TIMEOUT,
    Check,
    Guest,
    HostProcess,
    free_udp_port,
)

# (case, line, --calibration, input): holdover through missing pulses; a module delay of
# 35 ms; spikes and drop-outs on DCD.
CASES = [
    ("missing-pulses-flywheel", 0, "0ms", "--gpio /dev/gpiochip0 --line 0"),
    ("cest-summer-module-delay-35ms", 1, "35ms", "--gpio /dev/gpiochip0 --line 1"),
    ("glitches-spikes-and-dropouts", 2, "0ms", "--serial /dev/ttySIG0"),
]
# The cases start with 50 s of silence: play from just before the first pulse...
SKIP_MS = 49_000
# ...until this long after the first synchronized mark (holdover, a second 59, a new minute).
PLAY_AFTER_SYNC_MS = 72_000
# How late a mark's stamp may be after the change was really played (the player's own
# lateness, reported by the module, is added). GPIO edges are stamped in the interrupt; DCD
# edges when the waiting thread runs: milliseconds later under TCG, tens of microseconds on
# real hardware.
MARK_TOLERANCE_MS = {"gpio": 1.0, "serial": 15.0}
# The decoders' window around a second's slot: a level change the player made later than
# this was not the case's signal, and a failure is the player's, not the decoder's.
DECODER_WINDOW_MS = 15.0
# Exit status of a run whose signal was played, or a DCD edge stamped, later than the window
# on some line: it did not test the decoders.
TOO_LATE = 3
# A tick leaves after its mark: at once for a pulse; for a holdover second or a minute mark
# once the slot window (15 ms) and the allowance for late edges (50 ms) have passed; the
# module delay (35 ms) and TCG add to that.
MAX_TX_OFFSET_MS = 200.0
KEY_ID, KEY_HEX = 7, "6f3a" * 16
IDS = ["0x0dcf0000", "0x0dcf0001", "0x0dcf0002"]
LOCK_AFTER = 2  # `pulse listen` locks on its 3rd consistent tick: the first with a sample
CHUNK = 60  # schedule triples per shell command (the serial line's canonical limit is 4095)


def load_cases(path):
    """name -> {calibration_ms, pulses: [(start, width)], expect: [(mark, second, state, leap)]}."""
    cases, case = {}, None
    for line in Path(path).read_text().splitlines():
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        if f[0] == "case":
            kv = dict(x.split("=", 1) for x in f[1:])
            case = cases[kv["name"]] = {
                "calibration_ms": int(kv["calibration_ms"]),
                "pulses": [],
                "expect": [],
            }
        elif f[0] == "pulse":
            case["pulses"].append((int(f[1]), int(f[2])))
        elif f[0] == "expect":
            case["expect"].append((int(f[1]), int(f[2]), f[3], len(f) > 4 and f[4] == "leap"))
    return cases


def schedule(case, line):
    """The level changes to play on `line` (ms from start), the marks that fall in them, and
    the rises of the pulses that mark a second (not spikes or a drop-out's second half)."""
    # Mid-second: the last second's pulse (and a second 59's gap) is whole, its spike is not.
    end = case["expect"][0][0] + PLAY_AFTER_SYNC_MS - 500
    triples, rises = [], []
    for start, width in case["pulses"]:
        if SKIP_MS <= start < end:
            triples += [(line, start - SKIP_MS, 1), (line, start + width - SKIP_MS, 0)]
            if (start - case["calibration_ms"]) % 1000 == 0:
                rises.append(start - SKIP_MS)
    return triples, [e for e in case["expect"] if e[0] < end], rises


def stamp_delays(err, start_ns, rises):
    """For each second's pulse: ms from when it was played to the first rising edge the
    transmitter stamped after it (`DCF77 edge` at debug level); None if there was none before
    the next second. A DCD edge is stamped when the waiting thread runs, so this is that
    thread's wake-up latency (or a change it missed)."""
    stamps = sorted(
        (int(m.group(1)) - start_ns) / 1e6
        for m in (re.search(r"DCF77 edge at_ns=(\d+) active=true", ln) for ln in err)
        if m
    )
    delays = []
    for r in rises:
        i = bisect.bisect_left(stamps, r - 1.0)
        delays.append(stamps[i] - r if i < len(stamps) and stamps[i] < r + 500 else None)
    return delays


class Receiver(HostProcess):
    """`ntp-offset pulse listen --report` on the host; collects its samples as they come (its
    log, in `log`, is what `stop()` returns)."""

    def __init__(self, binary, port, key_file, transmitter, log):
        self.port = port
        self.samples = []
        argv = [binary, "pulse", "listen", "--log-level", "debug"]
        argv += ["--listen", f"127.0.0.1:{port}", "--key-file", key_file]
        argv += ["--transmitter", transmitter, "--report"]
        super().__init__(argv, log, on_line=lambda raw: self.samples.append(json.loads(raw)))


def main():
    args = arguments("signals")
    cases = load_cases(args.signals)
    plays = {line: (name, cal, *schedule(cases[name], line)) for name, line, cal, _ in CASES}
    dcd_late_ms = 0.0
    inputs = {line: source for _, line, _, source in CASES}
    started = time.monotonic()
    late_ms = []
    tmp = tempfile.TemporaryDirectory()
    key_file = Path(tmp.name) / "keys"
    key_file.write_text(f"{KEY_ID} {KEY_HEX}\n")
    key_file.chmod(0o600)
    ports = [free_udp_port() for _ in CASES]
    receivers = [
        Receiver(args.sender, ports[i], str(key_file), IDS[i], Path(tmp.name) / f"listen-{i}.log")
        for i in range(len(CASES))
    ]
    guest = Guest(args, ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile="])
    check = Check()
    try:
        guest.wait_for("GUEST-READY", BOOT_TIMEOUT)
        print(f"guest up after {time.monotonic() - started:.1f} s", flush=True)
        guest.ok("insmod /signal_lines.ko")
        chips = guest.ok("ls /dev/gpiochip*")
        check("the test chip is the guest's only GPIO chip", chips == ["/dev/gpiochip0"], chips)
        check("the test serial port is there", guest.run("test -c /dev/ttySIG0")[0] == 0)
        guest.ok(f"echo '{KEY_ID} {KEY_HEX}' > /tmp/keys && chmod 600 /tmp/keys")

        print("schedules and transmitters:", flush=True)
        for line, (name, cal, triples, expect, _) in plays.items():
            print(
                f"  line {line} ({inputs[line]}): {name}, {len(triples)} level changes, "
                f"{len(expect)} marks expected, --calibration {cal}",
                flush=True,
            )
            for i in range(0, len(triples), CHUNK):
                text = " ".join(f"{a} {b} {c}" for a, b, c in triples[i : i + CHUNK])
                guest.ok(f"echo '{text}' > /sys/kernel/signal_lines/schedule")
            level = "info" if "--gpio" in inputs[line] else "debug"  # DCD: every stamp
            guest.ok(
                f"ntp-offset pulse send --log-level {level} --source dcf77 {inputs[line]} "
                f"--calibration {cal} --key-file /tmp/keys --id {IDS[line]} "
                f"--to 10.0.2.2:{ports[line]} --report > /tmp/send{line}.out "
                f"2> /tmp/send{line}.err &"
            )
        time.sleep(1.0)  # the transmitters open their lines

        for chip, says, what in (
            (
                "gpiochip0",
                "cannot request line 0 of /dev/gpiochip0",
                "a second transmitter on a busy line",
            ),
            ("gpiochip7", "/dev/gpiochip7", "a missing chip"),
        ):
            rc, out = guest.run(
                f"ntp-offset pulse send --source dcf77 --gpio /dev/{chip} --line 0 "
                "--unauthenticated --to 10.0.2.2:9"
            )
            check(f"{what}: a clear error", rc != 0 and any(says in ln for ln in out), (rc, out))

        guest.ok("echo 1 > /sys/kernel/signal_lines/start")
        start_ns = int(guest.ok("cat /sys/kernel/signal_lines/start_ns")[-1])
        total = [len(plays[line][2]) for line in sorted(plays)]
        longest = max(t[-1][1] for _, _, t, _, _ in plays.values()) / 1000
        print(f"playing {longest:.0f} s of signal", flush=True)
        deadline = time.monotonic() + longest + 30
        while True:
            played = [int(x) for x in guest.ok("cat /sys/kernel/signal_lines/played")[-1].split()]
            if played == total or time.monotonic() > deadline:
                break
            time.sleep(10)
        check("every line played every level change", played == total, (played, total))
        late_ms = [
            int(x) / 1e6 for x in guest.ok("cat /sys/kernel/signal_lines/late_ns")[-1].split()
        ]
        print(
            f"the player's worst lateness per line: {', '.join(f'{x:.3f} ms' for x in late_ms)}",
            flush=True,
        )
        time.sleep(2.5)  # the last ticks reach the host
        guest.ok("kill %1 %2 %3; wait")

        for line, (name, cal, _, expect, rises) in sorted(plays.items()):
            print(f"line {line} ({name}, {inputs[line]}):", flush=True)
            out = guest.ok(f"cat /tmp/send{line}.out")
            err = guest.ok(f"cat /tmp/send{line}.err")
            if "--serial" in inputs[line]:
                delays = stamp_delays(err, start_ns, rises)
                known = [d for d in delays if d is not None]
                dcd_late_ms = max(known + [0.0]) if len(known) == len(delays) else float("inf")
                print(
                    f"  the DCD thread stamped {len(known)} of {len(delays)} second pulses, "
                    f"median {sorted(known)[len(known) // 2] if known else 0:.3f} ms and "
                    f"at most {max(known + [0.0]):.3f} ms after they were played",
                    flush=True,
                )
            err = [ln for ln in err if "DCF77 edge" not in ln]
            marks = [json.loads(ln) for ln in out if ln.startswith('{"mark_ns"')]
            sent = {
                json.loads(ln)["second"]: json.loads(ln)["tx_offset_ns"]
                for ln in out
                if ln.startswith('{"second"')
            }
            got = [(m["second"], m["state"][:4], m["leap_second"]) for m in marks[: len(expect)]]
            want = [(s, st[:4], leap) for _, s, st, leap in expect]
            check(
                f"{len(expect)} marks decoded with their second, state and leap flag",
                got == want,
                (
                    next(((g, w) for g, w in zip(got + [None] * len(want), want) if g != w), None),
                    err[-12:],
                ),
            )
            errors = [
                (m["mark_ns"] - start_ns) / 1e6 - (mark - SKIP_MS)
                for m, (mark, *_) in zip(marks, expect)
            ]
            worst = max(map(abs, errors), default=float("inf"))
            tolerance = MARK_TOLERANCE_MS["gpio" if "--gpio" in inputs[line] else "serial"]
            check(
                f"each mark within {tolerance} ms of when it was played, at most "
                f"{late_ms[line]:.3f} ms late (worst {worst:.3f} ms from the true mark)",
                all(-tolerance <= e <= late_ms[line] + tolerance for e in errors),
                errors,
            )
            extra = marks[len(expect) :]
            check(
                "after the signal ends: holdover ticks, one per second",
                all(m["state"] == "holdover" for m in extra)
                and [m["second"] for m in extra]
                == list(range(want[-1][0] + 1, want[-1][0] + 1 + len(extra))),
                extra[:5],
            )
            offsets = [sent.get(s) for s, *_ in want]
            check(
                f"every tick has its follow-up within {MAX_TX_OFFSET_MS:.0f} ms of the mark "
                f"(max {max(o or 0 for o in offsets) / 1e6:.1f} ms)",
                all(o is not None and 0 <= o <= MAX_TX_OFFSET_MS * 1e6 for o in offsets),
                offsets,
            )
            check(
                "the transmitter logged synchronization and holdover",
                any("synchronized; sending ticks" in ln for ln in err)
                and (
                    not any(st == "holdover" for _, _, st, _ in expect)
                    or any("holdover from the oscillator" in ln for ln in err)
                ),
                err[-10:],
            )

        print("the host's receivers (`pulse listen`, MACs verified):", flush=True)
        for line, receiver in enumerate(receivers):
            stderr = receiver.stop()
            want = [s for _, s, _, _ in plays[line][3]]
            seconds = [s["second"] for s in receiver.samples]
            check(
                f"line {line}: the expected seconds as samples, from the {LOCK_AFTER + 1}rd tick "
                f"({len(seconds)} samples)",
                seconds[: len(want) - LOCK_AFTER] == want[LOCK_AFTER:],
                (
                    sorted(set(want) - set(seconds)),
                    [ln for ln in stderr.splitlines() if "rejected" in ln or "WARN" in ln][:10],
                ),
            )
            check(
                f"line {line}: every sample corrected by its follow-up",
                all(
                    s["tx_offset_ns"] is not None
                    for s in receiver.samples[: len(want) - LOCK_AFTER]
                ),
            )

        guest.ok("rmmod signal_lines")
        check(
            "the test lines unload once free",
            guest.run("test -e /dev/gpiochip0 || test -e /dev/ttySIG0")[0] != 0,
        )
        dmesg = "\n".join(guest.ok("dmesg"))
        check(
            "no warning or oops in dmesg",
            not any(w in dmesg for w in ("WARNING:", "BUG:", "Oops")),
            dmesg[-2000:],
        )
    except AssertionError as e:
        check("guest interaction", False, e)
        print("\n".join(guest.log[-40:]), file=sys.stderr)
    finally:
        guest.stop()
        for r in receivers:
            r.stop()
    rc = check.verdict("pulse send --source dcf77 on GPIO and DCD in a real kernel", started)
    if rc != 0 and any(x > DECODER_WINDOW_MS for x in late_ms):
        print(
            f"the player (an hrtimer under TCG) was up to {max(late_ms):.3f} ms late, beyond "
            f"the decoders' {DECODER_WINDOW_MS:.0f} ms window: this run did not play the "
            "signal cases as written",
            flush=True,
        )
        return TOO_LATE
    if rc != 0 and dcd_late_ms > DECODER_WINDOW_MS:
        print(
            f"the DCD thread stamped a second's pulse {dcd_late_ms:.3f} ms late (or missed "
            f"it), beyond the decoders' {DECODER_WINDOW_MS:.0f} ms window: the guest's "
            "scheduling under TCG, not the decoder, lost that second",
            flush=True,
        )
        return TOO_LATE
    return rc


if __name__ == "__main__":
    sys.exit(main())
