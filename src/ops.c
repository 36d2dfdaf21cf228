/* ops.c: the operation table, client-side validation and the request builder (no I/O). */
#include <string.h>
#include "contiguity.h"

enum { CK_STRING = 1, CK_E164, CK_OTP, CK_FACTOR, CK_SERVICE, CK_URL };
enum { REQUIRED = 1, OPTIONAL = 0 };

enum { OP_NEW, OP_VERIFY, OP_RESEND, OP_R_INITIATE, OP_R_VERIFY, OP_R_CANCEL, OP_COUNT };

/* The whole API surface. Adding an endpoint is adding a row. */
static const ops_op ops_table[OP_COUNT] = {
    {"otp.new", "POST", "/otp/new", 0, OPF_NEVER_RESEND,
     {{"to", CK_E164, REQUIRED}, {"language", CK_STRING, REQUIRED},
      {"name", CK_STRING, REQUIRED}, {NULL, 0, 0}}},
    {"otp.verify", "POST", "/otp/verify", 0, OPF_NEVER_RESEND,
     {{"otp_id", CK_STRING, REQUIRED}, {"otp", CK_OTP, REQUIRED}, {NULL, 0, 0}}},
    {"otp.resend", "POST", "/otp/resend", 0, OPF_NEVER_RESEND,
     {{"otp_id", CK_STRING, REQUIRED}, {NULL, 0, 0}}},
    {"otp.reverse.initiate", "POST", "/otp/reverse/initiate", 0, OPF_NEVER_RESEND,
     {{"number", CK_E164, REQUIRED}, {"factor", CK_FACTOR, OPTIONAL},
      {"to", CK_E164, OPTIONAL}, {"service", CK_SERVICE, OPTIONAL},
      {"language", CK_STRING, OPTIONAL}, {"success_url", CK_URL, OPTIONAL},
      {NULL, 0, 0}}},
    {"otp.reverse.verify", "GET", "/otp/reverse/verify/", 1, OPF_IDEMPOTENT, {{NULL, 0, 0}}},
    {"otp.reverse.cancel", "POST", "/otp/reverse/cancel/", 1, OPF_IDEMPOTENT, {{NULL, 0, 0}}},
};

/* E.164: '+', then 2-15 digits, the first not 0. */
static int ops_is_e164(const char *s, size_t n)
{
    size_t i;
    if (n < 3 || n > 16 || s[0] != '+' || s[1] == '0')
        return 0;
    for (i = 1; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* Characters, not bytes: a factor may be a word in any script. */
static size_t ops_utf8_len(const char *s, size_t n)
{
    size_t i, chars = 0;
    for (i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            chars++;
    return chars;
}

/* An absolute http(s) URL with a host and no whitespace or control bytes. */
static int ops_is_url(const char *s, size_t n)
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

/* Checks one value; returns NULL when good, else the message. Messages never
 * echo the value: it may be a phone number or a code. */
static const char *ops_check_value(lua_State *L, int idx, const ops_field *f)
{
    size_t n;
    const char *s;
    int t = lua_type(L, idx);
    if (t == LUA_TNIL)
        return f->required ? "is required" : NULL;
    if (f->check == CK_OTP && t == LUA_TNUMBER)
        return "must be a string (a number would lose leading zeros)";
    if (t != LUA_TSTRING)
        return "must be a string";
    s = lua_tolstring(L, idx, &n);
    switch (f->check) {
    case CK_E164:
        return ops_is_e164(s, n) ? NULL
               : "must be a phone number in E.164 format (+ then 2-15 digits, no leading 0)";
    case CK_FACTOR:
        if (n == 0) return "must not be empty";
        return ops_utf8_len(s, n) <= 16 ? NULL : "must be at most 16 characters";
    case CK_SERVICE:
        return (strcmp(s, "sms") == 0 || strcmp(s, "imessage") == 0) && strlen(s) == n
               ? NULL : "must be \"sms\" or \"imessage\"";
    case CK_URL:
        return ops_is_url(s, n) ? NULL : "must be an http(s) URL";
    default: /* CK_STRING, CK_OTP */
        return n > 0 ? NULL : "must not be empty";
    }
}

/* Appends an id as one path segment: everything but RFC 3986 unreserved
 * bytes is %XX, and ops_build refuses ids made only of dots (the dot
 * segments "." and ".."), so an id can never reach another endpoint. Written into a
 * luaL_Buffer (Lua-owned) rather than curl_easy_escape's malloc'd string,
 * which a Lua memory error between escape and curl_free would leak. */
static void ops_add_escaped(luaL_Buffer *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
            (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            luaL_addchar(b, (char)ch);
        } else {
            luaL_addchar(b, '%');
            luaL_addchar(b, hex[ch >> 4]);
            luaL_addchar(b, hex[ch & 15]);
        }
    }
}

/* Raises for misuse that no data can cause: the wrong argument type. */
static void ops_check_arg(lua_State *L, const ops_op *op, int arg)
{
    int t = lua_type(L, arg);
    if (op->by_id) {
        if (t != LUA_TSTRING)
            luaL_error(L, "contiguity: %s: otp_id must be a string, got %s", op->name,
                       luaL_typename(L, arg));
    } else if (t != LUA_TTABLE) {
        luaL_error(L, "contiguity: %s: params must be a table, got %s", op->name,
                   luaL_typename(L, arg));
    }
}

static int resp_error(lua_State *L, const char *op, const char *kind, const char *message);

/* Pushes a nil, err pair for a value the caller gave: kind "invalid" with
 * the field named. */
static int ops_invalid(lua_State *L, const ops_op *op, const char *field, const char *msg)
{
    if (field != NULL)
        lua_pushfstring(L, "%s %s", field, msg);
    else
        lua_pushstring(L, msg);
    resp_error(L, op->name, "invalid", lua_tostring(L, -1));
    lua_remove(L, -3); /* the formatted message */
    if (field != NULL) {
        lua_pushstring(L, field);
        lua_setfield(L, -2, "field");
    }
    return 2;
}

/* The request builder shared by every transport: validates the argument at
 * `arg` and pushes the path (with the escaped id) and the body (JSON string,
 * or nil). Returns 0 when it pushed those two, else the count of a pushed
 * nil, err. */
static int ops_build(lua_State *L, const ops_op *op, int arg)
{
    const ops_field *f;
    luaL_Buffer b;
    if (op->by_id) {
        size_t n;
        const char *id = lua_tolstring(L, arg, &n);
        if (n == 0)
            return ops_invalid(L, op, "otp_id", "must not be empty");
        if (strspn(id, ".") == n) /* "." and ".." would leave their path segment */
            return ops_invalid(L, op, "otp_id", "must not be made only of dots");
        luaL_buffinit(L, &b);
        luaL_addstring(&b, op->path);
        ops_add_escaped(&b, id, n);
        luaL_pushresult(&b);
        lua_pushnil(L);
        return 0;
    }
    for (f = op->fields; f->name != NULL; f++) {
        const char *msg;
        lua_getfield(L, arg, f->name);
        msg = ops_check_value(L, -1, f);
        lua_pop(L, 1);
        if (msg != NULL)
            return ops_invalid(L, op, f->name, msg);
    }
    lua_pushstring(L, op->path);
    /* The whole table goes through cjson, so fields this module does not
     * know yet pass through unchanged. */
    cg_registry_push(L, &cg_json_encode_key);
    lua_pushvalue(L, arg);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        const char *why = lua_tostring(L, -1);
        lua_pushfstring(L, "params cannot be encoded as JSON: %s", why ? why : "?");
        lua_remove(L, -2);
        ops_invalid(L, op, NULL, lua_tostring(L, -1));
        lua_remove(L, -3); /* message */
        lua_remove(L, -3); /* path */
        return 2;
    }
    return 0;
}
