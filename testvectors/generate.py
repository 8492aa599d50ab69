#!/usr/bin/env python3
"""Writes tick-v1.txt, the tick protocol's shared test vectors (docs/tick-protocol.md).

Written in Python's standard library on purpose: it encodes and signs independently of the
Rust, kernel and firmware code that the vectors check. Run it again only to add vectors; the
file is committed and must not change for existing ones.
"""
import hashlib
import hmac
import struct
import sys

KEYS = {
    1: bytes(range(0x10, 0x30)),  # 32 bytes
    2: bytes.fromhex("a5" * 16),  # 16 bytes, the minimum
}
FOREIGN_KEY = bytes(range(0x80, 0xA0))  # signs the unknown-key vector; receivers lack it

STATES = {"synchronized": 0, "holdover": 1, "unsynchronized": 2}
LEAPS = {"none": 0, "insert": 1, "delete": 2}
SOURCES = {"system": 0, "pps": 1, "dcf77": 2, "gnss": 3}
KINDS = {"tick": 1, "follow-up": 2}


# A tick's fields as the vectors list them: every vector states the ones it changes.
DEFAULTS = dict(
    kind="tick",
    flags=0,
    state="synchronized",
    leap="none",
    source="system",
    stratum=2,
    key=0,
    transmitter=0x0A0B0C0D,
    session=0x11223344,
    sequence=7,
    error_us=1200,
    second=1767225600,
    tx_offset_ns=0,
)


def body(version=1, raw_kind=None, raw_state=None, raw_leap=None, magic=b"NOTK", **kw):
    f = fields(**kw)
    return magic + struct.pack(
        ">BBBBBBBBHHIIIIqq",
        version,
        KINDS[f["kind"]] if raw_kind is None else raw_kind,
        f["flags"],
        STATES[f["state"]] if raw_state is None else raw_state,
        LEAPS[f["leap"]] if raw_leap is None else raw_leap,
        SOURCES[f["source"]],
        f["stratum"],
        0,
        f["key"],
        0,
        f["transmitter"],
        f["session"],
        f["sequence"],
        f["error_us"],
        f["second"],
        f["tx_offset_ns"],
    )


def signed(b, secret):
    return b + hmac.new(secret, b, hashlib.sha256).digest()[:16]


def fields(**kw):
    unknown = set(kw) - set(DEFAULTS)
    assert not unknown, unknown
    d = dict(DEFAULTS)
    d.update(kw)
    return d


def show(d):
    out = []
    for k, v in d.items():
        if k in ("transmitter", "session"):
            v = "0x%08x" % v
        out.append("%s=%s" % (k, v))
    return " ".join(out)


lines = [
    "# Tick protocol v1 test vectors (docs/tick-protocol.md), written by generate.py.",
    "# Shared by the Rust tests, the kernel module's and the firmware's test suites.",
    "#",
    "# key id=N hex=SECRET",
    "# vector name=NAME expect=VERDICT hex=BYTES [decoded fields...]",
    "#   VERDICT: ok, legacy, or the reason a receiver rejects it: truncated, oversized,",
    "#   bad-magic, bad-version, malformed (decoding), unknown-key, bad-mac (authentication).",
    "#   Decoded fields are listed for every vector that decodes (ok, unknown-key, bad-mac).",
    "",
]
for kid, secret in KEYS.items():
    lines.append("key id=%d hex=%s" % (kid, secret.hex()))
lines.append("")


def vec(name, expect, data, decoded=None):
    s = "vector name=%s expect=%s hex=%s" % (name, expect, data.hex())
    if decoded:
        s += " " + show(decoded)
    lines.append(s)


def good(name, secret=None, **kw):
    """A vector that decodes: the tick with these fields, signed by `secret` if given."""
    b = body(**kw)
    if secret is not None:
        b = signed(b, secret)
    vec(name, "ok", b, fields(**kw))
    return b


tick1 = good("tick-key1", KEYS[1], key=1, flags=1)
good("follow-up-key1", KEYS[1], key=1, kind="follow-up", tx_offset_ns=-23456)
good(
    "tick-unauthenticated-dcf77-leap",
    key=0,
    source="dcf77",
    stratum=0,
    state="holdover",
    leap="insert",
    error_us=50000,
    transmitter=0xDCF77001,
    session=0x00000001,
    sequence=4294967295,
    second=1782863999,
)
good(
    "tick-key2-after-2036",
    KEYS[2],
    key=2,
    source="pps",
    stratum=0,
    second=2240611200,
    error_us=4294967295,
    leap="delete",
    state="unsynchronized",
    sequence=0,
)
good(
    "follow-up-before-1970-hardware",
    key=0,
    source="gnss",
    stratum=0,
    second=-86400,
    kind="follow-up",
    tx_offset_ns=999999999,
    flags=2,
)
vec("legacy-time", "legacy", b"time")

bad = bytearray(tick1)
bad[-1] ^= 0x01
vec("tick-key1-mac-flipped", "bad-mac", bytes(bad), fields(key=1, flags=1))
bad = bytearray(tick1)
bad[39] ^= 0x01  # second changed after signing
vec("tick-key1-second-changed", "bad-mac", bytes(bad), fields(key=1, flags=1, second=1767225601))
vec("tick-unknown-key", "unknown-key", signed(body(key=9), FOREIGN_KEY), fields(key=9))

vec("empty", "truncated", b"")
vec("legacy-prefix", "truncated", b"tim")
vec("tick-key1-cut-to-47", "truncated", tick1[:47])
vec("tick-key1-cut-to-60", "truncated", tick1[:60])
vec("tick-unauthenticated-plus-1", "oversized", body() + b"\x00")
vec("tick-key1-plus-4", "oversized", tick1 + b"\x00" * 4)
vec("legacy-with-newline", "bad-magic", b"time\n")
vec("wrong-magic", "bad-magic", body(magic=b"NOTX"))
vec("version-2", "bad-version", body(version=2))
vec("version-0", "bad-version", body(version=0))
vec("kind-3", "malformed", body(raw_kind=3))
vec("state-3", "malformed", body(raw_state=3))
vec("leap-3", "malformed", body(raw_leap=3))
vec("tick-with-tx-offset", "malformed", body(tx_offset_ns=5))
vec("follow-up-offset-1s", "malformed", body(kind="follow-up", tx_offset_ns=1000000000))
vec("follow-up-offset-minus-1s", "malformed", body(kind="follow-up", tx_offset_ns=-1000000000))

out = sys.argv[1] if len(sys.argv) > 1 else "tick-v1.txt"
with open(out, "w") as fh:
    fh.write("\n".join(lines) + "\n")
