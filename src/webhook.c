/* webhook.c: contiguity.webhook: verify, parse and construct signed webhook deliveries. */
#include <string.h>
#include <time.h>
#include "webhook.h"
#include "crypto.h"
#include "options.h"
#include "response.h"
#include "error.h"
#include "json.h"

#define WH_MAC_LEN CRYPTO_MAC_LEN
#define WH_MAX_SIGS 16          /* v1 entries in one header; more is malformed */
#define WH_MAX_T_DIGITS 15      /* exact in a double, far beyond any real date */
#define WH_DEFAULT_TOLERANCE 300

/* What a Contiguity-Signature header says: the timestamp exactly as sent
 * (the signer signed those bytes, so they are never re-formatted) and the
 * decoded v1 signatures. Fixed size: parsing allocates nothing. */
typedef struct wh_header {
    const char *t;       /* points into the parsed header */
    size_t t_len;
    double t_value;
    int nsig;
    unsigned char sig[WH_MAX_SIGS][WH_MAC_LEN];
} wh_header;

static int wh_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int wh_is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* Parses "t=<digits>,v1=<64 hex>[,v1=...]" of n bytes (no NUL needed, any
 * bytes allowed). Returns 1 when it names exactly one timestamp and 1 to
 * WH_MAX_SIGS well-formed v1 signatures, else 0. Unknown keys (future
 * schemes such as v2) are skipped; empty items and spaces around items are
 * tolerated. Kept free of Lua so the fuzzer can call it directly. */
static int wh_parse_header(const char *s, size_t n, wh_header *h)
{
    size_t i = 0;
    h->t = NULL;
    h->t_len = 0;
    h->t_value = 0;
    h->nsig = 0;
    while (i <= n) {
        size_t start = i, end, eq, k;
        while (i < n && s[i] != ',')
            i++;
        end = i++; /* item is [start, end); skip the comma */
        while (start < end && wh_is_space(s[start]))
            start++;
        while (end > start && wh_is_space(s[end - 1]))
            end--;
        if (start == end)
            continue;
        for (eq = start; eq < end && s[eq] != '='; eq++)
            ;
        if (eq == end)
            return 0; /* an item that is not key=value */
        if (eq - start == 1 && s[start] == 't') {
            size_t len = end - eq - 1;
            double v = 0;
            if (h->t != NULL || len == 0 || len > WH_MAX_T_DIGITS)
                return 0;
            for (k = eq + 1; k < end; k++) {
                if (s[k] < '0' || s[k] > '9')
                    return 0;
                v = v * 10 + (s[k] - '0');
            }
            h->t = s + eq + 1;
            h->t_len = len;
            h->t_value = v;
        } else if (eq - start == 2 && s[start] == 'v' && s[start + 1] == '1') {
            const unsigned char *hex = (const unsigned char *)s + eq + 1;
            if (end - eq - 1 != 2 * WH_MAC_LEN || h->nsig == WH_MAX_SIGS)
                return 0;
            for (k = 0; k < WH_MAC_LEN; k++) {
                int hi = wh_hexval(hex[2 * k]), lo = wh_hexval(hex[2 * k + 1]);
                if (hi < 0 || lo < 0)
                    return 0;
                h->sig[h->nsig][k] = (unsigned char)(hi << 4 | lo);
            }
            h->nsig++;
        }
    }
    return h->t != NULL && h->nsig > 0;
}

/* Raises unless the secret argument is a non-empty string or a non-empty
 * list of them: a wrong secret is configuration, never data. The message
 * never shows the secret. Returns the number of secrets. */
static int wh_check_secret(lua_State *L, int idx)
{
    int i, n;
    if (lua_type(L, idx) == LUA_TSTRING) {
        if (compat_rawlen(L, idx) == 0)
            luaL_argerror(L, idx, "webhook secret must not be empty");
        return 1;
    }
    if (lua_type(L, idx) != LUA_TTABLE)
        luaL_argerror(L, idx, "webhook secret must be a string or a list of strings");
    n = (int)compat_rawlen(L, idx);
    if (n < 1)
        luaL_argerror(L, idx, "webhook secret list is empty");
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        if (lua_type(L, -1) != LUA_TSTRING || compat_rawlen(L, -1) == 0)
            luaL_argerror(L, idx, "webhook secret list must hold non-empty strings");
        lua_pop(L, 1);
    }
    return n;
}

/* Verification options: tolerance (seconds, or false to skip the check)
 * and now (seconds, for tests). Unknown keys and bad types are misuse and
 * raise, against the options argument. */
static void wh_options(lua_State *L, int idx, double *tolerance, double *now)
{
    static const opt_spec specs[] = {
        {"tolerance", OPT_NUMBER | OPT_FALSE, "must be a number of seconds >= 0 or false"},
        {"now", OPT_NUMBER, "must be a number of seconds"},
        {NULL, 0, NULL}};
    const opt_reader r = {"contiguity.webhook", idx, specs};
    *tolerance = WH_DEFAULT_TOLERANCE;
    *now = (double)time(NULL);
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    opt_check(L, idx, &r);
    opt_get(L, idx, "tolerance");
    if (lua_type(L, -1) == LUA_TBOOLEAN)
        *tolerance = -1;
    lua_pop(L, 1);
    if (opt_number(L, idx, "tolerance", tolerance) && !(*tolerance >= 0))
        opt_fail(L, &r, "tolerance");
    opt_number(L, idx, "now", now);
}

/* The whole check behind verify and construct. Arguments at body, body+1
 * (header), body+2 (secret), body+3 (opts). Returns NULL when the delivery
 * is genuine and fresh, else the reason. The signature is checked before
 * the time, so "expired" always means a genuine but stale (or replayed)
 * delivery and "mismatch" a wrong secret or altered bytes. */
static const char *wh_check(lua_State *L, int body)
{
    int header = body + 1, secret = body + 2, nsecrets, i, j, ok = 0;
    double tolerance, now;
    const char *hs;
    size_t hlen, blen;
    wh_header h;
    unsigned char mac[CRYPTO_MAC_LEN];

    if (lua_type(L, body) != LUA_TSTRING)
        luaL_argerror(L, body, "raw body must be a string");
    nsecrets = wh_check_secret(L, secret);
    wh_options(L, body + 3, &tolerance, &now);

    if (lua_isnoneornil(L, header) ||
        (lua_type(L, header) == LUA_TBOOLEAN && !lua_toboolean(L, header)))
        return "missing";
    if (lua_type(L, header) != LUA_TSTRING) /* e.g. a repeated header as a table */
        return "malformed";
    hs = lua_tolstring(L, header, &hlen);
    if (hlen == 0)
        return "missing";
    if (!wh_parse_header(hs, hlen, &h))
        return "malformed";

    /* The signed message is t "." body, assembled in Lua-owned memory. */
    {
        luaL_Buffer b;
        const char *bs = lua_tolstring(L, body, &blen);
        luaL_buffinit(L, &b);
        luaL_addlstring(&b, h.t, h.t_len);
        luaL_addchar(&b, '.');
        luaL_addlstring(&b, bs, blen);
        luaL_pushresult(&b);
    }
    for (i = 1; i <= nsecrets && !ok; i++) {
        const char *key;
        size_t klen;
        const char *msg = lua_tolstring(L, -1, &blen);
        if (lua_type(L, secret) == LUA_TSTRING)
            lua_pushvalue(L, secret);
        else
            lua_rawgeti(L, secret, i);
        key = lua_tolstring(L, -1, &klen);
        if (!crypto_hmac(key, klen, msg, blen, mac)) {
            crypto_wipe(mac, sizeof mac);
            luaL_error(L, "contiguity.webhook: HMAC-SHA256 is unavailable in this libcrypto");
        }
        lua_pop(L, 1);
        for (j = 0; j < h.nsig; j++)
            ok |= crypto_mac_equal(mac, h.sig[j]);
    }
    crypto_wipe(mac, sizeof mac);
    lua_pop(L, 1);
    if (!ok)
        return "mismatch";
    if (tolerance >= 0 && (h.t_value < now - tolerance || h.t_value > now + tolerance))
        return "expired";
    return NULL;
}

/* contiguity.webhook.verify(raw_body, header, secret, opts?) -> true | false, reason */
static int wh_verify(lua_State *L)
{
    const char *reason;
    lua_settop(L, 4);
    reason = wh_check(L, 1);
    if (reason == NULL) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_pushstring(L, reason);
    return 2;
}

/* Required event fields: their Lua type per the webhook schema. */
static const struct {
    const char *name;
    int type;
} wh_fields[] = {{"id", LUA_TSTRING},
                 {"type", LUA_TSTRING},
                 {"timestamp", LUA_TNUMBER},
                 {"api_version", LUA_TSTRING},
                 {"data", LUA_TTABLE}};

/* Decodes the event at body_idx: pushes the event table (returns 1) or
 * nil, err of kind "decode" (returns 2). */
static int wh_decode(lua_State *L, int body_idx, const char *op)
{
    int base = lua_gettop(L), failed;
    size_t len, i;
    const char *s = lua_tolstring(L, body_idx, &len);
    json_push_decode(L); /* the module's private cjson */
    lua_pushlstring(L, s, len);
    failed = lua_pcall(L, 1, 1, 0) != 0;
    if (failed || lua_type(L, -1) != LUA_TTABLE) {
        if (failed && lua_type(L, -1) == LUA_TSTRING)
            lua_pushfstring(L, "webhook body is not JSON: %s", lua_tostring(L, -1));
        else
            lua_pushliteral(L, "webhook body is not a JSON object");
        lua_replace(L, base + 1);
        lua_settop(L, base + 1);
        errorf(L, op, "decode", "%s", lua_tostring(L, base + 1));
        lua_remove(L, base + 1);
        return 2;
    }
    resp_strip_nulls(L, -1);
    for (i = 0; i < sizeof wh_fields / sizeof wh_fields[0]; i++) {
        lua_getfield(L, -1, wh_fields[i].name);
        if (lua_type(L, -1) != wh_fields[i].type) {
            lua_pushfstring(L, "webhook event has no %s %s", wh_fields[i].name,
                            wh_fields[i].type == LUA_TTABLE ? "object"
                                                            : lua_typename(L, wh_fields[i].type));
            lua_replace(L, base + 1);
            lua_settop(L, base + 1);
            errorf(L, op, "decode", "%s", lua_tostring(L, base + 1));
            lua_remove(L, base + 1);
            return 2;
        }
        lua_pop(L, 1);
    }
    /* seconds as integers where the Lua has them, like the envelope's timestamp */
    resp_fix_int(L, base + 1, "timestamp");
    lua_getfield(L, base + 1, "data"); /* a table: checked above */
    resp_fix_int(L, -1, "timestamp");
    lua_pop(L, 1);
    return 1;
}

/* contiguity.webhook.parse(raw_body) -> event | nil, err */
static int wh_parse(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        luaL_argerror(L, 1, "raw body must be a string");
    lua_settop(L, 1);
    return wh_decode(L, 1, "webhook.parse");
}

/* contiguity.webhook.construct(raw_body, header, secret, opts?) -> event | nil, err:
 * a refused signature is kind "invalid" with err.reason the verify reason. */
static int wh_construct(lua_State *L)
{
    const char *reason;
    lua_settop(L, 4);
    reason = wh_check(L, 1);
    if (reason != NULL) {
        errorf(L, "webhook.construct", "invalid", "webhook signature %s", reason);
        error_set_string(L, "reason", reason);
        error_set_string(L, "field", "Contiguity-Signature");
        return 2;
    }
    return wh_decode(L, 1, "webhook.construct");
}

/* Sets module.webhook; the module table is on top. */
static void wh_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"verify", wh_verify},
                                     {"parse", wh_parse},
                                     {"construct", wh_construct},
                                     {NULL, NULL}};
    lua_newtable(L);
    compat_setfuncs(L, funcs, 0);
    lua_pushinteger(L, WH_DEFAULT_TOLERANCE);
    lua_setfield(L, -2, "DEFAULT_TOLERANCE");
    lua_setfield(L, -2, "webhook");
}
