/* DCF77 decoding; the rules are in dcf77.h and docs/dcf77.md. */
#include "dcf77.h"

#include <string.h>

#define S_US 1000000LL
#define MS_US 1000LL
#define MERGE_US (40 * MS_US)
#define WINDOW_US (15 * MS_US)
#define MIN_PULSE_US (40 * MS_US)
#define ONE_PULSE_US (150 * MS_US)
#define MAX_PULSE_US (250 * MS_US)
#define LOCK_AFTER 3
#define UNLOCK_AFTER_MISSING 3

static int64_t floor_mod(int64_t a, int64_t b)
{
	int64_t r = a % b;
	return r < 0 ? r + b : r;
}

void dcf77_init(struct dcf77 *d, int64_t calibration_us, int64_t holdover_limit_us)
{
	memset(d, 0, sizeof(*d));
	d->calibration_us = calibration_us;
	d->holdover_limit_us = holdover_limit_us;
	d->index = -1;
	d->slot_index = -1;
	memset(d->bits, -1, sizeof(d->bits));
}

static void unlock(struct dcf77 *d)
{
	dcf77_init(d, d->calibration_us, d->holdover_limit_us);
}

static int minute_length(const struct dcf77 *d)
{
	return d->synced && d->leap_announced && floor_mod(d->minute_start, 3600) == 3540 ? 61 : 60;
}

static bool expects_gap(const struct dcf77 *d)
{
	return d->synced && d->index == minute_length(d) - 1;
}

static int64_t slot_grace(const struct dcf77 *d)
{
	return expects_gap(d) ? 0 : WINDOW_US + 1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (month 13: January next year). */
static int64_t days_from_civil(int64_t year, int64_t month, int64_t day)
{
	int64_t y = month > 12 ? year + 1 : year;
	int64_t m = month > 12 ? month - 12 : month;
	int64_t era, yoe, mp, doy, doe;

	if (m <= 2)
		y -= 1;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	mp = (m + 9) % 12;
	doy = (153 * mp + 2) / 5 + day - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int field(const int8_t *b, int from, int n, const int *weights)
{
	int v = 0;

	for (int i = 0; i < n; i++)
		if (b[from + i])
			v += weights[i];
	return v;
}

static bool even(const int8_t *b, int from, int to)
{
	int ones = 0;

	for (int i = from; i < to; i++)
		ones += b[i];
	return ones % 2 == 0;
}

/* The minute a frame describes, if every check passes. */
static bool decode_frame(const int8_t *b, int64_t *minute_start, bool *leap)
{
	static const int w7[] = {1, 2, 4, 8, 10, 20, 40, 80};
	static const int units[][2] = {{21, 4}, {29, 4}, {36, 4}, {45, 4}, {50, 4}, {54, 4}};
	/*
	 * 64-bit on purpose: on the AVR `int` has 16 bits, and `hour * 3600` in int overflows
	 * from 10:00 on (the seconds came out 65,536 s early every afternoon).
	 */
	int64_t minute, hour, day, weekday, month, year, days, month_length;

	for (int i = 0; i < 59; i++)
		if (b[i] < 0)
			return false;
	if (b[0] || !b[20] || b[17] == b[18] || !even(b, 21, 29) || !even(b, 29, 36) ||
	    !even(b, 36, 59))
		return false;
	for (unsigned i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (field(b, units[i][0], units[i][1], w7) > 9)
			return false;
	minute = field(b, 21, 7, w7);
	hour = field(b, 29, 6, w7);
	day = field(b, 36, 6, w7);
	weekday = field(b, 42, 3, w7);
	month = field(b, 45, 5, w7);
	year = 2000 + field(b, 50, 8, w7);
	if (minute > 59 || hour > 23 || month < 1 || month > 12 || day < 1 || day > 31)
		return false;
	days = days_from_civil(year, month, day);
	month_length = days_from_civil(year, month + 1, 1) - days_from_civil(year, month, 1);
	if (day > month_length || floor_mod(days + 3, 7) + 1 != weekday)
		return false;
	*minute_start = days * 86400 + hour * 3600 + minute * 60 - (b[17] ? 7200 : 3600);
	*leap = b[19];
	return true;
}

static void push(struct dcf77_marks *out, const struct dcf77_mark *m)
{
	if (out->n < DCF77_MAX_MARKS)
		out->m[out->n++] = *m;
}

static void end_minute(struct dcf77 *d)
{
	int64_t start = 0;
	bool leap = false;
	bool valid = decode_frame(d->bits, &start, &leap);

	memset(d->bits, -1, sizeof(d->bits));
	d->index = 0;
	if (!d->synced) {
		if (valid && d->has_previous && d->previous_minute + 60 == start) {
			d->synced = true;
			d->minute_start = start;
			d->leap_announced = leap;
			d->disagreements = 0;
		}
		d->has_previous = valid;
		d->previous_minute = start;
		return;
	}
	d->minute_start += 60;
	if (!valid) {
		/* Missing or bad bits: keep counting; an announcement ends with its hour. */
		if (floor_mod(d->minute_start, 3600) == 0)
			d->leap_announced = false;
	} else if (start == d->minute_start) {
		d->disagreements = 0;
		d->leap_announced = leap;
	} else if (++d->disagreements >= 2) {
		d->synced = false;
		d->has_previous = true;
		d->previous_minute = start;
	}
}

/* Reports the current slot's mark and moves to the next slot. */
static void emit_slot(struct dcf77 *d, int64_t at, bool pulse, struct dcf77_marks *out)
{
	bool gap = !pulse && expects_gap(d);
	int index = d->index;
	int length = minute_length(d);
	bool minute_ends;
	struct dcf77_mark m;

	if (pulse) {
		d->missing_in_row = 0;
		d->has_holdover = false;
	}
	m.at_us = at;
	m.state = !d->synced ? DCF77_UNSYNCHRONIZED :
		  (pulse || gap) ? DCF77_SYNCHRONIZED : DCF77_HOLDOVER;
	m.second = d->synced && index >= 0 ? d->minute_start + (index < 59 ? index : 59) : 0;
	m.leap_second = length == 61 && index == 60;
	m.leap_announced = d->leap_announced;
	push(out, &m);
	d->has_slot = true;
	d->next_slot = at + S_US;
	minute_ends = d->synced ? index == length - 1 : (!pulse && index == 59);
	if (minute_ends)
		end_minute(d);
	else if (index >= 0)
		d->index = (int8_t)(index + 1 < 60 ? index + 1 : 60);
}

static void missing_slot(struct dcf77 *d, int64_t slot, struct dcf77_marks *out)
{
	if (!expects_gap(d)) {
		d->missing_in_row++;
		if (!d->synced) {
			if (d->missing_in_row > UNLOCK_AFTER_MISSING) {
				unlock(d);
				return;
			}
			d->index = 59; /* not synchronized: a gap is the minute mark */
		} else {
			if (!d->has_holdover) {
				d->has_holdover = true;
				d->holdover_since = slot;
			}
			if (slot - d->holdover_since > d->holdover_limit_us) {
				unlock(d);
				return;
			}
		}
	}
	d->has_slot_rise = false;
	d->slot_index = d->index;
	emit_slot(d, slot, false, out);
}

static void end_pulse(struct dcf77 *d, int64_t fall)
{
	int64_t rise = d->rise, width = fall - rise, apart;
	bool bit, whole = false;

	d->has_rise = false;
	d->has_fall = false;
	if (width < MIN_PULSE_US || width > MAX_PULSE_US)
		return; /* noise */
	bit = width >= ONE_PULSE_US;
	if (d->has_slot_rise && d->slot_rise == rise) {
		if (d->slot_index >= 0 && d->slot_index < 60)
			d->bits[d->slot_index] = bit;
		return;
	}
	if (d->has_slot)
		return; /* locked: a pulse outside its slot is noise */
	if (d->has_candidate) {
		int64_t n;

		apart = rise - d->candidate;
		n = (apart + S_US / 2) / S_US;
		whole = n >= 1 && n <= 2 && apart - n * S_US <= WINDOW_US &&
			n * S_US - apart <= WINDOW_US;
	}
	d->in_a_row = (uint8_t)(whole ? d->in_a_row + 1 : 1);
	d->has_candidate = true;
	d->candidate = rise;
	if (d->in_a_row >= LOCK_AFTER) {
		d->has_slot = true;
		d->next_slot = rise + S_US;
		d->index = -1;
		d->missing_in_row = 0;
	}
}

static void advance(struct dcf77 *d, int64_t t, struct dcf77_marks *out)
{
	for (;;) {
		bool pulse_end = !d->high && d->has_rise && d->has_fall && d->fall + MERGE_US <= t;
		bool slot_due = d->has_slot && d->next_slot + slot_grace(d) <= t;

		if (pulse_end && (!slot_due || d->fall + MERGE_US <= d->next_slot + slot_grace(d)))
			end_pulse(d, d->fall);
		else if (slot_due)
			missing_slot(d, d->next_slot, out);
		else
			return;
	}
}

void dcf77_edge(struct dcf77 *d, int64_t t_us, bool high, struct dcf77_marks *out)
{
	int64_t t = t_us - d->calibration_us;

	advance(d, t, out);
	if (high == d->high)
		return;
	d->high = high;
	if (!high) {
		d->has_fall = true;
		d->fall = t;
		return;
	}
	if (d->has_fall && d->has_rise && t - d->fall < MERGE_US) {
		d->has_fall = false; /* a drop-out: the same pulse goes on */
		return;
	}
	d->has_rise = true;
	d->rise = t;
	d->has_fall = false;
	if (d->has_slot && t - d->next_slot <= WINDOW_US && d->next_slot - t <= WINDOW_US) {
		d->has_slot_rise = true;
		d->slot_rise = t;
		d->slot_index = d->index;
		emit_slot(d, t, true, out);
	}
}

void dcf77_poll(struct dcf77 *d, int64_t now_us, struct dcf77_marks *out)
{
	advance(d, now_us - d->calibration_us, out);
}

bool dcf77_next_deadline(const struct dcf77 *d, int64_t *at_us)
{
	bool any = false;
	int64_t t = 0;

	if (!d->high && d->has_rise && d->has_fall) {
		t = d->fall + MERGE_US;
		any = true;
	}
	if (d->has_slot && (!any || d->next_slot + slot_grace(d) < t)) {
		t = d->next_slot + slot_grace(d);
		any = true;
	}
	if (any)
		*at_us = t + d->calibration_us;
	return any;
}
