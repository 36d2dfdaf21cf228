/* curl_transport.c: moving request bytes with libcurl, blocking (easy) and many-in-flight (multi). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <pthread.h>
#include "contiguity.h"

#define CURLT_MAX_HEADER_BYTES (64 * 1024)
#define CURLT_KEEP_BUFFER (64 * 1024) /* a larger body buffer is freed after the call */
#define CURLT_MAX_IDLE_REUSE 30L /* seconds an idle connection may wait to be reused */

static pthread_once_t curlt_once = PTHREAD_ONCE_INIT;
static CURLcode curlt_init_rc = CURLE_OK;
static const char *curlt_version = "";

/* curl_global_init is not thread-safe before libcurl 7.84, nor is
 * curl_version_info's first call, and Skynet-like hosts open the module
 * from many threads: pthread_once makes both happen exactly once per
 * process. The three statics are written only inside it. */
static void curlt_global_init_once(void)
{
    curlt_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    curlt_version = curl_version_info(CURLVERSION_NOW)->version;
}

static int curlt_global_init(void)
{
    pthread_once(&curlt_once, curlt_global_init_once);
    return curlt_init_rc == CURLE_OK;
}

/* libcurl's version string, read once under the same pthread_once. */
static const char *curlt_libcurl_version(void)
{
    pthread_once(&curlt_once, curlt_global_init_once);
    return curlt_version;
}

static void curlt_buf_free(cg_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static void curlt_buf_reset(cg_buf *b)
{
    if (b->cap > CURLT_KEEP_BUFFER)
        curlt_buf_free(b);
    b->len = 0;
    b->overflow = b->oom = 0;
}

/* libcurl's write callback: appends, never raises; returning short makes
 * libcurl stop the transfer with CURLE_WRITE_ERROR. */
static size_t curlt_on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    cg_buf *b = (cg_buf *)ud;
    size_t n = size * nmemb;
    if (n > b->limit - b->len) {
        b->overflow = 1;
        return 0;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *p;
        while (cap < b->len + n)
            cap *= 2;
        p = (char *)realloc(b->data, cap);
        if (p == NULL) {
            b->oom = 1;
            return 0;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    return n;
}

/* Keeps the two response headers the module acts on: Location (for a
 * refused redirect) and Retry-After (seconds or an HTTP date), given a
 * header's name and value (trimmed here). Both transports read headers through here. */
static void curlt_meta_set(cg_resp_meta *m, const char *name, size_t nlen, const char *v,
                           size_t vlen)
{
    while (vlen > 0 && (*v == ' ' || *v == '\t')) v++, vlen--;
    while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' ')) vlen--;
    if (nlen == 8 && strncasecmp(name, "location", 8) == 0) {
        if (vlen >= sizeof(m->location)) vlen = sizeof(m->location) - 1;
        memcpy(m->location, v, vlen);
        m->location[vlen] = '\0';
    } else if (nlen == 11 && strncasecmp(name, "retry-after", 11) == 0 && vlen < 64) {
        char tmp[64];
        char *end;
        double secs;
        memcpy(tmp, v, vlen);
        tmp[vlen] = '\0';
        secs = strtod(tmp, &end);
        if (end == tmp) { /* an HTTP date: curl_getdate parses those */
            time_t at = curl_getdate(tmp, NULL);
            secs = at < 0 ? -1 : difftime(at, time(NULL));
            if (at >= 0 && secs < 0) secs = 0;
        }
        m->retry_after = secs;
    }
}

/* libcurl's header callback: hands each header to curlt_meta_set and caps
 * the total header size. */
static size_t curlt_on_header(char *line, size_t size, size_t nmemb, void *ud)
{
    cg_resp_meta *m = (cg_resp_meta *)ud;
    size_t n = size * nmemb, vlen;
    const char *v;
    m->header_bytes += n;
    if (m->header_bytes > CURLT_MAX_HEADER_BYTES) {
        m->header_overflow = 1;
        return 0;
    }
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) { /* a new response (after 1xx) */
        m->location[0] = '\0';
        m->retry_after = -1;
        return n;
    }
    v = memchr(line, ':', n);
    if (v == NULL)
        return n;
    vlen = n - (size_t)(v + 1 - line);
    curlt_meta_set(m, line, (size_t)(v - line), v + 1, vlen);
    return n;
}

static void curlt_meta_reset(cg_resp_meta *m)
{
    m->location[0] = '\0';
    m->retry_after = -1;
    m->header_bytes = 0;
    m->header_overflow = 0;
}

/* libcurl's read callback for a NEVER_RESEND body: hands the body out
 * once per attempt. libcurl reads exactly the declared size, so a call
 * after the whole body went out can only be libcurl starting the request
 * again on its own; it is refused, as is any rewind (curlt_on_seek). */
static size_t curlt_on_read(char *buf, size_t size, size_t nitems, void *ud)
{
    cg_upload *u = (cg_upload *)ud;
    size_t n = size * nitems, left = u->len - u->pos;
    if (u->given && left == 0)
        return CURL_READFUNC_ABORT;
    if (n > left)
        n = left;
    memcpy(buf, u->data + u->pos, n);
    u->pos += n;
    u->given = 1;
    return n;
}

/* libcurl's seek callback: rewinding the body would be the first step of
 * sending it again, so it is always refused (CURLE_SEND_FAIL_REWIND). */
static int curlt_on_seek(void *ud, curl_off_t offset, int origin)
{
    (void)ud;
    (void)offset;
    (void)origin;
    return CURL_SEEKFUNC_CANTSEEK;
}

/* The options every transfer of a client shares, on a fresh easy handle. */
static int curlt_setup(cg_client *c, CURL *e, cg_io *io, const char *cainfo, const char *capath)
{
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, curlt_on_body) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, &io->body) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, curlt_on_header) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, &io->meta) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, io->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_READFUNCTION, curlt_on_read) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_READDATA, &io->upload) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, curlt_on_seek) != CURLE_OK;
    /* an idle connection older than this is not reused: the race with a
     * server closing it (an "outcome unknown" for a NEVER_RESEND op) stays rare */
    bad |= curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, CURLT_MAX_IDLE_REUSE) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075500
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
#else
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS)) != CURLE_OK;
#endif
    if (cainfo != NULL)
        bad |= curl_easy_setopt(e, CURLOPT_CAINFO, cainfo) != CURLE_OK;
    if (capath != NULL)
        bad |= curl_easy_setopt(e, CURLOPT_CAPATH, capath) != CURLE_OK;
    return !bad;
}

/* Points a handle at one request: the per-call part of the setup. A
 * NEVER_RESEND op's body goes through curlt_on_read from `up` (which
 * points into a string the caller keeps alive); any other body is
 * given as POSTFIELDS (copied when copy_body: the async path). */
static void curlt_set_request(CURL *e, const ops_op *op, const char *url, const char *body,
                              size_t body_len, int copy_body, cg_upload *up)
{
    curl_easy_setopt(e, CURLOPT_URL, url);
    if (op->method[0] == 'G') {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        return;
    }
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)body_len);
    if (op->flags & OPF_NEVER_RESEND) {
        up->data = body ? body : "";
        up->len = body ? body_len : 0;
        up->pos = 0;
        up->given = 0;
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, (char *)NULL); /* NULL: the read callback */
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        return;
    }
    curl_easy_setopt(e, copy_body ? CURLOPT_COPYPOSTFIELDS : CURLOPT_POSTFIELDS,
                     body ? body : "");
}

static int curlt_is_tls_error(CURLcode rc)
{
    switch (rc) {
    case CURLE_SSL_CONNECT_ERROR: case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM: case CURLE_SSL_CIPHER: case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND: case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED: case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH: case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE: case CURLE_SSL_SHUTDOWN_FAILED: case CURLE_USE_SSL_FAILED:
        return 1;
    default:
        return 0;
    }
}

/* True when the request cannot have reached the API, so making the call
 * again cannot duplicate anything. For a NEVER_RESEND op that is exactly
 * "no byte of its body went to libcurl in this attempt": libcurl may have
 * connected twice behind our back, but a request without its body is
 * never acted on. */
static int curlt_nothing_sent(const ops_op *op, CURL *e, CURLcode rc, const cg_io *io)
{
    long sent = 0;
    if (op->flags & OPF_NEVER_RESEND)
        return !io->upload.given;
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
        rc == CURLE_COULDNT_RESOLVE_PROXY)
        return 1;
    curl_easy_getinfo(e, CURLINFO_REQUEST_SIZE, &sent);
    return sent == 0;
}

/* A transfer that ended without a complete response: which kind, whether
 * the call may safely be made again, and the unknown outcome said plainly
 * when a request that sends an SMS may have reached the API. */
static int curlt_error(lua_State *L, const ops_op *op, CURL *e, CURLcode rc, const cg_io *io)
{
    const char *kind = "network";
    const char *detail = io->errbuf[0] ? io->errbuf : curl_easy_strerror(rc);
    int nothing_sent = curlt_nothing_sent(op, e, rc, io);
    int retryable = nothing_sent || (op->flags & OPF_IDEMPOTENT);
    if (rc == CURLE_SEND_FAIL_REWIND || rc == CURLE_ABORTED_BY_CALLBACK)
        detail = "the connection closed after the request was sent"; /* curlt_on_read/seek */
    if (rc == CURLE_OPERATION_TIMEDOUT)
        kind = "timeout";
    else if (curlt_is_tls_error(rc))
        kind = "tls", retryable = 0;
    if (io->body.overflow) {
        lua_pushfstring(L, "response body larger than max_response_bytes (%d)", (int)io->body.limit);
        kind = "decode", retryable = 0;
    } else if (io->meta.header_overflow) {
        lua_pushfstring(L, "response headers larger than %d bytes", CURLT_MAX_HEADER_BYTES);
        kind = "decode", retryable = 0;
    } else if (io->body.oom) {
        lua_pushliteral(L, "out of memory while reading the response");
    } else if (!nothing_sent && !(op->flags & OPF_IDEMPOTENT)) {
        lua_pushfstring(L, "%s (outcome unknown: the request may have reached the API)", detail);
    } else {
        lua_pushstring(L, detail);
    }
    resp_error(L, op->name, kind, lua_tostring(L, -1));
    lua_remove(L, -3);
    resp_set_bool(L, "retryable", retryable);
    return 2;
}

#define CURLT_BACKOFF_BASE 0.5
#define CURLT_BACKOFF_CAP 5.0
#define CURLT_RETRY_AFTER_CAP 30.0

/* Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... capped at 5 s, each
 * drawn from [d/2, d] so that many clients do not retry in step. */
static double curlt_backoff(cg_client *c, int attempt)
{
    double d = CURLT_BACKOFF_BASE;
    while (--attempt > 0 && d < CURLT_BACKOFF_CAP)
        d *= 2;
    if (d > CURLT_BACKOFF_CAP)
        d = CURLT_BACKOFF_CAP;
    c->rng ^= c->rng << 13; /* xorshift32: per client, so no shared state */
    c->rng ^= c->rng >> 17;
    c->rng ^= c->rng << 5;
    return d * (0.5 + 0.5 * (double)(c->rng % 10000) / 10000.0);
}

/* Seconds to wait before making a failed attempt again, or -1 when it must
 * not be made again: only what cannot send a second SMS is retried. */
static double curlt_retry_delay(cg_client *c, const ops_op *op, CURL *e, CURLcode rc,
                                const cg_io *io, int attempt)
{
    int idempotent = (op->flags & OPF_IDEMPOTENT) != 0;
    long status = 0;
    if (rc != CURLE_OK) {
        if (curlt_is_tls_error(rc) || io->body.overflow || io->body.oom || io->meta.header_overflow)
            return -1; /* retrying cannot fix these */
        if (curlt_nothing_sent(op, e, rc, io) || idempotent)
            return curlt_backoff(c, attempt);
        return -1;
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (resp_status_retryable(op, status)) {
        if (io->meta.retry_after >= 0)
            return io->meta.retry_after > CURLT_RETRY_AFTER_CAP ? CURLT_RETRY_AFTER_CAP
                                                                : io->meta.retry_after;
        return curlt_backoff(c, attempt);
    }
    return -1;
}

/* Records how many attempts a failed call made on its error table. */
static void curlt_set_attempts(lua_State *L, int n, int attempts)
{
    if (n == 2) {
        lua_pushinteger(L, attempts);
        lua_setfield(L, -2, "attempts");
    }
}

/* Ends a finished transfer: the error, or the decoded response. */
static int curlt_finish(lua_State *L, const ops_op *op, CURL *e, CURLcode rc, const cg_io *io)
{
    long status = 0;
    if (rc != CURLE_OK)
        return curlt_error(L, op, e, rc, io);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    return resp_decode(L, op, status, io->body.data, io->body.len, &io->meta);
}

static void curlt_sleep(double seconds)
{
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static double curlt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The timeout of one attempt: `timeout`, shortened so that the attempt
 * ends by the call's deadline. */
static long curlt_attempt_ms(const cg_client *c, double deadline_at)
{
    double left = (deadline_at - curlt_now()) * 1000.0;
    if (left < 1)
        left = 1;
    return left < (double)c->timeout_ms ? (long)left : c->timeout_ms;
}

/* Readies a handle for its next attempt, blocking or async: empty buffers
 * and a timeout that ends by the call's deadline. */
static void curlt_attempt_start(const cg_client *c, CURL *e, cg_io *io, double deadline_at)
{
    curlt_buf_reset(&io->body);
    curlt_meta_reset(&io->meta);
    io->upload.pos = 0;
    io->upload.given = 0;
    io->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, curlt_attempt_ms(c, deadline_at));
}

/* The blocking transport: one reused easy handle, so consecutive calls
 * share one keep-alive connection; failed attempts are made again when
 * that is safe (curlt_retry_delay), never past the call's deadline.
 * Pushes the call's results. */
static int curlt_perform(lua_State *L, cg_client *c, const ops_op *op, int url_idx, int body_idx)
{
    size_t body_len = 0;
    const char *body = lua_tolstring(L, body_idx, &body_len);
    double deadline_at = curlt_now() + c->deadline, delay;
    int attempt = 0, n;
    CURLcode rc;
    curlt_set_request(c->easy, op, lua_tostring(L, url_idx), body, body_len, 0, &c->io.upload);
    for (;;) {
        curlt_attempt_start(c, c->easy, &c->io, deadline_at);
        rc = curl_easy_perform(c->easy);
        if (++attempt > c->max_retries)
            break;
        delay = curlt_retry_delay(c, op, c->easy, rc, &c->io, attempt);
        if (delay < 0 || curlt_now() + delay >= deadline_at)
            break;
        curlt_sleep(delay);
    }
    n = curlt_finish(L, op, c->easy, rc, &c->io);
    curlt_set_attempts(L, n, attempt);
    return n;
}

/* ---- many calls in flight: libcurl multi ---------------------------- */

/* libcurl's socket callback: keeps the set of sockets it wants watched, and
 * for what, in the client. Runs inside libcurl, so it only touches C
 * memory; returning -1 on a failed allocation makes libcurl fail the
 * transfers instead of losing track of a socket. */
static int curlt_on_socket(CURL *e, curl_socket_t s, int what, void *ud, void *sockp)
{
    cg_client *c = (cg_client *)ud;
    int i;
    (void)e;
    (void)sockp;
    for (i = 0; i < c->nsocks && c->socks[i].fd != s; i++)
        ;
    if (what == CURL_POLL_REMOVE) {
        if (i < c->nsocks)
            c->socks[i] = c->socks[--c->nsocks];
        return 0;
    }
    if (i == c->nsocks) {
        if (c->nsocks == c->capsocks) {
            int cap = c->capsocks ? c->capsocks * 2 : 8;
            struct pollfd *a = (struct pollfd *)realloc(c->socks, (size_t)cap * sizeof(*a));
            struct pollfd *b;
            if (a == NULL)
                return -1;
            c->socks = a;
            b = (struct pollfd *)realloc(c->ready, (size_t)cap * sizeof(*b));
            if (b == NULL)
                return -1;
            c->ready = b;
            c->capsocks = cap;
        }
        c->nsocks++;
        c->socks[i].fd = s;
        c->socks[i].revents = 0;
    }
    c->socks[i].events = (short)(((what & CURL_POLL_IN) ? POLLIN : 0) |
                                 ((what & CURL_POLL_OUT) ? POLLOUT : 0));
    return 0;
}

/* One turn of the multi handle on libcurl's socket interface: waits at most
 * `ms` (0: not at all) for a watched socket or libcurl's next timer, then
 * hands libcurl each ready socket and its due timers. The socket interface,
 * rather than curl_multi_perform, is what keeps client:fds() exact for any
 * descriptor number. */
static void curlt_multi_turn(cg_client *c, long ms, int *running)
{
    long t = -1;
    int i, n = 0;
    curl_multi_timeout(c->multi, &t);
    if (t >= 0 && t < ms)
        ms = t;
    if (poll(c->socks, (nfds_t)c->nsocks, (int)ms) > 0) {
        /* copy first: libcurl changes the watched set while it runs */
        for (i = 0; i < c->nsocks; i++)
            if (c->socks[i].revents != 0)
                c->ready[n++] = c->socks[i];
        for (i = 0; i < n; i++) {
            short r = c->ready[i].revents;
            int ev = ((r & POLLIN) ? CURL_CSELECT_IN : 0) | ((r & POLLOUT) ? CURL_CSELECT_OUT : 0) |
                     ((r & (POLLERR | POLLHUP | POLLNVAL)) ? CURL_CSELECT_ERR : 0);
            curl_multi_socket_action(c->multi, c->ready[i].fd, ev, running);
        }
    } /* with nothing to watch (only backoffs), poll(2) just sleeps */
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, running);
}

static void curlt_multi_free(cg_client *c)
{
    int i;
    free(c->socks);
    free(c->ready);
    c->socks = c->ready = NULL;
    c->nsocks = c->capsocks = 0;
    for (i = 0; i < c->nidle; i++)
        curl_easy_cleanup(c->idle[i]);
    free(c->idle);
    c->idle = NULL;
    c->nidle = c->capidle = 0;
}


/* One async call. The userdata owns the easy handle and the buffers; the
 * client's user value keeps it reachable until its callback has run. */
typedef struct cg_transfer {
    CURL *easy;
    cg_io io;
    const ops_op *op;
    CURLcode rc;
    int attempt;          /* attempts made so far */
    int waiting;          /* backing off, out of the multi handle until retry_at */
    double deadline_at;   /* the call's deadline (monotonic seconds) */
    double retry_at;
} cg_transfer;

/* Makes an async transfer's next attempt: fresh buffers, a timeout that
 * ends by the call's deadline, and back into the multi handle. */
static int curlt_transfer_retry(cg_client *c, cg_transfer *t)
{
    curlt_attempt_start(c, t->easy, &t->io, t->deadline_at);
    t->attempt++;
    t->waiting = 0;
    return curl_multi_add_handle(c->multi, t->easy) == CURLM_OK;
}

static void curlt_transfer_release(cg_transfer *t);

/* An easy handle for a new async call: a finished call's, which keeps the
 * client's options (curlt_setup) and needs only its buffers pointed at the
 * new transfer, or NULL when the pool is empty. */
static CURL *curlt_idle_take(cg_client *c, cg_transfer *t)
{
    CURL *e;
    if (c->nidle == 0)
        return NULL;
    e = c->idle[--c->nidle];
    curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)&t->io.body);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, (void *)&t->io.meta);
    curl_easy_setopt(e, CURLOPT_READDATA, (void *)&t->io.upload);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->io.errbuf);
    return e;
}

/* Ends a delivered transfer: its easy handle (already out of the multi
 * handle) goes back to the client's pool while the pool holds fewer than
 * max_connections, so that a steady stream of calls does not create and
 * destroy one libcurl handle per call. */
static void curlt_transfer_done(cg_client *c, cg_transfer *t)
{
    if (t->easy != NULL && !c->closed) {
        if (c->nidle == c->capidle && c->capidle < c->max_connections) {
            int cap = c->capidle ? c->capidle * 2 : 8;
            CURL **a;
            if (cap > c->max_connections)
                cap = (int)c->max_connections;
            a = (CURL **)realloc(c->idle, (size_t)cap * sizeof(*a));
            if (a != NULL) {
                c->idle = a;
                c->capidle = cap;
            }
        }
        if (c->nidle < c->capidle) {
            /* nothing of the finished call stays behind: no pointer into
             * its transfer (which Lua may free), no copy of its body (a
             * code or a phone number) */
            curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, (void *)NULL);
            curl_easy_setopt(t->easy, CURLOPT_HEADERDATA, (void *)NULL);
            curl_easy_setopt(t->easy, CURLOPT_READDATA, (void *)NULL);
            curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, (char *)NULL);
            curl_easy_setopt(t->easy, CURLOPT_PRIVATE, (void *)NULL);
            curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE, 0L);
            curl_easy_setopt(t->easy, CURLOPT_COPYPOSTFIELDS, "");
            c->idle[c->nidle++] = t->easy;
            t->easy = NULL;
        }
    }
    curlt_transfer_release(t);
}

static void curlt_transfer_release(cg_transfer *t)
{
    if (t->easy != NULL) {
        curl_easy_cleanup(t->easy); /* also detaches it from a multi handle */
        t->easy = NULL;
    }
    curlt_buf_free(&t->io.body);
}

static int curlt_transfer_gc(lua_State *L)
{
    curlt_transfer_release((cg_transfer *)lua_touserdata(L, 1));
    return 0;
}

