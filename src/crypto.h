/* crypto.h: HMAC-SHA256 and random bytes from libcrypto, for the webhooks and the guard. */
#ifndef CONTIGUITY_CRYPTO_H
#define CONTIGUITY_CRYPTO_H

#include <stddef.h>
#include "compat.h"

#define CRYPTO_MAC_LEN 32 /* HMAC-SHA256 */

/* mac = HMAC-SHA256(key, data); 1 on success. */
static int crypto_hmac(const char *key, size_t klen, const char *data, size_t dlen,
                       unsigned char mac[CRYPTO_MAC_LEN]);

/* Wipes a buffer that held a MAC or a key (never optimised away). */
static void crypto_wipe(void *p, size_t n);

/* Constant-time comparison of two MACs: 1 when equal. */
static int crypto_mac_equal(const unsigned char *a, const unsigned char *b);

/* contiguity.hmac(key, data) -> 64 hex digits; contiguity.random_bytes(n). */
static int crypto_hmac_hex(lua_State *L);
static int crypto_random_bytes(lua_State *L);

#endif
