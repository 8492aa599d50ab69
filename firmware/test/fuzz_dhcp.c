/*
 * libFuzzer target: the firmware's DHCP client (dhcp.c) on arbitrary replies, in every
 * state it can be in when one comes. Built with AddressSanitizer and UBSan by scripts/fuzz.
 * Properties: no read or write out of bounds (the sanitizers), no message over the buffer
 * (w5100_buffers.c), and the client only ever ends in one of its states.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../arduino/dhcp.h"
#include "sim_dhcp.h"
#include "w5100_buffers.h"

static const uint8_t mac[6] = {0x02, 0x4e, 0x54, 0x4f, 0x00, 0x01};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dhcp d;
	const char *what;
	uint8_t stage = size ? data[0] % 3 : 0;

	dhcp_init(&d, 0x1234);
	dhcp_step(&d, mac, 0);
	/* Reach the stage with the harness server's real replies, then take the input. */
	for (uint8_t s = 0; s < stage; s++) {
		inbox_len = (uint16_t)sim_dhcp_reply(sent, sent_len, inbox, &what);
		dhcp_step(&d, mac, 1 + s);
	}
	if (size > 1) {
		size_t n = size - 1 < sizeof(inbox) ? size - 1 : sizeof(inbox);

		memcpy(inbox, data + 1, n);
		inbox_len = (uint16_t)n;
	}
	dhcp_step(&d, mac, 100);
	dhcp_step(&d, mac, SIM_DHCP_LEASE_S * 500 + 100);
	if (d.state > DHCP_RENEWING)
		__builtin_trap();
	return 0;
}
