/* curl_multi.h: the async engine: many calls in flight from one Lua thread. */
#ifndef CONTIGUITY_CURL_MULTI_H
#define CONTIGUITY_CURL_MULTI_H

#include <poll.h>
#include <curl/curl.h>
#include "compat.h"
#include "ops.h"
#include "curl_io.h"

#define MULTI_TRANSFER_MT "contiguity.Transfer"

/* One async call. The userdata owns the easy handle and the buffers; the
 * client's user value's `pending` table keeps it reachable until its
 * callback has run (in flight, backing off, or on the done list). Its
 * own user value holds what the call keeps: [1] the callback, [2] the
 * path, [3] the guard's ticket, [4] the request body. */
typedef struct multi_transfer {
    CURL *easy;           /* NULL once cancelled by close */
    cg_io io;
    const ops_op *op;
    CURLcode rc;
    int attempt;          /* attempts made so far */
    int waiting;          /* backing off, out of the multi handle until retry_at */
    double deadline_at;   /* the call's deadline (monotonic seconds) */
    double retry_at;
    int done;             /* finished (or cancelled): on the done list */
    int ref;              /* its luaL_ref in the client's `pending` table */
    struct multi_transfer *next_done;
} multi_transfer;

/* The call layer's half of a finished call: decode, debug line, guard
 * record, then multi_recycle, then the user's callback. The transfer
 * userdata is at index t; the client at index client. */
typedef void (*multi_deliver_fn)(lua_State *L, int client, int t);

typedef struct multi_state {
    CURLM *multi;                /* created on the first async call */
    multi_deliver_fn deliver;
    struct pollfd *socks;        /* sockets libcurl asked to watch (CURLMOPT_SOCKETFUNCTION) */
    struct pollfd *ready;        /* scratch: the ones poll(2) found ready */
    int nsocks, capsocks;
    CURL **idle;                 /* easy handles of finished calls, for the next ones */
    int nidle, capidle;
    multi_transfer *done_head;   /* finished calls waiting for delivery, oldest first: a */
    multi_transfer *done_tail;   /* list through the transfers, so queueing never allocates */
    int pending;                 /* async calls whose callback has not run */
    int waiting;                 /* of those, backing off before their next attempt */
} multi_state;

struct cg_client;

/* Starts an async call on client c (at index client): the request is url
 * and the body at body (nil for a GET); keep is a table of what the call
 * keeps (its [4] must hold that body). Pushes true, or nil, err. */
static int multi_start(lua_State *L, struct cg_client *c, int client, const ops_op *op,
                       const char *url, int body, int keep);

/* After the call layer has read a finished transfer: its easy handle goes
 * back to the client's pool, its buffers are freed. */
static void multi_recycle(struct cg_client *c, multi_transfer *t);

/* close: cancels what is in flight and queues it; multi_deliver_all then
 * runs each cancelled call's callback exactly once. */
static void multi_cancel(lua_State *L, struct cg_client *c, int uv);
static int multi_deliver_all(lua_State *L, struct cg_client *c, int client, int uv);
static void multi_free(struct cg_client *c);

/* client:poll, client:wait, client:pending, client:fds. */
static int multi_poll(lua_State *L);
static int multi_wait(lua_State *L);
static int multi_pending(lua_State *L);
static int multi_fds(lua_State *L);

/* The Transfer metatable (luaopen). */
static void multi_open(lua_State *L);

#endif
