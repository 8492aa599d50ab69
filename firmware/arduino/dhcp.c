/* The DHCP client: see dhcp.h. Message layout: RFC 2131 section 2, options RFC 2132. */
#include "dhcp.h"

#include <string.h>

#include "w5100.h"

#define SOCKET 1
#define CLIENT_PORT 68
#define SERVER_PORT 67
/* BOOTP's fixed part: op .. chaddr is 44 bytes, then sname (64) and file (128). */
#define FIXED_HEAD 44
#define FIXED_TAIL 192
#define MESSAGE_LEN 300 /* what is sent: the fixed 236, the cookie, options, padding */

#define OPT_SUBNET 1
#define OPT_ROUTER 3
#define OPT_REQUESTED_IP 50
#define OPT_LEASE 51
#define OPT_TYPE 53
#define OPT_SERVER 54
#define OPT_PARAMS 55
#define OPT_END 255
enum { DISCOVER = 1, OFFER = 2, REQUEST = 3, ACK = 5, NAK = 6 };

#define RETRY_MS 4000UL
#define RENEW_RETRY_MS 10000UL
#define TRIES 3

static const uint8_t cookie[4] = {99, 130, 83, 99};
static const uint8_t broadcast[4] = {255, 255, 255, 255};

void dhcp_init(struct dhcp *d, uint32_t xid)
{
	memset(d, 0, sizeof(*d));
	d->xid = xid;
	d->state = DHCP_INIT;
}

bool dhcp_bound(const struct dhcp *d)
{
	return d->state == DHCP_BOUND || d->state == DHCP_RENEWING;
}

static void send_message(struct dhcp *d, const uint8_t mac[6], uint8_t type, uint32_t now_ms)
{
	uint8_t head[FIXED_HEAD] = {1, 1, 6, 0}; /* BOOTREQUEST, Ethernet, 6-byte address */
	uint8_t opts[24];
	uint8_t n = 0;
	bool renewing = d->state == DHCP_RENEWING;

	head[4] = (uint8_t)(d->xid >> 24);
	head[5] = (uint8_t)(d->xid >> 16);
	head[6] = (uint8_t)(d->xid >> 8);
	head[7] = (uint8_t)d->xid;
	head[10] = 0x80; /* flags: answer by broadcast (no address to unicast to yet) */
	if (renewing)
		memcpy(head + 12, d->ip, 4); /* ciaddr */
	memcpy(head + 28, mac, 6);
	opts[n++] = OPT_TYPE;
	opts[n++] = 1;
	opts[n++] = type;
	if (type == REQUEST && !renewing) {
		opts[n++] = OPT_REQUESTED_IP;
		opts[n++] = 4;
		memcpy(opts + n, d->ip, 4);
		n = (uint8_t)(n + 4);
		opts[n++] = OPT_SERVER;
		opts[n++] = 4;
		memcpy(opts + n, d->server, 4);
		n = (uint8_t)(n + 4);
	}
	opts[n++] = OPT_PARAMS;
	opts[n++] = 2;
	opts[n++] = OPT_SUBNET;
	opts[n++] = OPT_ROUTER;
	opts[n++] = OPT_END;
	if (!w5100_send_begin(SOCKET, broadcast, SERVER_PORT, MESSAGE_LEN))
		return;
	w5100_send_append(SOCKET, head, FIXED_HEAD);
	w5100_send_append(SOCKET, 0, FIXED_TAIL);
	w5100_send_append(SOCKET, cookie, 4);
	w5100_send_append(SOCKET, opts, n);
	w5100_send_append(SOCKET, 0, (uint16_t)(MESSAGE_LEN - FIXED_HEAD - FIXED_TAIL - 4 - n));
	w5100_send_end(SOCKET);
	d->sent_ms = now_ms;
	d->tries++;
}

struct reply {
	uint8_t type;
	uint8_t yiaddr[4], server[4], subnet[4], router[4];
	uint32_t lease_s;
};

static uint32_t be32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Reads one waiting datagram; true if it is a reply to us (our xid and address). */
static bool read_reply(const struct dhcp *d, const uint8_t mac[6], struct reply *r)
{
	uint8_t head[FIXED_HEAD], b[4];
	uint16_t len = w5100_recv_begin(SOCKET), at;
	bool ours;

	if (!len)
		return false;
	memset(r, 0, sizeof(*r));
	w5100_recv_read(SOCKET, head, FIXED_HEAD);
	w5100_recv_read(SOCKET, 0, FIXED_TAIL);
	w5100_recv_read(SOCKET, b, 4);
	ours = len >= FIXED_HEAD + FIXED_TAIL + 4 && head[0] == 2 && be32(head + 4) == d->xid &&
	       memcmp(head + 28, mac, 6) == 0 && memcmp(b, cookie, 4) == 0;
	memcpy(r->yiaddr, head + 16, 4);
	at = FIXED_HEAD + FIXED_TAIL + 4;
	while (ours && at + 2 <= len) {
		uint8_t code, n, v[4] = {0};

		w5100_recv_read(SOCKET, &code, 1);
		at++;
		if (code == 0)
			continue; /* pad */
		if (code == OPT_END)
			break;
		w5100_recv_read(SOCKET, &n, 1);
		w5100_recv_read(SOCKET, v, n < 4 ? n : 4);
		w5100_recv_read(SOCKET, 0, (uint16_t)(n > 4 ? n - 4 : 0));
		at = (uint16_t)(at + 1 + n);
		if (code == OPT_TYPE && n >= 1)
			r->type = v[0];
		else if (code == OPT_SERVER && n >= 4)
			memcpy(r->server, v, 4);
		else if (code == OPT_SUBNET && n >= 4)
			memcpy(r->subnet, v, 4);
		else if (code == OPT_ROUTER && n >= 4)
			memcpy(r->router, v, 4); /* the first router */
		else if (code == OPT_LEASE && n >= 4)
			r->lease_s = be32(v);
	}
	w5100_recv_end(SOCKET);
	/* An offer or ACK must give an address one can have. */
	if ((r->type == OFFER || r->type == ACK) &&
	    (be32(r->yiaddr) == 0 || be32(r->yiaddr) == 0xFFFFFFFFUL))
		return false;
	return ours && r->type;
}

static bool lose(struct dhcp *d)
{
	bool had = dhcp_bound(d);

	memset(d->ip, 0, 4);
	memset(d->subnet, 0, 4);
	memset(d->router, 0, 4);
	d->state = DHCP_INIT;
	d->xid++;
	return had;
}

bool dhcp_step(struct dhcp *d, const uint8_t mac[6], uint32_t now_ms)
{
	struct reply r;
	uint32_t since_bound = now_ms - d->bound_ms;

	if (d->state == DHCP_INIT) {
		if (!w5100_open_udp(SOCKET, CLIENT_PORT))
			return false;
		d->tries = 0;
		d->state = DHCP_SELECTING;
		send_message(d, mac, DISCOVER, now_ms);
		return false;
	}
	while (read_reply(d, mac, &r)) {
		if (d->state == DHCP_SELECTING && r.type == OFFER) {
			memcpy(d->ip, r.yiaddr, 4);
			memcpy(d->server, r.server, 4);
			d->state = DHCP_REQUESTING;
			d->tries = 0;
			send_message(d, mac, REQUEST, now_ms);
		} else if ((d->state == DHCP_REQUESTING || d->state == DHCP_RENEWING) && r.type == ACK) {
			bool changed = d->state == DHCP_REQUESTING ||
				       memcmp(d->ip, r.yiaddr, 4) || memcmp(d->subnet, r.subnet, 4);

			memcpy(d->ip, r.yiaddr, 4);
			memcpy(d->subnet, r.subnet, 4);
			memcpy(d->router, r.router, 4);
			d->lease_s = r.lease_s ? r.lease_s : 3600;
			/*
			 * The lease counts from the REQUEST (RFC 2131 4.4.1), not from when the
			 * ACK is read: while ticking, that waits for the next tick, and renewals
			 * then came 31-32 s apart for a 60-s lease.
			 */
			d->bound_ms = d->sent_ms;
			d->state = DHCP_BOUND;
			d->xid++;
			return changed;
		} else if (r.type == NAK && d->state != DHCP_SELECTING) {
			return lose(d);
		}
	}
	switch (d->state) {
	case DHCP_SELECTING:
	case DHCP_REQUESTING:
		if (now_ms - d->sent_ms >= RETRY_MS) {
			if (d->tries >= TRIES)
				return lose(d); /* start over with a DISCOVER */
			send_message(d, mac, d->state == DHCP_SELECTING ? DISCOVER : REQUEST, now_ms);
		}
		break;
	case DHCP_BOUND:
		if (since_bound / 1000 >= d->lease_s / 2) {
			d->state = DHCP_RENEWING;
			d->tries = 0;
			send_message(d, mac, REQUEST, now_ms);
		}
		break;
	case DHCP_RENEWING:
		if (since_bound / 1000 >= d->lease_s)
			return lose(d);
		if (now_ms - d->sent_ms >= RENEW_RETRY_MS)
			send_message(d, mac, REQUEST, now_ms);
		break;
	}
	return false;
}
