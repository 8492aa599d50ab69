/*
 * Host test of the firmware's DHCP client (firmware/arduino/dhcp.c) with sanitizers: the
 * W5100 is replaced by buffers, the server is the simavr harness's (sim_dhcp.c). Checks the
 * exchange, renewal and expiry on a fake clock, that replies to others are ignored, and
 * feeds 200,000 mangled replies (flipped bytes, cut lengths, bogus option lengths) in every
 * state: nothing may read out of bounds or leave the client in a state it cannot leave.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../arduino/dhcp.h"
#include "../arduino/w5100.h"
#include "sim_dhcp.h"
#include "w5100_buffers.h"

static int failures;

static void check(int ok, const char *what)
{
	printf("%s %s\n", ok ? "ok  " : "FAIL", what);
	if (!ok)
		failures++;
}

static const uint8_t mac[6] = {0x02, 0x4e, 0x54, 0x4f, 0x00, 0x01};
static const uint8_t offered[4] = {198, 18, 1, 77};

/* The harness server's answer to what the client sent last, put in the inbox. */
static int answer(void)
{
	const char *what;
	size_t n = sim_dhcp_reply(sent, sent_len, inbox, &what);

	inbox_len = (uint16_t)n;
	return n > 0;
}

/* A client bound at `now` (ms). */
static void bind(struct dhcp *d, uint32_t now)
{
	dhcp_init(d, 0x1234);
	dhcp_step(d, mac, now);
	answer();
	dhcp_step(d, mac, now + 10);
	answer();
	dhcp_step(d, mac, now + 20);
}

int main(void)
{
	struct dhcp d;
	uint32_t now = 1000;
	int changed;

	dhcp_init(&d, 0xabcd0001);
	changed = dhcp_step(&d, mac, now);
	check(!changed && d.state == DHCP_SELECTING && sends == 1, "starts with a DISCOVER");
	check(sent_len == 300 && sent[0] == 1 && sent[10] == 0x80 && memcmp(sent + 28, mac, 6) == 0 &&
		      sent[240] == 53 && sent[242] == 1,
	      "the DISCOVER: BOOTREQUEST, broadcast flag, our MAC, type 1");
	check(answer(), "the server offers");
	changed = dhcp_step(&d, mac, now + 5);
	check(!changed && d.state == DHCP_REQUESTING && sent[242] == 3, "REQUESTs the offer");
	check(answer(), "the server acknowledges");
	changed = dhcp_step(&d, mac, now + 10);
	check(changed && dhcp_bound(&d) && memcmp(d.ip, offered, 4) == 0 && d.subnet[0] == 255 &&
		      d.router[3] == 1 && d.lease_s == SIM_DHCP_LEASE_S,
	      "bound: address, mask, router and lease from the ACK");

	sends = 0;
	dhcp_step(&d, mac, now + 10 + SIM_DHCP_LEASE_S * 500 - 100);
	check(sends == 0, "nothing sent before half the lease");
	dhcp_step(&d, mac, now + 10 + SIM_DHCP_LEASE_S * 500);
	check(sends == 1 && d.state == DHCP_RENEWING && memcmp(sent + 12, offered, 4) == 0,
	      "renews at half the lease, from its address (ciaddr)");
	answer();
	changed = dhcp_step(&d, mac, now + 10 + SIM_DHCP_LEASE_S * 500 + 5);
	check(!changed && d.state == DHCP_BOUND, "renewed: same address, no change reported");

	bind(&d, 0);
	dhcp_step(&d, mac, SIM_DHCP_LEASE_S * 500 + 20); /* renewing; the server is gone */
	changed = dhcp_step(&d, mac, SIM_DHCP_LEASE_S * 1000 + 20);
	check(changed && !dhcp_bound(&d) && d.ip[0] == 0, "the lease runs out: address dropped");
	dhcp_step(&d, mac, SIM_DHCP_LEASE_S * 1000 + 30);
	check(d.state == DHCP_SELECTING && sent[242] == 1, "and asks again");

	/* A reply for another client (its xid) changes nothing. */
	dhcp_init(&d, 0x5555);
	dhcp_step(&d, mac, 0);
	answer();
	inbox[4] ^= 1;
	dhcp_step(&d, mac, 1);
	check(d.state == DHCP_SELECTING, "a reply with another xid is ignored");
	answer();
	inbox[28] ^= 1;
	dhcp_step(&d, mac, 2);
	check(d.state == DHCP_SELECTING, "a reply to another MAC is ignored");
	answer();
	memset(inbox + 16, 0, 4);
	dhcp_step(&d, mac, 3);
	check(d.state == DHCP_SELECTING, "an offer of 0.0.0.0 is ignored");

	/* A NAK (the server will not give the requested address) starts over. */
	dhcp_init(&d, 0x6666);
	dhcp_step(&d, mac, 0);
	answer();
	dhcp_step(&d, mac, 1);
	sent[248] ^= 1; /* option 50's last byte: ask for another address */
	answer();
	dhcp_step(&d, mac, 2);
	check(d.state == DHCP_INIT && inbox[242] == 6, "a NAK to the REQUEST: start over");

	/* Mangled replies, in every state: no bad read, and the client keeps working. */
	srand(77);
	for (int i = 0; i < 200000; i++) {
		int stage = i % 3;

		dhcp_init(&d, (uint32_t)i);
		dhcp_step(&d, mac, 0);
		if (stage >= 1) {
			answer();
			dhcp_step(&d, mac, 1);
		}
		if (stage == 2) {
			answer();
			dhcp_step(&d, mac, 2);
			dhcp_step(&d, mac, SIM_DHCP_LEASE_S * 500 + 2);
		}
		if (!answer())
			continue;
		for (int k = rand() % 8; k >= 0; k--)
			inbox[rand() % inbox_len] = (uint8_t)rand();
		if (rand() % 4 == 0)
			inbox_len = (uint16_t)(rand() % (inbox_len + 1));
		dhcp_step(&d, mac, SIM_DHCP_LEASE_S * 500 + 3);
		if (d.state > DHCP_RENEWING) {
			check(0, "a mangled reply left an undefined state");
			break;
		}
		/* Whatever happened, the exchange still completes from here. */
		for (int step = 0; step < 10 && d.state != DHCP_BOUND; step++) {
			if (d.state == DHCP_INIT || !answer())
				inbox_len = 0;
			dhcp_step(&d, mac, SIM_DHCP_LEASE_S * 500 + 10 + (uint32_t)step * 5000);
		}
		/* Bound, to an address (a mangled one, if the mangling hit yiaddr). */
		if (d.state != DHCP_BOUND || !(d.ip[0] | d.ip[1] | d.ip[2] | d.ip[3])) {
			printf("FAIL case %d: state %u\n", i, d.state);
			failures++;
			break;
		}
	}
	check(failures == 0, "200000 mangled replies: no bad read, and the client recovers");
	return failures ? 1 : 0;
}
