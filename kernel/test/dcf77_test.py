#!/usr/bin/env python3
"""Drives `ntp-offset pulse send --source dcf77` on a GPIO line in the test guest
(kernel/test/run builds it): the test chip signal_gpio plays two DCF77 signal cases from
testvectors/dcf77-signals.txt on two lines, the kernel stamps their edges (GPIO character
device), one transmitter per line decodes them and sends signed ticks to the host, where
`ntp-offset pulse listen` verifies and reports them.

Checks, per line: every mark the case expects is decoded once, with its UTC second, state
and leap flag, stamped within MARK_TOLERANCE_MS of the true mark; the host's receiver
accepts the ticks with their follow-ups. Also: a busy line and a missing chip give clear
errors, and the chip unloads once the transmitters have stopped.

Traffic: the guest sends to 10.0.2.2, which QEMU's user-mode networking delivers to
127.0.0.1 on the host. Every wait has a timeout; QEMU and the receivers are killed on exit.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from guest import BOOT_TIMEOUT, Check, Guest, die_with_parent, free_udp_port

# (case, line, --calibration): holdover through missing pulses; a module delay of 35 ms.
CASES = [("missing-pulses-flywheel", 0, "0ms"), ("cest-summer-module-delay-35ms", 1, "35ms")]
# The cases start with 50 s of silence: play from just before the first pulse...
SKIP_MS = 49_000
# ...until this long after the first synchronized mark (holdover, a second 59, a new minute).
PLAY_AFTER_SYNC_MS = 72_000
MARK_TOLERANCE_MS = 5.0
# A tick leaves after its mark: at once for a pulse, when the slot window closes (15 ms)
# for a holdover second; TCG adds milliseconds.
MAX_TX_OFFSET_MS = 100.0
KEY_ID, KEY_HEX = 7, "6f3a" * 16
IDS = ["0x0dcf0000", "0x0dcf0001"]
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
            case = cases[kv["name"]] = {"calibration_ms": int(kv["calibration_ms"]), "pulses": [],
                                        "expect": []}
        elif f[0] == "pulse":
            case["pulses"].append((int(f[1]), int(f[2])))
        elif f[0] == "expect":
            case["expect"].append((int(f[1]), int(f[2]), f[3], len(f) > 4 and f[4] == "leap"))
    return cases


def schedule(case, line):
    """The level changes to play on `line` (ms from start), and the marks that fall in them."""
    end = case["expect"][0][0] + PLAY_AFTER_SYNC_MS
    triples = []
    for start, width in case["pulses"]:
        if SKIP_MS <= start < end:
            triples += [(line, start - SKIP_MS, 1), (line, start + width - SKIP_MS, 0)]
    last_pulse = max(start for start, _ in case["pulses"] if start < end)
    expect = [e for e in case["expect"] if e[0] <= last_pulse - case["calibration_ms"]]
    return triples, expect


class Receiver:
    """`ntp-offset pulse listen --report` on the host; collects its samples."""

    def __init__(self, binary, port, key_file, transmitter):
        self.port = port
        self.samples = []
        self.proc = subprocess.Popen(
            [binary, "pulse", "listen", "--log-level", "warn", "--listen", f"127.0.0.1:{port}",
             "--key-file", key_file, "--transmitter", transmitter, "--report"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=die_with_parent)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            self.samples.append(json.loads(raw))

    def stop(self):
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode(errors="replace")


def main():
    p = argparse.ArgumentParser()
    for a in ("qemu", "bios", "kernel", "initrd", "sender", "signals"):
        p.add_argument(f"--{a}", required=True)
    args = p.parse_args()
    cases = load_cases(args.signals)
    plays = {line: (name, cal, *schedule(cases[name], line)) for name, line, cal in CASES}
    started = time.monotonic()
    tmp = tempfile.TemporaryDirectory()
    key_file = Path(tmp.name) / "keys"
    key_file.write_text(f"{KEY_ID} {KEY_HEX}\n")
    key_file.chmod(0o600)
    ports = [free_udp_port() for _ in CASES]
    receivers = [Receiver(args.sender, ports[i], str(key_file), IDS[i]) for i in range(len(CASES))]
    guest = Guest(args, ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile="])
    check = Check()
    try:
        guest.wait_for("GUEST-READY", BOOT_TIMEOUT)
        print(f"guest up after {time.monotonic() - started:.1f} s", flush=True)
        guest.ok("insmod /signal_gpio.ko")
        chips = guest.ok("ls /dev/gpiochip*")
        check("the test chip is the guest's only GPIO chip", chips == ["/dev/gpiochip0"], chips)
        guest.ok(f"echo '{KEY_ID} {KEY_HEX}' > /tmp/keys && chmod 600 /tmp/keys")

        print("schedules and transmitters:", flush=True)
        for line, (name, cal, triples, expect) in plays.items():
            print(f"  line {line}: {name}, {len(triples)} level changes, {len(expect)} marks "
                  f"expected, --calibration {cal}", flush=True)
            for i in range(0, len(triples), CHUNK):
                text = " ".join(f"{a} {b} {c}" for a, b, c in triples[i:i + CHUNK])
                guest.ok(f"echo '{text}' > /sys/kernel/signal_gpio/schedule")
            guest.ok(f"ntp-offset pulse send --log-level info --source dcf77 --gpio /dev/gpiochip0 "
                     f"--line {line} --calibration {cal} --key-file /tmp/keys --id {IDS[line]} "
                     f"--to 10.0.2.2:{ports[line]} --report > /tmp/send{line}.out "
                     f"2> /tmp/send{line}.err &")
        time.sleep(1.0)  # the transmitters request their lines

        rc, out = guest.run("ntp-offset pulse send --source dcf77 --gpio /dev/gpiochip0 --line 0 "
                            "--unauthenticated --to 10.0.2.2:9")
        check("a second transmitter on a busy line: a clear error",
              rc != 0 and any("cannot request line 0 of /dev/gpiochip0" in l for l in out), (rc, out))
        rc, out = guest.run("ntp-offset pulse send --source dcf77 --gpio /dev/gpiochip7 --line 0 "
                            "--unauthenticated --to 10.0.2.2:9")
        check("a missing chip: a clear error",
              rc != 0 and any("/dev/gpiochip7" in l for l in out), (rc, out))

        guest.ok("echo 1 > /sys/kernel/signal_gpio/start")
        start_ns = int(guest.ok("cat /sys/kernel/signal_gpio/start_ns")[-1])
        total = [len(plays[line][2]) for line in sorted(plays)]
        longest = max(t[-1][1] for _, _, t, _ in plays.values()) / 1000
        print(f"playing {longest:.0f} s of signal", flush=True)
        deadline = time.monotonic() + longest + 30
        while True:
            played = [int(x) for x in guest.ok("cat /sys/kernel/signal_gpio/played")[-1].split()]
            if played == total or time.monotonic() > deadline:
                break
            time.sleep(10)
        check("the chip played every level change", played == total, (played, total))
        time.sleep(2.5)  # the last ticks reach the host
        guest.ok("kill %1 %2; wait")

        for line, (name, cal, _, expect) in sorted(plays.items()):
            print(f"line {line} ({name}):", flush=True)
            out = guest.ok(f"cat /tmp/send{line}.out")
            marks = [json.loads(l) for l in out if l.startswith('{"mark_ns"')]
            sent = {json.loads(l)["second"]: json.loads(l)["tx_offset_ns"]
                    for l in out if l.startswith('{"second"')}
            got = [(m["second"], m["state"][:4], m["leap"]) for m in marks[:len(expect)]]
            want = [(s, st[:4], leap) for _, s, st, leap in expect]
            check(f"{len(expect)} marks decoded with their second, state and leap flag",
                  got == want, next(((g, w) for g, w in zip(got + [None] * len(want), want)
                                     if g != w), None))
            errors = [(m["mark_ns"] - start_ns) / 1e6 - (mark - SKIP_MS)
                      for m, (mark, *_) in zip(marks, expect)]
            worst = max(map(abs, errors), default=float("inf"))
            check(f"each mark within {MARK_TOLERANCE_MS} ms of the true one (worst {worst:.3f} ms)",
                  worst <= MARK_TOLERANCE_MS, errors)
            extra = marks[len(expect):]
            check("after the signal ends: holdover ticks, one per second",
                  all(m["state"] == "holdover" for m in extra) and
                  [m["second"] for m in extra] == list(range(want[-1][0] + 1, want[-1][0] + 1 + len(extra))),
                  extra[:5])
            offsets = [sent.get(s) for s, *_ in want]
            check(f"every tick has its follow-up within {MAX_TX_OFFSET_MS:.0f} ms of the mark "
                  f"(max {max(o or 0 for o in offsets) / 1e6:.1f} ms)",
                  all(o is not None and 0 <= o <= MAX_TX_OFFSET_MS * 1e6 for o in offsets), offsets)
            err = guest.ok(f"cat /tmp/send{line}.err")
            check("the transmitter logged synchronization and holdover",
                  any("synchronized; sending ticks" in l for l in err) and
                  (not any(st == "holdover" for _, _, st, _ in expect) or
                   any("holdover from the oscillator" in l for l in err)), err[-10:])

        print("the host's receivers (`pulse listen`, MACs verified):", flush=True)
        for line, receiver in enumerate(receivers):
            stderr = receiver.stop()
            want = [s for _, s, _, _ in plays[line][3]]
            seconds = [s["second"] for s in receiver.samples]
            check(f"line {line}: the expected seconds as samples, from the {LOCK_AFTER + 1}rd tick "
                  f"({len(seconds)} samples)",
                  seconds[:len(want) - LOCK_AFTER] == want[LOCK_AFTER:], (seconds[:5], want[:5], stderr[-500:]))
            check(f"line {line}: every sample corrected by its follow-up",
                  all(s["tx_offset_ns"] is not None for s in receiver.samples[:len(want) - LOCK_AFTER]))

        guest.ok("rmmod signal_gpio")
        check("the chip unloads once its lines are free", guest.run("test -e /dev/gpiochip0")[0] != 0)
        dmesg = "\n".join(guest.ok("dmesg"))
        check("no warning or oops in dmesg",
              not any(w in dmesg for w in ("WARNING:", "BUG:", "Oops")), dmesg[-2000:])
    except AssertionError as e:
        check("guest interaction", False, e)
        print("\n".join(guest.log[-40:]), file=sys.stderr)
    finally:
        guest.stop()
        for r in receivers:
            if r.proc.poll() is None:
                r.proc.kill()
    took = time.monotonic() - started
    print(f"{'PASS' if check.failures == 0 else 'FAIL'}: pulse send --source dcf77 on a GPIO line "
          f"in a real kernel ({check.failures} failures, {took:.0f} s)", flush=True)
    return 0 if check.failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
