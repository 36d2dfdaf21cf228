/* curl_easy.c: blocking calls over one reused easy handle.
 *
 * Consecutive calls of a client share the handle, so they share its
 * kept-alive connection. A failed attempt is made again when that is safe
 * (cio_retry_delay), after a sleep, never past the call's deadline. The
 * body string stays on the Lua stack for the whole call, so the read
 * callback of a NEVER_RESEND op can point into it. */
#include "curl_easy.h"
#include "client.h"
#include "error.h"

static int easy_open(cg_client *c, const char *cainfo, const char *capath)
{
    c->easy = curl_easy_init();
    return c->easy != NULL && cio_setup(c->easy, &c->io, &c->cc, cainfo, capath);
}

static int easy_perform(lua_State *L, cg_client *c, const ops_op *op, const char *url, int body)
{
    size_t body_len = 0;
    const char *b = lua_tolstring(L, body, &body_len);
    double deadline_at = cio_now() + c->cfg.deadline, delay;
    int attempt = 0;
    CURLcode rc;
    if (c->easy == NULL) /* closed (the call layer checks too) */
        return errorf(L, op->name, "invalid", "client is closed");
    if (!cio_set_request(c->easy, op, url, b, body_len, 0, &c->io.upload))
        return errorf(L, op->name, "network", "out of memory in libcurl");
    for (;;) {
        cio_attempt_start(c->easy, &c->io, &c->cc, deadline_at);
        rc = curl_easy_perform(c->easy);
        if (++attempt > c->cfg.max_retries)
            break;
        delay = cio_retry_delay(&c->cc, op, c->easy, rc, &c->io, attempt);
        if (delay < 0 || cio_now() + delay >= deadline_at)
            break;
        cio_sleep(delay);
    }
    return cio_finish(L, op, c->easy, rc, &c->io, attempt);
}

static void easy_close(cg_client *c)
{
    if (c->easy != NULL) {
        curl_easy_cleanup(c->easy);
        c->easy = NULL;
    }
    cio_buf_free(&c->io.body);
}
