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

	memcpy(out, "NOTK", 4);
	out[4] = 1;
	out[5] = t->kind;
	out[6] = t->flags;
	out[7] = t->state;
	out[8] = t->leap;
	out[9] = t->source;
	out[10] = t->stratum;
	out[11] = 0;
	be(out + 12, t->key_id, 2);
	be(out + 14, 0, 2);
	be(out + 16, t->transmitter, 4);
	be(out + 20, t->session, 4);
	be(out + 24, t->sequence, 4);
	be(out + 28, t->error_us, 4);
	be(out + 32, (uint64_t)t->second, 8);
	be(out + 40, (uint64_t)t->tx_offset_ns, 8);
	if (!t->key_id)
		return TICK_BODY_LEN;
	hmac_sha256(key, key_len, out, TICK_BODY_LEN, mac);
	memcpy(out + TICK_BODY_LEN, mac, TICK_AUTH_LEN - TICK_BODY_LEN);
	return TICK_AUTH_LEN;
}
