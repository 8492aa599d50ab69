/*
 * DCF77 decoding: receiver-module edges -> second marks with their UTC second.
 * The same rules as the Rust decoder (crates/proto/src/dcf77.rs, docs/dcf77.md); both pass
 * testvectors/dcf77-signals.txt. Plain C99, no allocation: runs on the ATmega328P and is
 * unit-tested on the host with sanitizers (firmware/test/).
 */
#ifndef NTP_OFFSET_DCF77_H
#define NTP_OFFSET_DCF77_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum dcf77_state {
	DCF77_UNSYNCHRONIZED, /* phase locked, second not known yet */
	DCF77_SYNCHRONIZED,
	DCF77_HOLDOVER,       /* a second from the oscillator where a pulse was missing */
};

struct dcf77_mark {
	int64_t at_us;        /* the mark, calibration removed */
	int64_t second;       /* Unix second starting here; valid when state != UNSYNCHRONIZED */
	uint8_t state;        /* enum dcf77_state */
	bool leap_second;     /* the inserted second (repeats the previous number) */
	bool leap_announced;  /* a leap second at the end of this UTC hour */
};

/* At most this many marks come out of one call. */
#define DCF77_MAX_MARKS 4

struct dcf77_marks {
	uint8_t n;
	struct dcf77_mark m[DCF77_MAX_MARKS];
};

struct dcf77 {
	int64_t calibration_us;
	int64_t holdover_limit_us;
	bool high;
	bool has_rise, has_fall, has_candidate, has_slot, has_slot_rise, has_holdover;
	int64_t rise, fall, candidate, next_slot, slot_rise, holdover_since;
	uint8_t in_a_row, missing_in_row, disagreements;
	int8_t index, slot_index;           /* -1: not aligned */
	int8_t bits[60];                    /* -1 unknown, 0, 1 */
	bool has_previous, synced, leap_announced;
	int64_t previous_minute, minute_start;
};

void dcf77_init(struct dcf77 *d, int64_t calibration_us, int64_t holdover_limit_us);
/* An edge at t_us; high: the level after it (carrier reduced). Marks are appended to out. */
void dcf77_edge(struct dcf77 *d, int64_t t_us, bool high, struct dcf77_marks *out);
/* Processes what time alone decides up to now_us. */
void dcf77_poll(struct dcf77 *d, int64_t now_us, struct dcf77_marks *out);
/* When dcf77_poll next has something to do; false if nothing is pending. */
bool dcf77_next_deadline(const struct dcf77 *d, int64_t *at_us);

#ifdef __cplusplus
}
#endif
#endif
