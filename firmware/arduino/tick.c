/* Tick packet encoding; the layout is in docs/tick-protocol.md. */
#include "tick.h"

#include <string.h>

#include "sha256.h"

static void be(uint8_t *p, uint64_t v, int n)
{
	for (int i = n - 1; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

size_t tick_encode(const struct tick *t, const uint8_t *key, size_t key_len, uint8_t *out)
{
	uint8_t mac[32];

	memset(out, 0, TICK_BODY_LEN); /* reserved bytes are 0 */
	memcpy(out + TICK_AT_MAGIC, "NOTK", 4);
	out[TICK_AT_VERSION] = 1;
	out[TICK_AT_KIND] = t->kind;
	out[TICK_AT_FLAGS] = t->flags;
	out[TICK_AT_STATE] = t->state;
	out[TICK_AT_LEAP] = t->leap;
	out[TICK_AT_SOURCE] = t->source;
	out[TICK_AT_STRATUM] = t->stratum;
	be(out + TICK_AT_KEY_ID, t->key_id, 2);
	be(out + TICK_AT_TRANSMITTER, t->transmitter, 4);
	be(out + TICK_AT_SESSION, t->session, 4);
	be(out + TICK_AT_SEQUENCE, t->sequence, 4);
	be(out + TICK_AT_ERROR_BOUND, t->error_us, 4);
	be(out + TICK_AT_SECOND, (uint64_t)t->second, 8);
	be(out + TICK_AT_TX_OFFSET, (uint64_t)t->tx_offset_ns, 8);
	if (!t->key_id)
		return TICK_BODY_LEN;
	hmac_sha256(key, key_len, out, TICK_BODY_LEN, mac);
	memcpy(out + TICK_AT_MAC, mac, TICK_AUTH_LEN - TICK_BODY_LEN);
	return TICK_AUTH_LEN;
}
