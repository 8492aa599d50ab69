/*
 * Unit test of the firmware's tick encoder and HMAC-SHA256 against the shared vectors
 * (testvectors/tick-v1.txt, on standard input) and RFC 4231. Built by firmware/test/Makefile
 * for the host with ASan and UBSan, and for the ATmega328P, run in simavr (2 KiB of RAM:
 * hence the small buffers).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../arduino/sha256.h"
#include "../arduino/tick.h"
#include "test_io.h"

/* Key ids in the vectors are 1 and 2. */
#define KEYS 4

static int failures;

static size_t unhex(const char *s, uint8_t *out, size_t max)
{
	size_t n = 0;

	while (s[0] && s[1] && n < max && s[0] != ' ' && s[0] != '\n') {
		unsigned v;

		if (sscanf(s, "%2x", &v) != 1)
			break;
		out[n++] = (uint8_t)v;
		s += 2;
	}
	return n;
}

static const char *value(const char *line, const char *key)
{
	static char buf[136];
	char pat[32];
	const char *p;
	size_t n;

	snprintf(pat, sizeof(pat), " %s=", key);
	p = strstr(line, pat);
	if (!p)
		return NULL;
	p += strlen(pat);
	n = strcspn(p, " \n");
	if (n >= sizeof(buf))
		n = sizeof(buf) - 1;
	memcpy(buf, p, n);
	buf[n] = 0;
	return buf;
}

static int lookup(const char *v, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (v && strcmp(v, names[i]) == 0)
			return i;
	return -1;
}

static void check(const char *what, int ok)
{
	printf("%s %s\n", ok ? "ok  " : "FAIL", what);
	if (!ok)
		failures++;
}

static void rfc4231(void)
{
	/* Test case 2: key "Jefe", data "what do ya want for nothing?". */
	static const uint8_t want[32] = {
		0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75,
		0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec,
		0x38, 0x43};
	const char *msg = "what do ya want for nothing?";
	uint8_t mac[32];

	hmac_sha256((const uint8_t *)"Jefe", 4, (const uint8_t *)msg, strlen(msg), mac);
	check("HMAC-SHA256, RFC 4231 case 2", memcmp(mac, want, 32) == 0);
}

int main(void)
{
	static const char *const kinds[] = {"", "tick", "follow-up"};
	static const char *const states[] = {"synchronized", "holdover", "unsynchronized"};
	static const char *const leaps[] = {"none", "insert", "delete"};
	static const char *const sources[] = {"system", "pps", "dcf77", "gnss"};
	static uint8_t keys[KEYS][64], want[80], got[64];
	static size_t key_len[KEYS];
	static char line[400];
	int checked = 0;

	rfc4231();
	while (fgets(line, sizeof(line), stdin)) {
		struct tick t;
		char name[64];
		const char *v;
		size_t n, len;
		int id;

		if (strncmp(line, "key ", 4) == 0) {
			id = atoi(value(line, "id"));
			if (id > 0 && id < KEYS)
				key_len[id] = unhex(value(line, "hex"), keys[id], 64);
			continue;
		}
		if (strncmp(line, "vector ", 7) != 0 || !strstr(line, " expect=ok "))
			continue;
		snprintf(name, sizeof(name), "%s", value(line, "name"));
		n = unhex(value(line, "hex"), want, sizeof(want));
		memset(&t, 0, sizeof(t));
		t.kind = (uint8_t)lookup(value(line, "kind"), kinds, 3);
		t.flags = (uint8_t)atoi(value(line, "flags"));
		t.state = (uint8_t)lookup(value(line, "state"), states, 3);
		t.leap = (uint8_t)lookup(value(line, "leap"), leaps, 3);
		t.source = (uint8_t)lookup(value(line, "source"), sources, 4);
		t.stratum = (uint8_t)atoi(value(line, "stratum"));
		t.key_id = (uint16_t)atoi(value(line, "key"));
		t.transmitter = (uint32_t)strtoul(value(line, "transmitter"), NULL, 0);
		t.session = (uint32_t)strtoul(value(line, "session"), NULL, 0);
		t.sequence = (uint32_t)strtoul(value(line, "sequence"), NULL, 0);
		t.error_us = (uint32_t)strtoul(value(line, "error_us"), NULL, 0);
		v = value(line, "second");
		t.second = parse_i64(&v);
		v = value(line, "tx_offset_ns");
		t.tx_offset_ns = parse_i64(&v);
		id = t.key_id < KEYS ? t.key_id : 0;
		len = tick_encode(&t, keys[id], key_len[id], got);
		check(name, len == n && memcmp(got, want, n) == 0);
		checked++;
	}
	if (checked < 5) {
		printf("FAIL: only %d vectors checked\n", checked);
		return 1;
	}
	return failures ? 1 : 0;
}
