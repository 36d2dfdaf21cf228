/* curl_multi.c: the async engine, whole: many calls in flight from one Lua thread.
 *
 * Transfers (a userdata each, owning its easy handle and buffers), libcurl's
 * socket callback and the set of sockets it wants watched, the turn of the
 * multi handle, the backoff of retried calls (a time, never a sleep), the
 * done list, and the client methods poll, wait, pending and fds. No Lua
 * runs inside a libcurl callback: finished transfers go to the done list,
 * and the call layer's deliver function (call.c), given to the engine when
 * the client is made, decides what each one means. */
#include <stdlib.h>
#include <string.h>
#include "curl_multi.h"
#include "client.h"
#include "error.h"

/* ---- sockets and the multi handle ------------------------------------- */

/* libcurl's socket callback: keeps the set of sockets it wants watched, and
 * for what, in the client. Runs inside libcurl, so it only touches C
 * memory; returning -1 on a failed allocation makes libcurl fail the
 * transfers instead of losing track of a socket. */
static int multi_on_socket(CURL *e, curl_socket_t s, int what, void *ud, void *sockp)
{
    multi_state *m = (multi_state *)ud;
    int i;
    (void)e;
    (void)sockp;
    for (i = 0; i < m->nsocks && m->socks[i].fd != s; i++)
        ;
    if (what == CURL_POLL_REMOVE) {
        if (i < m->nsocks)
            m->socks[i] = m->socks[--m->nsocks];
        return 0;
    }
    if (i == m->nsocks) {
        if (m->nsocks == m->capsocks) {
            int cap = m->capsocks ? m->capsocks * 2 : 8;
            struct pollfd *a = (struct pollfd *)realloc(m->socks, (size_t)cap * sizeof(*a));
            struct pollfd *b;
            if (a == NULL)
                return -1;
            m->socks = a;
            b = (struct pollfd *)realloc(m->ready, (size_t)cap * sizeof(*b));
            if (b == NULL)
                return -1;
            m->ready = b;
            m->capsocks = cap;
        }
        m->nsocks++;
        m->socks[i].fd = s;
        m->socks[i].revents = 0;
    }
    m->socks[i].events = (short)(((what & CURL_POLL_IN) ? POLLIN : 0) |
                                 ((what & CURL_POLL_OUT) ? POLLOUT : 0));
    return 0;
}

/* Creates the multi handle on the first async call. */
static int multi_init(cg_client *c)
{
    multi_state *m = &c->async;
    if (m->multi != NULL)
        return 1;
    m->multi = curl_multi_init();
    if (m->multi == NULL)
        return 0;
    curl_multi_setopt(m->multi, CURLMOPT_MAX_HOST_CONNECTIONS, c->cfg.max_connections);
    curl_multi_setopt(m->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, c->cfg.max_connections);
    curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, c->cfg.max_connections);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, multi_on_socket);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, (void *)m);
    return 1;
}

/* One turn of the multi handle on libcurl's socket interface: waits at most
 * `ms` (0: not at all) for a watched socket or libcurl's next timer, then
 * hands libcurl each ready socket and its due timers. The socket interface,
 * rather than curl_multi_perform, is what keeps client:fds() exact for any
 * descriptor number. */
static void multi_turn(multi_state *m, long ms, int *running)
{
    long t = -1;
    int i, n = 0;
    curl_multi_timeout(m->multi, &t);
    if (t >= 0 && t < ms)
        ms = t;
    if (poll(m->socks, (nfds_t)m->nsocks, (int)ms) > 0) {
        /* copy first: libcurl changes the watched set while it runs */
        for (i = 0; i < m->nsocks; i++)
            if (m->socks[i].revents != 0)
                m->ready[n++] = m->socks[i];
        for (i = 0; i < n; i++) {
            short r = m->ready[i].revents;
            int ev = ((r & POLLIN) ? CURL_CSELECT_IN : 0) | ((r & POLLOUT) ? CURL_CSELECT_OUT : 0) |
                     ((r & (POLLERR | POLLHUP | POLLNVAL)) ? CURL_CSELECT_ERR : 0);
            curl_multi_socket_action(m->multi, m->ready[i].fd, ev, running);
        }
    } /* with nothing to watch (only backoffs), poll(2) just sleeps */
    curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, running);
}

/* ---- transfers -------------------------------------------------------- */

static void multi_release(multi_transfer *t)
{
    if (t->easy != NULL) {
        curl_easy_cleanup(t->easy); /* also detaches it from a multi handle */
        t->easy = NULL;
    }
    cio_buf_free(&t->io.body);
}

static int multi_transfer_gc(lua_State *L)
{
    multi_release((multi_transfer *)lua_touserdata(L, 1));
    return 0;
}

/* An easy handle for a new call: a finished call's, which keeps the
 * client's options (cio_setup) and needs only its buffers pointed at the
 * new transfer, else a new one. cainfo/capath come from the user value uv. */
static CURL *multi_take_handle(lua_State *L, cg_client *c, multi_transfer *t, int uv)
{
    CURL *e;
    if (c->async.nidle > 0) {
        e = c->async.idle[--c->async.nidle];
        curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)&t->io.body);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, (void *)&t->io.meta);
        curl_easy_setopt(e, CURLOPT_READDATA, (void *)&t->io.upload);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->io.errbuf);
        return e;
    }
    e = curl_easy_init();
    lua_getfield(L, uv, "cainfo");
    lua_getfield(L, uv, "capath");
    if (e != NULL && !cio_setup(e, &t->io, &c->cc, lua_tostring(L, -2), lua_tostring(L, -1))) {
        curl_easy_cleanup(e);
        e = NULL;
    }
    lua_pop(L, 2);
    return e;
}

static int multi_start(lua_State *L, cg_client *c, int client, const ops_op *op,
                       const char *url, int body, int keep)
{
    multi_transfer *t;
    size_t body_len = 0;
    const char *b = lua_tolstring(L, body, &body_len);
    int uv;
    if (c->closed) /* the call layer checks too; a closed client never gets a new multi handle */
        return errorf(L, op->name, "invalid", "client is closed");
    if (!multi_init(c))
        return errorf(L, op->name, "network", "cannot create a libcurl multi handle");
    compat_getuservalue(L, client);
    uv = lua_gettop(L);
    t = (multi_transfer *)compat_newuserdata(L, sizeof(*t));
    memset(t, 0, sizeof(*t));
    compat_setmetatable(L, MULTI_TRANSFER_MT);
    lua_pushvalue(L, keep);
    compat_setuservalue(L, -2);
    t->op = op;
    t->io.body.limit = c->cfg.max_response;
    t->attempt = 1;
    t->deadline_at = cio_now() + c->cfg.deadline;
    if ((t->easy = multi_take_handle(L, c, t, uv)) == NULL)
        return errorf(L, op->name, "network", "cannot set up a libcurl handle");
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, (void *)t);
    cio_attempt_start(t->easy, &t->io, &c->cc, t->deadline_at);
    if (!cio_set_request(t->easy, op, url, b, body_len, 1, &t->io.upload))
        return errorf(L, op->name, "network", "out of memory in libcurl");
    /* registered as pending first: a memory error here then leaves no
     * transfer in libcurl that `pending` does not keep */
    lua_getfield(L, uv, "pending");
    lua_pushvalue(L, -2);
    t->ref = luaL_ref(L, -2); /* an array slot: no hash chains on the per-call path */
    if (curl_multi_add_handle(c->async.multi, t->easy) != CURLM_OK) {
        luaL_unref(L, -1, t->ref);
        return errorf(L, op->name, "network", "cannot add the transfer to libcurl multi");
    }
    c->async.pending++;
    lua_pushboolean(L, 1);
    return 1;
}

/* Makes a waiting transfer's next attempt: fresh buffers, a timeout that
 * ends by the call's deadline, and back into the multi handle. */
static int multi_retry(cg_client *c, multi_transfer *t)
{
    t->waiting = 0;
    /* added first: when that fails, the last attempt's outcome is intact */
    if (curl_multi_add_handle(c->async.multi, t->easy) != CURLM_OK)
        return 0;
    cio_attempt_start(t->easy, &t->io, &c->cc, t->deadline_at);
    t->attempt++;
    return 1;
}

/* The easy handle (already out of the multi handle) goes back to the
 * client's pool while the pool holds fewer than max_connections, so that a
 * steady stream of calls does not create and destroy one libcurl handle
 * per call. Nothing of the finished call stays behind on it: no pointer
 * into its transfer (which Lua may free), no copy of its body (a code or a
 * phone number). */
static void multi_recycle(cg_client *c, multi_transfer *t)
{
    multi_state *m = &c->async;
    if (t->easy != NULL && !c->closed) {
        if (m->nidle == m->capidle && m->capidle < c->cfg.max_connections) {
            int cap = m->capidle ? m->capidle * 2 : 8;
            CURL **a;
            if (cap > c->cfg.max_connections)
                cap = (int)c->cfg.max_connections;
            a = (CURL **)realloc(m->idle, (size_t)cap * sizeof(*a));
            if (a != NULL) {
                m->idle = a;
                m->capidle = cap;
            }
        }
        if (m->nidle < m->capidle) {
            curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, (void *)NULL);
            curl_easy_setopt(t->easy, CURLOPT_HEADERDATA, (void *)NULL);
            curl_easy_setopt(t->easy, CURLOPT_READDATA, (void *)NULL);
            curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, (char *)NULL);
            curl_easy_setopt(t->easy, CURLOPT_PRIVATE, (void *)NULL);
            curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE, 0L);
            curl_easy_setopt(t->easy, CURLOPT_COPYPOSTFIELDS, "");
            m->idle[m->nidle++] = t->easy;
            t->easy = NULL;
        }
    }
    multi_release(t);
}

/* ---- the done list ----------------------------------------------------- */

/* Finished transfers wait for delivery on a list through the transfers
 * themselves, in the order libcurl reported them; each stays in `pending`
 * (which keeps it from the collector) until it is delivered. Queueing
 * allocates nothing, so a memory error can never lose or half-queue a
 * finished call. */
static void multi_done_push(multi_state *m, multi_transfer *t)
{
    t->done = 1;
    t->next_done = NULL;
    if (m->done_tail != NULL)
        m->done_tail->next_done = t;
    else
        m->done_head = t;
    m->done_tail = t;
}

/* Moves finished transfers to the done list, or, when the outcome may
 * safely be retried, out of the multi handle until their backoff ends. */
static void multi_collect(cg_client *c)
{
    multi_state *m = &c->async;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        multi_transfer *t = NULL;
        CURL *e = msg->easy_handle;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&t);
        t->rc = msg->data.result;
        curl_multi_remove_handle(m->multi, e);
        if (t->attempt <= c->cfg.max_retries) {
            double delay = cio_retry_delay(&c->cc, t->op, e, t->rc, &t->io, t->attempt);
            if (delay >= 0 && cio_now() + delay < t->deadline_at) {
                t->retry_at = cio_now() + delay;
                t->waiting = 1;
                m->waiting++;
                continue;
            }
        }
        multi_done_push(m, t);
    }
}

/* Hands the finished calls to the call layer, oldest first. Each leaves the
 * list and `pending` before its callback runs, so a callback that raises
 * leaves the others listed for the next poll and libcurl untouched. uv is
 * the client's user value. */
static int multi_deliver_all(lua_State *L, cg_client *c, int client, int uv)
{
    multi_state *m = &c->async;
    int ran = 0, pending;
    lua_getfield(L, uv, "pending");
    pending = lua_gettop(L);
    while (m->done_head != NULL) {
        multi_transfer *t = m->done_head;
        m->done_head = t->next_done;
        if (m->done_head == NULL)
            m->done_tail = NULL;
        m->pending--;
        lua_rawgeti(L, pending, t->ref); /* the transfer: kept there until now */
        luaL_unref(L, pending, t->ref);  /* reuses its slot: never allocates */
        m->deliver(L, client, lua_gettop(L));
        lua_pop(L, 1);
        ran++;
    }
    lua_pop(L, 1);
    return ran;
}

/* ---- backoff ----------------------------------------------------------- */

/* Puts the transfers whose backoff has ended back into the multi handle;
 * returns the seconds until the next one is due (a large number when none
 * waits). */
static double multi_resume_due(lua_State *L, cg_client *c, int uv)
{
    double now = cio_now(), next = 1e9;
    if (c->async.waiting == 0)
        return next;
    lua_getfield(L, uv, "pending");
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        multi_transfer *t = (multi_transfer *)lua_touserdata(L, -1);
        if (t != NULL && t->waiting) { /* (NULL: luaL_ref's free list) */
            if (t->retry_at <= now) {
                c->async.waiting--;
                if (!multi_retry(c, t)) /* cannot re-add: report the last outcome */
                    multi_done_push(&c->async, t);
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
 * changing anything: what client:fds() reports. */
static double multi_next_due(lua_State *L, int uv)
{
    double now = cio_now(), next = 1e9;
    lua_getfield(L, uv, "pending");
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        multi_transfer *t = (multi_transfer *)lua_touserdata(L, -1);
        if (t != NULL && t->waiting && t->retry_at - now < next)
            next = t->retry_at - now;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return next > 0 ? next : 0;
}

/* ---- poll, wait, pending, fds ----------------------------------------- */

/* Drives transfers for at most `timeout` seconds and runs finished calls'
 * callbacks; the shared step of poll and wait. It keeps waiting until a
 * callback ran or the time is up: one socket event (a connect, half a
 * response) is no reason to return early and make the caller spin. */
static int multi_step(lua_State *L, cg_client *c, int client, int uv, double timeout)
{
    double deadline = cio_now() + timeout, left, next_retry;
    int running = 0, ran;
    long ms = 0;
    for (;;) {
        next_retry = multi_resume_due(L, c, uv);
        multi_turn(&c->async, ms, &running);
        multi_collect(c);
        ran = multi_deliver_all(L, c, client, uv);
        if (ran > 0 || (running == 0 && c->async.waiting == 0) || c->closed || !(timeout > 0))
            return ran;
        left = deadline - cio_now();
        if (left <= 0)
            return 0;
        if (next_retry < left)
            left = next_retry;
        /* whole ms rounded up, so a short wait never turns into a spin */
        ms = left > 1.0 ? 1000 : (long)(left * 1000.0) + 1;
    }
}

/* client:poll(timeout?): never blocks longer than timeout (default 0). */
static int multi_poll(lua_State *L)
{
    cg_client *c = (cg_client *)luaL_checkudata(L, 1, CG_CLIENT_MT);
    double timeout = luaL_optnumber(L, 2, 0);
    if (c->closed || c->async.multi == NULL || c->async.pending == 0) {
        lua_pushinteger(L, 0);
        return 1;
    }
    lua_settop(L, 2);
    compat_getuservalue(L, 1);
    lua_pushinteger(L, multi_step(L, c, 1, 3, timeout));
    return 1;
}

/* client:wait(timeout?): until nothing is pending or the timeout passes;
 * wait(0) still runs what is ready, like poll(0). */
static int multi_wait(lua_State *L)
{
    cg_client *c = (cg_client *)luaL_checkudata(L, 1, CG_CLIENT_MT);
    double timeout = luaL_optnumber(L, 2, -1);
    double deadline = cio_now() + timeout;
    int ran = 0;
    lua_settop(L, 2);
    compat_getuservalue(L, 1);
    while (!c->closed && c->async.multi != NULL && c->async.pending > 0) {
        double left = timeout < 0 ? 1.0 : deadline - cio_now();
        ran += multi_step(L, c, 1, 3, left > 1.0 ? 1.0 : left > 0 ? left : 0);
        if (timeout >= 0 && cio_now() >= deadline)
            break;
    }
    lua_pushinteger(L, ran);
    return 1;
}

/* client:pending(): calls whose callback has not run yet. */
static int multi_pending(lua_State *L)
{
    cg_client *c = (cg_client *)luaL_checkudata(L, 1, CG_CLIENT_MT);
    lua_pushinteger(L, c->async.pending);
    return 1;
}

/* client:fds(): a pure query (it changes nothing) of what a host reactor
 * waits on instead of busy polling: the sockets libcurl wants read and
 * written, and the longest wait (seconds) before client:poll(0) must run
 * again even when no socket is ready. */
static int multi_fds(lua_State *L)
{
    cg_client *c = (cg_client *)luaL_checkudata(L, 1, CG_CLIENT_MT);
    multi_state *m = &c->async;
    int i, nr = 0, nw = 0;
    long ms = -1;
    lua_newtable(L);
    lua_newtable(L);
    if (c->closed || m->multi == NULL) {
        lua_pushnil(L);
        return 3;
    }
    for (i = 0; i < m->nsocks; i++) {
        if (m->socks[i].events & POLLIN) {
            lua_pushinteger(L, m->socks[i].fd);
            lua_rawseti(L, -3, ++nr);
        }
        if (m->socks[i].events & POLLOUT) {
            lua_pushinteger(L, m->socks[i].fd);
            lua_rawseti(L, -2, ++nw);
        }
    }
    curl_multi_timeout(m->multi, &ms);
    if (m->waiting > 0) { /* a backoff ends: poll(0) must run then */
        double next;
        compat_getuservalue(L, 1);
        next = multi_next_due(L, lua_gettop(L));
        lua_pop(L, 1);
        if (ms < 0 || next * 1000.0 < (double)ms)
            ms = (long)(next * 1000.0 + 0.999); /* whole ms, rounded up */
    }
    if (m->done_head != NULL) /* finished calls wait for poll(0): now */
        ms = 0;
    if (ms < 0)
        lua_pushnil(L);
    else
        lua_pushnumber(L, (double)ms / 1000.0);
    return 3;
}

/* ---- close ------------------------------------------------------------ */

static void multi_cancel(lua_State *L, cg_client *c, int uv)
{
    multi_state *m = &c->async;
    lua_getfield(L, uv, "pending");
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        multi_transfer *t = (multi_transfer *)lua_touserdata(L, -1);
        if (t != NULL && !t->done) { /* a finished one keeps its outcome, and is delivered with it */
            if (!t->waiting)
                curl_multi_remove_handle(m->multi, t->easy);
            multi_release(t);
            multi_done_push(m, t);
        }
        lua_pop(L, 1);
    }
    m->waiting = 0;
    lua_pop(L, 1);
}

static void multi_free(cg_client *c)
{
    multi_state *m = &c->async;
    int i;
    if (m->multi != NULL)
        curl_multi_cleanup(m->multi);
    m->multi = NULL;
    free(m->socks);
    free(m->ready);
    m->socks = m->ready = NULL;
    m->nsocks = m->capsocks = 0;
    for (i = 0; i < m->nidle; i++)
        curl_easy_cleanup(m->idle[i]);
    free(m->idle);
    m->idle = NULL;
    m->nidle = m->capidle = 0;
}

static void multi_open(lua_State *L)
{
    if (luaL_newmetatable(L, MULTI_TRANSFER_MT)) {
        lua_pushcfunction(L, multi_transfer_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
}
