/* floor.c: the bench floor, sequential POSTs of the exact request the module sends, on one reused libcurl easy handle. */
/*
 * Usage: floor URL BODY USER_AGENT AUTHORIZATION CALLS WARMUP [CAINFO]
 * Sends WARMUP calls, then CALLS timed calls, each the same POST with the
 * module's headers, set the way the module sets them (one header list:
 * Authorization, User-Agent, Content-Type, Accept, empty Expect) and body; the response body is appended to a reused buffer
 * and not decoded. Prints "seconds calls errors vmhwm_kib" on stdout.
 * FLOOR_FRESH=1 in the environment opens a new connection for every call
 * (CURLOPT_FRESH_CONNECT); FLOOR_READ=1 hands the body to libcurl through a
 * read callback that refuses to rewind (what the module does for its
 * NEVER_RESEND ops) instead of CURLOPT_POSTFIELDS: bench/fresh.sh compares
 * the two ways of never letting libcurl re-send a POST.
 * FLOOR_INFLIGHT=N (N > 0) runs the calls through one libcurl multi handle
 * instead, N in flight on N reused easy handles, each finished handle
 * re-added for the next call (curl_multi_perform + curl_multi_poll): the
 * most a libcurl client with N calls in flight can do, next to the module's
 * async mode.
 * Built by bench/run.sh: cc -O2 bench/floor.c -lcurl.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>

typedef struct {
    char *data;
    size_t len, cap;
} floor_buf;

static size_t floor_on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    floor_buf *b = (floor_buf *)ud;
    size_t n = size * nmemb;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *p;
        while (cap < b->len + n)
            cap *= 2;
        p = (char *)realloc(b->data, cap);
        if (p == NULL)
            return 0;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    return n;
}

static double floor_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Peak resident set size of this process, in KiB (VmHWM). */
static long floor_vmhwm(void)
{
    char line[256];
    long kib = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "VmHWM:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    fclose(f);
    return kib;
}

/* One call: 0 when the server answered 200. */
static int floor_call(CURL *e, floor_buf *b)
{
    long status = 0;
    b->len = 0;
    if (curl_easy_perform(e) != CURLE_OK)
        return 1;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    return status != 200;
}

/* The body for FLOOR_READ=1: handed out from the start on every request. */
typedef struct {
    const char *data;
    size_t len, pos;
} floor_upload;

static size_t floor_on_read(char *buf, size_t size, size_t nitems, void *ud)
{
    floor_upload *u = (floor_upload *)ud;
    size_t n = size * nitems;
    if (u->pos == u->len)
        u->pos = 0; /* the next request */
    if (n > u->len - u->pos)
        n = u->len - u->pos;
    memcpy(buf, u->data + u->pos, n);
    u->pos += n;
    return n;
}

static int floor_on_seek(void *ud, curl_off_t offset, int origin)
{
    (void)ud;
    (void)offset;
    (void)origin;
    return CURL_SEEKFUNC_CANTSEEK;
}

static floor_upload floor_body;

static CURL *floor_handle(struct curl_slist *h, char **argv, int argc, floor_buf *b)
{
    CURL *e = curl_easy_init();
    if (e == NULL)
        return NULL;
    curl_easy_setopt(e, CURLOPT_URL, argv[1]);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    if (getenv("FLOOR_READ") != NULL && strcmp(getenv("FLOOR_READ"), "1") == 0) {
        floor_body.data = argv[2];
        floor_body.len = strlen(argv[2]);
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, floor_on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, &floor_body);
        curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, floor_on_seek);
    } else {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, argv[2]);
    }
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(argv[2]));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, floor_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(e, CURLOPT_PRIVATE, b);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
    if (argc > 7)
        curl_easy_setopt(e, CURLOPT_CAINFO, argv[7]);
    if (getenv("FLOOR_FRESH") != NULL && strcmp(getenv("FLOOR_FRESH"), "1") == 0)
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    return e;
}

/* `calls` calls with up to `inflight` in flight on the multi handle m (the
 * easy handles e, each with its buffer as CURLOPT_PRIVATE); returns the
 * count of failed calls. */
static long floor_multi_run(CURLM *m, CURL **e, long inflight, long calls)
{
    long started = 0, done = 0, errors = 0, i;
    int running;
    for (i = 0; i < inflight && started < calls; i++, started++)
        curl_multi_add_handle(m, e[i]);
    while (done < calls) {
        CURLMsg *msg;
        int left;
        curl_multi_perform(m, &running);
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            long status = 0;
            floor_buf *fb = NULL;
            CURL *x = msg->easy_handle;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(x, CURLINFO_RESPONSE_CODE, &status);
            curl_easy_getinfo(x, CURLINFO_PRIVATE, (char **)&fb);
            errors += msg->data.result != CURLE_OK || status != 200;
            done++;
            fb->len = 0;
            curl_multi_remove_handle(m, x);
            if (started < calls) {
                curl_multi_add_handle(m, x);
                started++;
            }
        }
        if (done < calls)
            curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    return errors;
}

/* The FLOOR_INFLIGHT mode: warm-up, then the timed calls, on one multi
 * handle (the warm-up opens the connections the timed calls reuse).
 * Returns the failed timed calls, or -1. */
static long floor_multi(struct curl_slist *h, char **argv, int argc, long inflight, long warm,
                        long calls, double *seconds)
{
    CURLM *m = curl_multi_init();
    CURL **e = (CURL **)calloc((size_t)inflight, sizeof(*e));
    floor_buf *b = (floor_buf *)calloc((size_t)inflight, sizeof(*b));
    long errors, i;
    double t0;
    if (m == NULL || e == NULL || b == NULL)
        return -1;
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, inflight);
    for (i = 0; i < inflight; i++)
        if ((e[i] = floor_handle(h, argv, argc, &b[i])) == NULL)
            return -1;
    if (floor_multi_run(m, e, inflight, warm > inflight ? warm : inflight) != 0) {
        fprintf(stderr, "floor: warm-up calls failed\n");
        return -1;
    }
    t0 = floor_now();
    errors = floor_multi_run(m, e, inflight, calls);
    *seconds = floor_now() - t0;
    for (i = 0; i < inflight; i++) {
        curl_easy_cleanup(e[i]);
        free(b[i].data);
    }
    curl_multi_cleanup(m);
    free(e);
    free(b);
    return errors;
}

int main(int argc, char **argv)
{
    struct curl_slist *h = NULL;
    floor_buf b = {NULL, 0, 0};
    char auth[512], ua[512];
    CURL *e;
    long calls, warm, i, errors = 0;
    double t0, t;
    if (argc < 7) {
        fprintf(stderr, "usage: %s URL BODY USER_AGENT AUTHORIZATION CALLS WARMUP [CAINFO]\n", argv[0]);
        return 2;
    }
    calls = atol(argv[5]);
    warm = atol(argv[6]);
    snprintf(auth, sizeof auth, "Authorization: %s", argv[4]);
    snprintf(ua, sizeof ua, "User-Agent: %s", argv[3]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h = curl_slist_append(h, auth);
    h = curl_slist_append(h, ua);
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Accept: application/json");
    h = curl_slist_append(h, "Expect:");
    if (h == NULL)
        return 1;
    if (getenv("FLOOR_INFLIGHT") != NULL && atol(getenv("FLOOR_INFLIGHT")) > 0) {
        errors = floor_multi(h, argv, argc, atol(getenv("FLOOR_INFLIGHT")), warm, calls, &t);
        if (errors < 0)
            return 1;
        printf("%.6f %ld %ld %ld\n", t, calls, errors, floor_vmhwm());
        curl_slist_free_all(h);
        curl_global_cleanup();
        return 0;
    }
    e = floor_handle(h, argv, argc, &b);
    if (e == NULL)
        return 1;
    for (i = 0; i < warm; i++)
        errors += floor_call(e, &b);
    if (errors > 0) {
        fprintf(stderr, "floor: warm-up calls failed\n");
        return 1;
    }
    t0 = floor_now();
    for (i = 0; i < calls; i++)
        errors += floor_call(e, &b);
    t = floor_now() - t0;
    printf("%.6f %ld %ld %ld\n", t, calls, errors, floor_vmhwm());
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    free(b.data);
    curl_global_cleanup();
    return 0;
}
