/*
 * Unit test of the firmware's DCF77 decoder against the shared signal cases
 * (testvectors/dcf77-signals.txt, on standard input), the file the Rust decoder passes.
 * Built twice by firmware/test/Makefile: for the host with AddressSanitizer and
 * UndefinedBehaviorSanitizer, and for the ATmega328P, run in simavr, where `int` has 16 bits.
 * It streams: each case's lines are in time order, and each mark the decoder reports is
 * checked against the expectations read so far, so a case never has to fit in the AVR's RAM.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "../arduino/dcf77.h"
#include "test_io.h"

/* Expectations read but not yet met: a few seconds' worth at most (missing pulses, gaps). */
#define QUEUE 8

struct expect {
	int64_t at_ms, second;
	uint8_t state;
	bool leap;
};

struct run {
	char name[48];
	struct dcf77 d;
	bool has_fall, failed;
	int64_t fall_us;
	struct expect queue[QUEUE];
	uint8_t head, queued;
	int matched, expected;
};

static struct run r;
static int failures, cases;

static void fail(const char *what, const struct dcf77_mark *g)
{
	char a[24], b[24];

	if (r.failed)
		return;
	r.failed = true;
	failures++;
	printf("FAIL %s: %s", r.name, what);
	if (g)
		printf(" (mark at %s us, second %s, state %d, leap %d)", fmt_i64(g->at_us, a),
		       fmt_i64(g->second, b), g->state, g->leap_second);
	printf("\n");
}

static void check(const struct dcf77_marks *m)
{
	for (uint8_t i = 0; i < m->n; i++) {
		const struct dcf77_mark *g = &m->m[i];
		const struct expect *e;

		if (g->state == DCF77_UNSYNCHRONIZED)
			continue;
		if (!r.queued) {
			fail("a mark nobody expects", g);
			continue;
		}
		e = &r.queue[r.head];
		r.head = (uint8_t)((r.head + 1) % QUEUE);
		r.queued--;
		if (!r.failed && (g->at_us != e->at_ms * 1000 || g->second != e->second ||
				  g->state != e->state || g->leap_second != e->leap)) {
			char a[24], b[24];

			printf("  want mark at %s ms, second %s, state %d, leap %d\n",
			       fmt_i64(e->at_ms, a), fmt_i64(e->second, b), e->state, e->leap);
			fail("a wrong mark", g);
		}
		r.matched++;
	}
}

static void poll_until(int64_t t_us)
{
	int64_t at;

	while (dcf77_next_deadline(&r.d, &at) && at <= t_us) {
		struct dcf77_marks m = {0};

		dcf77_poll(&r.d, at, &m);
		check(&m);
	}
}

static void edge(int64_t t_us, bool high)
{
	struct dcf77_marks m = {0};

	poll_until(t_us);
	dcf77_edge(&r.d, t_us, high, &m);
	check(&m);
}

static void begin_case(const char *line)
{
	const char *p = strstr(line, "calibration_ms=");
	int64_t calibration_ms;

	memset(&r, 0, sizeof(r));
	sscanf(line, "case name=%47s", r.name);
	calibration_ms = p ? (p += 15, parse_i64(&p)) : 0;
	dcf77_init(&r.d, calibration_ms * 1000, 3600LL * 1000000);
}

static void pulse(const char *p)
{
	int64_t start = parse_i64(&p) * 1000, width = parse_i64(&p) * 1000;

	if (r.has_fall && start < r.fall_us)
		fail("pulses overlap or are out of order", NULL);
	if (r.has_fall)
		edge(r.fall_us, false);
	edge(start, true);
	r.has_fall = true;
	r.fall_us = start + width;
}

static void expect(const char *p)
{
	struct expect e;
	char state[16] = "", leap[8] = "";

	e.at_ms = parse_i64(&p);
	e.second = parse_i64(&p);
	sscanf(p, "%15s %7s", state, leap);
	e.state = strcmp(state, "holdover") == 0 ? DCF77_HOLDOVER : DCF77_SYNCHRONIZED;
	e.leap = strcmp(leap, "leap") == 0;
	r.expected++;
	if (r.queued == QUEUE) {
		fail("expectations run more than a few seconds ahead of the marks", NULL);
		return;
	}
	r.queue[(r.head + r.queued) % QUEUE] = e;
	r.queued++;
}

static void end_case(const char *duration)
{
	const char *p = strstr(duration, "duration_ms=");

	if (r.has_fall)
		edge(r.fall_us, false);
	poll_until(p ? (p += 12, parse_i64(&p)) * 1000 : 0);
	if (r.queued)
		fail("expected marks never came", NULL);
	if (!r.failed)
		printf("ok   %s: %d marks\n", r.name, r.matched);
	cases++;
}

int main(void)
{
	static char line[128], header[128];

	while (fgets(line, sizeof(line), stdin)) {
		if (strncmp(line, "case ", 5) == 0) {
			strcpy(header, line);
			begin_case(line);
		} else if (strncmp(line, "pulse ", 6) == 0) {
			pulse(line + 6);
		} else if (strncmp(line, "expect ", 7) == 0) {
			expect(line + 7);
		} else if (strncmp(line, "end", 3) == 0) {
			end_case(header);
		}
	}
	/* Every local hour in CET and CEST alone are 48 cases: a cut input must not pass. */
	if (cases < 60) {
		printf("FAIL: only %d cases on standard input\n", cases);
		return 1;
	}
	printf("%d cases, %d failed\n", cases, failures);
	return failures ? 1 : 0;
}
