/*
 * What the firmware's unit tests need of a C library, in the part that both glibc and
 * avr-libc have: they read their vectors from standard input line by line and print with
 * plain printf. avr-libc's scanf and printf know no 64-bit integers, so those are parsed and
 * printed here. On the AVR, standard input and output are the simulator's (avr_stdio.c).
 */
#ifndef NTP_OFFSET_TEST_IO_H
#define NTP_OFFSET_TEST_IO_H

#include <stdint.h>
#include <stdio.h>

/* A decimal integer, optionally signed, from *s; advances *s past it (and spaces before). */
static inline int64_t parse_i64(const char **s)
{
	const char *p = *s;
	int negative = 0;
	int64_t v = 0;

	while (*p == ' ')
		p++;
	if (*p == '-' || *p == '+')
		negative = *p++ == '-';
	while (*p >= '0' && *p <= '9')
		v = v * 10 + (*p++ - '0');
	*s = p;
	return negative ? -v : v;
}

/* Writes v in decimal into buf (24 bytes) and returns buf. */
static inline const char *fmt_i64(int64_t v, char *buf)
{
	char tmp[24];
	int n = 0, i = 0;
	uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

	do {
		tmp[n++] = (char)('0' + (int)(u % 10));
		u /= 10;
	} while (u);
	if (v < 0)
		buf[i++] = '-';
	while (n)
		buf[i++] = tmp[--n];
	buf[i] = 0;
	return buf;
}

#endif
