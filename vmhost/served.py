"""What the guest tests share about their server: its config's first part, their working
directory, and (for the tests that walk clients: load_test.py, walk_test.py) what it serves
each guest, read against the guest's clock."""

import json
import subprocess
import tempfile
import time
from pathlib import Path


def config_head(server, state_dir, views):
    """A serve config answering on `server`:123 only the clients a group names, with its own
    state and control socket (other guest tests may run a serve on this host meanwhile), and
    `views` (name -> offset in seconds)."""
    text = (
        f'[server]\nlisten = ["{server}:123"]\nlocal_stratum = 10\nunmatched = "deny"\n'
        f'state_dir = "{state_dir}"\n[control]\nsocket = "{Path(state_dir) / "serve.sock"}"\n'
    )
    for name, secs in views.items():
        text += f'[[view]]\nname = "{name}"\noffset = "{secs}s"\n'
    return text


def workdir():
    """A temporary directory (removed with the returned object), its `state` directory and
    where the config goes."""
    tmp = tempfile.TemporaryDirectory()
    state = Path(tmp.name) / "state"
    state.mkdir()
    return tmp, state, Path(tmp.name) / "serve.toml"


class ServedClocks:
    """Guests `guests` at `addrs`, served by the serve whose control socket is in `state`;
    `offsets`: view name -> offset in seconds; `ntpd`: the indexes of guests running ntpd
    (the others run chronyd)."""

    def __init__(self, args, ns, state, guests, addrs, offsets, ntpd):
        self.args, self.ns, self.state = args, ns, state
        self.guests, self.addrs, self.offsets, self.ntpd = guests, addrs, offsets, set(ntpd)
        # (host time, guest, its clock's offset, served before and after, reading's bound)
        self.trace = []

    def clients(self):
        out = subprocess.run(
            self.ns.cmd(
                self.args.sender, "clients", "--socket", str(self.state / "serve.sock"), "--json"
            ),
            capture_output=True,
            text=True,
            timeout=20,
        )
        return {c["address"]: c for c in json.loads(out.stdout)}

    def served(self, entry):
        """What the server serves this client now: its view's offset less the walk to go."""
        return self.offsets[entry["view"]] - (entry.get("walk_left_s") or 0.0)

    def deviation(self, i):
        """Guest i's clock minus the offset it is served, beyond the reading's bound (the
        served offset is read just before and after the clock; their difference widens it)."""
        before = self.clients().get(self.addrs[i])
        off, bound = self.guests[i].clock_offset()
        after = self.clients().get(self.addrs[i])
        if not before or not after:
            return 0.0
        a, b = self.served(before), self.served(after)
        self.trace.append((time.time(), i, off, a, b, bound))
        return abs(off - (a + b) / 2) - bound - abs(b - a) / 2

    def print_trace(self, i, rows_shown=12):
        """Guest i's readings: its clock and what it was served, from the first to the last."""
        rows = [r for r in self.trace if r[1] == i]
        for t, _, off, a, b, bound in rows[:: max(1, len(rows) // rows_shown)] + rows[-1:]:
            print(
                f"    g{i} {time.strftime('%H:%M:%S', time.gmtime(t))} clock {off:+.3f} s, "
                f"served {a:+.3f}..{b:+.3f} s (+- {bound * 1000:.0f} ms)",
                flush=True,
            )

    def steps(self, i):
        """How many times guest i's client stepped its clock so far."""
        pattern = "time stepped" if i in self.ntpd else "System clock was stepped"
        _, out = self.guests[i].run(f"grep -c '{pattern}' /tmp/client.log")
        return int(next((x for x in out if x.strip().isdigit()), "0"))
