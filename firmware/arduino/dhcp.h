/*
 * A DHCP client (RFC 2131) for the W5100's socket 1, small enough for the Uno: DISCOVER,
 * REQUEST the first OFFER, take the ACK's address, subnet mask and router; renew at half the
 * lease; start over when it runs out. Messages are built and read straight in the chip's
 * buffers. The caller runs it only where a send cannot delay a tick (see arduino.ino).
 */
#ifndef NTP_OFFSET_DHCP_H
#define NTP_OFFSET_DHCP_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum dhcp_state { DHCP_INIT, DHCP_SELECTING, DHCP_REQUESTING, DHCP_BOUND, DHCP_RENEWING };

struct dhcp {
	uint8_t state;
	uint8_t tries;
	uint32_t xid;
	uint32_t sent_ms, bound_ms, lease_s;
	uint8_t server[4], ip[4], subnet[4], router[4];
};

void dhcp_init(struct dhcp *d, uint32_t xid);
/*
 * Reads a reply if one waits and sends what is due at `now_ms` (millis()). Returns true when
 * the address changed: bound to a new one (d->ip, subnet, router) or lost (all zero).
 */
bool dhcp_step(struct dhcp *d, const uint8_t mac[6], uint32_t now_ms);
/* Whether the address may be used. */
bool dhcp_bound(const struct dhcp *d);

#ifdef __cplusplus
}
#endif
#endif
