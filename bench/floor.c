/* floor.c: the bench floor, sequential POSTs of the exact request the module sends, on one reused libcurl easy handle. */
/*
 * Usage: floor URL BODY USER_AGENT AUTHORIZATION CALLS WARMUP [CAINFO]
 * Sends WARMUP calls, then CALLS timed calls, each the same POST with the
 * module's headers (Authorization, Content-Type, Accept, empty Expect, its
 * User-Agent) and body; the response body is appended to a reused buffer
 * and not decoded. Prints "seconds calls errors vmhwm_kib" on stdout.
 * FLOOR_FRESH=1 in the environment opens a new connection for every call
 * (CURLOPT_FRESH_CONNECT, what the module does for otp.new and otp.resend):
 * bench/fresh.sh uses it to measure what that costs.
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

int main(int argc, char **argv)
{
    struct curl_slist *h = NULL;
    floor_buf b = {NULL, 0, 0};
    char auth[512];
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
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h = curl_slist_append(h, auth);
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Accept: application/json");
    h = curl_slist_append(h, "Expect:");
    e = curl_easy_init();
    if (e == NULL || h == NULL)
        return 1;
    curl_easy_setopt(e, CURLOPT_URL, argv[1]);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_USERAGENT, argv[3]);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, argv[2]);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(argv[2]));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, floor_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
    if (argc > 7)
        curl_easy_setopt(e, CURLOPT_CAINFO, argv[7]);
    if (getenv("FLOOR_FRESH") != NULL && strcmp(getenv("FLOOR_FRESH"), "1") == 0)
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
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
