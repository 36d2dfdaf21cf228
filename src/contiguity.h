/* contiguity.h: the types every part of the module shares (one translation unit, see contiguity.c). */
#ifndef CONTIGUITY_H
#define CONTIGUITY_H

#include <stddef.h>
#include <poll.h>
#include <curl/curl.h>
#include "compat.h"

#define CG_VERSION "0.1.0"
#define CG_CLIENT_MT "contiguity.Client"
#define CG_ERROR_MT "contiguity.Error"
#define CG_TRANSFER_MT "contiguity.Transfer"
/* The registry keys of the module's private cjson instance's encode and
 * decode functions: the addresses of these two bytes (never read). One
 * pair exists because every build compiles src/contiguity.c, which
 * includes the other .c files, as a single translation unit. */
static const char cg_json_encode_key = 'e';
static const char cg_json_decode_key = 'd';
static const char cg_host_glue_key = 'g'; /* the compiled cg_host_glue */

/* Pushes the registry value under one of those address keys. */
static void cg_registry_push(lua_State *L, const char *key)
{
    lua_pushlightuserdata(L, (void *)key);
    lua_rawget(L, LUA_REGISTRYINDEX);
}

/* A growable byte buffer filled from libcurl callbacks. It is malloc'd but
 * owned by a userdata whose __gc frees it, so a Lua error never leaks it;
 * callbacks only set `overflow`/`oom` and never raise. */
typedef struct cg_buf {
    char *data;
    size_t len, cap, limit;
    int overflow, oom;
} cg_buf;

/* A request body handed to libcurl by curlt_on_read: once per attempt,
 * never rewound. `data` points into a Lua string the call keeps alive. */
typedef struct cg_upload {
    const char *data;
    size_t len, pos;
    int given; /* some of the body went to libcurl in this attempt */
} cg_upload;

/* What a response's headers tell us beyond the body. */
typedef struct cg_resp_meta {
    char location[512];
    double retry_after; /* seconds, < 0 when absent */
    size_t header_bytes;
    int header_overflow;
} cg_resp_meta;

/* OPF_IDEMPOTENT: making the call twice is harmless, so it may be retried
 * after the request reached the API (502/503/504, read timeout).
 * OPF_NEVER_RESEND: libcurl must never send the request a second time on
 * its own (its silent retry when a reused connection dies): the body goes
 * through a read callback that hands it out once per attempt and refuses
 * to rewind (curlt_on_read, curlt_on_seek). Every op that is not
 * idempotent has it. */
#define OPF_IDEMPOTENT 1
#define OPF_NEVER_RESEND 2

/* One operation of the API: a row of the static table in ops.c. */
typedef struct ops_field {
    const char *name;
    int check;
    int required;
} ops_field;

typedef struct ops_op {
    const char *name;   /* "otp.new": what errors and debug lines say */
    const char *method; /* "POST" or "GET" */
    const char *path;   /* under base_url */
    int by_id;          /* the argument is an otp_id string appended to path;
                           else a params table sent as the JSON body */
    int flags;          /* OPF_* above */
    ops_field fields[7];
} ops_op;

/* What one transfer reads and writes while libcurl runs it: the blocking
 * call's (in the client) or an async call's (in its Transfer userdata). */
typedef struct cg_io {
    cg_buf body;         /* the response body */
    cg_resp_meta meta;   /* what the response headers said */
    cg_upload upload;    /* the request body of a NEVER_RESEND op */
    char errbuf[CURL_ERROR_SIZE];
} cg_io;

typedef struct cg_client {
    CURL *easy;                  /* blocking transfers; NULL when closed or host transport */
    CURLM *multi;                /* async transfers, created on first use */
    struct curl_slist *headers;  /* the same for every request of this client */
    cg_io io;                    /* the blocking transfer's buffers */
    long timeout_ms, connect_timeout_ms, max_connections;
    int max_retries;
    double deadline;     /* seconds for a whole call, retries and waits included */
    unsigned int rng;    /* backoff jitter: per client, no shared state */
    size_t max_response;
    int closed;
    int debug;   /* 0 off, 1 stderr, 2 Lua function in the user value */
    int host;    /* a Lua transport function moves the bytes */
    int guard;   /* contiguity.guard object in the user value (abuse limits) */
    struct pollfd *socks;        /* sockets libcurl asked to watch (CURLMOPT_SOCKETFUNCTION) */
    struct pollfd *ready;        /* scratch: the ones poll(2) found ready */
    int nsocks, capsocks;
    CURL **idle;                 /* easy handles of finished async calls, for the next ones */
    int nidle, capidle;
    int qhead, qtail; /* the done queue's keys in the user value's `done` table */
    int pending; /* async calls whose callback has not run */
    int waiting; /* of those, backing off before their next attempt */
} cg_client;

#endif
