#!/usr/bin/env python3
"""Writes dcf77-signals.txt: DCF77 receiver-module signals and the second marks a decoder
must report for them (docs/dcf77.md). Shared by the Rust decoder and the firmware's tests.

Python's standard library only, independent of the decoders it checks. Each case is a list of
pulses as the module outputs them (level high = carrier reduced), and the expected second
marks from the moment the decoder is synchronized: the minute mark after two consecutive
valid, consistent frames.
"""
import calendar
import sys
import time

CET, CEST = 3600, 7200


def bcd(value, weights):
    bits, tens = [], value // 10
    ones = value % 10
    for w in weights:
        if w >= 10:
            bits.append((tens >> {10: 0, 20: 1, 40: 2, 80: 3}[w]) & 1)
        else:
            bits.append((ones >> {1: 0, 2: 1, 4: 2, 8: 3}[w]) & 1)
    return bits


def last_sunday(year, month):
    """UTC midnight of the last Sunday of a month."""
    last = calendar.monthrange(year, month)[1]
    day = max(d for d in range(last - 6, last + 1) if calendar.weekday(year, month, d) == 6)
    return calendar.timegm((year, month, day, 0, 0, 0))


def eu_summer(minute_utc):
    """CEST from 01:00 UTC on the last Sunday of March to 01:00 UTC on October's."""
    year = time.gmtime(minute_utc).tm_year
    return last_sunday(year, 3) + 3600 <= minute_utc < last_sunday(year, 10) + 3600


def frame(minute_utc, summer, announce_leap):
    """The 59 bits sent during the minute before `minute_utc`, describing `minute_utc`.
    `summer`: True (CEST), False (CET) or None (the EU rule, with bit 16 announcing a change
    during the hour before it)."""
    announce_change = False
    if summer is None:
        summer = eu_summer(minute_utc)
        announce_change = any(eu_summer(minute_utc + k * 60) != summer for k in range(1, 61))
    local = minute_utc + (CEST if summer else CET)
    t = time.gmtime(local)
    bits = [0] * 59
    bits[16] = 1 if announce_change else 0
    bits[17], bits[18] = (1, 0) if summer else (0, 1)
    bits[19] = 1 if announce_leap else 0
    bits[20] = 1
    bits[21:28] = bcd(t.tm_min, [1, 2, 4, 8, 10, 20, 40])
    bits[28] = sum(bits[21:28]) % 2
    bits[29:35] = bcd(t.tm_hour, [1, 2, 4, 8, 10, 20])
    bits[35] = sum(bits[29:35]) % 2
    bits[36:42] = bcd(t.tm_mday, [1, 2, 4, 8, 10, 20])
    bits[42:45] = bcd(t.tm_wday + 1, [1, 2, 4])  # Monday = 1
    bits[45:50] = bcd(t.tm_mon, [1, 2, 4, 8, 10])
    bits[50:58] = bcd(t.tm_year % 100, [1, 2, 4, 8, 10, 20, 40, 80])
    bits[58] = sum(bits[36:58]) % 2
    return bits


class Signal:
    """Builds a case: minutes of pulses from `start` (a UTC minute), marks relative to it."""

    def __init__(self, name, start, summer=False, delay_ms=0, leap_at=None):
        self.name, self.start, self.summer, self.delay = name, start, summer, delay_ms
        self.leap_at = leap_at  # UTC instant after which a second is inserted
        self.pulses = []  # (start_ms, width_ms)
        self.marks = []  # (mark_ms, unix second, state, leap second?)
        self.t = 0  # ms since start of the signal, at the current minute's second 0

    def minute(self, corrupt=(), drop=(), spikes=(), dropouts=(), synced=False, from_second=0):
        """One minute of signal; `from_second` > 0 starts the signal inside it."""
        utc = self.start + (self.t // 1000) - self.leaps_before(self.t)
        leap_minute = self.leap_at is not None and utc + 60 == self.leap_at
        bits = frame(
            utc + 60,
            self.summer,
            self.leap_at is not None and self.leap_at - 3600 <= utc < self.leap_at,
        )
        for k in corrupt:
            bits[k] ^= 1
        seconds = 61 if leap_minute else 60
        for k in range(from_second, seconds):
            mark = self.t + 1000 * k
            pulse = k < 59 or (leap_minute and k == 59)
            bit = bits[k] if k < 59 else 0
            if pulse and k not in drop:
                width = 200 if bit else 100
                if k in dropouts:  # the carrier returns for 6 ms inside the pulse
                    self.pulses.append((mark + self.delay, 40))
                    self.pulses.append((mark + self.delay + 46, width - 46))
                else:
                    self.pulses.append((mark + self.delay, width))
            if k in spikes:
                self.pulses.append((mark + 500 + self.delay, 8))
            if synced:
                second = utc + min(k, 59)
                state = "holdover" if pulse and k in drop else "sync"
                self.marks.append((mark, second, state, k == 60))
        self.t += 1000 * seconds

    def leaps_before(self, t_ms):
        if self.leap_at is None:
            return 0
        # Seconds of signal are UTC seconds plus one once past the inserted second.
        return 1 if self.start + t_ms // 1000 > self.leap_at else 0

    def write(self, out):
        # One time-ordered stream, an expectation before a pulse at the same instant: a test
        # on a small target can check each mark as it comes without holding the whole case.
        lines = [(s, 1, f"pulse {s} {w}") for s, w in self.pulses]
        lines += [
            (mark, 0, f"expect {mark} {second} {state}{' leap' if leap else ''}")
            for mark, second, state, leap in self.marks
        ]
        out.write(f"case name={self.name} calibration_ms={self.delay} duration_ms={self.t}\n")
        for _, _, line in sorted(lines):
            out.write(line + "\n")
        out.write("end\n\n")


def utc(y, mo, d, h, mi):
    return calendar.timegm((y, mo, d, h, mi, 0))


def acquired(s, synced_minutes):
    """The usual start: from second 50 of a minute (the gap at second 59 aligns the decoder),
    two valid frames 60 s apart, then synchronized minutes from the minute mark after them."""
    s.minute(from_second=50)
    s.minute()
    s.minute()
    for _ in range(synced_minutes):
        s.minute(synced=True)
    return s


def cases():
    yield acquired(Signal("cet-winter", utc(2026, 1, 14, 10, 56)), 2)
    # Across local midnight (CEST 00:00 = 22:00 UTC): the local date changes.
    yield acquired(
        Signal("cest-summer-module-delay-35ms", utc(2026, 7, 1, 21, 57), summer=True, delay_ms=35),
        2,
    )

    s = Signal("glitches-spikes-and-dropouts", utc(2026, 3, 2, 7, 59))
    s.minute(from_second=50, spikes=(52, 55))
    s.minute(spikes=range(0, 59, 3), dropouts=(5, 21, 40))
    s.minute(spikes=range(1, 59, 4), dropouts=(7,))
    s.minute(synced=True, spikes=range(0, 60, 2), dropouts=(3, 33, 58))
    yield s

    s = Signal("parity-error-delays-sync", utc(2026, 5, 20, 14, 9))
    s.minute(from_second=50)
    s.minute()
    s.minute(corrupt=(22,))  # the minute's parity fails: this frame is not used
    s.minute()
    s.minute()
    s.minute(synced=True)
    yield s

    s = Signal("missing-pulses-flywheel", utc(2026, 11, 25, 6, 29))
    s.minute(from_second=50)
    s.minute()
    s.minute()
    s.minute(synced=True, drop=(10, 11, 12))  # 3 seconds from the oscillator, as holdover
    s.minute(synced=True)
    yield s

    # 2016-12-31: a second inserted after 23:59:59 UTC (00:59:59 CET). The announcement bit is
    # set during the hour before; the minute 23:59 has 61 seconds, the 61st without a pulse.
    yield acquired(
        Signal("leap-second-2016", utc(2016, 12, 31, 23, 55), leap_at=utc(2017, 1, 1, 0, 0)), 3
    )

    # Every local hour in both zones: synchronized across HH:59 -> HH+1:00 local. On the AVR
    # `int` has 16 bits, and an hour's seconds (hour * 3600) overflow it from 10:00 on.
    for name, summer, day in (("cet", False, (2026, 1, 14)), ("cest", True, (2026, 7, 15))):
        for hour in range(24):
            start = utc(*day, hour, 56) - (CEST if summer else CET)
            yield acquired(Signal(f"hour-{name}-{hour:02}", start, summer=summer), 2)

    # An afternoon with room for the firmware's simavr run to restart the AVR after the first
    # synchronized minute and synchronize again (crates/ntp-offset/tests/integration/firmware.rs).
    yield acquired(Signal("afternoon-cest-15h-restart", utc(2026, 7, 15, 13, 56), summer=True), 6)

    # Local midnights that end a month, a leap February and a year (the frame's date changes
    # with the local date, hours before UTC's).
    for name, y, mo, d, summer in (
        ("month-end-feb-2026", 2026, 2, 28, False),
        ("month-end-feb-leap-2028", 2028, 2, 28, False),
        ("month-end-feb-29-2028", 2028, 2, 29, False),
        ("month-end-apr-2026", 2026, 4, 30, True),
        ("year-end-2026", 2026, 12, 31, False),
    ):
        start = utc(y, mo, d, 23, 56) - (CEST if summer else CET)
        yield acquired(Signal(name, start, summer=summer), 2)

    # The change-over nights, at 01:00 UTC: CET 02:00 -> CEST 03:00, and CEST 03:00 -> CET
    # 02:00 (the local hour repeats; UTC does not). Bit 16 announces the change for an hour.
    yield acquired(Signal("dst-to-summer-2026", utc(2026, 3, 29, 0, 56), summer=None), 2)
    yield acquired(Signal("dst-to-winter-2026", utc(2026, 10, 25, 0, 56), summer=None), 2)


def main():
    out = sys.stdout if len(sys.argv) < 2 else open(sys.argv[1], "w")
    out.write(
        "# DCF77 signal cases (docs/dcf77.md), written by generate_dcf77.py.\n"
        "# Shared by the Rust decoder's and the firmware's tests.\n#\n"
        "# case name=NAME calibration_ms=MODULE_DELAY duration_ms=LENGTH\n"
        "# pulse START_MS WIDTH_MS       module output high (carrier reduced)\n"
        "# expect MARK_MS UNIX_SECOND STATE [leap]\n"
        "#   every second mark the decoder reports once synchronized: the true\n"
        "#   mark (pulse start minus the module delay), the UTC second it starts (Unix\n"
        "#   seconds; the inserted leap second repeats 23:59:59's), and sync or holdover.\n"
        "# Within a case, lines are in time order (an expect before a pulse at the same ms).\n\n"
    )
    for c in cases():
        c.write(out)


if __name__ == "__main__":
    main()
