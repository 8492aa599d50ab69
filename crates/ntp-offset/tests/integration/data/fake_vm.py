# A stand-in for a VM, run as `exec -a qemu-system-x86_64 /usr/bin/python3 -c "$(cat fake_vm.py)"
# -name guest=NAME -device virtio-net-pci,mac=MAC SERVER LOAD SECONDS` (the interpreter itself:
# a wrapper such as pyenv's shim would replace argv[0]): its command line is a
# QEMU's as ntp-offset reads it. It asks SERVER for time every 5 s (printing "OFFSET host-time
# offset delay", the host time the exchange's midpoint) and, with LOAD "heavy", keeps a core
# busy through second :00 of the minute its answers give it. It stops by itself after SECONDS.
import socket
import struct
import sys
import time

server, load, seconds = sys.argv[-3], sys.argv[-2], float(sys.argv[-1])
NTP_UNIX = 2208988800


def ask():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    t1 = time.time()
    s.sendto(bytes([0x23]) + bytes(47), (server, 123))
    data, _ = s.recvfrom(512)
    t4 = time.time()
    rx = struct.unpack(">II", data[32:40])
    tx = struct.unpack(">II", data[40:48])
    t2 = rx[0] - NTP_UNIX + rx[1] / 2**32
    t3 = tx[0] - NTP_UNIX + tx[1] / 2**32
    return (t1 + t4) / 2, ((t2 - t1) + (t3 - t4)) / 2, (t4 - t1) - (t3 - t2)


end = time.time() + seconds
offset, next_ask = None, 0.0
while time.time() < end:
    now = time.time()
    if now >= next_ask:
        try:
            # Stamped with the exchange's own midpoint, not the loop's clock read before it:
            # on a loaded host the process can wait between the two.
            at, offset, delay = ask()
            print(f"OFFSET {at:.3f} {offset:.6f} {delay:.6f}", flush=True)
        except OSError as e:
            print(f"NOANSWER {now:.3f} {e}", flush=True)
        next_ask = now + 5
    if offset is not None and load == "heavy" and (now + offset) % 60 < 1.0:
        while (time.time() + offset) % 60 < 1.0:
            pass
    time.sleep(0.02)
