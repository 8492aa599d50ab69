/*
 * Host test of the firmware's DCF77 decoder against the shared signal cases
 * (testvectors/dcf77-signals.txt), the same file the Rust decoder passes. Built with
 * AddressSanitizer and UndefinedBehaviorSanitizer by firmware/test/Makefile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../arduino/dcf77.h"

#define MAX_PULSES 4096
#define MAX_MARKS 2048

struct expect {
	long long at_ms, second;
	int state;
	int leap;
};

static long long pulses[MAX_PULSES][2];
static struct expect expected[MAX_MARKS];
static struct dcf77_mark got[MAX_MARKS * 2];
static int failures;

static int edge_cmp(const void *a, const void *b)
{
	const long long *x = a, *y = b;

	return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : (int)(x[1] - y[1]);
}

static void collect(struct dcf77_marks *m, int *n)
{
	for (int i = 0; i < m->n && *n < MAX_MARKS * 2; i++)
		got[(*n)++] = m->m[i];
	m->n = 0;
}

static void poll_until(struct dcf77 *d, long long t_us, int *n)
{
	struct dcf77_marks m = {0};
	int64_t at;

	while (dcf77_next_deadline(d, &at) && at <= t_us) {
		dcf77_poll(d, at, &m);
		collect(&m, n);
	}
}

static void run_case(const char *name, long long calibration_ms, long long duration_ms,
		     int npulses, int nexpected)
{
	static long long edges[MAX_PULSES * 2][2];
	struct dcf77 d;
	struct dcf77_marks m = {0};
	int n = 0, k = 0, nedges = 0;

	for (int i = 0; i < npulses; i++) {
		edges[nedges][0] = pulses[i][0] * 1000;
		edges[nedges++][1] = 1;
		edges[nedges][0] = (pulses[i][0] + pulses[i][1]) * 1000;
		edges[nedges++][1] = 0;
	}
	qsort(edges, nedges, sizeof(edges[0]), edge_cmp);
	dcf77_init(&d, calibration_ms * 1000, 3600LL * 1000000);
	for (int i = 0; i < nedges; i++) {
		poll_until(&d, edges[i][0], &n);
		dcf77_edge(&d, edges[i][0], edges[i][1], &m);
		collect(&m, &n);
	}
	poll_until(&d, duration_ms * 1000, &n);
	for (int i = 0; i < n; i++) {
		const struct dcf77_mark *g = &got[i];
		const struct expect *e;

		if (g->state == DCF77_UNSYNCHRONIZED)
			continue;
		if (k >= nexpected) {
			printf("FAIL %s: an extra mark at %lld ms\n", name, (long long)g->at_us / 1000);
			failures++;
			return;
		}
		e = &expected[k++];
		if (g->at_us != e->at_ms * 1000 || g->second != e->second || g->state != e->state ||
		    g->leap_second != e->leap) {
			printf("FAIL %s: mark %d: got %lld us second %lld state %d leap %d, want %lld ms %lld %d %d\n",
			       name, k - 1, (long long)g->at_us, (long long)g->second, g->state,
			       g->leap_second, e->at_ms, e->second, e->state, e->leap);
			failures++;
			return;
		}
	}
	if (k != nexpected) {
		printf("FAIL %s: %d marks, want %d\n", name, k, nexpected);
		failures++;
		return;
	}
	printf("ok   %s: %d marks\n", name, k);
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "testvectors/dcf77-signals.txt";
	FILE *f = fopen(path, "r");
	char line[256], name[64] = "", state[16], leap[16];
	long long cal = 0, dur = 0, a, b, c;
	int np = 0, ne = 0, cases = 0;

	if (!f) {
		perror(path);
		return 1;
	}
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "case name=%63s calibration_ms=%lld duration_ms=%lld", name, &cal,
			   &dur) == 3) {
			np = ne = 0;
		} else if (sscanf(line, "pulse %lld %lld", &a, &b) == 2 && np < MAX_PULSES) {
			pulses[np][0] = a;
			pulses[np++][1] = b;
		} else if (strncmp(line, "expect ", 7) == 0 && ne < MAX_MARKS) {
			leap[0] = 0;
			if (sscanf(line, "expect %lld %lld %15s %15s", &a, &c, state, leap) < 3)
				continue;
			expected[ne].at_ms = a;
			expected[ne].second = c;
			expected[ne].state = strcmp(state, "holdover") == 0 ? DCF77_HOLDOVER :
					     DCF77_SYNCHRONIZED;
			expected[ne++].leap = strcmp(leap, "leap") == 0;
		} else if (strncmp(line, "end", 3) == 0) {
			run_case(name, cal, dur, np, ne);
			cases++;
		}
	}
	fclose(f);
	if (cases < 6) {
		printf("FAIL: only %d cases in %s\n", cases, path);
		return 1;
	}
	return failures ? 1 : 0;
}
