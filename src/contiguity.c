/* contiguity.c: luaopen_contiguity, and the client type and its lifecycle (new, close, __gc, __close).
 *
 * The module is one translation unit: the files below are included, not
 * linked, so every function stays static (only luaopen_contiguity is
 * exported) and the compiler sees the whole path of an OTP call. Each file
 * still includes the headers of what it uses and compiles alone
 * (`make check-units`). Dependencies run one way: this binding uses the
 * call layer (call.c), which uses the transports (curl_easy.c,
 * curl_multi.c, host.c), which use the decoder (response.c) and the
 * operation table (ops.c). */
#define _POSIX_C_SOURCE 200809L
#include "compat.c"
#include "error.c"
#include "json.c"
#include "options.c"
#include "crypto.c"
#include "ops.c"
#include "response.c"
#include "curl_io.c"
#include "curl_easy.c"
#include "curl_multi.c"
#include "host.c"
#include "call.c"
#include "webhook.c"
#include "qr.c"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "compat.h"
#include "client.h"
#include "options.h"
#include "error.h"
#include "json.h"
#include "crypto.h"
#include "curl_io.h"
#include "curl_easy.h"
#include "curl_multi.h"
#include "host.h"
#include "call.h"
#include "webhook.h"
#include "qr.h"

#define CG_VERSION "0.1.0"

static cg_client *cg_check(lua_State *L, int idx)
{
    return (cg_client *)luaL_checkudata(L, idx, CG_CLIENT_MT);
}

/* ---- close ---------------------------------------------------------------- */

/* pcall target of cg_deliver_cancelled: (client, uv). */
static int cg_deliver_queued(lua_State *L)
{
    multi_deliver_all(L, (cg_client *)lua_touserdata(L, 1), 1, 2);
    return 0;
}

/* (client, uv): runs every cancelled call's callback even when some raise,
 * then raises the first error: each is delivered exactly once. */
static int cg_deliver_cancelled(lua_State *L)
{
    int err = 0;
    for (;;) {
        lua_pushcfunction(L, cg_deliver_queued);
        lua_pushvalue(L, 1);
        lua_pushvalue(L, 2);
        if (lua_pcall(L, 2, 0, 0) == 0)
            break;
        if (err == 0)
            err = lua_gettop(L);
        else
            lua_pop(L, 1);
    }
    if (err != 0) {
        lua_pushvalue(L, err);
        lua_error(L);
    }
    return 0;
}

/* The one close: used by close(), __gc and __close; harmless twice.
 * `deliver` runs the callbacks of cancelled calls (not from __gc). Every
 * handle is freed before the first callback runs: a callback that raises
 * leaves `closed` set, so nothing later would free them. */
static void cg_release(lua_State *L, cg_client *c, int idx, int deliver)
{
    int had_multi = c->async.multi != NULL;
    if (c->closed)
        return;
    c->closed = 1;
    if (had_multi) {
        compat_getuservalue(L, idx);
        multi_cancel(L, c, lua_gettop(L));
        multi_free(c);
    }
    easy_close(c);
    curl_slist_free_all(c->cc.headers);
    c->cc.headers = NULL;
    if (had_multi) {
        if (deliver) {
            int uv = lua_gettop(L);
            lua_pushcfunction(L, cg_deliver_cancelled);
            lua_pushvalue(L, idx);
            lua_pushvalue(L, uv);
            lua_call(L, 2, 0);
        }
        lua_pop(L, 1);
    }
}

static int cg_close(lua_State *L)
{
    cg_release(L, cg_check(L, 1), 1, 1);
    return 0;
}

/* __gc: frees what close frees; callbacks cannot run from a finalizer. */
static int cg_gc(lua_State *L)
{
    cg_release(L, (cg_client *)lua_touserdata(L, 1), 1, 0);
    return 0;
}

static int cg_tostring(lua_State *L)
{
    cg_client *c = cg_check(L, 1);
    lua_pushfstring(L, CG_CLIENT_MT " (%s)", c->closed ? "closed" : "open");
    return 1;
}

/* client.otp is the per-client table of calls; anything else is a method. */
static int cg_index(lua_State *L)
{
    const char *k = lua_tostring(L, 2);
    if (k != NULL && strcmp(k, "otp") == 0) {
        compat_getuservalue(L, 1);
        lua_getfield(L, -1, "otp");
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

/* ---- contiguity.new ----------------------------------------------------------- */

/* Makes the guard object when the `guard` option is set and keeps it in
 * the user value; it raises on a bad guard option (misuse). The guard gets
 * the C helpers it needs and the ops it counts, from the operation table. */
static void cg_new_guard(lua_State *L, cg_client *c, int opts, int uv)
{
    opt_get(L, opts, "guard");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_getglobal(L, "require");
    lua_pushliteral(L, "contiguity.guard");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "new");
    lua_remove(L, -2);
    lua_insert(L, -2);
    lua_createtable(L, 0, 5);
    opt_get(L, opts, "debug"); /* true or a function: where the guard says what it let through */
    lua_setfield(L, -2, "debug");
    lua_pushcfunction(L, crypto_hmac_hex);
    lua_setfield(L, -2, "hmac");
    lua_pushcfunction(L, crypto_random_bytes);
    lua_setfield(L, -2, "random_bytes");
    luaL_getmetatable(L, CG_ERROR_MT);
    lua_setfield(L, -2, "error_mt");
    call_push_guard_ops(L);
    lua_setfield(L, -2, "ops");
    lua_call(L, 2, 1);
    lua_setfield(L, uv, "guard");
    c->guard = 1;
}

/* The user value: the client's Lua values (client.h). */
static void cg_new_uservalue(lua_State *L, cg_client *c, int opts, int base)
{
    static const char *const copied[] = {"debug", "transport", "cainfo", "capath", NULL};
    int i, uv;
    lua_createtable(L, 0, 12);
    uv = lua_gettop(L);
    lua_pushvalue(L, base);
    lua_setfield(L, uv, "base_url");
    lua_pushliteral(L, "Token ");
    lua_pushvalue(L, 1);
    lua_concat(L, 2);
    lua_setfield(L, uv, "auth");
    opt_push_user_agent(L, opts, CG_VERSION, cio_libcurl_version());
    lua_setfield(L, uv, "user_agent");
    for (i = 0; copied[i] != NULL; i++) {
        opt_get(L, opts, copied[i]);
        lua_setfield(L, uv, copied[i]);
    }
    lua_getfield(L, uv, "debug");
    c->debug = lua_isfunction(L, -1) ? 2 : lua_toboolean(L, -1);
    lua_getfield(L, uv, "transport");
    c->host = !lua_isnil(L, -1);
    lua_pop(L, 2);
    lua_newtable(L);
    lua_setfield(L, uv, "pending");
    cg_new_guard(L, c, opts, uv);
}

/* The libcurl side of a client: the request headers, the same for every
 * call (the User-Agent is one of them rather than CURLOPT_USERAGENT, which
 * libcurl formats anew on every request), and the blocking easy handle. */
static void cg_new_curl(lua_State *L, cg_client *c, int uv)
{
    const char *list[6];
    int i;
    if (!cio_global_init())
        luaL_error(L, "contiguity.new: curl_global_init failed");
    lua_pushliteral(L, "Authorization: ");
    lua_getfield(L, uv, "auth");
    lua_concat(L, 2);
    lua_pushliteral(L, "User-Agent: ");
    lua_getfield(L, uv, "user_agent");
    lua_concat(L, 2);
    list[0] = lua_tostring(L, -2);
    list[1] = lua_tostring(L, -1);
    list[2] = "Content-Type: application/json";
    list[3] = "Accept: application/json";
    list[4] = "Expect:";
    list[5] = NULL;
    for (i = 0; list[i] != NULL; i++) {
        struct curl_slist *l = curl_slist_append(c->cc.headers, list[i]);
        if (l == NULL)
            luaL_error(L, "contiguity.new: out of memory"); /* __gc frees the list */
        c->cc.headers = l;
    }
    lua_pop(L, 2);
    lua_getfield(L, uv, "cainfo");
    lua_getfield(L, uv, "capath");
    if (!easy_open(c, lua_tostring(L, -2), lua_tostring(L, -1)))
        luaL_error(L, "contiguity.new: cannot set up a libcurl handle");
    lua_pop(L, 2);
}

/* contiguity.new(token?, opts?): validates everything first, then
 * allocates the userdata (with its __gc) before acquiring any handle, so a
 * failure at any step frees what was taken. The options table is only read. */
static int cg_new(lua_State *L)
{
    cg_config cfg;
    cg_client *c;
    int client, uv;
    if (lua_type(L, 1) == LUA_TTABLE && lua_isnoneornil(L, 2)) {
        lua_pushnil(L);
        lua_insert(L, 1);
    }
    lua_settop(L, 2);
    if (!lua_isnil(L, 1) && lua_type(L, 1) != LUA_TSTRING)
        luaL_error(L, "contiguity.new: token must be a string");
    if (!lua_isnil(L, 2) && lua_type(L, 2) != LUA_TTABLE)
        luaL_error(L, "contiguity.new: options must be a table");
    if (lua_isnil(L, 2)) {
        lua_newtable(L);
        lua_replace(L, 2);
    }
    opt_check_client(L, 2);
    opt_token(L);
    opt_client(L, 2, &cfg); /* pushes base_url at 3 */

    c = (cg_client *)compat_newuserdata(L, sizeof(*c));
    memset(c, 0, sizeof(*c));
    client = lua_gettop(L);
    compat_setmetatable(L, CG_CLIENT_MT);
    c->closed = 1; /* nothing to free until the handles exist */
    c->cfg = cfg;
    c->io.body.limit = cfg.max_response;
    c->cc.timeout_ms = (long)(cfg.timeout * 1000.0 + 0.5); /* libcurl's unit */
    c->cc.connect_timeout_ms = (long)(cfg.connect_timeout * 1000.0 + 0.5);
    c->cc.pin_localhost = cfg.localhost;
    c->cc.rng = ((unsigned int)time(NULL) ^ (unsigned int)(size_t)c) | 1u;
    c->async.deliver = call_deliver;
    cg_new_uservalue(L, c, 2, 3);
    uv = lua_gettop(L);
    lua_pushvalue(L, uv);
    compat_setuservalue(L, client);
    c->closed = 0;
    if (!c->host)
        cg_new_curl(L, c, uv);
    call_make_tables(L, c, client, uv);
    lua_pushvalue(L, client);
    return 1;
}

/* contiguity.version(): module, libcurl and Lua versions. */
static int cg_version(lua_State *L)
{
    lua_pushliteral(L, CG_VERSION);
    lua_pushstring(L, cio_libcurl_version());
    lua_pushliteral(L, COMPAT_LUA_NAME);
    return 3;
}

static void cg_open_client_type(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"close", cg_close}, {"poll", multi_poll}, {"wait", multi_wait},
        {"pending", multi_pending}, {"fds", multi_fds}, {NULL, NULL}};
    static const luaL_Reg metamethods[] = {
        {"__gc", cg_gc}, {"__close", cg_close}, {"__tostring", cg_tostring}, {NULL, NULL}};
    if (luaL_newmetatable(L, CG_CLIENT_MT)) {
        compat_setfuncs(L, metamethods, 0);
        lua_newtable(L);
        compat_setfuncs(L, methods, 0);
        lua_pushcclosure(L, cg_index, 1);
        lua_setfield(L, -2, "__index");
        lua_pushliteral(L, CG_CLIENT_MT);
        lua_setfield(L, -2, "__name");
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
}

int luaopen_contiguity(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"new", cg_new}, {"version", cg_version}, {"qr", qr_encode},
                                     {"hmac", crypto_hmac_hex},
                                     {"random_bytes", crypto_random_bytes}, {NULL, NULL}};
    json_open(L);
    host_open(L);
    error_open(L);
    multi_open(L);
    cg_open_client_type(L);
    lua_newtable(L);
    compat_setfuncs(L, funcs, 0);
    lua_pushliteral(L, CG_VERSION);
    lua_setfield(L, -2, "_VERSION");
    call_push_guard_ops(L); /* contiguity.guard's default lib.ops */
    lua_setfield(L, -2, "_guard_ops");
    wh_open(L);
    return 1;
}
