"""A test guest under QEMU (TCG), shared by the guest tests (kernel/test: vm_test.py,
dcf77_test.py; vmhost/spread_test.py): boots an initramfs, and runs shell commands on its
serial console. Every line the guest prints is kept with the host's time of arrival. Every
wait has a timeout; QEMU gets SIGKILL if the test dies in any way.
"""

import argparse
import ctypes
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

NUMBER = re.compile(r"^\d+\.\d{9}$")

BOOT_TIMEOUT = 90
# A shell prompt that may still precede output (the guest sets PS1 empty).
PROMPT = re.compile(r"^(/\S* )?# ")
# How long a console command may go unanswered before the guest counts as hung. Not a speed
# expectation: a TCG guest on a host running the rest of the suite (8 vmhost guests, the
# package test's guest, the cargo tests) has gone more than 20 s without answering a `cmd &`.
COMMAND_TIMEOUT = 60
GUEST_MAC = bytes.fromhex("525400123457")


def arguments(*extra, **optional):
    """The command line every guest test is given (QEMU, its firmware, the guest kernel and
    initrd, the ntp-offset binary), plus `extra` required options and `optional` ones, each
    with its default (whose type it takes)."""
    p = argparse.ArgumentParser()
    for a in ("qemu", "bios", "kernel", "initrd", "sender", *extra):
        p.add_argument(f"--{a}", required=True)
    for name, default in optional.items():
        flag = name.replace("_", "-")  # ntpd_walk= is --ntpd-walk
        p.add_argument(f"--{flag}", dest=name, type=type(default), default=default)
    return p.parse_args()


def die_with_parent():
    """QEMU gets SIGKILL if this script dies in any way, so no guest outlives the test."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Guest:
    def __init__(self, args, netdevs, append="", memory_mb=256, prefix=()):
        """`args`: --qemu, --bios, --kernel, --initrd; `netdevs`: QEMU -netdev/-device
        arguments (kernel/test's init configures eth0 as 10.0.2.15 and eth1 as 10.0.3.15);
        `append`: more kernel parameters; `prefix`: run QEMU under this (`ip netns exec NS`)."""
        qemu_args = [
            *prefix,
            args.qemu,
            "-L",
            args.bios,
            "-L",
            "/usr/share/seabios",
            "-machine",
            "q35,accel=tcg",
            "-cpu",
            "max",
            "-m",
            str(memory_mb),
            "-smp",
            "1",
            "-kernel",
            args.kernel,
            "-initrd",
            args.initrd,
            # no_timer_check: the kernel's boot-time check that the emulated PIT reaches the
            # IO-APIC fails when TCG is starved of CPU (a cold run booting ten guests beside
            # the tests: "IO-APIC + timer doesn't work!", a panic); the timer does work.
            "-append",
            f"console=ttyS0 panic=-1 quiet loglevel=4 no_timer_check {append}".strip(),
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
            *netdevs,
        ]
        self.proc = subprocess.Popen(
            qemu_args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        self.lines = queue.Queue()
        self.log = []
        # (host time.time() at arrival, line), for lines the test times (cron jobs' starts).
        self.stamped = []
        self.n = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            arrived = time.time()
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.stamped.append((arrived, line))
            self.log.append(line)
            self.lines.put(line)

    def _lines(self, timeout):
        """The guest's next lines, until `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                yield self.lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                return

    def wait_for(self, needle, timeout):
        for line in self._lines(timeout):
            if needle in line:
                return line
        raise AssertionError(f"no `{needle}` from the guest within {timeout} s")

    def run(self, cmd, timeout=COMMAND_TIMEOUT):
        """Runs a shell command in the guest; returns (exit status, output lines)."""
        self.n += 1
        marker = f"@@DONE-{self.n}-"
        sep = " " if cmd.rstrip().endswith("&") else "; "
        self.proc.stdin.write(f"{cmd}{sep}echo {marker}$?\n".encode())
        self.proc.stdin.flush()
        out = []
        done = re.compile(re.escape(marker) + r"(\d+)\s*$")
        for line in self._lines(timeout):
            line = PROMPT.sub("", line)
            m = done.search(line)
            if m:
                head = line[: m.start()]
                if head.strip():
                    out.append(head)
                return int(m.group(1)), out
            # A guest not yet at its shell echoes what was typed: `echo @@DONE-n-$?` is not
            # the status.
            if marker not in line:
                out.append(line)
        raise AssertionError(f"guest command timed out: {cmd}")

    def ok(self, cmd):
        rc, out = self.run(cmd)
        if rc != 0:
            raise AssertionError(f"guest: `{cmd}` exited {rc}: {out}")
        return out

    def clock_offset(self, command="now"):
        """The guest's clock minus the host's, in seconds, and the bound on that reading (half
        the round trip of the console exchange that reads it with `command`, which prints
        seconds.nanoseconds: scripts/lib/guest-bin/now, or `date +%s.%N` on a full system)."""
        t1 = time.time()
        _, out = self.run(command)
        value = next((ln.strip() for ln in out if NUMBER.match(ln.strip())), None)
        if value is None:
            raise AssertionError(f"guest: `now` printed {out}")
        t4 = next(t for t, ln in reversed(self.stamped) if ln.strip() == value)
        return float(value) - (t1 + t4) / 2, (t4 - t1) / 2

    def prioritize(self, nice=-10):
        """Gives every thread of this guest's QEMU the niceness `nice` (Linux keeps it per
        thread; threads started later inherit it): a guest whose timing a test measures then
        runs promptly beside others that only need their CPU eventually."""
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
            except ProcessLookupError:
                pass  # a worker thread that ended meanwhile

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class Namespace:
    """A network namespace the test creates: bridge br0 with the host side's address, and one
    tap per guest on it (QEMU: `-netdev tap,ifname=tapN,script=no,downscript=no`). Traffic to
    and from the guests stays in it. `delete()` removes it (also after a failed start)."""

    def __init__(self, name, address, taps):
        self.name = name
        subprocess.run(["ip", "netns", "add", name], check=True)
        try:
            self.sh("ip", "link", "set", "lo", "up")
            self.sh("ip", "link", "add", "br0", "type", "bridge")
            self.sh("ip", "addr", "add", address, "brd", "+", "dev", "br0")
            self.sh("ip", "link", "set", "br0", "up")
            for i in range(taps):
                self.sh("ip", "tuntap", "add", f"tap{i}", "mode", "tap")
                self.sh("ip", "link", "set", f"tap{i}", "master", "br0")
                self.sh("ip", "link", "set", f"tap{i}", "up")
        except BaseException:
            self.delete()
            raise

    def cmd(self, *argv):
        """`argv` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def sh(self, *argv):
        subprocess.run(self.cmd(*argv), check=True)

    def tap(self, i, mac):
        """QEMU arguments for a virtio NIC on tap i."""
        return [
            "-netdev",
            f"tap,id=n0,ifname=tap{i},script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev=n0,romfile=,mac={mac}",
        ]

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name])


class HostProcess:
    """A host-side process of the test (inside a Namespace with `ns.cmd(...)`, or not); it
    dies with the test in any case, and `stop()` ends it. Its output goes to the file `log`;
    with `on_line`, its stdout is read line by line instead (a `--report` stream) and only
    stderr goes to the file. `env`: more environment variables."""

    def __init__(self, argv, log, on_line=None, env=None):
        self.log = Path(log)
        out = open(log, "w")
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE if on_line else out,
            stderr=out if on_line else subprocess.STDOUT,
            env={**os.environ, **env} if env else None,
            text=True,
            preexec_fn=die_with_parent,
        )
        if on_line:
            threading.Thread(target=self._read, args=(on_line,), daemon=True).start()

    def _read(self, on_line):
        for line in self.proc.stdout:
            on_line(line)

    def running(self):
        return self.proc.poll() is None

    def stop(self):
        """Ends it (SIGTERM, then SIGKILL after 10 s) and returns what its log holds."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text(errors="replace")


class Check:
    def __init__(self):
        self.failures = 0

    def __call__(self, what, ok, detail=""):
        print(f"  {'ok  ' if ok else 'FAIL'} {what}{'' if ok else ': ' + str(detail)}", flush=True)
        if not ok:
            self.failures += 1

    def verdict(self, what, started):
        """Prints PASS or FAIL for the whole test; returns its exit status."""
        print(
            f"{'PASS' if self.failures == 0 else 'FAIL'}: {what} ({self.failures} failures, "
            f"{time.monotonic() - started:.0f} s)",
            flush=True,
        )
        return 0 if self.failures == 0 else 1
