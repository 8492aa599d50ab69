#!/usr/bin/env python3
"""The Debian packages on a booted Debian 12 (dist/test/run builds everything first): boots
Debian's kernel under QEMU (TCG) with systemd as PID 1 on a copy of the cached root, installs
both packages from local files with apt-get, and checks what an admin would: the service
runs as its user and is ready when `systemctl start` returns, `ntp-offset status` works for a
member of the group and not for others, the host measures each view's offset through QEMU's
user-mode forwarding, `systemctl reload` applies a changed offset, DKMS built crudepps for the
running kernel and it gives /dev/ppsN, the tick units (pulse send, pulse listen@ with the
shipped example's flags) feed chronyd's SOCK refclock beside the server, `systemctl stop` ends
it cleanly, and `apt-get purge` leaves nothing the packages installed.

Traffic: QEMU runs in a network namespace the test creates, with nothing but loopback (and
an unused bridge): its user-mode network's forwarded ports are on that loopback, where the
host side queries them, and the guest's NAT reaches nothing. (restrict=on would be simpler,
but QEMU's user-mode network then drops the guest's UDP answers to forwarded ports too.)
The guest has no apt sources, so the install proves it needs no network. The guest's clock is
set from the host's at boot (it is the guest's own clock). Every wait has a timeout; QEMU dies
with the test.
"""

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "lib"))
from qemu_guest import arguments, Check, Guest, Namespace  # noqa: E402

# Under TCG the boot takes about a minute, installing (DKMS compiles the module) 2-5 minutes
# on an idle machine. ./scripts/test runs this beside ten other guests and the cargo tests, so
# these bounds are for a hang, not a measure of speed.
BOOT_TIMEOUT = 480
INSTALL_TIMEOUT = 900
# Under TCG the guest's clock drifts (its TSC is calibrated against an emulated timer: about
# 0.1 % here), so a view is measured against the guest's clock, read over the console just
# before and after the query: served time minus the guest's clock must be the configured
# offset within this, plus half the console's round trip.
OFFSET_TOLERANCE = 0.005
CONFIG = "/etc/ntp-offset/ntp-offset.toml"

# What an admin writes for a VM host, reduced to two views on two ports of the guest's
# address (the host reaches them as 127.0.0.1:P15 and :P30), keeping the default view on
# 127.0.0.1; the guest is its own reference (no NTP daemon keeps its clock).
VM_HOST_CONFIG = """\
[server]
listen = ["127.0.0.1:123", "10.0.2.15:123", "10.0.2.15:1123"]
default_view = "local"
local_stratum = 10

[[view]]
name = "local"
offset = "0s"

[[view]]
name = "s15"
offset = "15s"
listen = ["10.0.2.15:123"]

[[view]]
name = "s30"
offset = "30s"
listen = ["10.0.2.15:1123"]

[[spread]]
name = "vms"
views = ["s15", "s30"]
clients = ["10.0.2.100/32"]
"""

# A process of another user whose command line is a libvirt QEMU's (bash under QEMU's name,
# with a VM's -name and NIC): what placing by load looks for on a VM host.
FAKE_QEMU = (
    'runuser -u bob -- bash -c \'exec -a qemu-system-x86_64 bash -c "sleep 600; :" '
    "-name guest=fake1,debug-threads=on -device virtio-net-pci,mac=52:54:00:18:09:01' "
    "> /dev/null 2>&1 &"
)


def main():
    args = arguments("image", "debs")
    check = Check()
    started = time.monotonic()
    debs = [Path(d) for d in args.debs.split(",")]
    work = Path(tempfile.mkdtemp(prefix="ntp-offset-boot-"))
    # A copy-on-write layer over the cached root, and a small disk with the packages.
    overlay = work / "root.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            str(Path(args.image).resolve()),
            str(overlay),
        ],
        check=True,
    )
    (work / "debs").mkdir()
    for d in debs:
        (work / "debs" / d.name).write_bytes(d.read_bytes())
    subprocess.run(
        ["mkfs.ext4", "-q", "-L", "debs", "-d", str(work / "debs"), str(work / "debs.img"), "64M"],
        check=True,
    )
    # Ports on the namespace's own loopback, so any two are free.
    p15, p30 = 10123, 11123
    ns = Namespace(f"ntpo-boot-{os.getpid()}", "198.18.9.1/24", 0)
    host_query = ns.cmd(args.sender)
    guest = None
    try:
        guest = Guest(
            args,
            [
                "-drive",
                f"file={overlay},if=virtio,format=qcow2",
                "-drive",
                f"file={work / 'debs.img'},if=virtio,format=raw,readonly=on",
                "-netdev",
                f"user,id=n0,hostfwd=udp:127.0.0.1:{p15}-10.0.2.15:123,"
                f"hostfwd=udp:127.0.0.1:{p30}-10.0.2.15:1123",
                "-device",
                "virtio-net-pci,netdev=n0,romfile=",
            ],
            append="root=/dev/vda rw",
            memory_mb=1024,
            prefix=ns.cmd(),
        )
        run_test(guest, check, host_query, debs, p15, p30)
    except AssertionError as e:
        check("the test ran to its end", False, e)
    finally:
        if guest is not None:
            if check.failures:
                print(
                    "  guest console, last lines:\n    " + "\n    ".join(guest.log[-60:]),
                    flush=True,
                )
            guest.stop()
        ns.delete()
        subprocess.run(["rm", "-rf", str(work)])
    return check.verdict("the Debian packages on a booted Debian 12", started)


def query(host_query, *ports):
    """Each port's view: its offset from the host's clock and the round trip (ntp-offset
    query, one run, so the views are read moments apart); (None, detail) where no answer."""
    out = subprocess.run(
        [*host_query, "query", "--json", "-n", "4", "-t", "2s", *(f"127.0.0.1:{p}" for p in ports)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = {}
    for line in out.stdout.splitlines():
        v = json.loads(line)
        if v.get("offset") is not None:
            found[v["server"]] = (v["offset"], v["delay"])
    return [found.get(f"127.0.0.1:{p}", (None, out.stdout + out.stderr)) for p in ports]


def measure(guest, host_query, port):
    """(the view's time minus the guest's clock, the bound on that reading, detail)."""
    before, b1 = guest.clock_offset("date +%s.%N")
    [(offset, delay)] = query(host_query, port)
    after, b2 = guest.clock_offset("date +%s.%N")
    if offset is None:
        return None, None, delay
    clock = (before + after) / 2
    bound = OFFSET_TOLERANCE + max(b1, b2) + abs(after - before) / 2 + delay / 2
    return (
        offset - clock,
        bound,
        f"host clock {offset:+.6f} s, guest clock {clock:+.6f} s, round trip {delay:.6f} s",
    )


def wait_offset(guest, host_query, port, want, timeout=20):
    """Measures until the view is `want` within its bound (a reload is applied a moment after
    `systemctl reload` returns); returns the last (measured, bound, detail)."""
    deadline = time.monotonic() + timeout
    while True:
        got, bound, detail = measure(guest, host_query, port)
        if (got is not None and abs(got - want) <= bound) or time.monotonic() > deadline:
            return got, bound, detail
        time.sleep(0.5)


def found_in_journal(guest, line):
    """Whether the service logs `line` once within 30 s (its VM discovery runs every 5 s)."""
    count = f"journalctl -u ntp-offset -o cat | grep -c '{line}'"
    deadline = time.monotonic() + 30
    while True:
        _, out = guest.run(count)
        if out[:1] != ["0"] or time.monotonic() > deadline:
            return out[:1] == ["1"]
        time.sleep(1)


def found_vm(guest, check):
    """The installed unit lets serve see another user's QEMU process and read the neighbour
    table (its sandbox once hid both, and placing by load fell back to counting)."""
    guest.ok(FAKE_QEMU)
    found = found_in_journal(guest, "found a VM vm=fake1")
    _, journal = guest.run("journalctl -u ntp-offset -o cat | grep -E 'VM|neighbour' | tail -n 5")
    check(
        "placing by load: the service finds another user's QEMU process and reads the "
        "neighbour table",
        found and not any("cannot read the neighbour table" in ln for ln in journal),
        journal,
    )
    guest.run("pkill -u bob -f guest=fake1")


# A container as libvirt-lxc or systemd-nspawn makes one: a network namespace of its own on
# a veth, its process a unit in machine.slice.
CONTAINER = (
    "ip netns add nto-c1 && ip link add c1h type veth peer name c1g netns nto-c1"
    " && ip addr add 198.18.60.1/24 dev c1h && ip link set c1h up"
    " && ip -n nto-c1 addr add 198.18.60.2/24 dev c1g && ip -n nto-c1 link set c1g up"
    " && ip -n nto-c1 link set lo up && ip -n nto-c1 route add default via 198.18.60.1"
    " && systemd-run --quiet --unit=nto-c1 --slice=machine.slice ip netns exec nto-c1 sleep 600"
)


def found_container(guest, check):
    """The installed unit finds a container in machine.slice by its namespace's addresses,
    and shows its requests as that machine's in `clients`."""
    rc, out = guest.run(CONTAINER)
    check("a container in machine.slice (netns, veth, systemd-run)", rc == 0, out)
    found = found_in_journal(guest, "found a VM vm=nto-c1")
    guest.run("ip netns exec nto-c1 ntp-offset query 10.0.2.15:123")
    _, shown = guest.run("ntp-offset clients | grep '^198.18.60.2 '")
    shown = " ".join(shown)
    check(
        "placing by load: the service finds a container by its addresses, and its request "
        f"is that machine's in `clients` ({shown})",
        found and " nto-c1 " in shown,
        shown,
    )
    guest.run("systemctl stop nto-c1; ip netns del nto-c1")


def offset_ok(got, bound, want):
    return got is not None and abs(got - want) <= bound


def run_test(guest, check, host_query, debs, p15, p30):
    t0 = time.monotonic()
    guest.wait_for("GUEST-READY", BOOT_TIMEOUT)
    print(f"  booted in {time.monotonic() - t0:.0f} s", flush=True)
    rc, out = guest.run("readlink /proc/1/exe; uname -r")
    check("systemd is PID 1", rc == 0 and out and out[0].endswith("/systemd"), out)
    kernel = out[1].strip() if len(out) > 1 else "?"
    # The guest's clock from the host's (QEMU's RTC gives it whole seconds only).
    guest.ok(f"date -u -s @{time.time():.6f} >/dev/null")
    guest.ok("mount -o ro /dev/vdb /mnt")

    # Install both from local files: apt resolves their dependencies from what the root has.
    t0 = time.monotonic()
    names = " ".join(f"/mnt/{d.name}" for d in debs)
    rc, out = guest.run(
        f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q {names} </dev/null 2>&1"
        " | tail -n 25; "
        "test ${PIPESTATUS[0]} = 0",
        timeout=INSTALL_TIMEOUT,
    )
    check(
        f"apt-get install ./ntp-offset_*.deb ./crudepps-dkms_*.deb ({time.monotonic() - t0:.0f} s)",
        rc == 0,
        out,
    )
    _, files = guest.run("dpkg -L ntp-offset crudepps-dkms")
    installed = [f for f in files if f.startswith("/")]

    # The service: started on install, as its own user, with only what the unit gives it.
    rc, out = guest.run("systemctl is-active ntp-offset")
    check("the package started ntp-offset.service", out == ["active"], out)
    rc, out = guest.run(
        "systemctl restart ntp-offset && test -S /run/ntp-offset/serve.sock && echo ready"
    )
    check(
        "`systemctl restart` returns once the control socket is bound (Type=notify)",
        out == ["ready"],
        out,
    )
    rc, out = guest.run("stat -c '%U:%G' /proc/$(systemctl show -p MainPID --value ntp-offset)")
    check("it runs as user and group ntp-offset", out == ["ntp-offset:ntp-offset"], out)
    rc, out = guest.run(
        "stat -c '%U:%G %a' /etc/ntp-offset /run/ntp-offset /run/ntp-offset/serve.sock"
        " /var/lib/ntp-offset"
    )
    check(
        "/etc/ntp-offset root:ntp-offset 750, /run/ntp-offset 770, the socket 660, state dir",
        out
        == [
            "root:ntp-offset 750",
            "ntp-offset:ntp-offset 770",
            "ntp-offset:ntp-offset 660",
            "ntp-offset:ntp-offset 755",
        ],
        out,
    )
    # (as unsynchronized: no NTP daemon keeps this guest's clock, and the answers say so)
    rc, out = guest.run("ntp-offset query --json -n 2 127.0.0.1")
    check(
        "the default config answers on 127.0.0.1 in the guest", '"answers":2' in " ".join(out), out
    )
    rc, out = guest.run(
        "ls /usr/share/man/man1/ntp-offset.1.gz /usr/share/man/man5/ntp-offset.toml.5.gz "
        "/usr/share/bash-completion/completions/ntp-offset "
        "/usr/share/zsh/vendor-completions/_ntp-offset "
        "/usr/share/fish/vendor_completions.d/ntp-offset.fish"
    )
    check("man pages (1 and 5) and bash, zsh and fish completions are installed", rc == 0, out)

    # The installed units, as this system's systemd reads them.
    units = "ntp-offset.service ntp-offset-pulse-send.service ntp-offset-pulse-listen@feed.service"
    rc, out = guest.run(f"cd /lib/systemd/system && systemd-analyze verify --man=no {units} 2>&1")
    check("systemd-analyze verify: the installed units are clean", rc == 0 and out == [], out)
    rc, out = guest.run(
        f"for u in {units}; do echo $u $(systemd-analyze security $u 2>&1 | tail -n 1); done"
    )
    print("  systemd-analyze security, in the guest:\n    " + "\n    ".join(out), flush=True)

    # status: an admin in the group (a login session has XDG_RUNTIME_DIR), and someone else.
    guest.ok(
        "useradd -m -G ntp-offset alice && useradd -m bob && mkdir -p /run/user/1000 /run/user/1001"
    )
    rc, out = guest.run("runuser -u alice -- env XDG_RUNTIME_DIR=/run/user/1000 ntp-offset status")
    check(
        "`ntp-offset status` works for an admin in group ntp-offset",
        rc == 0 and any("local" in ln for ln in out),
        out,
    )
    rc, out = guest.run("runuser -u bob -- env XDG_RUNTIME_DIR=/run/user/1001 ntp-offset status")
    check(
        "and tells someone else it is not theirs to read",
        rc != 0 and any("permission denied" in ln for ln in out),
        out,
    )

    # From the default config to a VM host's: views on the guest's address, one reload.
    guest.ok(f"printf '%s' {shlex.quote(VM_HOST_CONFIG)} > {CONFIG}.new")
    rc, out = guest.run(
        f"ntp-offset serve --check --config {CONFIG}.new && mv {CONFIG}.new {CONFIG}"
        " && systemctl reload ntp-offset"
    )
    check("the VM host config passes --check and `systemctl reload` takes it", rc == 0, out)
    o15, b15, d15 = wait_offset(guest, host_query, p15, 15)
    o30, b30, d30 = wait_offset(guest, host_query, p30, 30)
    if o15 is None or o30 is None:
        guest.run("ip -br addr; ip route; ss -ulnp; ntp-offset query 10.0.2.15:123 10.0.2.15:1123")
    check(
        f"the host measures view s15 at +15 s: {o15:+.6f} s ±{b15:.6f} ({d15})"
        if o15 is not None
        else "the host measures view s15",
        offset_ok(o15, b15, 15),
        d15,
    )
    check(
        f"and view s30 at +30 s: {o30:+.6f} s ±{b30:.6f} ({d30})"
        if o30 is not None
        else "the host measures view s30",
        offset_ok(o30, b30, 30),
        d30,
    )
    # Between the views, the guest's clock cancels: exactly 15 s, within the round trips and
    # the guest clock's drift in the moment between the two readings.
    [(a, da), (b, db)] = query(host_query, p15, p30)
    check(
        f"s30 - s15 is exactly 15 s: {b - a:+.6f} s"
        if a is not None and b is not None
        else "s30 - s15",
        a is not None and b is not None and abs(b - a - 15) <= (da + db) / 2 + 0.001,
        (a, b),
    )
    guest.ok(
        f'sed -i \'s/^offset = "30s"/offset = "45s"/\' {CONFIG} && systemctl reload ntp-offset'
    )
    o45, b45, d45 = wait_offset(guest, host_query, p30, 45)
    check(
        f"`systemctl reload` applies s30's new offset, 45 s: {o45:+.6f} s ±{b45:.6f}"
        if o45 is not None
        else "`systemctl reload` applies s30's new offset",
        offset_ok(o45, b45, 45),
        d45,
    )
    rc, out = guest.run(
        "systemctl is-active ntp-offset; journalctl -u ntp-offset -o cat | grep -c reload"
    )
    check("the service stayed up through both reloads, and logged them", out[:1] == ["active"], out)
    found_vm(guest, check)
    found_container(guest, check)

    # The tick units as the shipped examples set them up: a key file root:ntp-offset 0640, pulse
    # send from this host's clock, and pulse listen (the example's flags, verbatim) feeding
    # chronyd's SOCK refclock, which chronyd creates root:root 0755.
    guest.ok(
        "(umask 027; ntp-offset pulse keygen > /etc/ntp-offset/tick.keys)"
        " && chgrp ntp-offset /etc/ntp-offset/tick.keys"
    )
    guest.ok(
        "echo 'refclock SOCK /run/chrony.tick.sock refid TICK poll 0'"
        " > /etc/chrony/conf.d/tick.conf "
        "&& systemctl restart chrony"
    )
    guest.ok(
        "echo 'ARGS=\"--key-file /etc/ntp-offset/tick.keys --to 127.0.0.1:8123 --local\"'"
        " > /etc/ntp-offset/pulse-send.conf"
        " && cp /usr/share/doc/ntp-offset/examples/pulse-listen.conf"
        " /etc/ntp-offset/pulse-listen-lab.conf"
    )
    rc, out = guest.run(
        "systemctl start ntp-offset-pulse-send ntp-offset-pulse-listen@lab 2>&1 && "
        "test -S /run/ntp-offset/pulse-send.sock"
        " && test -S /run/ntp-offset/pulse-listen-lab.sock && echo ready"
    )
    check(
        "`systemctl start` of pulse send and pulse listen@lab (ready with their sockets)",
        out == ["ready"],
        out,
    )
    reach = None
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        _, out = guest.run("chronyc -c -n sources")
        tick = [ln.split(",") for ln in out if ",TICK," in ln]
        reach = tick[0][5] if tick else None
        if reach not in (None, "0"):
            break
        time.sleep(2)
    check(
        f"chronyd receives the ticks through its SOCK refclock (reach {reach})",
        reach not in (None, "0"),
        out,
    )
    rc, out = guest.run(
        "runuser -u alice -- env XDG_RUNTIME_DIR=/run/user/1000 "
        "ntp-offset status --socket /run/ntp-offset/pulse-listen-lab.sock"
    )
    check(
        "pulse listen's status, for an admin",
        rc == 0 and any("tick" in ln.lower() for ln in out),
        out,
    )
    rc, out = guest.run(
        "systemctl is-active ntp-offset ntp-offset-pulse-send ntp-offset-pulse-listen@lab"
    )
    check(
        "all three services active side by side (one /run/ntp-offset/)", out == ["active"] * 3, out
    )

    # DKMS built crudepps for the guest's kernel when the package was installed.
    rc, out = guest.run("dkms status crudepps")
    check(
        f"DKMS built and installed crudepps for {kernel}",
        rc == 0 and any(kernel in ln and "installed" in ln for ln in out),
        out,
    )
    rc, out = guest.run("modprobe crudepps && ls /dev/pps* && cat /sys/class/pps/pps*/name")
    check(
        "`modprobe crudepps` gives /dev/ppsN",
        rc == 0 and any(ln.startswith("/dev/pps") for ln in out),
        out,
    )
    rc, out = guest.run("modinfo -n crudepps")
    check(
        "the module is DKMS's, for this kernel",
        out and out[0].startswith(f"/lib/modules/{kernel}/updates/dkms/"),
        out,
    )

    # Stop: a clean exit, the socket removed.
    rc, out = guest.run(
        "systemctl stop ntp-offset && systemctl show -p Result -p ExecMainStatus ntp-offset && "
        "{ test ! -e /run/ntp-offset/serve.sock || echo socket-left; }"
    )
    check(
        "`systemctl stop` ends it cleanly and it removes its socket",
        rc == 0 and sorted(out) == ["ExecMainStatus=0", "Result=success"],
        out,
    )

    # Purge (the tick services still running): nothing the packages installed is left, nor
    # their state, services or the module.
    guest.ok("modprobe -r crudepps")
    t0 = time.monotonic()
    rc, out = guest.run(
        "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q ntp-offset crudepps-dkms"
        " </dev/null 2>&1 "
        "| tail -n 15; test ${PIPESTATUS[0]} = 0",
        timeout=INSTALL_TIMEOUT,
    )
    check(f"apt-get purge ntp-offset crudepps-dkms ({time.monotonic() - t0:.0f} s)", rc == 0, out)
    # Directories the system owns (/usr, /lib/systemd/system, ...) stay; files must all go.
    shared = {
        "/.",
        "/etc",
        "/lib",
        "/usr",
        "/usr/bin",
        "/usr/lib",
        "/usr/share",
        "/usr/share/doc",
        "/usr/share/man",
        "/usr/share/man/man1",
        "/usr/share/man/man5",
        "/usr/src",
        "/lib/systemd",
        "/lib/systemd/system",
        "/usr/lib/modules-load.d",
        "/usr/lib/sysusers.d",
        "/usr/share/zsh",
        "/usr/share/bash-completion",
        "/usr/share/bash-completion/completions",
        "/usr/share/fish",
        "/usr/share/zsh/vendor-completions",
        "/usr/share/fish/vendor_completions.d",
    }
    # /etc/ntp-offset/ itself stays while it holds the admin's files (checked below).
    paths = [p for p in installed if p not in shared and p != "/etc/ntp-offset"]
    left = []
    for i in range(0, len(paths), 40):
        _, out = guest.run(
            "for p in "
            + " ".join(shlex.quote(p) for p in paths[i : i + 40])
            + '; do [ -e "$p" ] && echo "$p"; done; true'
        )
        left += out
    check(f"none of the {len(paths)} installed paths is left", not left, left)
    rc, out = guest.run(
        "ls -d /var/lib/ntp-offset /var/lib/dkms/crudepps "
        f"/lib/modules/{kernel}/updates/dkms/crudepps.ko 2>/dev/null; "
        "systemctl cat ntp-offset >/dev/null 2>&1 && echo unit-left; "
        "pgrep -l ntp-offset; true"
    )
    check("no state, DKMS tree, module, unit or process is left", out == [], out)
    # What the admin made stays, as Debian's policy asks (the package's own config is gone).
    rc, out = guest.run("ls -A -1 /etc/ntp-offset")
    check(
        "/etc/ntp-offset keeps only the admin's own files",
        sorted(out) == ["pulse-listen-lab.conf", "pulse-send.conf", "tick.keys"],
        out,
    )
    guest.run("systemctl poweroff --no-block")


if __name__ == "__main__":
    sys.exit(main())
