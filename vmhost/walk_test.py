#!/usr/bin/env python3
"""A smeared move followed by clients at their distribution's defaults (vmhost/run walk builds
the guests): two QEMU guests on a bridge in a network namespace this test creates, g0 running
chronyd as Debian configures it (`iburst`, polls 64 s growing to 1024 s, `makestep 1 3`), g1
ntpsec's ntpd as it ships (polls 64-1024 s, steps an offset past 128 ms that lasted 300 s).

Both start in view w1 (+distance) of a balanced group. After `--settle-minutes` a reload
removes w1, and the server walks both to w0 (0 s) at `--rate` ppm with `--ramp` ramps, as it
moves a VM. The test reads each guest's clock against the time it is served every 16 s from
the start of the walk until `--after-minutes` past its end. Checks: neither client stepped
(its log); each clock stayed within ntpd's 128-ms step threshold of the served time beyond the
readings' bounds (past it, ntpd steps after 300 s, and a cron job runs twice or not at all);
each ends at w0's offset within the bound it followed by. Prints each guest's worst deviation
and its readings. The suite's guests poll every 4-8 s (vmhost/run load); this one takes the
walk's length (`ramp + distance / rate`: 80 min for the defaults below), so it is run by hand
or by scripts/bench-spread. Traffic stays in the namespace; every wait has a timeout.
"""

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from qemu_guest import arguments, Check, Namespace  # noqa: E402
from served import ServedClocks, config_head, workdir  # noqa: E402
from spread_test import BOOT_TIMEOUT, Server, diagnose, tear_down, vm_guest  # noqa: E402

SERVER = "198.18.0.1"
CLIENTS = ["chrony-default", "ntpd-default"]
NTPD = 1
# ntpd steps an offset beyond this once it has lasted 300 s (its `stepout`).
STEP_THRESHOLD = 0.128
READ_EVERY = 16
SETTLE_TIMEOUT = 300


def parse_seconds(text):
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def write_config(path, state, views, args):
    text = config_head(SERVER, state, {v: offsets(args)[v] for v in views})
    names = ", ".join(f'"{v}"' for v in views)
    text += (
        f'[[spread]]\nname = "walk"\nviews = [{names}]\nclients = ["198.18.0.0/15"]\n'
        f'move = "smear"\nmove_rate = {args.rate}\nmove_ramp = "{args.ramp}"\n'
        'place = "count"\n'
    )
    Path(path).write_text(text)


def offsets(args):
    return {"w0": 0.0, "w1": args.distance}


def settle(h, args):
    """Until both clocks are at w1's offset; then `--settle-minutes` for the clients' loops."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        offs = [g.clock_offset() for g in h.guests]
        if all(abs(o - args.distance) <= b + 0.05 for o, b in offs):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"guests not at w1 within {SETTLE_TIMEOUT} s: {offs}")
        time.sleep(2)
    print(f"at w1: {offs}; {args.settle_minutes} min for the clients' loops", flush=True)
    time.sleep(60 * args.settle_minutes)


def follow(h, args):
    """Reads both clocks every READ_EVERY s from the walk's start until `--after-minutes` past
    its end; returns each guest's worst deviation beyond the readings' bounds."""
    walk_s = parse_seconds(args.ramp) + args.distance / (args.rate * 1e-6)
    deadline = time.monotonic() + 1.5 * walk_s + 600
    worst, ended = [0.0] * len(h.guests), None
    while ended is None or time.monotonic() < ended + 60 * args.after_minutes:
        for i in range(len(h.guests)):
            worst[i] = max(worst[i], h.deviation(i))
        c = h.clients()
        if ended is None and all(c.get(a, {}).get("walk_left_s") is None for a in h.addrs):
            ended = time.monotonic()
            print(f"walks ended after {time.monotonic() - h.walk_start:.0f} s", flush=True)
        if time.monotonic() > deadline:
            raise AssertionError(f"walks not ended within {deadline - h.walk_start:.0f} s")
        time.sleep(READ_EVERY)
    return worst


def run(h, config, args, check):
    started = time.monotonic()
    for g in h.guests:
        g.wait_for("GUEST-READY", max(1, started + BOOT_TIMEOUT - time.monotonic()))
    settle(h, args)
    before = [h.steps(i) for i in range(len(h.guests))]
    write_config(config, h.state, ["w0"], args)
    h.server.reload()
    h.walk_start = time.monotonic()
    print(
        f"walking {args.distance} s at {args.rate} ppm, ramps {args.ramp} "
        f"(about {parse_seconds(args.ramp) + args.distance / (args.rate * 1e-6):.0f} s)",
        flush=True,
    )
    worst = follow(h, args)
    after = [h.steps(i) for i in range(len(h.guests))]
    for i, name in enumerate(CLIENTS):
        h.print_trace(i, rows_shown=24)
        off, bound = h.guests[i].clock_offset()
        readings = sum(1 for r in h.trace if r[1] == i)
        check(
            f"{name} followed the walk without a step, within {worst[i] * 1000:.0f} ms of the "
            f"served time beyond the readings' bounds ({readings} readings; under ntpd's "
            f"{STEP_THRESHOLD * 1000:.0f} ms step threshold)",
            after[i] == before[i] and worst[i] < STEP_THRESHOLD,
            (before[i], after[i]),
        )
        check(
            f"{name} ends at w0, within {worst[i] * 1000:.0f} ms ({off * 1000:+.0f} ms)",
            abs(off) <= bound + worst[i],
        )


def main():
    args = arguments(distance=0.6, rate=200, ramp="30m", settle_minutes=5, after_minutes=10)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    check = Check()
    tmp, state, config = workdir()
    addrs = [f"198.18.9.{10 + i}" for i in range(len(CLIENTS))]
    (state / "spread-walk.table").write_text("".join(f"{a} w1 1 1\n" for a in addrs))
    write_config(config, state, ["w0", "w1"], args)
    guests, server = [], None
    ns = Namespace(f"nto-vmwalk-{os.getpid()}", f"{SERVER}/15", len(CLIENTS))
    try:
        server = Server(ns, args.sender, config, state.parent / "serve.log")
        for i, client in enumerate(CLIENTS):
            # Not the other guest tests' MACs: their servers see these QEMU processes too.
            mac = f"52:54:00:18:09:{10 + i:02x}"
            guests.append(vm_guest(args, ns, i, mac, addrs[i], client))
        h = ServedClocks(args, ns, state, guests, addrs, offsets(args), [NTPD])
        h.server = server
        run(h, config, args, check)
    except AssertionError as e:
        check("guest interaction", False, e)
        diagnose(guests, CLIENTS, server)
    finally:
        tear_down(guests, server, ns)
    return check.verdict("clients at their defaults follow a smeared move", started)


if __name__ == "__main__":
    sys.exit(main())
