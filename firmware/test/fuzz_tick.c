/*
 * libFuzzer target: the firmware's tick encoder and HMAC-SHA256 (tick.c, sha256.c) on
 * arbitrary field values and keys. Properties: no out-of-bounds access (ASan), the length is
 * 48 without a key and 64 with one, and the same input encodes the same bytes twice.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../arduino/tick.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tick t;
	uint8_t a[TICK_AUTH_LEN + 16], b[TICK_AUTH_LEN + 16];
	const uint8_t *key = data + sizeof(t);
	size_t key_len, la, lb;

	if (size < sizeof(t))
		return 0;
	memcpy(&t, data, sizeof(t));
	key_len = size - sizeof(t);
	memset(a, 0xa5, sizeof(a));
	memset(b, 0x5a, sizeof(b));
	la = tick_encode(&t, key, key_len, a);
	lb = tick_encode(&t, key, key_len, b);
	if (la != (t.key_id ? TICK_AUTH_LEN : TICK_BODY_LEN) || la != lb || memcmp(a, b, la) != 0)
		__builtin_trap();
	/* Nothing past the packet was written. */
	for (size_t i = la; i < sizeof(a); i++)
		if (a[i] != 0xa5)
			__builtin_trap();
	return 0;
}
