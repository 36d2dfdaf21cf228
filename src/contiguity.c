/* contiguity.c: luaopen_contiguity, the client type and its otp/reverse tables.
 *
 * The module is one translation unit: the files below are included, not
 * linked, so every function can stay static (only luaopen_contiguity is
 * exported) and the compiler sees the whole call path of an OTP call. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "contiguity.h"
#include "response.c"
#include "ops.c"
#include "curl_transport.c"
#include "qr.c"
#include "webhook.c"

#define CG_DEFAULT_BASE_URL "https://api.contiguity.com"

/* Upvalues of every OTP call closure. */
#define UP_CLIENT lua_upvalueindex(1)
#define UP_OWNER lua_upvalueindex(2) /* the otp or reverse table, to accept colon calls */
#define UP_OP lua_upvalueindex(3)
#define UP_BASE lua_upvalueindex(4)
#define UP_URL lua_upvalueindex(5) /* base_url .. path, for an op without an id */

static cg_client *cg_check(lua_State *L, int idx)
{
    return (cg_client *)luaL_checkudata(L, idx, CG_CLIENT_MT);
}

/* ---- debug lines ----------------------------------------------------- */

/* One line per request: method, path, status or error kind, request id and
 * time. Never the token, body, code or phone number: only the path, whose
 * only variable part is an otp_id. */
static void cg_debug(lua_State *L, cg_client *c, int client, const ops_op *op, int path_idx,
                     int nret, double ms)
{
    int top = lua_gettop(L), res = top - nret + 1;
    const char *path = lua_tostring(L, path_idx);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_pushfstring(L, "contiguity: %s %s %s -> ", op->name, op->method, path ? path : "?");
    luaL_addvalue(&b);
    if (nret == 1) {
        lua_getfield(L, res, "metadata");
        lua_getfield(L, -1, "id");
        lua_pushfstring(L, "ok (request %s)", lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_remove(L, -2);
        lua_remove(L, -2);
    } else {
        lua_getfield(L, res + 1, "kind");
        lua_getfield(L, res + 1, "status");
        lua_getfield(L, res + 1, "request_id");
        lua_pushfstring(L, "%s %s (request %s)", lua_tostring(L, -3),
                        lua_isnumber(L, -2) ? lua_tostring(L, -2) : "-",
                        lua_isstring(L, -1) ? lua_tostring(L, -1) : "-");
        lua_replace(L, -4);
        lua_pop(L, 2);
    }
    luaL_addvalue(&b);
    if (ms >= 0) {
        char t[32];
        snprintf(t, sizeof(t), " %.2f ms", ms);
        luaL_addstring(&b, t);
    }
    luaL_pushresult(&b);
    if (c->debug == 1) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    } else {
        compat_getuservalue(L, client);
        lua_getfield(L, -1, "debug");
        lua_remove(L, -2);
        lua_insert(L, -2);
        /* protected: a hook that raises must never replace or drop a result */
        if (lua_pcall(L, 1, 0, 0) != 0) {
            fprintf(stderr, "contiguity: the debug function raised an error (ignored): %s\n",
                    lua_isstring(L, -1) ? lua_tostring(L, -1) : "(not a string)");
            lua_pop(L, 1);
        }
    }
}

/* ---- abuse protection: contiguity.guard -------------------------------- */

/* Asks the client's guard whether a validated call may go out: returns 0
 * with the guard's ticket (what record needs, fixed at call time) pushed
 * when it may, else pushes nil, err and returns 2. Only the libcurl paths
 * call it from C; a host transport's Lua glue calls the guard itself, so a
 * store that yields never has a C frame under it. */
static int cg_guard_check(lua_State *L, const ops_op *op, int client, int arg)
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

/* Tells the guard about a call that succeeded (otp.new's otp_id is how a
 * later resend is counted against its number). Protected: a store failure
 * here costs that mapping, never the caller's result or callback. */
static void cg_guard_record(lua_State *L, const ops_op *op, int client, int ticket, int res)
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

/* ---- async: libcurl multi --------------------------------------------- */

/* Creates the multi handle on the first async call. */
static int cg_multi(cg_client *c)
{
    if (c->multi != NULL)
        return 1;
    c->multi = curl_multi_init();
    if (c->multi == NULL)
        return 0;
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, c->max_connections);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, c->max_connections);
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, c->max_connections);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, curlt_on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, (void *)c);
    return 1;
}

/* Starts an async call: a Transfer userdata owns the easy handle, the
 * client's `pending` table keeps it until its callback has run. ticket
 * (0 when no guard) is the guard's ticket, kept for its record. */
static int cg_start(lua_State *L, cg_client *c, const ops_op *op, int path_idx, int cb_idx,
                    int ticket)
{
    cg_transfer *t;
    const char *url = lua_tostring(L, -1);
    size_t body_len = 0;
    const char *body = lua_tolstring(L, path_idx + 1, &body_len);
    if (!cg_multi(c))
        return resp_error(L, op->name, "network", "cannot create a libcurl multi handle");
    t = (cg_transfer *)compat_newuserdata(L, sizeof(*t));
    memset(t, 0, sizeof(*t));
    compat_setmetatable(L, CG_TRANSFER_MT);
    lua_createtable(L, 4, 0);
    lua_pushvalue(L, cb_idx);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, path_idx);
    lua_rawseti(L, -2, 2);
    lua_pushvalue(L, path_idx + 1); /* the body: curlt_on_read reads it in place */
    lua_rawseti(L, -2, 4);
    if (ticket != 0) {
        lua_pushvalue(L, ticket);
        lua_rawseti(L, -2, 3);
    }
    compat_setuservalue(L, -2);
    t->op = op;
    t->io.body.limit = c->max_response;
    t->attempt = 1;
    t->deadline_at = curlt_now() + c->deadline;
    compat_getuservalue(L, UP_CLIENT);
    if ((t->easy = curlt_idle_take(c, t)) == NULL) {
        t->easy = curl_easy_init();
        lua_getfield(L, -1, "cainfo");
        lua_getfield(L, -2, "capath");
        if (t->easy == NULL ||
            !curlt_setup(c, t->easy, &t->io, lua_tostring(L, -2), lua_tostring(L, -1)))
            return resp_error(L, op->name, "network", "cannot set up a libcurl handle");
        lua_pop(L, 2);
    }
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, (void *)t);
    curlt_attempt_start(c, t->easy, &t->io, t->deadline_at);
    curlt_set_request(t->easy, op, url, body, body_len, 1, &t->io.upload);
    /* registered as pending first: a memory error here then leaves no
     * transfer in libcurl that the done queue cannot find */
    lua_getfield(L, -1, "pending");
    lua_pushlightuserdata(L, t);
    lua_pushvalue(L, -4);
    lua_rawset(L, -3);
    if (curl_multi_add_handle(c->multi, t->easy) != CURLM_OK) {
        lua_pushlightuserdata(L, t);
        lua_pushnil(L);
        lua_rawset(L, -3);
        return resp_error(L, op->name, "network", "cannot add the transfer to libcurl multi");
    }
    c->pending++;
    lua_pushboolean(L, 1);
    return 1;
}

/* The done queue: finished transfers waiting for their callback, in the
 * order libcurl reported them, at integer keys c->qhead..c->qtail of the
 * table at q. The keys start again from 1 whenever the queue empties, so
 * they stay small however many calls a client makes. */
static void cg_queue_push(lua_State *L, cg_client *c, int q)
{
    lua_rawseti(L, q, ++c->qtail);
}

/* Pushes the oldest queued transfer and takes it off, or returns 0. */
static int cg_queue_pop(lua_State *L, cg_client *c, int q)
{
    if (c->qhead > c->qtail)
        return 0;
    lua_rawgeti(L, q, c->qhead);
    lua_pushnil(L);
    lua_rawseti(L, q, c->qhead++);
    if (c->qhead > c->qtail)
        c->qhead = 1, c->qtail = 0;
    return 1;
}

/* Moves finished transfers from `pending` to the `done` queue, or, when
 * the outcome may safely be retried, out of the multi handle until their
 * backoff ends (they stay pending). uv is the client's user value. */
static void cg_collect(lua_State *L, cg_client *c, int uv)
{
    CURLMsg *msg;
    int left, q;
    lua_getfield(L, uv, "pending");
    lua_getfield(L, uv, "done");
    q = lua_gettop(L);
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        cg_transfer *t = NULL;
        CURL *e = msg->easy_handle;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&t);
        t->rc = msg->data.result;
        if (t->attempt <= c->max_retries) {
            double delay = curlt_retry_delay(c, t->op, e, t->rc, &t->io, t->attempt);
            if (delay >= 0 && curlt_now() + delay < t->deadline_at) {
                curl_multi_remove_handle(c->multi, e);
                t->retry_at = curlt_now() + delay;
                t->waiting = 1;
                c->waiting++;
                continue;
            }
        }
        lua_pushlightuserdata(L, t);
        lua_rawget(L, q - 1);
        cg_queue_push(L, c, q);
        lua_pushlightuserdata(L, t);
        lua_pushnil(L);
        lua_rawset(L, q - 1);
        curl_multi_remove_handle(c->multi, e);
    }
    lua_pop(L, 2);
}

/* Runs the callbacks of finished calls, oldest first. Each is taken off
 * the queue before it runs, so a callback that raises leaves the others
 * queued for the next poll and libcurl untouched. */
static int cg_deliver(lua_State *L, cg_client *c, int client, int uv)
{
    int ran = 0, q;
    lua_getfield(L, uv, "done");
    q = lua_gettop(L);
    while (cg_queue_pop(L, c, q)) {
        cg_transfer *t = (cg_transfer *)lua_touserdata(L, -1);
        int n;
        c->pending--;
        compat_getuservalue(L, -1);
        lua_rawgeti(L, -1, 1); /* callback */
        lua_rawgeti(L, -2, 2); /* path, for the debug line */
        if (t->easy == NULL) { /* cancelled by close */
            n = resp_error(L, t->op->name, "network", "cancelled");
        } else {
            n = curlt_finish(L, t->op, t->easy, t->rc, &t->io);
            curlt_set_attempts(L, n, t->attempt);
            if (c->debug) {
                double total = -1;
                curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &total);
                cg_debug(L, c, client, t->op, -1 - n, n, total * 1000.0);
            }
            if (c->guard && n == 1) { /* stack: user value, callback, path, result */
                int res = lua_gettop(L);
                lua_rawgeti(L, res - 3, 3);
                cg_guard_record(L, t->op, client, lua_gettop(L), res);
                lua_pop(L, 1);
            }
        }
        curlt_transfer_done(c, t);
        lua_remove(L, -1 - n); /* path */
        lua_call(L, n, 0);
        lua_pop(L, 2); /* transfer's user value, transfer */
        ran++;
    }
    lua_pop(L, 1);
    return ran;
}

/* Puts the transfers whose backoff has ended back into the multi handle;
 * returns the seconds until the next one is due (a large number when none
 * waits). A backoff is a time, never a sleep: poll stays non-blocking. */
static double cg_resume_due(lua_State *L, cg_client *c, int uv)
{
    double now = curlt_now(), next = 1e9;
    if (c->waiting == 0)
        return next;
    lua_getfield(L, uv, "pending");
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        cg_transfer *t = (cg_transfer *)lua_touserdata(L, -1);
        if (t->waiting) {
            if (t->retry_at <= now) {
                c->waiting--;
                if (!curlt_transfer_retry(c, t)) { /* cannot re-add: report the last outcome */
                    lua_getfield(L, uv, "done");
                    lua_pushvalue(L, -2);
                    cg_queue_push(L, c, lua_gettop(L) - 1);
                    lua_pop(L, 1);
                    lua_pushvalue(L, -2);
                    lua_pushnil(L);
                    lua_rawset(L, -5); /* safe: clearing the current key */
                }
            } else if (t->retry_at - now < next) {
                next = t->retry_at - now;
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return next;
}

/* Seconds until the first backoff ends (0 when one already has), without
 * changing anything: what client:fds() reports. uv is the client's user value. */
static double cg_next_due(lua_State *L, int uv)
{
    double now = curlt_now(), next = 1e9;
    lua_getfield(L, uv, "pending");
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        cg_transfer *t = (cg_transfer *)lua_touserdata(L, -1);
        if (t->waiting && t->retry_at - now < next)
            next = t->retry_at - now;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return next > 0 ? next : 0;
}

/* Drives transfers for at most `timeout` seconds and runs finished calls'
 * callbacks; the shared step of poll and wait. It keeps waiting until a
 * callback ran or the time is up: one socket event (a connect, half a
 * response) is no reason to return early and make the caller spin. */
static int cg_step(lua_State *L, cg_client *c, int client, int uv, double timeout)
{
    double deadline = curlt_now() + timeout, left, next_retry;
    int running = 0, ran;
    long ms = 0;
    for (;;) {
        next_retry = cg_resume_due(L, c, uv);
        curlt_multi_turn(c, ms, &running);
        cg_collect(L, c, uv);
        ran = cg_deliver(L, c, client, uv);
        if (ran > 0 || (running == 0 && c->waiting == 0) || c->closed || !(timeout > 0))
            return ran;
        left = deadline - curlt_now();
        if (left <= 0)
            return 0;
        if (next_retry < left)
            left = next_retry;
        /* whole ms rounded up, so a short wait never turns into a spin */
        ms = left > 1.0 ? 1000 : (long)(left * 1000.0) + 1;
    }
}

/* client:poll(timeout?): never blocks longer than timeout (default 0). */
static int cg_poll(lua_State *L)
{
    cg_client *c = cg_check(L, 1);
    double timeout = luaL_optnumber(L, 2, 0);
    if (c->closed || c->multi == NULL || c->pending == 0) {
        lua_pushinteger(L, 0);
        return 1;
    }
    lua_settop(L, 2);
    compat_getuservalue(L, 1);
    lua_pushinteger(L, cg_step(L, c, 1, 3, timeout));
    return 1;
}

/* client:wait(timeout?): until nothing is pending or the timeout passes;
 * wait(0) still runs what is ready, like poll(0). */
static int cg_wait(lua_State *L)
{
    cg_client *c = cg_check(L, 1);
    double timeout = luaL_optnumber(L, 2, -1);
    double deadline = curlt_now() + timeout;
    int ran = 0;
    lua_settop(L, 2);
    compat_getuservalue(L, 1);
    while (!c->closed && c->multi != NULL && c->pending > 0) {
        double left = timeout < 0 ? 1.0 : deadline - curlt_now();
        ran += cg_step(L, c, 1, 3, left > 1.0 ? 1.0 : left > 0 ? left : 0);
        if (timeout >= 0 && curlt_now() >= deadline)
            break;
    }
    lua_pushinteger(L, ran);
    return 1;
}

/* client:pending(): calls whose callback has not run yet. */
static int cg_pending(lua_State *L)
{
    cg_client *c = cg_check(L, 1);
    lua_pushinteger(L, c->pending);
    return 1;
}

/* client:fds(): a pure query (it changes nothing) of what a host reactor
 * waits on instead of busy polling: the
 * sockets libcurl wants read and written, and the longest wait (seconds)
 * before client:poll(0) must run again even when no socket is ready. */
static int cg_fds(lua_State *L)
{
    cg_client *c = cg_check(L, 1);
    int i, nr = 0, nw = 0;
    long ms = -1;
    lua_newtable(L);
    lua_newtable(L);
    if (c->closed || c->multi == NULL) {
        lua_pushnil(L);
        return 3;
    }
    for (i = 0; i < c->nsocks; i++) {
        if (c->socks[i].events & POLLIN) {
            lua_pushinteger(L, c->socks[i].fd);
            lua_rawseti(L, -3, ++nr);
        }
        if (c->socks[i].events & POLLOUT) {
            lua_pushinteger(L, c->socks[i].fd);
            lua_rawseti(L, -2, ++nw);
        }
    }
    curl_multi_timeout(c->multi, &ms);
    if (c->waiting > 0) { /* a backoff ends: poll(0) must run then */
        double next;
        compat_getuservalue(L, 1);
        next = cg_next_due(L, lua_gettop(L));
        lua_pop(L, 1);
        if (ms < 0 || next * 1000.0 < (double)ms)
            ms = (long)(next * 1000.0 + 0.999); /* whole ms, rounded up */
    }
    if (ms < 0)
        lua_pushnil(L);
    else
        lua_pushnumber(L, (double)ms / 1000.0);
    return 3;
}

/* ---- the OTP calls ------------------------------------------------------ */

/* Where a call's argument starts: 2 for client.otp:new{...}, else 1. */
static int cg_first_arg(lua_State *L)
{
    return lua_rawequal(L, 1, UP_OWNER) ? 2 : 1;
}

/* The start every call shares, whichever transport moves its bytes:
 * misuse raises; a closed client or invalid params return the count of a
 * pushed nil, err; else 0, with the path at *path, the body (or nil) above
 * it and the URL (base_url .. path) on top. */
static int cg_begin(lua_State *L, cg_client *c, const ops_op *op, int arg, int *path)
{
    int n;
    ops_check_arg(L, op, arg);
    if (c->closed)
        return resp_error(L, op->name, "invalid", "client is closed");
    *path = lua_gettop(L) + 1;
    if ((n = ops_build(L, op, arg)) != 0)
        return n;
    if (op->by_id) {
        lua_pushvalue(L, UP_BASE);
        lua_pushvalue(L, *path);
        lua_concat(L, 2);
    } else {
        lua_pushvalue(L, UP_URL);
    }
    return 0;
}

/* Every OTP call of a libcurl client: build, move, decode. */
static int cg_call(lua_State *L)
{
    cg_client *c = (cg_client *)lua_touserdata(L, UP_CLIENT);
    const ops_op *op = &ops_table[lua_tointeger(L, UP_OP)];
    int arg = cg_first_arg(L), cb = 0, ticket = 0, path, n;
    double t0;
    if (lua_type(L, arg + 1) == LUA_TFUNCTION)
        cb = arg + 1;
    if ((n = cg_begin(L, c, op, arg, &path)) != 0)
        return n;
    if (c->guard) {
        if ((n = cg_guard_check(L, op, UP_CLIENT, arg)) != 0)
            return n;
        ticket = lua_gettop(L) - 1;
        lua_insert(L, ticket); /* the URL stays on top */
        if (c->closed) /* the guard's store ran Lua code, which may close the client */
            return resp_error(L, op->name, "invalid", "client is closed");
    }
    if (cb)
        return cg_start(L, c, op, path, cb, ticket);
    t0 = c->debug ? curlt_now() : 0;
    n = curlt_perform(L, c, op, lua_gettop(L), path + 1);
    if (c->debug)
        cg_debug(L, c, UP_CLIENT, op, path, n, (curlt_now() - t0) * 1000.0);
    if (c->guard && n == 1)
        cg_guard_record(L, op, UP_CLIENT, ticket, lua_gettop(L));
    return n;
}

/* Host transport, step 1: the request table a Lua transport function gets
 * (and, when the client has a guard, nil and the params for the glue's
 * guard:check and guard:record). */
static int cg_host_build(lua_State *L)
{
    cg_client *c = (cg_client *)lua_touserdata(L, UP_CLIENT);
    const ops_op *op = &ops_table[lua_tointeger(L, UP_OP)];
    int arg = cg_first_arg(L), path, n;
    if (lua_type(L, arg + 1) == LUA_TFUNCTION)
        luaL_error(L, "contiguity: %s: callbacks need the libcurl transport; "
                      "a transport function runs the call itself", op->name);
    if ((n = cg_begin(L, c, op, arg, &path)) != 0)
        return n;
    lua_createtable(L, 0, 6);
    lua_pushstring(L, op->method);
    lua_setfield(L, -2, "method");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "url");
    lua_pushvalue(L, path);
    lua_setfield(L, -2, "path");
    lua_pushvalue(L, path + 1);
    lua_setfield(L, -2, "body");
    lua_pushnumber(L, (double)c->timeout_ms / 1000.0);
    lua_setfield(L, -2, "timeout");
    lua_createtable(L, 0, 4);
    compat_getuservalue(L, UP_CLIENT);
    lua_getfield(L, -1, "auth");
    lua_setfield(L, -3, "Authorization");
    lua_getfield(L, -1, "user_agent");
    lua_setfield(L, -3, "User-Agent");
    lua_pop(L, 1);
    lua_pushliteral(L, "application/json");
    lua_setfield(L, -2, "Content-Type");
    lua_pushliteral(L, "application/json");
    lua_setfield(L, -2, "Accept");
    lua_setfield(L, -2, "headers");
    if (!c->guard)
        return 1;
    lua_pushnil(L);
    lua_pushvalue(L, arg);
    return 3;
}

/* Feeds a host transport's response headers table (any case of names)
 * to curlt_meta_set, the parser the libcurl header callback uses. Keys are
 * only read when they are strings: converting one would break lua_next. */
static void cg_host_meta(lua_State *L, int headers, cg_resp_meta *meta)
{
    if (lua_type(L, headers) != LUA_TTABLE)
        return;
    lua_pushnil(L);
    while (lua_next(L, headers) != 0) {
        int vt = lua_type(L, -1);
        if (lua_type(L, -2) == LUA_TSTRING && (vt == LUA_TSTRING || vt == LUA_TNUMBER)) {
            size_t nlen, vlen;
            const char *name = lua_tolstring(L, -2, &nlen);
            const char *v = lua_tolstring(L, -1, &vlen);
            curlt_meta_set(meta, name, nlen, v, vlen);
        }
        lua_pop(L, 1);
    }
}

/* Host transport, step 2: (req, status, body, headers) or (req, nil,
 * message) from the transport function in, result or nil, err out. */
static int cg_host_decode(lua_State *L)
{
    cg_client *c = (cg_client *)lua_touserdata(L, UP_CLIENT);
    const ops_op *op = &ops_table[lua_tointeger(L, UP_OP)];
    cg_resp_meta meta;
    size_t len = 0;
    const char *body;
    int n;
    lua_settop(L, 4);
    if (!lua_isnumber(L, 2)) {
        const char *msg = lua_isstring(L, 3) ? lua_tostring(L, 3) : "transport failed";
        n = resp_error(L, op->name, strstr(msg, "timeout") || strstr(msg, "timed out")
                                        ? "timeout" : "network", msg);
    } else {
        double status = lua_tonumber(L, 2);
        body = lua_tolstring(L, 3, &len);
        curlt_meta_reset(&meta);
        /* only an error answer reports Location and Retry-After: a 2xx
         * skips the walk through the headers table */
        if (status < 200 || status >= 300)
            cg_host_meta(L, 4, &meta);
        if (!(status >= 100 && status < 600)) {
            n = resp_error(L, op->name, "network", "transport returned an invalid HTTP status");
        } else if (len > c->max_response) {
            n = resp_error(L, op->name, "decode", "response body larger than max_response_bytes");
        } else {
            n = resp_decode(L, op, (long)status, body, len, &meta);
        }
    }
    if (c->debug) {
        lua_getfield(L, 1, "path");
        lua_insert(L, -1 - n);
        cg_debug(L, c, UP_CLIENT, op, -1 - n, n, -1);
        lua_remove(L, -1 - n);
    }
    return n;
}

/* The call glue for a host transport, in Lua so that a transport which
 * yields (cosockets, Skynet, copas) never has a C frame under it: Lua 5.1
 * and LuaJIT cannot yield across a C call. The guard (and its store, which
 * may be a cosocket Redis) is called from here for the same reason:
 * build -> guard check -> transport -> decode -> guard record. */
static const char cg_host_glue[] =
    "local build, decode, transport, guard, op = ...\n"
    "if not guard then\n"
    "  return function(...)\n"
    "    local req, err = build(...)\n"
    "    if not req then return nil, err end\n"
    "    return decode(req, transport(req))\n"
    "  end\n"
    "end\n"
    "return function(...)\n"
    "  local req, err, arg = build(...)\n"
    "  if not req then return nil, err end\n"
    "  local refused, ticket = guard:check(op, arg)\n"
    "  if refused then return nil, refused end\n"
    "  local res, err2 = decode(req, transport(req))\n"
    "  if res then guard:record(op, ticket, res) end\n"
    "  return res, err2\n"
    "end\n";

/* Pushes fn as an OTP call closure with the upvalues every call reads
 * (UP_CLIENT, UP_OWNER, UP_OP, UP_BASE, UP_URL). */
static void cg_push_closure(lua_State *L, lua_CFunction fn, int client, int owner, int op)
{
    lua_pushvalue(L, client);
    lua_pushvalue(L, owner);
    lua_pushinteger(L, op);
    compat_getuservalue(L, client);
    lua_getfield(L, -1, "base_url");
    lua_remove(L, -2);
    if (ops_table[op].by_id) {
        lua_pushnil(L); /* the URL depends on the id: cg_begin builds it */
    } else {
        lua_pushvalue(L, -1);
        lua_pushstring(L, ops_table[op].path);
        lua_concat(L, 2);
    }
    lua_pushcclosure(L, fn, 5);
}

/* Adds one call to the otp or reverse table at -1: a C closure for the
 * libcurl client, the Lua glue around build and decode for a host one. */
static void cg_add_call(lua_State *L, cg_client *c, int client, int op, const char *name)
{
    int owner = lua_gettop(L);
    if (!c->host) {
        cg_push_closure(L, cg_call, client, owner, op);
    } else {
        cg_registry_push(L, &cg_host_glue_key); /* compiled once, in luaopen */
        cg_push_closure(L, cg_host_build, client, owner, op);
        cg_push_closure(L, cg_host_decode, client, owner, op);
        compat_getuservalue(L, client);
        lua_getfield(L, -1, "transport");
        lua_getfield(L, -2, "guard");
        lua_remove(L, -3);
        lua_pushstring(L, ops_table[op].name);
        lua_call(L, 5, 1);
    }
    lua_setfield(L, owner, name);
}

/* ---- the client ------------------------------------------------------- */

/* pcall target for close: deliver(client, uv). */
static int cg_deliver_all(lua_State *L)
{
    cg_deliver(L, (cg_client *)lua_touserdata(L, 1), 1, 2);
    return 0;
}

/* Runs every queued callback even when some raise, then raises the first
 * error: close must deliver each cancelled call exactly once. */
static int cg_release_deliver(lua_State *L)
{
    int err = 0;
    for (;;) {
        lua_pushcfunction(L, cg_deliver_all);
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
    int had_multi = c->multi != NULL;
    if (c->closed)
        return;
    c->closed = 1;
    if (had_multi) {
        /* cancel what is in flight: detach it and queue its callback */
        compat_getuservalue(L, idx);
        lua_getfield(L, -1, "pending");
        lua_getfield(L, -2, "done");
        lua_pushnil(L);
        while (lua_next(L, -3) != 0) {
            cg_transfer *t = (cg_transfer *)lua_touserdata(L, -1);
            curl_multi_remove_handle(c->multi, t->easy);
            curlt_transfer_release(t);
            cg_queue_push(L, c, lua_gettop(L) - 2);
        }
        c->waiting = 0;
        lua_pop(L, 2);
        lua_newtable(L);
        lua_setfield(L, -2, "pending");
        curl_multi_cleanup(c->multi);
        c->multi = NULL;
        curlt_multi_free(c);
    }
    if (c->easy != NULL) {
        curl_easy_cleanup(c->easy);
        c->easy = NULL;
    }
    curl_slist_free_all(c->headers);
    c->headers = NULL;
    curlt_buf_free(&c->io.body);
    if (had_multi) {
        if (deliver) {
            /* every cancelled call's callback runs exactly once; a raising
             * callback does not stop the others */
            int uv = lua_gettop(L);
            lua_pushcfunction(L, cg_release_deliver);
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

/* ---- contiguity.new ----------------------------------------------------- */

static const char *const cg_options[] = {
    "base_url", "timeout", "connect_timeout", "user_agent", "debug", "transport",
    "max_response_bytes", "max_connections", "cainfo", "capath", "max_retries", "deadline",
    "guard", NULL};

/* A header value must stay one header: no CR, LF or NUL. */
static int cg_is_header_safe(const char *s, size_t n)
{
    return memchr(s, '\r', n) == NULL && memchr(s, '\n', n) == NULL && memchr(s, '\0', n) == NULL;
}

/* True when the URL's host is loopback: the only place plain http may go. */
static int cg_is_loopback_http(const char *url)
{
    const char *h = url + 7, *end;
    size_t n;
    end = h + strcspn(h, "/?#");
    if (memchr(h, '@', (size_t)(end - h)) != NULL)
        return 0;
    if (*h == '[')
        return strncmp(h, "[::1]", 5) == 0 && (h[5] == ':' || h + 5 == end);
    n = strcspn(h, ":/?#");
    if (n == 9 && strncasecmp(h, "localhost", 9) == 0)
        return 1;
    if (n >= 7 && strncmp(h, "127.", 4) == 0) {
        size_t i;
        for (i = 4; i < n; i++)
            if ((h[i] < '0' || h[i] > '9') && h[i] != '.')
                return 0;
        return 1;
    }
    return 0;
}

static double cg_opt_seconds(lua_State *L, int opts, const char *k, double def)
{
    double v = def;
    lua_getfield(L, opts, k);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER || !(lua_tonumber(L, -1) > 0) ||
            lua_tonumber(L, -1) > 86400)
            luaL_error(L, "contiguity.new: option '%s' must be a number of seconds > 0", k);
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

static lua_Number cg_opt_count(lua_State *L, int opts, const char *k, lua_Number def,
                               lua_Number lo, lua_Number hi)
{
    lua_Number v = def;
    lua_getfield(L, opts, k);
    if (!lua_isnil(L, -1)) {
        v = lua_tonumber(L, -1);
        /* the range first: converting an out-of-range float is undefined */
        if (lua_type(L, -1) != LUA_TNUMBER || !(v >= lo && v <= hi) || v != (lua_Number)(long)v)
            luaL_error(L, "contiguity.new: option '%s' must be a whole number from %d to %d", k,
                       (int)lo, (int)hi);
    }
    lua_pop(L, 1);
    return v;
}

/* Pushes option k if it is a string (or nil when absent), raising otherwise. */
static const char *cg_opt_string(lua_State *L, int opts, const char *k)
{
    lua_getfield(L, opts, k);
    if (lua_isnil(L, -1))
        return NULL;
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "contiguity.new: option '%s' must be a string", k);
    return lua_tostring(L, -1);
}

/* Makes the guard object when the `guard` option is set and keeps it in
 * the user value; it raises on a bad guard option (misuse). Runs while the
 * client is still marked closed, so a raise frees nothing twice. The guard
 * gets the C helpers it needs (HMAC, random key, the error metatable). */
static void cg_new_guard(lua_State *L, cg_client *c, int opts, int uv)
{
    lua_getfield(L, opts, "guard");
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
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, wh_hmac_hex);
    lua_setfield(L, -2, "hmac");
    lua_pushcfunction(L, wh_random_bytes);
    lua_setfield(L, -2, "random_bytes");
    luaL_getmetatable(L, CG_ERROR_MT);
    lua_setfield(L, -2, "error_mt");
    lua_call(L, 2, 1);
    lua_setfield(L, uv, "guard");
    c->guard = 1;
}

/* contiguity.new(token?, opts?): validates everything first, then
 * allocates the userdata (with its __gc) before acquiring any handle, so a
 * failure at any step frees what was taken. */
static int cg_new(lua_State *L)
{
    const char *token, *base, *ua;
    size_t tlen, blen;
    int opts, uv, client, base_idx;
    cg_client *c;
    double timeout, connect_timeout, deadline;
    lua_Number max_response, max_connections, max_retries;
    luaL_Buffer b;

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
    opts = 2;
    lua_pushnil(L);
    while (lua_next(L, opts) != 0) {
        int i, known = 0;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        for (i = 0; k != NULL && cg_options[i] != NULL; i++)
            known |= strcmp(k, cg_options[i]) == 0;
        if (!known)
            luaL_error(L, "contiguity.new: unknown option '%s'",
                       k ? k : luaL_typename(L, -2));
        lua_pop(L, 1);
    }

    /* token: argument, else CONTIGUITY_API_KEY, else CONTIGUITY_TOKEN */
    if (lua_isnil(L, 1)) {
        const char *env = getenv("CONTIGUITY_API_KEY");
        if (env == NULL || *env == '\0')
            env = getenv("CONTIGUITY_TOKEN");
        if (env == NULL || *env == '\0')
            luaL_error(L, "contiguity.new: no token: pass one or set CONTIGUITY_API_KEY");
        lua_pushstring(L, env);
        lua_replace(L, 1);
    }
    token = lua_tolstring(L, 1, &tlen);
    {
        size_t i;
        int bad = tlen <= 14 || strncmp(token, "contiguity_sk_", 14) != 0;
        for (i = 0; i < tlen && !bad; i++)
            bad = (unsigned char)token[i] <= ' ' || token[i] == 0x7f;
        if (bad) /* never echo the token, not even part of it */
            luaL_error(L, "contiguity.new: token must start with contiguity_sk_ and contain "
                          "no spaces or control characters");
    }

    /* base_url: option, else CONTIGUITY_BASE_URL, else the real API */
    base = cg_opt_string(L, opts, "base_url");
    if (base == NULL) {
        base = getenv("CONTIGUITY_BASE_URL");
        if (base == NULL || *base == '\0')
            base = CG_DEFAULT_BASE_URL;
        lua_pop(L, 1);
        lua_pushstring(L, base);
    }
    base = lua_tolstring(L, -1, &blen);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    lua_pushlstring(L, base, blen);
    lua_remove(L, -2);
    base = lua_tostring(L, -1);
    if (!ops_is_url(base, blen)) /* the check success_url gets too */
        luaL_error(L, "contiguity.new: base_url must be an http(s) URL");
    if (strncmp(base, "http://", 7) == 0 && !cg_is_loopback_http(base))
        luaL_error(L, "contiguity.new: plain http:// is allowed only for loopback hosts "
                      "(127.0.0.0/8, ::1, localhost); use https://");
    base_idx = lua_gettop(L); /* normalised; the caller's table is never written */

    timeout = cg_opt_seconds(L, opts, "timeout", 10);
    connect_timeout = cg_opt_seconds(L, opts, "connect_timeout", 5);
    max_response = cg_opt_count(L, opts, "max_response_bytes", 1024 * 1024, 1, 1e9);
    max_connections = cg_opt_count(L, opts, "max_connections", 16, 1, 1024);
    max_retries = cg_opt_count(L, opts, "max_retries", 2, 0, 10);
    deadline = cg_opt_seconds(L, opts, "deadline", timeout * (max_retries + 1));
    ua = cg_opt_string(L, opts, "user_agent");
    if (ua != NULL && !cg_is_header_safe(ua, compat_rawlen(L, -1)))
        luaL_error(L, "contiguity.new: option 'user_agent' must not contain CR, LF or NUL");
    cg_opt_string(L, opts, "cainfo");
    cg_opt_string(L, opts, "capath");
    lua_getfield(L, opts, "debug");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1) && !lua_isfunction(L, -1))
        luaL_error(L, "contiguity.new: option 'debug' must be a boolean or a function");
    lua_getfield(L, opts, "transport");
    if (!lua_isnil(L, -1) && !lua_isfunction(L, -1))
        luaL_error(L, "contiguity.new: option 'transport' must be a function");
    lua_getfield(L, opts, "guard");
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TTABLE)
        luaL_error(L, "contiguity.new: option 'guard' must be a table");
    lua_pop(L, 6); /* ua, cainfo, capath, debug, transport, guard: re-read from opts below */

    c = (cg_client *)compat_newuserdata(L, sizeof(*c));
    memset(c, 0, sizeof(*c));
    client = lua_gettop(L);
    compat_setmetatable(L, CG_CLIENT_MT);
    c->closed = 1; /* nothing to free until the handles exist */
    c->timeout_ms = (long)(timeout * 1000.0 + 0.5);
    c->connect_timeout_ms = (long)(connect_timeout * 1000.0 + 0.5);
    c->max_response = (size_t)max_response;
    c->io.body.limit = c->max_response;
    c->max_connections = (long)max_connections;
    c->max_retries = (int)max_retries;
    c->deadline = deadline;
    c->rng = ((unsigned int)time(NULL) ^ (unsigned int)(size_t)c) | 1u;

    lua_createtable(L, 0, 10);
    uv = lua_gettop(L);
    lua_pushvalue(L, base_idx);
    lua_setfield(L, uv, "base_url");
    lua_pushliteral(L, "Token ");
    lua_pushvalue(L, 1);
    lua_concat(L, 2);
    lua_setfield(L, uv, "auth");
    lua_getfield(L, opts, "debug");
    c->debug = lua_isfunction(L, -1) ? 2 : lua_toboolean(L, -1);
    lua_setfield(L, uv, "debug");
    lua_getfield(L, opts, "transport");
    c->host = !lua_isnil(L, -1);
    lua_setfield(L, uv, "transport");
    lua_getfield(L, opts, "cainfo");
    lua_setfield(L, uv, "cainfo");
    lua_getfield(L, opts, "capath");
    lua_setfield(L, uv, "capath");
    lua_newtable(L);
    lua_setfield(L, uv, "pending");
    cg_new_guard(L, c, opts, uv);
    lua_newtable(L);
    lua_setfield(L, uv, "done");
    c->qhead = 1; /* empty: qhead > qtail */
    {
        const char *lua_name = COMPAT_LUA_NAME;
        const char *sp = strchr(lua_name, ' ');
        luaL_buffinit(L, &b);
        luaL_addstring(&b, "contiguity-lua/" CG_VERSION " libcurl/");
        luaL_addstring(&b, curlt_libcurl_version());
        luaL_addchar(&b, ' ');
        luaL_addlstring(&b, lua_name, sp ? (size_t)(sp - lua_name) : strlen(lua_name));
        if (sp != NULL) {
            luaL_addchar(&b, '/');
            luaL_addstring(&b, sp + 1);
        }
        if (ua != NULL) { /* nothing may sit above the buffer while a char is added */
            luaL_addchar(&b, ' ');
            lua_getfield(L, opts, "user_agent");
            luaL_addvalue(&b);
        }
        luaL_pushresult(&b);
        lua_setfield(L, uv, "user_agent");
    }
    lua_pushvalue(L, uv);
    compat_setuservalue(L, client);
    c->closed = 0;

    if (!c->host) {
        /* The request headers, the same for every call. The User-Agent is
         * one of them rather than CURLOPT_USERAGENT, which libcurl formats
         * into a new string on every request. */
        const char *list[6];
        int i;
        if (!curlt_global_init())
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
            struct curl_slist *l = curl_slist_append(c->headers, list[i]);
            if (l == NULL)
                luaL_error(L, "contiguity.new: out of memory"); /* __gc frees the list */
            c->headers = l;
        }
        lua_pop(L, 2);
        c->easy = curl_easy_init();
        lua_getfield(L, uv, "cainfo");
        lua_getfield(L, uv, "capath");
        if (c->easy == NULL ||
            !curlt_setup(c, c->easy, &c->io, lua_tostring(L, -2), lua_tostring(L, -1)))
            luaL_error(L, "contiguity.new: cannot set up a libcurl handle");
        lua_pop(L, 2);
    }

    /* client.otp.{new,send,verify,resend} and client.otp.reverse.{initiate,verify,cancel} */
    lua_createtable(L, 0, 5);
    cg_add_call(L, c, client, OP_NEW, "new");
    lua_getfield(L, -1, "new");
    lua_setfield(L, -2, "send");
    cg_add_call(L, c, client, OP_VERIFY, "verify");
    cg_add_call(L, c, client, OP_RESEND, "resend");
    lua_createtable(L, 0, 3);
    cg_add_call(L, c, client, OP_R_INITIATE, "initiate");
    cg_add_call(L, c, client, OP_R_VERIFY, "verify");
    cg_add_call(L, c, client, OP_R_CANCEL, "cancel");
    lua_setfield(L, -2, "reverse");
    lua_setfield(L, uv, "otp");
    lua_pushvalue(L, client);
    return 1;
}

/* contiguity.version(): module, libcurl and Lua versions. */
static int cg_version(lua_State *L)
{
    lua_pushliteral(L, CG_VERSION);
    lua_pushstring(L, curlt_libcurl_version());
    lua_pushliteral(L, COMPAT_LUA_NAME);
    return 3;
}

int luaopen_contiguity(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"close", cg_close}, {"poll", cg_poll}, {"wait", cg_wait},
        {"pending", cg_pending}, {"fds", cg_fds}, {NULL, NULL}};
    static const luaL_Reg metamethods[] = {
        {"__gc", cg_gc}, {"__close", cg_close}, {"__tostring", cg_tostring}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"new", cg_new}, {"version", cg_version}, {"qr", qr_encode},
                                     {"hmac", wh_hmac_hex}, {"random_bytes", wh_random_bytes},
                                     {NULL, NULL}};

    /* a private cjson instance: the host's cjson settings stay the host's */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "new");
    if (!lua_isfunction(L, -1))
        return luaL_error(L, "contiguity: lua-cjson without cjson.new is not supported");
    lua_call(L, 0, 1);
    lua_pushlightuserdata(L, (void *)&cg_json_encode_key);
    lua_getfield(L, -2, "encode");
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, (void *)&cg_json_decode_key);
    lua_getfield(L, -2, "decode");
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pop(L, 2);
    lua_pushlightuserdata(L, (void *)&cg_host_glue_key);
    if (luaL_loadbuffer(L, cg_host_glue, sizeof(cg_host_glue) - 1, "=contiguity.host") != 0)
        return lua_error(L);
    lua_rawset(L, LUA_REGISTRYINDEX);

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
    if (luaL_newmetatable(L, CG_ERROR_MT)) {
        lua_pushcfunction(L, resp_error_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, CG_ERROR_MT);
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, CG_TRANSFER_MT)) {
        lua_pushcfunction(L, curlt_transfer_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);

    lua_newtable(L);
    compat_setfuncs(L, funcs, 0);
    lua_pushliteral(L, CG_VERSION);
    lua_setfield(L, -2, "_VERSION");
    wh_open(L);
    return 1;
}
