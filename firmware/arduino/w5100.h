/*
 * The Ethernet shield's WIZnet W5100, driven over SPI directly (Debian ships no Ethernet
 * library, and none is copied in): UDP sockets, sending and receiving (socket 0 sends the
 * ticks; socket 1 is DHCP's). Pins: the Uno's hardware SPI (D11 MOSI, D12 MISO, D13 SCK),
 * chip select D10; the shield's SD card select (D4) is held high so the card stays off the
 * bus.
 */
#ifndef NTP_OFFSET_W5100_H
#define NTP_OFFSET_W5100_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct w5100_config {
	uint8_t mac[6];
	uint8_t ip[4], subnet[4], gateway[4];
};

/* Resets the chip and sets its addresses (all zero until DHCP has some). */
bool w5100_begin(const struct w5100_config *c);
void w5100_set_address(const uint8_t ip[4], const uint8_t subnet[4], const uint8_t gateway[4]);
/* Opens socket `s` (0 or 1: the driver keeps state for two) as UDP on `port`. */
bool w5100_open_udp(uint8_t s, uint16_t port);

/* Queues one datagram and starts sending it; returns at once (the chip sends on its own). */
bool w5100_send(uint8_t s, const uint8_t ip[4], uint16_t port, const uint8_t *data, uint16_t len);
/* The same, built in pieces straight into the chip's buffer (no copy in the AVR's RAM). */
bool w5100_send_begin(uint8_t s, const uint8_t ip[4], uint16_t port, uint16_t len);
void w5100_send_append(uint8_t s, const uint8_t *data, uint16_t len); /* data NULL: zeros */
void w5100_send_end(uint8_t s);
/*
 * How the previous send ended, once: W5100_SENT (SEND_OK) or W5100_SEND_TIMEOUT (the chip
 * asked for the destination's MAC by ARP and got no answer: the datagram is dropped), then
 * W5100_IDLE; W5100_SENDING while the chip is still at it. Clears the chip's flag.
 */
enum w5100_send_status { W5100_IDLE, W5100_SENDING, W5100_SENT, W5100_SEND_TIMEOUT };
enum w5100_send_status w5100_send_status(uint8_t s);
/*
 * Datasheet erratum 1 (W3150A+/W5100 errata sheet): a UDP SEND issued while the same socket
 * receives a datagram never completes. Discards whatever socket s has received, so that
 * nothing is arriving when the next SEND goes out; returns how many bytes it dropped.
 */
uint16_t w5100_drain(uint8_t s);
/* Closes and reopens socket s as UDP on `port` (a SEND that never completed, erratum 1). */
bool w5100_reopen_udp(uint8_t s, uint16_t port);

/* A received datagram: its length (0: none waiting), read in order, then ended. */
uint16_t w5100_recv_begin(uint8_t s);
void w5100_recv_read(uint8_t s, uint8_t *buf, uint16_t len); /* buf NULL: skip */
void w5100_recv_end(uint8_t s);

#ifdef __cplusplus
}
#endif
#endif
