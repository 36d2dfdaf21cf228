/* call.c: one call: validate, guard, hand to a transport, decode, debug line, callback.
 *
 * Every OTP call of every client goes through here. A libcurl client's
 * calls are C closures (call_libcurl), blocking or, with a callback, async;
 * a client with a `transport` function gets the Lua glue of host.c around
 * call_host_build and call_host_decode. Both start with call_begin (misuse
 * raises, invalid params return nil, err) and end in the same decoder. The
 * call tables are built by looping over the operation table's rows. */
#include <stdio.h>
#include <string.h>
#include "call.h"
#include "client.h"
#include "ops.h"
#include "error.h"
#include "curl_easy.h"
#include "curl_multi.h"
#include "host.h"

/* Upvalues of every call closure. */
#define UP_CLIENT lua_upvalueindex(1)
#define UP_OWNER lua_upvalueindex(2) /* the table the call lives in, to accept colon calls */
#define UP_OP lua_upvalueindex(3)
#define UP_BASE lua_upvalueindex(4)
#define UP_URL lua_upvalueindex(5) /* base_url .. path, for an op without an id */

/* ---- the debug line ---------------------------------------------------- */

/* Pushes "ok (request ID)" or "KIND STATUS (request ID)" for the nret
 * results at res. */
static void call_push_outcome(lua_State *L, int res, int nret)
{
    if (nret == 1) {
        lua_getfield(L, res, "metadata");
        lua_getfield(L, -1, "id");
        lua_pushfstring(L, "ok (request %s)", lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_replace(L, -3);
        lua_pop(L, 1);
        return;
    }
    lua_getfield(L, res + 1, "kind");
    lua_getfield(L, res + 1, "status");
    lua_getfield(L, res + 1, "request_id");
    lua_pushfstring(L, "%s %s (request %s)", lua_tostring(L, -3),
                    lua_isnumber(L, -2) ? lua_tostring(L, -2) : "-",
                    lua_isstring(L, -1) ? lua_tostring(L, -1) : "-");
    lua_replace(L, -4);
    lua_pop(L, 2);
}

/* One line per request: method, path, status or error kind, request id and
 * time. Never the token, body, code or phone number: only the path, whose
 * only variable part is an otp_id. The hook is called protected: one that
 * raises never replaces or drops a result. */
static void call_debug(lua_State *L, cg_client *c, int client, const ops_op *op, int path_idx,
                       int nret, double ms)
{
    int res = lua_gettop(L) - nret + 1;
    const char *path = lua_tostring(L, path_idx);
    char t[32] = "";
    if (ms >= 0)
        snprintf(t, sizeof(t), " %.2f ms", ms);
    call_push_outcome(L, res, nret);
    lua_pushfstring(L, "contiguity: %s %s %s -> %s%s", op->name, op->method, path ? path : "?",
                    lua_tostring(L, -1), t);
    lua_remove(L, -2);
    if (c->debug == 1) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return;
    }
    compat_getuservalue(L, client);
    lua_getfield(L, -1, "debug");
    lua_replace(L, -2);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 0, 0) != 0) {
        fprintf(stderr, "contiguity: the debug function raised an error (ignored): %s\n",
                lua_isstring(L, -1) ? lua_tostring(L, -1) : "(not a string)");
        lua_pop(L, 1);
    }
}

/* ---- the guard --------------------------------------------------------- */

/* Asks the client's guard whether a validated call may go out: returns 0
 * with the guard's ticket (what record needs, fixed at call time) pushed
 * when it may, else pushes nil, err and returns 2. Only the libcurl paths
 * call it from C; host.c's glue calls the guard itself, so a store that
 * yields never has a C frame under it. */
static int call_guard_check(lua_State *L, const ops_op *op, int client, int arg)
{
    compat_getuservalue(L, client);
    lua_getfield(L, -1, "guard");
    lua_getfield(L, -1, "check");
    lua_insert(L, -2);
    lua_pushstring(L, op->name);
    lua_pushvalue(L, arg);
    lua_call(L, 3, 2);
    lua_remove(L, -3); /* the user value */
    if (lua_isnil(L, -2)) {
        lua_remove(L, -2);
        return 0;
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* Tells the guard about a call that succeeded, with its ticket (otp.new's
 * otp_id is how a later resend is counted against its number). Protected:
 * a store failure here costs that mapping, never the result or callback. */
static void call_guard_record(lua_State *L, const ops_op *op, int client, int ticket, int res)
{
    compat_getuservalue(L, client);
    lua_getfield(L, -1, "guard");
    lua_getfield(L, -1, "record");
    lua_insert(L, -2);
    lua_pushstring(L, op->name);
    lua_pushvalue(L, ticket);
    lua_pushvalue(L, res);
    if (lua_pcall(L, 4, 0, 0) != 0)
        lua_pop(L, 1);
    lua_pop(L, 1);
}

static void call_push_guard_ops(lua_State *L)
{
    int i;
    lua_newtable(L);
    for (i = 0; i < ops_count(); i++) {
        const ops_op *op = ops_get(i);
        if (op->guard == NULL)
            continue;
        lua_createtable(L, 0, 2);
        error_set_string(L, "kind", op->guard);
        error_set_string(L, "field", op->subject);
        lua_setfield(L, -2, op->name);
    }
}

/* ---- one call ------------------------------------------------------------ */

/* Where a call's argument starts: 2 for client.otp:new{...}, else 1. */
static int call_first_arg(lua_State *L)
{
    return lua_rawequal(L, 1, UP_OWNER) ? 2 : 1;
}

/* The start every call shares: misuse raises; a closed client or invalid
 * params return the count of a pushed nil, err; else 0, with the path at
 * *path, the body (or nil) above it and the URL (base_url .. path) on top. */
static int call_begin(lua_State *L, cg_client *c, const ops_op *op, int arg, int *path)
{
    ops_check_arg(L, op, arg);
    if (c->closed)
        return errorf(L, op->name, "invalid", "client is closed");
    *path = lua_gettop(L) + 1;
    if (ops_build(L, op, arg) != 0)
        return 2;
    if (c->closed) /* the params' metamethods ran Lua code, which may close the client */
        return errorf(L, op->name, "invalid", "client is closed");
    if (op->id_from == OPS_ID_ARG) {
        lua_pushvalue(L, UP_BASE);
        lua_pushvalue(L, *path);
        lua_concat(L, 2);
    } else {
        lua_pushvalue(L, UP_URL);
    }
    return 0;
}

/* Starts an async call: what the call keeps ([1] callback, [2] path,
 * [3] ticket, [4] body) goes with its transfer. */
static int call_start(lua_State *L, cg_client *c, const ops_op *op, int path, int cb, int ticket)
{
    const char *url = lua_tostring(L, -1);
    lua_createtable(L, 4, 0);
    lua_pushvalue(L, cb);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, path);
    lua_rawseti(L, -2, 2);
    if (ticket != 0) {
        lua_pushvalue(L, ticket);
        lua_rawseti(L, -2, 3);
    }
    lua_pushvalue(L, path + 1);
    lua_rawseti(L, -2, 4);
    return multi_start(L, c, UP_CLIENT, op, url, path + 1, lua_gettop(L));
}

/* Every OTP call of a libcurl client: build, guard, move, decode. */
static int call_libcurl(lua_State *L)
{
    cg_client *c = (cg_client *)lua_touserdata(L, UP_CLIENT);
    const ops_op *op = ops_get((int)lua_tointeger(L, UP_OP));
    int arg = call_first_arg(L), cb = 0, ticket = 0, path, n;
    double t0;
    if (lua_type(L, arg + 1) == LUA_TFUNCTION)
        cb = arg + 1;
    if ((n = call_begin(L, c, op, arg, &path)) != 0)
        return n;
    if (c->guard) {
        if ((n = call_guard_check(L, op, UP_CLIENT, arg)) != 0)
            return n;
        ticket = lua_gettop(L) - 1;
        lua_insert(L, ticket); /* the URL stays on top */
        if (c->closed) /* the guard's store ran Lua code, which may close the client */
            return errorf(L, op->name, "invalid", "client is closed");
    }
    if (cb)
        return call_start(L, c, op, path, cb, ticket);
    t0 = c->debug ? cio_now() : 0;
    n = easy_perform(L, c, op, lua_tostring(L, -1), path + 1);
    if (c->debug)
        call_debug(L, c, UP_CLIENT, op, path, n, (cio_now() - t0) * 1000.0);
    if (c->guard && n == 1)
        call_guard_record(L, op, UP_CLIENT, ticket, lua_gettop(L));
    return n;
}

static void call_deliver(lua_State *L, int client, int t_idx)
{
    cg_client *c = (cg_client *)lua_touserdata(L, client);
    multi_transfer *t = (multi_transfer *)lua_touserdata(L, t_idx);
    int n, keep;
    compat_getuservalue(L, t_idx);
    keep = lua_gettop(L);
    lua_rawgeti(L, keep, 1); /* the callback */
    if (t->easy == NULL) { /* cancelled by close */
        n = errorf(L, t->op->name, "network", "cancelled");
    } else {
        n = cio_finish(L, t->op, t->easy, t->rc, &t->io, t->attempt);
        if (c->debug) {
            double total = -1;
            curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &total);
            lua_rawgeti(L, keep, 2); /* the path */
            lua_insert(L, -1 - n);
            call_debug(L, c, client, t->op, -1 - n, n, total * 1000.0);
            lua_remove(L, -1 - n);
        }
        if (c->guard && n == 1) {
            int res = lua_gettop(L);
            lua_rawgeti(L, keep, 3);
            call_guard_record(L, t->op, client, lua_gettop(L), res);
            lua_pop(L, 1);
        }
    }
    multi_recycle(c, t);
    lua_call(L, n, 0);
    lua_pop(L, 1); /* keep */
}

/* ---- the transport option's call (host.c's glue around these two) ----- */

/* Step 1: the request table the transport function gets (and, when the
 * client has a guard, nil and the params for the glue's guard:check). */
static int call_host_build(lua_State *L)
{
    cg_client *c = (cg_client *)lua_touserdata(L, UP_CLIENT);
    const ops_op *op = ops_get((int)lua_tointeger(L, UP_OP));
    int arg = call_first_arg(L), path, n, uv;
    if (lua_type(L, arg + 1) == LUA_TFUNCTION)
        luaL_error(L, "contiguity: %s: callbacks need the libcurl transport; "
                      "a transport function runs the call itself", op->name);
    if ((n = call_begin(L, c, op, arg, &path)) != 0)
        return n;
    compat_getuservalue(L, UP_CLIENT);
    uv = lua_gettop(L);
    lua_getfield(L, uv, "auth");
    lua_getfield(L, uv, "user_agent");
    host_push_request(L, op, uv - 1, path, path + 1, c->cfg.timeout, uv + 1, uv + 2);
    if (!c->guard)
        return 1;
    lua_pushnil(L);
    lua_pushvalue(L, arg);
    return 3;
}

/* Step 2: (req, status, body, headers) or (req, nil, message) from the
 * transport function in, result or nil, err out. */
static int call_host_decode(lua_State *L)
{
    cg_client *c = (cg_client *)lua_touserdata(L, UP_CLIENT);
    const ops_op *op = ops_get((int)lua_tointeger(L, UP_OP));
    int n;
    lua_settop(L, 4);
    n = host_outcome(L, op, 2, c->cfg.max_response);
    if (c->debug) {
        lua_getfield(L, 1, "path");
        lua_insert(L, -1 - n);
        call_debug(L, c, UP_CLIENT, op, -1 - n, n, -1);
        lua_remove(L, -1 - n);
    }
    return n;
}

/* ---- the call tables ------------------------------------------------------ */

/* Pushes fn as a call closure with the upvalues every call reads. */
static void call_push_closure(lua_State *L, lua_CFunction fn, int client, int owner, int uv,
                              int i)
{
    const ops_op *op = ops_get(i);
    lua_pushvalue(L, client);
    lua_pushvalue(L, owner);
    lua_pushinteger(L, i);
    lua_getfield(L, uv, "base_url");
    if (op->id_from == OPS_ID_ARG) {
        lua_pushnil(L); /* the URL depends on the id: call_begin builds it */
    } else {
        lua_pushvalue(L, -1);
        lua_pushstring(L, op->path);
        lua_concat(L, 2);
    }
    lua_pushcclosure(L, fn, 5);
}

/* Pushes the table at the dotted path `where` under the table at root,
 * creating what is missing ("otp.reverse": root.otp.reverse). */
static void call_push_table(lua_State *L, int root, const char *where)
{
    lua_pushvalue(L, root);
    while (*where != '\0') {
        size_t n = strcspn(where, ".");
        lua_pushlstring(L, where, n);
        lua_rawget(L, -2);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_newtable(L);
            lua_pushlstring(L, where, n);
            lua_pushvalue(L, -2);
            lua_rawset(L, -4);
        }
        lua_remove(L, -2);
        where += n + (where[n] == '.');
    }
}

static void call_make_tables(lua_State *L, cg_client *c, int client, int uv)
{
    int i, j, root;
    lua_newtable(L);
    root = lua_gettop(L);
    for (i = 0; i < ops_count(); i++) {
        const ops_op *op = ops_get(i);
        int owner;
        call_push_table(L, root, op->table);
        owner = lua_gettop(L);
        if (!c->host) {
            call_push_closure(L, call_libcurl, client, owner, uv, i);
        } else {
            host_push_glue(L); /* compiled once, in luaopen */
            call_push_closure(L, call_host_build, client, owner, uv, i);
            call_push_closure(L, call_host_decode, client, owner, uv, i);
            lua_getfield(L, uv, "transport");
            lua_getfield(L, uv, "guard");
            lua_pushstring(L, op->name);
            lua_call(L, 5, 1);
        }
        for (j = 0; op->names[j] != NULL; j++) {
            lua_pushvalue(L, -1);
            lua_setfield(L, owner, op->names[j]);
        }
        lua_pop(L, 2); /* the call, its table */
    }
    lua_getfield(L, root, "otp");
    lua_setfield(L, uv, "otp");
    lua_pop(L, 1);
}
