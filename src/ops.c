/* ops.c: the operation table, client-side validation and the request builder (no I/O).
 *
 * Each endpoint is ONE ROW of ops_table: its Lua name and where it lives in
 * a client, method, path template, where the id comes from, the fields it
 * validates, mechanism flags and how the guard counts it. The client's otp
 * tables are built by looping over the rows (call.c), the guard learns the
 * ops it counts from them, and every transport sends what ops_build makes
 * from a row. Adding an endpoint: a row here, its sandbox route, its specs
 * and its docs; nothing else in C. */
#include <string.h>
#include "ops.h"
#include "options.h"
#include "error.h"
#include "json.h"

enum { CK_STRING = 1, CK_E164, CK_OTP, CK_FACTOR, CK_SERVICE, CK_URL };
enum { REQUIRED = 1, OPTIONAL = 0 };

enum { OP_NEW, OP_VERIFY, OP_RESEND, OP_R_INITIATE, OP_R_VERIFY, OP_R_CANCEL, OP_COUNT };

static const ops_op ops_table[OP_COUNT] = {
    [OP_NEW] = {.name = "otp.new", .table = "otp", .names = {"new", "send"},
                .method = "POST", .path = "/otp/new", .id_from = OPS_ID_NONE,
                .flags = OPF_NEVER_RESEND, .guard = "send", .subject = "to",
                .fields = {{"to", CK_E164, REQUIRED}, {"language", CK_STRING, REQUIRED},
                           {"name", CK_STRING, REQUIRED}}},
    [OP_VERIFY] = {.name = "otp.verify", .table = "otp", .names = {"verify"},
                   .method = "POST", .path = "/otp/verify", .id_from = OPS_ID_NONE,
                   .flags = OPF_NEVER_RESEND, .guard = "verify", .subject = "otp_id",
                   .fields = {{"otp_id", CK_STRING, REQUIRED}, {"otp", CK_OTP, REQUIRED}}},
    [OP_RESEND] = {.name = "otp.resend", .table = "otp", .names = {"resend"},
                   .method = "POST", .path = "/otp/resend", .id_from = OPS_ID_NONE,
                   .flags = OPF_NEVER_RESEND, .guard = "resend", .subject = "otp_id",
                   .fields = {{"otp_id", CK_STRING, REQUIRED}}},
    [OP_R_INITIATE] = {.name = "otp.reverse.initiate", .table = "otp.reverse",
                       .names = {"initiate"}, .method = "POST", .path = "/otp/reverse/initiate",
                       .id_from = OPS_ID_NONE, .flags = OPF_NEVER_RESEND, .guard = "initiate",
                       .subject = "number",
                       .fields = {{"number", CK_E164, REQUIRED}, {"factor", CK_FACTOR, OPTIONAL},
                                  {"to", CK_E164, OPTIONAL}, {"service", CK_SERVICE, OPTIONAL},
                                  {"language", CK_STRING, OPTIONAL},
                                  {"success_url", CK_URL, OPTIONAL}}},
    [OP_R_VERIFY] = {.name = "otp.reverse.verify", .table = "otp.reverse", .names = {"verify"},
                     .method = "GET", .path = "/otp/reverse/verify/{otp_id}",
                     .id_from = OPS_ID_ARG, .flags = OPF_IDEMPOTENT},
    [OP_R_CANCEL] = {.name = "otp.reverse.cancel", .table = "otp.reverse", .names = {"cancel"},
                     .method = "POST", .path = "/otp/reverse/cancel/{otp_id}",
                     .id_from = OPS_ID_ARG, .flags = OPF_IDEMPOTENT},
};

static int ops_count(void)
{
    return OP_COUNT;
}

static const ops_op *ops_get(int i)
{
    return &ops_table[i];
}

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
        return opt_is_url(s, n) ? NULL : "must be an http(s) URL";
    default: /* CK_STRING, CK_OTP */
        return n > 0 ? NULL : "must not be empty";
    }
}

/* Appends an id as one path segment: everything but RFC 3986 unreserved
 * bytes is %XX, and ops_build refuses ids made only of dots (the dot
 * segments "." and ".."), so an id can never reach another endpoint.
 * Written into a luaL_Buffer (Lua-owned) rather than curl_easy_escape's
 * malloc'd string, which a Lua memory error before curl_free would leak. */
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

static void ops_check_arg(lua_State *L, const ops_op *op, int arg)
{
    int t = lua_type(L, arg);
    if (op->id_from == OPS_ID_ARG) {
        if (t != LUA_TSTRING)
            luaL_error(L, "contiguity: %s: otp_id must be a string, got %s", op->name,
                       luaL_typename(L, arg));
    } else if (t != LUA_TTABLE) {
        luaL_error(L, "contiguity: %s: params must be a table, got %s", op->name,
                   luaL_typename(L, arg));
    }
}

/* Pushes nil, err for a value the caller gave: kind "invalid", the field named. */
static int ops_invalid(lua_State *L, const ops_op *op, const char *field, const char *msg)
{
    errorf(L, op->name, "invalid", "%s %s", field, msg);
    error_set_string(L, "field", field);
    return 2;
}

/* Pushes the path with the id at arg escaped into the row's "{otp_id}". */
static int ops_build_id_path(lua_State *L, const ops_op *op, int arg)
{
    size_t n;
    const char *id = lua_tolstring(L, arg, &n);
    const char *slot = strstr(op->path, "{otp_id}");
    luaL_Buffer b;
    if (n == 0)
        return ops_invalid(L, op, "otp_id", "must not be empty");
    if (strspn(id, ".") == n) /* "." and ".." would leave their path segment */
        return ops_invalid(L, op, "otp_id", "must not be made only of dots");
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, op->path, (size_t)(slot - op->path));
    ops_add_escaped(&b, id, n);
    luaL_addstring(&b, slot + 8);
    luaL_pushresult(&b);
    return 0;
}

static int ops_build(lua_State *L, const ops_op *op, int arg)
{
    const ops_field *f;
    if (op->id_from == OPS_ID_ARG) {
        if (ops_build_id_path(L, op, arg) != 0)
            return 2;
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
    /* The whole table goes through cjson, so fields this module does not
     * know yet pass through unchanged. */
    json_push_encode(L);
    lua_pushvalue(L, arg);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        const char *why = lua_tostring(L, -1);
        errorf(L, op->name, "invalid", "params cannot be encoded as JSON: %s", why ? why : "?");
        lua_remove(L, -3); /* cjson's message */
        return 2;
    }
    lua_pushstring(L, op->path);
    lua_insert(L, -2);
    return 0;
}
