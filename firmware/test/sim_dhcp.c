/*
 * The DHCP server of the simavr harness: answers the firmware's DISCOVER with an OFFER and
 * its REQUEST (selecting or renewing) with an ACK, or a NAK if it asks for another address,
 * for one address on a short lease, so a simulated run goes through several renewals.
 */
#include "sim_dhcp.h"

#include <string.h>

static const uint8_t server[4] = {198, 18, 1, 1}, offered[4] = {198, 18, 1, 77},
		     mask[4] = {255, 255, 255, 0}, cookie[4] = {99, 130, 83, 99};

/* The value of option `code` in a request's options, or NULL. */
static const uint8_t *option(const uint8_t *m, size_t len, uint8_t code, uint8_t *n)
{
	for (size_t at = 240; at + 1 < len && m[at] != 255;) {
		if (m[at] == 0) {
			at++;
			continue;
		}
		if (at + 2 + m[at + 1] > len)
			return NULL;
		if (m[at] == code) {
			*n = m[at + 1];
			return m + at + 2;
		}
		at += 2u + m[at + 1];
	}
	return NULL;
}

size_t sim_dhcp_reply(const uint8_t *m, size_t len, uint8_t *r, const char **what)
{
	const uint8_t *type, *asked;
	uint8_t n = 0, reply_type;
	size_t at = 240;

	*what = "ignored";
	if (len < 240 || m[0] != 1 || memcmp(m + 236, cookie, 4) != 0)
		return 0;
	type = option(m, len, 53, &n);
	if (!type || n != 1)
		return 0;
	if (type[0] == 1) {
		*what = "discover";
		reply_type = 2;
	} else if (type[0] == 3) {
		/* Selecting names the address (option 50); renewing puts it in ciaddr. */
		asked = option(m, len, 50, &n);
		if (!asked || n != 4)
			asked = m + 12;
		*what = asked == m + 12 ? "renew" : "request";
		reply_type = memcmp(asked, offered, 4) == 0 ? 5 : 6; /* ACK, or NAK a wrong address */
	} else {
		return 0;
	}
	memset(r, 0, 240);
	r[0] = 2; /* BOOTREPLY */
	r[1] = 1;
	r[2] = 6;
	memcpy(r + 4, m + 4, 4);   /* xid */
	memcpy(r + 10, m + 10, 2); /* flags */
	memcpy(r + 16, offered, 4);
	memcpy(r + 20, server, 4);
	memcpy(r + 28, m + 28, 16); /* chaddr */
	memcpy(r + 236, cookie, 4);
	r[at++] = 53, r[at++] = 1, r[at++] = reply_type;
	r[at++] = 54, r[at++] = 4, memcpy(r + at, server, 4), at += 4;
	r[at++] = 51, r[at++] = 4, r[at++] = 0, r[at++] = 0, r[at++] = 0, r[at++] = SIM_DHCP_LEASE_S;
	r[at++] = 1, r[at++] = 4, memcpy(r + at, mask, 4), at += 4;
	r[at++] = 3, r[at++] = 4, memcpy(r + at, server, 4), at += 4;
	r[at++] = 255;
	return at;
}
