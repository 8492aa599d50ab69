/*
 * libFuzzer target: the firmware's DCF77 decoder (dcf77.c) on arbitrary edge sequences:
 * each 2 bytes are the time since the previous edge in ms (low 15 bits) and the level after
 * it (high bit). Properties: no undefined behaviour (UBSan: overflow, shifts), at most
 * DCF77_MAX_MARKS marks a call, and marks in time order.
 */
#include <stddef.h>
#include <stdint.h>

#include "../arduino/dcf77.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dcf77 d;
	int64_t t = 1767225600LL * 1000000, last = INT64_MIN, due;

	dcf77_init(&d, 0, 3600LL * 1000000);
	for (size_t i = 0; i + 1 < size; i += 2) {
		uint16_t v = (uint16_t)(data[i] << 8 | data[i + 1]);
		struct dcf77_marks m = {0};

		t += (int64_t)(v & 0x7fff) * 1000;
		while (dcf77_next_deadline(&d, &due) && due <= t) {
			dcf77_poll(&d, due, &m);
			for (uint8_t k = 0; k < m.n; k++) {
				if (m.m[k].at_us < last)
					__builtin_trap();
				last = m.m[k].at_us;
			}
			m.n = 0;
		}
		dcf77_edge(&d, t, v & 0x8000, &m);
		if (m.n > DCF77_MAX_MARKS)
			__builtin_trap();
		for (uint8_t k = 0; k < m.n; k++) {
			if (m.m[k].at_us < last)
				__builtin_trap();
			last = m.m[k].at_us;
		}
	}
	return 0;
}
