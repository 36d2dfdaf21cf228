/* options.c: the one reader for option tables, and contiguity.new's configuration.
 *
 * Every option table the module takes (contiguity.new, contiguity.qr, the
 * webhook functions' opts) goes through opt_check: unknown keys and wrong
 * types raise, naming the option. Values out of range are the caller's
 * decision: contiguity.new raises (a configuration cannot be data),
 * contiguity.qr returns nil, err. The caller's table is only read, never
 * written. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "options.h"

#define OPT_DEFAULT_BASE_URL "https://api.contiguity.com"

/* The OPT_* bit of the value on top, 0 for nil. */
static int opt_type_bit(lua_State *L)
{
    switch (lua_type(L, -1)) {
    case LUA_TSTRING: return OPT_STRING;
    case LUA_TNUMBER: return OPT_NUMBER;
    case LUA_TBOOLEAN: return lua_toboolean(L, -1) ? OPT_BOOLEAN : OPT_BOOLEAN | OPT_FALSE;
    case LUA_TFUNCTION: return OPT_FUNCTION;
    case LUA_TTABLE: return OPT_TABLE;
    case LUA_TNIL: return 0;
    default: return 64; /* no option takes userdata, threads ... */
    }
}

static int opt_raise(lua_State *L, const opt_reader *r, const char *what)
{
    if (r->arg > 0)
        return luaL_argerror(L, r->arg, what);
    return luaL_error(L, "%s: %s", r->who, what);
}

static int opt_fail(lua_State *L, const opt_reader *r, const char *name)
{
    const opt_spec *s;
    for (s = r->specs; s->name != NULL && strcmp(s->name, name) != 0; s++)
        ;
    lua_pushfstring(L, "option '%s' %s", name, s->name ? s->must : "is wrong");
    return opt_raise(L, r, lua_tostring(L, -1));
}

static void opt_check(lua_State *L, int idx, const opt_reader *r)
{
    idx = compat_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        const opt_spec *s = r->specs;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int bit = opt_type_bit(L);
        while (k != NULL && s->name != NULL && strcmp(k, s->name) != 0)
            s++;
        if (k == NULL || s->name == NULL) {
            lua_pushfstring(L, "unknown option '%s'", k ? k : luaL_typename(L, -2));
            opt_raise(L, r, lua_tostring(L, -1));
        }
        /* false passes where booleans do, and where OPT_FALSE alone does */
        if (bit != 0 && (bit & s->types) == 0)
            opt_fail(L, r, s->name);
        lua_pop(L, 1);
    }
}

static void opt_get(lua_State *L, int idx, const char *k)
{
    idx = compat_absindex(L, idx);
    lua_pushstring(L, k);
    lua_rawget(L, idx);
}

static const char *opt_string(lua_State *L, int idx, const char *k, size_t *len)
{
    const char *s = NULL;
    opt_get(L, idx, k);
    if (lua_type(L, -1) == LUA_TSTRING)
        s = lua_tolstring(L, -1, len); /* still referenced by the options table */
    lua_pop(L, 1);
    return s;
}

static int opt_number(lua_State *L, int idx, const char *k, double *v)
{
    int set;
    opt_get(L, idx, k);
    set = lua_type(L, -1) == LUA_TNUMBER;
    if (set)
        *v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return set;
}

static const opt_spec opt_client_specs[] = {
    {"base_url", OPT_STRING, "must be a string"},
    {"timeout", OPT_NUMBER, "must be a number of seconds > 0"},
    {"connect_timeout", OPT_NUMBER, "must be a number of seconds > 0"},
    {"deadline", OPT_NUMBER, "must be a number of seconds > 0"},
    {"max_response_bytes", OPT_NUMBER, "must be a whole number from 1 to 1000000000"},
    {"max_connections", OPT_NUMBER, "must be a whole number from 1 to 1024"},
    {"max_retries", OPT_NUMBER, "must be a whole number from 0 to 10"},
    {"user_agent", OPT_STRING, "must be a string"},
    {"cainfo", OPT_STRING, "must be a string"},
    {"capath", OPT_STRING, "must be a string"},
    {"debug", OPT_BOOLEAN | OPT_FUNCTION, "must be a boolean or a function"},
    {"transport", OPT_FUNCTION, "must be a function"},
    {"guard", OPT_TABLE, "must be a table"},
    {NULL, 0, NULL}};

static const opt_reader opt_client_reader = {"contiguity.new", 0, opt_client_specs};

/* Seconds: > 0 and at most a day. */
static double opt_seconds(lua_State *L, int idx, const char *k, double def)
{
    double v = def;
    if (opt_number(L, idx, k, &v) && !(v > 0 && v <= 86400))
        opt_fail(L, &opt_client_reader, k);
    return v;
}

/* A whole number in [lo, hi]; the range is checked before any conversion
 * (converting an out-of-range float is undefined behaviour). */
static double opt_count(lua_State *L, int idx, const char *k, double def, double lo, double hi)
{
    double v = def;
    if (opt_number(L, idx, k, &v) && !(v >= lo && v <= hi && v == (double)(long)v))
        opt_fail(L, &opt_client_reader, k);
    return v;
}

/* One octet of a dotted quad at s (before end): 1-3 decimal digits, 0-255,
 * no leading zero (a parser reading 010 as octal would see 8). Returns the
 * digits used, 0 when there is no such octet. */
static size_t opt_octet(const char *s, const char *end, unsigned *v)
{
    size_t n = 0;
    *v = 0;
    while (s + n < end && n < 3 && s[n] >= '0' && s[n] <= '9') {
        *v = *v * 10 + (unsigned)(s[n] - '0');
        n++;
    }
    if (n == 0 || (n > 1 && s[0] == '0') || *v > 255)
        return 0;
    return n;
}

/* True when the URL's host is loopback as written: the only place plain
 * http may go. The host is 127.b.c.d in four decimal octets (no short,
 * octal or hex form, no trailing dot: libcurl would look such a name up in
 * DNS), [::1], or localhost in any case (cio_setup connects it to
 * 127.0.0.1, never looking it up); then an optional port 1-65535, then the
 * path. No userinfo. doc/tls-and-loopback.md lists what is refused. */
static int opt_is_loopback_http(const char *url)
{
    const char *h = url + 7, *end, *p;
    unsigned v, i;
    size_t n;
    end = h + strcspn(h, "/?#"); /* host and port */
    if (memchr(h, '@', (size_t)(end - h)) != NULL)
        return 0;
    if (end - h >= 5 && memcmp(h, "[::1]", 5) == 0) {
        p = h + 5;
    } else if (end - h >= 9 && strncasecmp(h, "localhost", 9) == 0) {
        p = h + 9;
    } else {
        p = h;
        for (i = 0; i < 4; i++) {
            if (i > 0) {
                if (p >= end || *p != '.')
                    return 0;
                p++;
            }
            n = opt_octet(p, end, &v);
            if (n == 0 || (i == 0 && v != 127))
                return 0;
            p += n;
        }
    }
    if (p == end)
        return 1;
    if (*p != ':' || end - p < 2 || end - p > 6)
        return 0;
    for (v = 0, p++; p < end; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        v = v * 10 + (unsigned)(*p - '0');
    }
    return v >= 1 && v <= 65535;
}

/* An absolute http(s) URL with a host and no whitespace or control bytes:
 * base_url's check and success_url's (ops.c). */
static int opt_is_url(const char *s, size_t n)
{
    size_t i, skip;
    if (n > 8 && memcmp(s, "https://", 8) == 0)
        skip = 8;
    else if (n > 7 && memcmp(s, "http://", 7) == 0)
        skip = 7;
    else
        return 0;
    if (s[skip] == '/' || s[skip] == '?' || s[skip] == '#')
        return 0;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return 0;
    return 1;
}

/* True when the URL's host is localhost (any case). */
static int opt_host_is_localhost(const char *url)
{
    const char *h = strstr(url, "://");
    if (h == NULL)
        return 0;
    h += 3;
    return strncasecmp(h, "localhost", 9) == 0 && strchr(":/?#", h[9]) != NULL;
}

/* Pushes the normalised base_url: the option, else CONTIGUITY_BASE_URL,
 * else the real API; no trailing slash; plain http only to loopback. */
static void opt_base_url(lua_State *L, int idx)
{
    size_t n = 0;
    const char *base = opt_string(L, idx, "base_url", &n);
    if (base == NULL) {
        base = getenv("CONTIGUITY_BASE_URL");
        if (base == NULL || *base == '\0')
            base = OPT_DEFAULT_BASE_URL;
        n = strlen(base);
    }
    while (n > 0 && base[n - 1] == '/')
        n--;
    lua_pushlstring(L, base, n);
    base = lua_tostring(L, -1);
    if (!opt_is_url(base, n))
        luaL_error(L, "contiguity.new: base_url must be an http(s) URL");
    if (strncmp(base, "http://", 7) == 0 && !opt_is_loopback_http(base))
        luaL_error(L, "contiguity.new: plain http:// is allowed only for loopback hosts "
                      "(127.0.0.0/8, ::1, localhost); use https://");
}

static void opt_check_client(lua_State *L, int idx)
{
    opt_check(L, idx, &opt_client_reader);
}

static void opt_client(lua_State *L, int idx, cg_config *cfg)
{
    cfg->timeout = opt_seconds(L, idx, "timeout", 10);
    cfg->connect_timeout = opt_seconds(L, idx, "connect_timeout", 5);
    cfg->max_response = (size_t)opt_count(L, idx, "max_response_bytes", 1024 * 1024, 1, 1e9);
    cfg->max_connections = (long)opt_count(L, idx, "max_connections", 16, 1, 1024);
    cfg->max_retries = (int)opt_count(L, idx, "max_retries", 2, 0, 10);
    cfg->deadline = opt_seconds(L, idx, "deadline", cfg->timeout * (cfg->max_retries + 1));
    opt_base_url(L, idx);
    cfg->localhost = opt_host_is_localhost(lua_tostring(L, -1));
}

/* The token at index 1 (else CONTIGUITY_API_KEY, else CONTIGUITY_TOKEN)
 * replaces index 1; raises when there is none or it looks wrong, never
 * echoing it, not even part of it. */
static void opt_token(lua_State *L)
{
    size_t n, i;
    const char *t;
    int bad;
    if (lua_isnil(L, 1)) {
        const char *env = getenv("CONTIGUITY_API_KEY");
        if (env == NULL || *env == '\0')
            env = getenv("CONTIGUITY_TOKEN");
        if (env == NULL || *env == '\0')
            luaL_error(L, "contiguity.new: no token: pass one or set CONTIGUITY_API_KEY");
        lua_pushstring(L, env);
        lua_replace(L, 1);
    }
    t = lua_tolstring(L, 1, &n);
    bad = n <= 14 || strncmp(t, "contiguity_sk_", 14) != 0;
    for (i = 0; i < n && !bad; i++)
        bad = (unsigned char)t[i] <= ' ' || t[i] == 0x7f;
    if (bad)
        luaL_error(L, "contiguity.new: token must start with contiguity_sk_ and contain "
                      "no spaces or control characters");
}

/* A header value must stay one header: no CR, LF or NUL. */
static int opt_is_header_safe(const char *s, size_t n)
{
    return memchr(s, '\r', n) == NULL && memchr(s, '\n', n) == NULL && memchr(s, '\0', n) == NULL;
}

static void opt_push_user_agent(lua_State *L, int opts, const char *version,
                                const char *libcurl)
{
    const char *lua_name = COMPAT_LUA_NAME, *sp = strchr(lua_name, ' ');
    size_t n = 0;
    const char *ua = opt_string(L, opts, "user_agent", &n);
    luaL_Buffer b;
    if (ua != NULL && !opt_is_header_safe(ua, n))
        luaL_error(L, "contiguity.new: option 'user_agent' must not contain CR, LF or NUL");
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "contiguity-lua/");
    luaL_addstring(&b, version);
    luaL_addstring(&b, " libcurl/");
    luaL_addstring(&b, libcurl);
    luaL_addchar(&b, ' ');
    luaL_addlstring(&b, lua_name, sp ? (size_t)(sp - lua_name) : strlen(lua_name));
    if (sp != NULL) {
        luaL_addchar(&b, '/');
        luaL_addstring(&b, sp + 1);
    }
    if (ua != NULL) {
        luaL_addchar(&b, ' ');
        luaL_addlstring(&b, ua, n);
    }
    luaL_pushresult(&b);
}
