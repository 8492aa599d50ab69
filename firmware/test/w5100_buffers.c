/*
 * The W5100 driver's UDP calls (firmware/arduino/w5100.h) on plain buffers, for the DHCP
 * client's host test (test_dhcp.c) and fuzzer (fuzz_dhcp.c): what the client sends lands in
 * `sent`, and `inbox` is what it receives next.
 */
#include <stdio.h>
#include <stdlib.h>

#include "../arduino/w5100.h"
#include "w5100_buffers.h"

uint8_t sent[600], inbox[600];
uint16_t sent_len, inbox_len;
int sends;
static uint16_t inbox_at, building;

bool w5100_open_udp(uint8_t s, uint16_t port)
{
	return s == 1 && port == 68;
}

bool w5100_send_begin(uint8_t s, const uint8_t ip[4], uint16_t port, uint16_t len)
{
	(void)s;
	(void)ip;
	(void)port;
	(void)len;
	building = 0;
	return true;
}

void w5100_send_append(uint8_t s, const uint8_t *data, uint16_t len)
{
	(void)s;
	for (uint16_t i = 0; i < len; i++) {
		if (building >= sizeof(sent)) {
			fprintf(stderr, "FAIL: DHCP message over %zu bytes\n", sizeof(sent));
			exit(1);
		}
		sent[building++] = data ? data[i] : 0;
	}
}

void w5100_send_end(uint8_t s)
{
	(void)s;
	sent_len = building;
	sends++;
}

uint16_t w5100_recv_begin(uint8_t s)
{
	(void)s;
	inbox_at = 0;
	return inbox_len;
}

void w5100_recv_read(uint8_t s, uint8_t *buf, uint16_t len)
{
	(void)s;
	for (uint16_t i = 0; i < len && inbox_at < inbox_len; i++, inbox_at++)
		if (buf)
			buf[i] = inbox[inbox_at];
}

void w5100_recv_end(uint8_t s)
{
	(void)s;
	inbox_len = 0;
}

