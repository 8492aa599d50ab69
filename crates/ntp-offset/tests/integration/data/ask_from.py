# Asks SERVER for time COUNT times, a second apart, from the local address SOURCE; prints
# "ANSWER leap stratum offset delay" for each answer (NOANSWER if none within a second).
# Run as `python3 -c "$(cat ask_from.py)" SOURCE SERVER COUNT`.
import socket
import struct
import sys
import time

source, server, count = sys.argv[-3], sys.argv[-2], int(sys.argv[-1])
NTP_UNIX = 2208988800


def stamp(b):
    s, f = struct.unpack(">II", b)
    return s - NTP_UNIX + f / 2**32


for i in range(count):
    if i:
        time.sleep(1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    s.settimeout(1.0)
    t1 = time.time()
    s.sendto(bytes([0x23]) + bytes(47), (server, 123))
    try:
        data, _ = s.recvfrom(512)
    except OSError as e:
        print(f"NOANSWER {e}", flush=True)
        continue
    t4 = time.time()
    t2, t3 = stamp(data[32:40]), stamp(data[40:48])
    offset = ((t2 - t1) + (t3 - t4)) / 2
    delay = (t4 - t1) - (t3 - t2)
    print(f"ANSWER {data[0] >> 6} {data[1]} {offset:.6f} {delay:.6f}", flush=True)
