/* crypto.c: HMAC-SHA256 and random bytes through libcrypto.
 *
 * Shared by the webhook signature check and the abuse guard (which keys its
 * counters by a number's HMAC and never holds the number itself). Nothing
 * here raises while a MAC sits in a C buffer: it is wiped first. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include "crypto.h"

static int crypto_hmac(const char *key, size_t klen, const char *data, size_t dlen,
                       unsigned char mac[CRYPTO_MAC_LEN])
{
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0, i;
    int ok = klen <= 0x7fffffff &&
             HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)data, dlen, out, &len) !=
                 NULL &&
             len == CRYPTO_MAC_LEN;
    for (i = 0; ok && i < CRYPTO_MAC_LEN; i++)
        mac[i] = out[i];
    OPENSSL_cleanse(out, sizeof out);
    return ok;
}

static void crypto_wipe(void *p, size_t n)
{
    OPENSSL_cleanse(p, n);
}

static int crypto_mac_equal(const unsigned char *a, const unsigned char *b)
{
    return CRYPTO_memcmp(a, b, CRYPTO_MAC_LEN) == 0;
}

/* contiguity.hmac(key, data) -> 64 hex digits. */
static int crypto_hmac_hex(lua_State *L)
{
    static const char hex[] = "0123456789abcdef";
    size_t klen, dlen, i;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *data = luaL_checklstring(L, 2, &dlen);
    unsigned char mac[CRYPTO_MAC_LEN];
    char out[2 * CRYPTO_MAC_LEN];
    if (klen == 0)
        luaL_argerror(L, 1, "HMAC key must not be empty");
    if (!crypto_hmac(key, klen, data, dlen, mac))
        return luaL_error(L, "contiguity.hmac: HMAC-SHA256 is unavailable in this libcrypto");
    for (i = 0; i < CRYPTO_MAC_LEN; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    crypto_wipe(mac, sizeof mac);
    lua_pushlstring(L, out, sizeof out);
    return 1;
}

/* contiguity.random_bytes(n) -> n bytes from OpenSSL's CSPRNG: the guard's
 * hashing key when the user gives none, unguessable so that nobody can
 * precompute which counter a number lands in. */
static int crypto_random_bytes(lua_State *L)
{
    unsigned char buf[64];
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= (lua_Integer)sizeof buf, 1, "must be from 1 to 64");
    if (RAND_bytes(buf, (int)n) != 1)
        return luaL_error(L, "contiguity.random_bytes: OpenSSL's RAND_bytes failed");
    lua_pushlstring(L, (const char *)buf, (size_t)n);
    crypto_wipe(buf, sizeof buf);
    return 1;
}
