/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), small enough for the ATmega328P. */
#ifndef NTP_OFFSET_SHA256_H
#define NTP_OFFSET_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sha256 {
	uint32_t h[8];
	uint8_t block[64];
	uint32_t bytes; /* total length; messages here are far below 4 GiB */
	uint8_t used;
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const uint8_t *data, size_t len);
void sha256_final(struct sha256 *s, uint8_t out[32]);
void hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t msg_len,
		 uint8_t out[32]);

#ifdef __cplusplus
}
#endif
#endif
