#ifndef SIM_DHCP_H
#define SIM_DHCP_H

#include <stddef.h>
#include <stdint.h>

/* The lease: the firmware renews at half of it. */
#define SIM_DHCP_LEASE_S 60

/*
 * The reply to the DHCP request `m` (from the firmware's socket), written to `r` (room for
 * 300 bytes); returns its length, 0 for none. `what` names the request.
 */
size_t sim_dhcp_reply(const uint8_t *m, size_t len, uint8_t *r, const char **what);

#endif
