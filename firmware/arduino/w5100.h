/*
 * The Ethernet shield's WIZnet W5100, driven over SPI directly (Debian ships no Ethernet
 * library, and none is copied in): socket 0 in UDP mode, send only. Pins: the Uno's hardware
 * SPI (D11 MOSI, D12 MISO, D13 SCK), chip select D10; the shield's SD card select (D4) is held
 * high so the card stays off the bus.
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

/* Resets the chip, sets the addresses and opens socket 0 as UDP on `port`. */
bool w5100_begin(const struct w5100_config *c, uint16_t port);
/* Queues one datagram and starts sending it; returns at once (the chip sends on its own). */
bool w5100_send(const uint8_t ip[4], uint16_t port, const uint8_t *data, uint16_t len);
/* True once the previous send finished (SEND_OK or TIMEOUT seen); clears the flag. */
bool w5100_send_done(void);

#ifdef __cplusplus
}
#endif
#endif
