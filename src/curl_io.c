/* curl_io.c: what every libcurl transfer shares, blocking (curl_easy.c) or async (curl_multi.c).
 *
 * The buffers libcurl's callbacks fill (never raising: they only set
 * flags), the options every handle of a client gets, the per-attempt reset,
 * and the outcome of an attempt: decoded answer, error kind, and whether
 * another attempt may be made (the retry rule of doc/reliability.md). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime, nanosleep */
#endif
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include "curl_io.h"
#include "error.h"

#define CIO_MAX_HEADER_BYTES (64 * 1024)
#define CIO_KEEP_BUFFER (64 * 1024) /* a larger body buffer is freed after the call */
#define CIO_MAX_IDLE_REUSE 30L /* seconds an idle connection may wait to be reused */
#define CIO_BACKOFF_BASE 0.5
#define CIO_BACKOFF_CAP 5.0
#define CIO_RETRY_AFTER_CAP 30.0

static pthread_once_t cio_once = PTHREAD_ONCE_INIT;
static CURLcode cio_init_rc = CURLE_OK;
static const char *cio_version = "";

/* curl_global_init is not thread-safe before libcurl 7.84, nor is
 * curl_version_info's first call, and Skynet-like hosts open the module
 * from many threads: pthread_once makes both happen exactly once per
 * process. The three statics are written only inside it. */
static void cio_global_init_once(void)
{
    cio_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    cio_version = curl_version_info(CURLVERSION_NOW)->version;
}

static int cio_global_init(void)
{
    pthread_once(&cio_once, cio_global_init_once);
    return cio_init_rc == CURLE_OK;
}

/* libcurl's version string, read once under the same pthread_once. */
static const char *cio_libcurl_version(void)
{
    pthread_once(&cio_once, cio_global_init_once);
    return cio_version;
}

static void cio_buf_free(cg_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static void cio_buf_reset(cg_buf *b)
{
    if (b->cap > CIO_KEEP_BUFFER)
        cio_buf_free(b);
    b->len = 0;
    b->overflow = b->oom = 0;
}

/* libcurl's write callback: appends, never raises; returning short makes
 * libcurl stop the transfer with CURLE_WRITE_ERROR. */
static size_t cio_on_body(char *ptr, size_t size, size_t nmemb, void *ud)
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

/* libcurl's header callback: hands each header to cio_meta_set and caps
 * the total header size. */
static size_t cio_on_header(char *line, size_t size, size_t nmemb, void *ud)
{
    cg_resp_meta *m = (cg_resp_meta *)ud;
    size_t n = size * nmemb, vlen;
    const char *v;
    m->header_bytes += n;
    if (m->header_bytes > CIO_MAX_HEADER_BYTES) {
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
    resp_meta_set(m, line, (size_t)(v - line), v + 1, vlen);
    return n;
}

/* libcurl's read callback for a NEVER_RESEND body: hands the body out
 * once per attempt. libcurl reads exactly the declared size, so a call
 * after the whole body went out can only be libcurl starting the request
 * again on its own; it is refused, as is any rewind (cio_on_seek). */
static size_t cio_on_read(char *buf, size_t size, size_t nitems, void *ud)
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
static int cio_on_seek(void *ud, curl_off_t offset, int origin)
{
    (void)ud;
    (void)offset;
    (void)origin;
    return CURL_SEEKFUNC_CANTSEEK;
}

/* The options every transfer of a client shares, on a fresh easy handle. */
static int cio_setup(CURL *e, cg_io *io, const cio_conf *cc, const char *cainfo,
                     const char *capath)
{
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, cio_on_body) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, &io->body) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, cio_on_header) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, &io->meta) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, io->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, cc->headers) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, cc->connect_timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_READFUNCTION, cio_on_read) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_READDATA, &io->upload) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, cio_on_seek) != CURLE_OK;
    /* an idle connection older than this is not reused: the race with a
     * server closing it (an "outcome unknown" for a NEVER_RESEND op) stays rare */
    bad |= curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, CIO_MAX_IDLE_REUSE) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
    /* TLS 1.2 at least, whatever the system's OpenSSL would allow: the API
     * speaks 1.2 and 1.3 */
    bad |= curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2) != CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x073100
    if (cc->pin_localhost) {
        /* localhost, the one loopback name plain http may use (options.c),
         * is connected to 127.0.0.1 without asking /etc/hosts or DNS (every
         * other host that check accepts is an address, never looked up).
         * libcurl only reads the list, for each transfer: a static one is
         * valid for every handle, however long it lives. Set only for a
         * base_url on localhost: libcurl walks the list on every request. */
        static const struct curl_slist pin = {(char *)"localhost::127.0.0.1:", NULL};
        bad |= curl_easy_setopt(e, CURLOPT_CONNECT_TO, (struct curl_slist *)&pin) != CURLE_OK;
    }
#endif
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
 * NEVER_RESEND op's body goes through cio_on_read from `up` (which
 * points into a string the caller keeps alive); any other body is
 * given as POSTFIELDS (copied when copy_body: the async path). */
static int cio_set_request(CURL *e, const ops_op *op, const char *url, const char *body,
                           size_t body_len, int copy_body, cg_upload *up)
{
    int never = (op->flags & OPF_NEVER_RESEND) != 0;
    size_t len = body ? body_len : 0;
    /* An empty body is never read through the callback, so libcurl could
     * re-send it unseen: a NEVER_RESEND op without a body gets a connection
     * of its own instead (none has one today; every handle is reset here). */
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, (long)(never && len == 0));
    if (curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK)
        return 0;
    if (op->method[0] == 'G')
        return curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) == CURLE_OK;
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)len);
    if (never) {
        up->data = body ? body : "";
        up->len = len;
        up->pos = 0;
        up->given = 0;
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, (char *)NULL); /* NULL: the read callback */
        return curl_easy_setopt(e, CURLOPT_POST, 1L) == CURLE_OK;
    }
    return curl_easy_setopt(e, copy_body ? CURLOPT_COPYPOSTFIELDS : CURLOPT_POSTFIELDS,
                            body ? body : "") == CURLE_OK;
}

static int cio_is_tls_error(CURLcode rc)
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
static int cio_nothing_sent(const ops_op *op, CURL *e, CURLcode rc, const cg_io *io)
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
 * when a request that is never re-sent may have reached the API. */
static int cio_error(lua_State *L, const ops_op *op, CURL *e, CURLcode rc, const cg_io *io)
{
    const char *kind = "network";
    const char *detail = io->errbuf[0] ? io->errbuf : curl_easy_strerror(rc);
    int nothing_sent = cio_nothing_sent(op, e, rc, io);
    int retryable = nothing_sent || (op->flags & OPF_IDEMPOTENT);
    if (rc == CURLE_SEND_FAIL_REWIND || rc == CURLE_ABORTED_BY_CALLBACK)
        detail = "the connection closed after the request was sent"; /* cio_on_read/seek */
    if (rc == CURLE_OPERATION_TIMEDOUT)
        kind = "timeout";
    else if (cio_is_tls_error(rc))
        kind = "tls", retryable = 0;
    if (io->body.overflow) {
        errorf(L, op->name, "decode", "response body larger than max_response_bytes (%d)",
               (int)io->body.limit);
        retryable = 0;
    } else if (io->meta.header_overflow) {
        errorf(L, op->name, "decode", "response headers larger than %d bytes",
               CIO_MAX_HEADER_BYTES);
        retryable = 0;
    } else if (io->body.oom) {
        errorf(L, op->name, kind, "out of memory while reading the response");
    } else if (!nothing_sent && !(op->flags & OPF_IDEMPOTENT)) {
        errorf(L, op->name, kind, "%s (outcome unknown: the request may have reached the API)",
               detail);
    } else {
        errorf(L, op->name, kind, "%s", detail);
    }
    error_set_bool(L, "retryable", retryable);
    return 2;
}


/* Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... capped at 5 s, each
 * drawn from [d/2, d] so that many clients do not retry in step. */
static double cio_backoff(cio_conf *cc, int attempt)
{
    double d = CIO_BACKOFF_BASE;
    while (--attempt > 0 && d < CIO_BACKOFF_CAP)
        d *= 2;
    if (d > CIO_BACKOFF_CAP)
        d = CIO_BACKOFF_CAP;
    cc->rng ^= cc->rng << 13; /* xorshift32: per client, so no shared state */
    cc->rng ^= cc->rng >> 17;
    cc->rng ^= cc->rng << 5;
    return d * (0.5 + 0.5 * (double)(cc->rng % 10000) / 10000.0);
}

/* Seconds to wait before making a failed attempt again, or -1 when it must
 * not be made again: only what cannot send a second SMS is retried. */
static double cio_retry_delay(cio_conf *cc, const ops_op *op, CURL *e, CURLcode rc,
                                const cg_io *io, int attempt)
{
    int idempotent = (op->flags & OPF_IDEMPOTENT) != 0;
    long status = 0;
    if (rc != CURLE_OK) {
        if (cio_is_tls_error(rc) || io->body.overflow || io->body.oom || io->meta.header_overflow)
            return -1; /* retrying cannot fix these */
        if (cio_nothing_sent(op, e, rc, io) || idempotent)
            return cio_backoff(cc, attempt);
        return -1;
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (resp_status_retryable(op, status)) {
        if (io->meta.retry_after >= 0)
            return io->meta.retry_after > CIO_RETRY_AFTER_CAP ? CIO_RETRY_AFTER_CAP
                                                                : io->meta.retry_after;
        return cio_backoff(cc, attempt);
    }
    return -1;
}

static int cio_finish(lua_State *L, const ops_op *op, CURL *e, CURLcode rc, const cg_io *io,
                      int attempts)
{
    long status = 0;
    int n;
    if (rc != CURLE_OK) {
        n = cio_error(L, op, e, rc, io);
    } else {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        n = resp_decode(L, op, status, io->body.data, io->body.len, &io->meta);
    }
    if (n == 2) /* how many requests the call made */
        error_set_int(L, "attempts", attempts);
    return n;
}

static void cio_sleep(double seconds)
{
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static double cio_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The timeout of one attempt: `timeout`, shortened so that the attempt
 * ends by the call's deadline. */
static long cio_attempt_ms(const cio_conf *cc, double deadline_at)
{
    double left = (deadline_at - cio_now()) * 1000.0;
    if (left < 1)
        left = 1;
    return left < (double)cc->timeout_ms ? (long)left : cc->timeout_ms;
}

static void cio_attempt_start(CURL *e, cg_io *io, const cio_conf *cc, double deadline_at)
{
    cio_buf_reset(&io->body);
    resp_meta_reset(&io->meta);
    io->upload.pos = 0;
    io->upload.given = 0;
    io->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, cio_attempt_ms(cc, deadline_at));
}

