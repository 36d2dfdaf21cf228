/* response.h: the response decoder and the response header facts it uses. */
#ifndef CONTIGUITY_RESPONSE_H
#define CONTIGUITY_RESPONSE_H

#include <stddef.h>
#include "compat.h"
#include "ops.h"

/* What a response's headers tell us beyond the body. */
typedef struct cg_resp_meta {
    char location[512];
    double retry_after; /* seconds, < 0 when absent */
    size_t header_bytes;
    int header_overflow;
} cg_resp_meta;

/* Forgets a previous response's header facts. */
static void resp_meta_reset(cg_resp_meta *m);

/* Keeps Location and Retry-After (seconds or an HTTP date) from one header
 * (name and value, the value trimmed here); other headers are ignored. */
static void resp_meta_set(cg_resp_meta *m, const char *name, size_t nlen, const char *v,
                          size_t vlen);

/* Whether an answer with this status may be asked for again: 429 always,
 * 502/503/504 only for an idempotent op. */
static int resp_status_retryable(const ops_op *op, long status);

/* The decoder every transport shares: pushes the result table (returns 1)
 * or nil, err (returns 2). body may be NULL for an empty body. */
static int resp_decode(lua_State *L, const ops_op *op, long status, const char *body,
                       size_t len, const cg_resp_meta *meta);

/* JSON null becomes nil in the table at idx, recursively; a field k that
 * is a whole number becomes an integer where the Lua has them. */
static void resp_strip_nulls(lua_State *L, int idx);
static void resp_fix_int(lua_State *L, int t, const char *k);

#endif
