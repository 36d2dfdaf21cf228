/* response_fuzz.c: libFuzzer harness for the response side of the module:
 * the libcurl header callback (cio_on_header) and the response decoder
 * (resp_decode), fed arbitrary status, header and body bytes.
 *
 * Input layout: 2 bytes big-endian status (taken modulo 1000, as libcurl
 * reports 0-999), then header bytes up to the first "\r\n\r\n" (each line
 * handed to the callback the way libcurl does, with its "\r\n"), then the
 * body. No separator: everything after the status is headers, no body.
 *
 * The static functions are reached by including the module's single
 * translation unit; one Lua 5.4 state holds the module's private cjson
 * instance (json.c), set up by
 * luaopen_contiguity once. */
#include <stdint.h>
#include "../src/contiguity.c"

static lua_State *fz_L;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_L = luaL_newstate();
    luaL_openlibs(fz_L);
    luaL_requiref(fz_L, "contiguity", luaopen_contiguity, 0);
    lua_settop(fz_L, 0);
    return 0;
}

/* Feeds the header block line by line; returns 0 when the callback refused
 * a line (libcurl would then abort the transfer: nothing is decoded). */
static int fz_headers(const char *h, size_t n, cg_resp_meta *meta)
{
    char *line;
    while (n > 0) {
        const char *nl = memchr(h, '\n', n);
        size_t len = nl ? (size_t)(nl - h) + 1 : n;
        size_t got;
        /* a private copy, exactly len bytes, so ASan sees any overread */
        line = (char *)malloc(len);
        if (line == NULL)
            return 0;
        memcpy(line, h, len);
        got = cio_on_header(line, 1, len, meta);
        free(line);
        if (got != len)
            return 0;
        h += len;
        n -= len;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = fz_L;
    cg_resp_meta meta;
    const char *p, *sep, *body = NULL;
    size_t n, hlen, blen = 0;
    long status;
    const ops_op *op;
    char *copy;
    int nret;
    if (size < 2)
        return 0;
    status = (long)(((unsigned)data[0] << 8 | data[1]) % 1000);
    op = ops_get((int)(size % (size_t)ops_count()));
    p = (const char *)data + 2;
    n = size - 2;
    sep = NULL;
    if (n >= 4) {
        size_t i;
        for (i = 0; i + 4 <= n; i++)
            if (memcmp(p + i, "\r\n\r\n", 4) == 0) {
                sep = p + i;
                break;
            }
    }
    hlen = sep ? (size_t)(sep - p) + 2 : n;
    resp_meta_reset(&meta);
    if (!fz_headers(p, hlen, &meta))
        return 0;
    if (sep) {
        if (!fz_headers("\r\n", 2, &meta)) /* the blank line ending the head */
            return 0;
        body = sep + 4;
        blen = n - hlen - 2;
    }
    /* the body in an exact-size heap copy, as the transport's buffer is */
    copy = (char *)malloc(blen ? blen : 1);
    if (copy == NULL)
        return 0;
    if (blen)
        memcpy(copy, body, blen);
    lua_settop(L, 0);
    nret = resp_decode(L, op, status, body ? copy : NULL, blen, &meta);
    if (nret == 2) {
        /* the error's message, as a log line would show it */
        if (luaL_callmeta(L, -1, "__tostring"))
            lua_pop(L, 1);
    } else if (nret != 1 || lua_type(L, -1) != LUA_TTABLE) {
        abort(); /* a result must be one table, or nil and an error */
    }
    free(copy);
    lua_settop(L, 0);
    return 0;
}
