/* The W5100 as plain buffers (w5100_buffers.c): for host tests and fuzzers of dhcp.c. */
#ifndef NTP_OFFSET_W5100_BUFFERS_H
#define NTP_OFFSET_W5100_BUFFERS_H

#include <stdint.h>

/* The last datagram the client sent, and how many it sent. */
extern uint8_t sent[600];
extern uint16_t sent_len;
extern int sends;
/* The datagram the client receives next (inbox_len 0: none). */
extern uint8_t inbox[600];
extern uint16_t inbox_len;

#endif
