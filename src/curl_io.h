/* curl_io.h: what every libcurl transfer shares, blocking or async. */
#ifndef CONTIGUITY_CURL_IO_H
#define CONTIGUITY_CURL_IO_H

#include <stddef.h>
#include <curl/curl.h>
#include "compat.h"
#include "ops.h"
#include "response.h"

/* A growable byte buffer filled from libcurl callbacks. It is malloc'd but
 * owned by a userdata whose __gc frees it, so a Lua error never leaks it;
 * callbacks only set `overflow`/`oom` and never raise. */
typedef struct cg_buf {
    char *data;
    size_t len, cap, limit;
    int overflow, oom;
} cg_buf;

/* A request body handed to libcurl by the read callback: once per attempt,
 * never rewound. `data` points into a Lua string the call keeps alive. */
typedef struct cg_upload {
    const char *data;
    size_t len, pos;
    int given; /* some of the body went to libcurl in this attempt */
} cg_upload;

/* What one transfer reads and writes while libcurl runs it: the blocking
 * call's (in the client) or an async call's (in its Transfer userdata). */
typedef struct cg_io {
    cg_buf body;         /* the response body */
    cg_resp_meta meta;   /* what the response headers said */
    cg_upload upload;    /* the request body of a NEVER_RESEND op */
    char errbuf[CURL_ERROR_SIZE];
} cg_io;

/* What a client's handles share: set once on each new easy handle. */
typedef struct cio_conf {
    struct curl_slist *headers; /* the same for every request of a client */
    long connect_timeout_ms;
    long timeout_ms;
    int pin_localhost; /* base_url's host is localhost: connect it to 127.0.0.1 */
    unsigned int rng; /* backoff jitter: per client, no shared state */
} cio_conf;

/* curl_global_init (and curl_version_info's first call) once per process. */
static int cio_global_init(void);
static const char *cio_libcurl_version(void);

/* The client's options on a fresh easy handle, its callbacks writing to io. */
static int cio_setup(CURL *e, cg_io *io, const cio_conf *cc, const char *cainfo,
                     const char *capath);

/* Points a handle at one request (body kept alive by the caller; copied
 * by libcurl when copy_body, for a POST without NEVER_RESEND); 0 when
 * libcurl is out of memory. */
static int cio_set_request(CURL *e, const ops_op *op, const char *url, const char *body,
                            size_t body_len, int copy_body, cg_upload *up);

/* Readies a handle for its next attempt: empty buffers, the body from its
 * start, a timeout that ends by the call's deadline. */
static void cio_attempt_start(CURL *e, cg_io *io, const cio_conf *cc, double deadline_at);

/* Seconds to wait before another attempt, or -1 when none may be made. */
static double cio_retry_delay(cio_conf *cc, const ops_op *op, CURL *e, CURLcode rc,
                              const cg_io *io, int attempt);

/* The outcome of a finished transfer: the decoded response (1 pushed) or
 * nil, err (2 pushed, with err.attempts). */
static int cio_finish(lua_State *L, const ops_op *op, CURL *e, CURLcode rc, const cg_io *io,
                      int attempts);

static void cio_buf_free(cg_buf *b);
static double cio_now(void);
static void cio_sleep(double seconds);

#endif
