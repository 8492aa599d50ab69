/*
 * Tick packets, version 1 (docs/tick-protocol.md): the encoder, byte for byte the Rust one
 * (crates/proto/src/tick.rs, tick_auth.rs), checked against testvectors/tick-v1.txt.
 */
#ifndef NTP_OFFSET_TICK_H
#define NTP_OFFSET_TICK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Where each field starts (docs/tick-protocol.md), named once; the Rust tests check these
 * against crates/proto/src/tick.rs's `field`.
 */
#define TICK_AT_MAGIC 0
#define TICK_AT_VERSION 4
#define TICK_AT_KIND 5
#define TICK_AT_FLAGS 6
#define TICK_AT_STATE 7
#define TICK_AT_LEAP 8
#define TICK_AT_SOURCE 9
#define TICK_AT_STRATUM 10
#define TICK_AT_KEY_ID 12
#define TICK_AT_TRANSMITTER 16
#define TICK_AT_SESSION 20
#define TICK_AT_SEQUENCE 24
#define TICK_AT_ERROR_BOUND 28
#define TICK_AT_SECOND 32
#define TICK_AT_TX_OFFSET 40
#define TICK_AT_MAC 48

#define TICK_BODY_LEN 48
#define TICK_AUTH_LEN 64
#define TICK_PORT 8123

enum { TICK_KIND_TICK = 1, TICK_KIND_FOLLOW_UP = 2 };
enum { TICK_FLAG_FOLLOW_UP = 1, TICK_FLAG_HW = 2, TICK_FLAG_LEAP_SECOND = 4 };
enum { TICK_SYNCHRONIZED = 0, TICK_HOLDOVER = 1, TICK_UNSYNCHRONIZED = 2 };
enum { TICK_LEAP_NONE = 0, TICK_LEAP_INSERT = 1, TICK_LEAP_DELETE = 2 };
enum { TICK_SOURCE_SYSTEM = 0, TICK_SOURCE_PPS = 1, TICK_SOURCE_DCF77 = 2, TICK_SOURCE_GNSS = 3 };
#define TICK_ERROR_UNKNOWN 0xffffffffUL

struct tick {
	uint8_t kind, flags, state, leap, source, stratum;
	uint16_t key_id; /* 0: unauthenticated */
	uint32_t transmitter, session, sequence, error_us;
	int64_t second;
	int64_t tx_offset_ns;
};

/*
 * Writes the packet into out (64 bytes of room) and returns its length: 48, or 64 with the
 * HMAC-SHA256/128 of the first 48 bytes when key_id is not 0 (key: key_len bytes).
 */
size_t tick_encode(const struct tick *t, const uint8_t *key, size_t key_len, uint8_t *out);

#ifdef __cplusplus
}
#endif
#endif
