#!/usr/bin/env python3
"""Drives the crudepps test guest (kernel/test/run builds it): boots it under QEMU (TCG),
loads the module, sends ticks and bad packets, and checks /dev/pps0 and the counters.

Traffic: ticks reach the guest through QEMU's user-mode UDP forwarding from 127.0.0.1;
broadcasts, fragments and bad checksums are raw Ethernet frames sent to a QEMU socket netdev
on 127.0.0.1. Nothing leaves loopback. Every wait has a timeout; QEMU is killed on any exit.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "lib"))
from qemu_guest import (  # noqa: E402
    arguments,
    BOOT_TIMEOUT,
    GUEST_MAC,
    Check,
    Guest,
    HostProcess,
    free_udp_port,
)

HOST_MAC = bytes.fromhex("525400aabb01")


def load_vectors(path):
    """name -> bytes, from testvectors/tick-v1.txt."""
    vectors = {}
    with open(path) as f:
        for line in f:
            if not line.startswith("vector "):
                continue
            fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
            vectors[fields["name"]] = bytes.fromhex(fields.get("hex", ""))
    return vectors


def leap_second(tick):
    """The tick flagged as the inserted leap second (flags bit 2)."""
    b = bytearray(tick)
    b[6] |= 0x04
    return bytes(b)


def with_second(tick, second, sequence):
    """A tick with another second and sequence (the module does not check the MAC)."""
    b = bytearray(tick)
    b[24:28] = struct.pack(">I", sequence)
    b[32:40] = struct.pack(">q", second)
    return bytes(b)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(payload, dport, broadcast=True, first_fragment=False, bad_checksum=False):
    """An Ethernet frame with an IPv4/UDP datagram from 10.0.3.2 to the guest's eth1."""
    src, dst = socket.inet_aton("10.0.3.2"), socket.inet_aton(
        "10.0.3.255" if broadcast else "10.0.3.15"
    )
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack(">BBH", 0, 17, udp_len)
    udp = struct.pack(">HHHH", 40000, dport, udp_len, 0) + payload
    csum = checksum(pseudo + udp) or 0xFFFF
    if bad_checksum:
        csum ^= 0x0101
    udp = udp[:6] + struct.pack(">H", csum) + udp[8:]
    flags = 0x2000 if first_fragment else 0  # MF
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 1, flags, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack(">H", checksum(ip)) + ip[12:]
    eth_dst = b"\xff" * 6 if broadcast else GUEST_MAC
    return eth_dst + HOST_MAC + b"\x08\x00" + ip + udp


def frame6(payload, dport):
    """An Ethernet frame with an IPv6/UDP datagram from fe80::2 to all nodes (ff02::1)."""
    src, dst = socket.inet_pton(socket.AF_INET6, "fe80::2"), socket.inet_pton(
        socket.AF_INET6, "ff02::1"
    )
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack(">I3xB", udp_len, 17)
    udp = struct.pack(">HHHH", 40000, dport, udp_len, 0) + payload
    udp = udp[:6] + struct.pack(">H", checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    ip = struct.pack(">IHBB16s16s", 6 << 28, udp_len, 17, 64, src, dst)
    return bytes.fromhex("333300000001") + HOST_MAC + b"\x86\xdd" + ip + udp


class CrudeppsGuest(Guest):
    """The guest with crudepps' counters and PPS device at hand."""

    def __init__(self, args, netdevs):
        super().__init__(args, netdevs)
        self.pps = "pps0"

    def counters(self):
        out = self.ok("cd /sys/kernel/crudepps && grep -H . *; cd /")
        return {k: int(v) for k, v in (ln.strip().split(":", 1) for ln in out if ":" in ln)}

    def assert_seq(self):
        """(timestamp, sequence) of the last assert event, from sysfs."""
        line = self.ok(f"cat /sys/class/pps/{self.pps}/assert")[-1].strip()
        stamp, seq = line.split("#")
        return float(stamp), int(seq)


def delta(before, after):
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)
    }


def pps_source(guest, args, check, tick_port):
    """`pulse send --source pps` in the guest, its pulses crudepps' asserts from the host's
    ticks, its own ticks to `pulse listen` on the host (QEMU's user-mode network: 10.0.2.2 is
    the host's loopback). The pulses are numbered by the guest's clock, set by hand first."""
    print(
        "a PPS device as the reference of a transmitter in the guest (pulse send --source pps):",
        flush=True,
    )
    time.sleep((0.985 - time.time() % 1) % 1)
    target = int(time.time()) + 1
    guest.ok(f"date -u -s '{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(target))}' > /dev/null")
    off, bound = guest.clock_offset()
    listen_port = free_udp_port()
    run_dir = tempfile.mkdtemp()
    env = {**os.environ, "RUNTIME_DIRECTORY": run_dir}
    reported = []
    listener = HostProcess(
        [
            args.sender,
            "pulse",
            "listen",
            "--listen",
            f"127.0.0.1:{listen_port}",
            "--allow-unauthenticated",
            "--report",
        ],
        Path(run_dir) / "listen.log",
        on_line=reported.append,
        env={"RUNTIME_DIRECTORY": run_dir},
    )
    try:
        # In a subshell, out of the console's job table (the stages below count on %1, %2).
        guest.ok(
            f"(ntp-offset pulse send --source pps --device /dev/pps0 --unauthenticated "
            f"--id 0x77 --holdover 3s --to 10.0.2.2:{listen_port} > /tmp/ppssend.log 2>&1 & "
            f"echo $! > /tmp/ppssend.pid)"
        )
        time.sleep(1)
        sent = subprocess.run(
            [
                args.sender,
                "--log-level",
                "warn",
                "pulse",
                "send",
                "--local",
                "--unauthenticated",
                "--id",
                "0x1234",
                "--count",
                "8",
                "--report",
                "--to",
                f"127.0.0.1:{tick_port}",
            ],
            capture_output=True,
            timeout=20,
            text=True,
            env=env,
        )
        host_seconds = [
            json.loads(ln)["second"] for ln in sent.stdout.splitlines() if '"second"' in ln
        ]
        # 3 s of holdover ticks, then unsynchronized ones.
        time.sleep(6)
        guest.ok("kill $(cat /tmp/ppssend.pid); sleep 0.3")
    finally:
        err = listener.stop()
    ticks = [json.loads(ln) for ln in reported if ln.startswith("{")]
    by_second = {t["second"]: t for t in ticks}
    guest_log = "\n".join(guest.ok("cat /tmp/ppssend.log"))
    check(
        f"the guest's clock set by hand: {off * 1e3:+.1f} ms from the host's (±{bound * 1e3:.1f})",
        abs(off) < 0.1,
        off,
    )
    # pulse listen samples a transmitter once its ticks have made a track (the first ones do).
    # A guest frozen for seconds by a busy host (steal time; seen once, beside the DCF77 guest)
    # sends no tick for the pulses it slept through: those may be missing, but every tick
    # there is must carry one of the host's seconds, and mark it (the check after this one: a
    # tick numbered a second wrong would be a second off its pulse).
    pulsed = [s for s in sorted(by_second) if host_seconds and s <= host_seconds[-1]]
    missing = [s for s in host_seconds if pulsed and s > pulsed[0] and s not in by_second]
    check(
        f"from the listener's first sample on, a tick from the guest for the host's pulses, "
        f"numbered as the host numbered them ({len(pulsed)} of {len(host_seconds)}"
        f"{f'; none for {missing}, slept through' if missing else ''})",
        len(host_seconds) == 8
        and len(pulsed) >= 3
        and set(pulsed) <= set(host_seconds)
        and len(missing) <= 3,
        (host_seconds, sorted(by_second)),
    )
    after = [s for s in sorted(by_second) if host_seconds and s > host_seconds[-1]]
    check(
        f"then, without pulses, ticks numbered on ({len(after)} seconds)",
        len(after) >= 3 and after[:3] == [host_seconds[-1] + k for k in (1, 2, 3)],
        (host_seconds, sorted(by_second)),
    )
    late = [by_second[s]["offset_ns"] / 1e6 for s in pulsed]
    check(
        f"each marks the pulse: the guest's tick minus its second {[f'{x:+.1f}' for x in late]} ms",
        all(abs(x) < 100 for x in late),
        late,
    )
    check(
        "the ticks carry their departure from the pulse (follow-ups)",
        all(by_second[s]["tx_offset_ns"] is not None for s in pulsed),
        [by_second[s] for s in pulsed],
    )
    check(
        "no pulse: holdover ticks, then unsynchronized ones",
        "pulse missing; holdover" in guest_log
        and "ticks say unsynchronized" in guest_log
        and "the transmitter is in holdover" in err,
        guest_log + "\n" + err[-1500:],
    )


def pulse_send(sender, port, count, *extra):
    """`count` unauthenticated ticks from transmitter 0x1234 to the guest's forwarded port."""
    return subprocess.run(
        [sender, "--log-level", "warn", "pulse", "send", "--local", "--unauthenticated"]
        + ["--id", "0x1234", "--count", str(count), *extra, "--to", f"127.0.0.1:{port}"],
        capture_output=True,
        timeout=20,
    )


def main():
    args = arguments("vectors")
    vectors = load_vectors(args.vectors)
    started = time.monotonic()
    tick_port, other_port, frame_port = free_udp_port(), free_udp_port(), free_udp_port()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    guest = CrudeppsGuest(
        args,
        [
            "-netdev",
            f"user,id=n0,hostfwd=udp:127.0.0.1:{tick_port}-10.0.2.15:8123,"
            f"hostfwd=udp:127.0.0.1:{other_port}-10.0.2.15:9999",
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
            "-netdev",
            f"socket,id=n1,udp=127.0.0.1:{free_udp_port()},localaddr=127.0.0.1:{frame_port}",
            "-device",
            f"virtio-net-pci,netdev=n1,romfile=,mac={GUEST_MAC.hex(':')}",
        ],
    )
    check = Check()
    try:
        guest.wait_for("GUEST-READY", BOOT_TIMEOUT)
        print(f"guest up after {time.monotonic() - started:.1f} s", flush=True)
        guest.ok("insmod /crudepps.ko")
        check(
            "/dev/pps0 is crudepps",
            guest.ok("cat /sys/class/pps/pps0/name")[-1].strip() == "crudepps",
        )
        guest.ok("ppstest /dev/pps0 > /tmp/pps.log 2>&1 &")
        time.sleep(0.5)

        def send(data, port=tick_port):
            tx.sendto(data, ("127.0.0.1", port))
            time.sleep(0.3)

        def send_frame(data):
            tx.sendto(data, ("127.0.0.1", frame_port))
            time.sleep(0.3)

        print("vectors through user-mode forwarding:", flush=True)
        tick = vectors["tick-key1"]
        c0, (_, s0) = guest.counters(), guest.assert_seq()
        send(tick)
        send(tick)  # replayed
        send(with_second(tick, 1767225601, 8))
        send(leap_second(with_second(tick, 1767225601, 9)))  # 23:59:60 repeats the number
        send(with_second(tick, 1767225601, 10))  # without the flag: a replay
        send(vectors["tick-unauthenticated-dcf77-leap"])  # another transmitter, too soon
        send(vectors["follow-up-key1"])
        send(vectors["tick-key2-after-2036"])  # unsynchronized transmitter
        for name in (
            "tick-key1-cut-to-47",
            "wrong-magic",
            "version-2",
            "kind-3",
            "tick-unauthenticated-plus-1",
            "tick-key1-cut-to-60",
            "tick-with-tx-offset",
        ):
            send(vectors[name])
        send(with_second(tick, 1767225602, 9), other_port)  # wrong port: not looked at
        last_vector_tick = time.monotonic()
        c1, (_, s1) = guest.counters(), guest.assert_seq()
        expected = {
            "matched": 3,
            "follow_ups": 1,
            "rejected_replay": 2,
            "rejected_unsynchronized": 1,
            "rejected_truncated": 1,
            "rejected_magic": 1,
            "rejected_version": 1,
            "rejected_malformed": 2,
            "rejected_length": 2,
            "rejected_transmitter": 1,
        }
        check("each vector counted once, by reason", delta(c0, c1) == expected, delta(c0, c1))
        check("three asserts for the three valid ticks (one a leap second)", s1 - s0 == 3, (s0, s1))

        print("ticks from `ntp-offset pulse send`:", flush=True)
        time.sleep(max(0.0, 3.2 - (time.monotonic() - last_vector_tick)))
        out = pulse_send(args.sender, tick_port, 5)
        check("transmitter ran", out.returncode == 0, out.stderr.decode())
        time.sleep(0.5)
        c2, (_, s2) = guest.counters(), guest.assert_seq()
        check(
            "5 ticks: 5 asserts, 5 follow-ups, nothing rejected",
            delta(c1, c2) == {"matched": 5, "follow_ups": 5} and s2 - s1 == 5,
            (delta(c1, c2), s2 - s1),
        )
        log = [ln for ln in guest.ok("cat /tmp/pps.log") if "assert" in ln]
        stamps = [float(ln.split("assert")[1].split(",")[0]) for ln in log]
        seqs = [int(ln.split("sequence:")[1].split("-")[0]) for ln in log]
        gaps = [b - a for a, b in zip(stamps[-5:], stamps[-4:])]
        check(
            "ppstest saw every assert once, in order",
            seqs == list(range(seqs[0], seqs[0] + len(seqs))) and len(seqs) == s2 - s0,
            (seqs, s0, s2),
        )
        check(
            "ppstest: the transmitter's asserts 1 s apart",
            len(gaps) == 4 and all(abs(g - 1.0) < 0.05 for g in gaps),
            gaps,
        )

        pps_source(guest, args, check, tick_port)
        c2, (_, s2) = guest.counters(), guest.assert_seq()

        print("legacy `time` broadcasts with legacy=0:", flush=True)
        send_frame(frame(b"time", 8000))
        c3, (_, s3) = guest.counters(), guest.assert_seq()
        check(
            "legacy packet rejected, no assert",
            delta(c2, c3) == {"rejected_legacy_disabled": 1} and s3 == s2,
            (delta(c2, c3), s3 - s2),
        )

        print("unload and reload while ppstest reads:", flush=True)
        guest.ok("rmmod crudepps")
        check(
            "unloaded while /dev/pps0 is open: device and counters gone",
            guest.run("test -e /sys/class/pps/pps0/name || test -e /sys/kernel/crudepps")[0] != 0,
        )
        time.sleep(1.5)
        check("the reader of the removed device is still running", guest.run("kill -0 %1")[0] == 0)
        guest.ok("insmod /crudepps.ko legacy=1")
        # The old reader still holds pps0's number, so the new device may get another.
        names = guest.ok("grep -l crudepps /sys/class/pps/*/name")
        check("reloaded: a crudepps PPS device exists", len(names) == 1, names)
        guest.pps = names[-1].strip().split("/")[4]
        guest.ok(f"ppstest /dev/{guest.pps} > /tmp/pps2.log 2>&1 &")
        time.sleep(0.5)

        print("legacy broadcasts, fragments and checksums with legacy=1:", flush=True)
        for i in range(3):
            if i:
                time.sleep(0.7)
            tx.sendto(frame(b"time", 8000), ("127.0.0.1", frame_port))
        time.sleep(0.05)
        send_frame(frame(b"time", 8000))  # 50 ms after the last: too soon
        time.sleep(0.6)
        send_frame(frame(b"time", 8000, broadcast=False))
        send_frame(frame(with_second(tick, 1767230000, 100), 8123, first_fragment=True))
        send_frame(frame(with_second(tick, 1767230001, 101), 8123, bad_checksum=True))
        c4 = guest.counters()
        s4 = guest.assert_seq()[1]
        check(
            "3 legacy asserts; too soon, unicast, fragment, bad checksum rejected",
            c4
            == {
                **{k: 0 for k in c4},
                "legacy_matched": 3,
                "rejected_legacy_too_soon": 1,
                "rejected_legacy_not_broadcast": 1,
                "rejected_fragment": 1,
                "rejected_checksum": 1,
            }
            and s4 == 3,
            (c4, s4),
        )
        log = [ln for ln in guest.ok("cat /tmp/pps2.log") if "assert" in ln]
        check("the reader of the reloaded device saw the 3 asserts", len(log) == 3, log)
        guest.ok("kill %1 %2; wait; rmmod crudepps")

        print("IPv6, and the source and transmitter filters:", flush=True)
        guest.ok("insmod /crudepps.ko")
        send_frame(frame6(with_second(tick, 1767240000, 1), 8123))
        c5 = guest.counters()
        check("an IPv6 tick fires", c5["matched"] == 1 and sum(c5.values()) == 1, c5)
        guest.ok("rmmod crudepps")
        guest.ok("insmod /crudepps.ko source=10.0.2.2 transmitter=0x1234")
        send_frame(frame6(with_second(tick, 1767240001, 2), 8123))
        send(with_second(tick, 1767240002, 3))
        out = pulse_send(args.sender, tick_port, 2, "--no-follow-up")
        time.sleep(0.3)
        c6 = guest.counters()
        check(
            "other source and other transmitter rejected; transmitter 0x1234 fires",
            {k: v for k, v in c6.items() if v}
            == {"rejected_source": 1, "rejected_transmitter": 1, "matched": 2},
            c6,
        )
        guest.ok("rmmod crudepps")
        dmesg = "\n".join(guest.ok("dmesg"))
        check(
            "no warning, oops or leak report in dmesg",
            not any(w in dmesg for w in ("WARNING:", "BUG:", "Oops", "leak")),
            dmesg[-2000:],
        )

    except AssertionError as e:
        check("guest interaction", False, e)
        print("\n".join(guest.log[-40:]), file=sys.stderr)
    finally:
        guest.stop()
    return check.verdict("crudepps in a real kernel", started)


if __name__ == "__main__":
    sys.exit(main())
