/* response.c: the response decoder (status, header facts, body in; result table or nil, err out).
 *
 * Every transport ends in resp_decode: the libcurl ones with the bytes
 * their callbacks collected, a host transport with what its function
 * returned. The two response headers the module acts on (Location,
 * Retry-After) are parsed here too, for both. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <curl/curl.h>
#include "response.h"
#include "error.h"
#include "json.h"

static void resp_meta_reset(cg_resp_meta *m)
{
    m->location[0] = '\0';
    m->retry_after = -1;
    m->header_bytes = 0;
    m->header_overflow = 0;
}

/* Keeps the two response headers the module acts on: Location (for a
 * refused redirect) and Retry-After (seconds or an HTTP date), given a
 * header's name and value (trimmed here). Both transports read
 * headers through here. */
static void resp_meta_set(cg_resp_meta *m, const char *name, size_t nlen, const char *v,
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

/* JSON null is cjson.null (a NULL light userdata); results must show it as
 * nil, never as a truthy sentinel. cjson bounds the depth. */
static void resp_strip_nulls(lua_State *L, int idx)
{
    idx = compat_absindex(L, idx);
    luaL_checkstack(L, 3, "response nested too deeply");
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        int t = lua_type(L, -1);
        if (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL) {
            lua_pushvalue(L, -2);
            lua_pushnil(L);
            lua_rawset(L, idx); /* clearing a field during traversal is allowed */
        } else if (t == LUA_TTABLE) {
            resp_strip_nulls(L, -1);
        }
        lua_pop(L, 1);
    }
}

/* Whether the raw body can hold a JSON null at all: the literal's four
 * bytes appear in the text wherever one does (and maybe inside a string). */
static int resp_may_have_null(const char *body, size_t len)
{
    const char *p = body, *end = body + len;
    while (end - p >= 4 && (p = (const char *)memchr(p, 'n', (size_t)(end - p - 3))) != NULL) {
        if (memcmp(p, "null", 4) == 0)
            return 1;
        p++;
    }
    return 0;
}

/* cjson decodes every number as a float: field k of the table at t becomes
 * an integer where the Lua has them (range-checked by resp_push_int). */
static void resp_fix_int(lua_State *L, int t, const char *k)
{
    t = compat_absindex(L, t);
    lua_getfield(L, t, k);
    if (lua_type(L, -1) == LUA_TNUMBER) {
        double v = lua_tonumber(L, -1);
        lua_pop(L, 1);
        compat_pushnumint(L, v);
        lua_setfield(L, t, k);
    } else {
        lua_pop(L, 1);
    }
}

static void resp_copy_string(lua_State *L, int from, const char *from_key, const char *k)
{
    lua_getfield(L, from, from_key);
    if (lua_type(L, -1) == LUA_TSTRING)
        lua_setfield(L, -2, k);
    else
        lua_pop(L, 1);
}

/* Whether an HTTP answer may be asked for again: the one rule behind
 * err.retryable and the libcurl transports' retries (curl_io.c). */
static int resp_status_retryable(const ops_op *op, long status)
{
    return status == 429 || ((op->flags & OPF_IDEMPOTENT) &&
                             (status == 502 || status == 503 || status == 504));
}

static const char *resp_reason(long status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default:
        if (status >= 300 && status < 400) return "Redirect (not followed)";
        return "HTTP error";
    }
}

/* Decodes body as JSON with the module's private cjson instance. Leaves the
 * decoded value (or the error message) on top; returns 1 when it decoded to
 * a table. */
static int resp_json(lua_State *L, const char *body, size_t len)
{
    json_push_decode(L);
    lua_pushlstring(L, body, len);
    if (lua_pcall(L, 1, 1, 0) != 0)
        return 0;
    return lua_type(L, -1) == LUA_TTABLE;
}

/* A 2xx answer whose decoded body is at env (ok: it is a table): the
 * envelope's data fields at top level plus metadata, or a decode error. */
static int resp_success(lua_State *L, const ops_op *op, long status, int env, int ok,
                        const char *body, size_t len)
{
    if (!ok) {
        errorf(L, op->name, "decode", "response is not a JSON object%s%s",
               lua_isstring(L, env) ? ": " : "",
               lua_isstring(L, env) ? lua_tostring(L, env) : "");
        error_set_int(L, "status", (double)status);
        lua_remove(L, env);
        return 2;
    }
    lua_getfield(L, env, "data");
    if (lua_type(L, -1) != LUA_TTABLE) {
        lua_pop(L, 1);
        errorf(L, op->name, "decode", "response envelope has no data object");
        error_set_int(L, "status", (double)status);
        resp_copy_string(L, env, "id", "request_id");
        lua_remove(L, env);
        return 2;
    }
    /* The rest of the envelope (id, timestamp, api_version, object and
     * whatever the API adds) becomes metadata as it is: no second table. */
    if (resp_may_have_null(body, len))
        resp_strip_nulls(L, env); /* data too: it is still in env */
    lua_pushnil(L);
    lua_setfield(L, env, "data");
    resp_fix_int(L, env, "timestamp");
    lua_pushvalue(L, env);
    lua_setfield(L, -2, "metadata");
    lua_remove(L, env);
    return 1;
}

/* The API's own words for a refusal, from the decoded envelope at env:
 * data.error, else message, else error; NULL when it gave none. Leaves what
 * it looked at on the stack (the caller resets it). */
static const char *resp_refusal_message(lua_State *L, int env, int *data)
{
    static const char *const where[] = {"message", "error"};
    int i;
    lua_getfield(L, env, "data");
    if (lua_type(L, -1) == LUA_TTABLE) {
        *data = lua_gettop(L);
        lua_getfield(L, *data, "error");
        if (lua_type(L, -1) == LUA_TSTRING)
            return lua_tostring(L, -1);
    }
    for (i = 0; i < 2; i++) {
        lua_getfield(L, env, where[i]);
        if (lua_type(L, -1) == LUA_TSTRING)
            return lua_tostring(L, -1);
    }
    return NULL;
}

/* Any other answer is the API's refusal: kind "api", its own words when it
 * gave any, the request id, and what the headers said. */
static int resp_refusal(lua_State *L, const ops_op *op, long status, int env, int ok,
                        const cg_resp_meta *meta)
{
    int data = 0;
    const char *msg = ok ? resp_refusal_message(L, env, &data) : NULL;
    errorf(L, op->name, "api", "%s", msg ? msg : resp_reason(status));
    error_set_int(L, "status", (double)status);
    error_set_bool(L, "retryable", resp_status_retryable(op, status));
    if (ok) {
        resp_copy_string(L, env, "id", "request_id");
        resp_copy_string(L, env, "agreement_url", "agreement_url");
        if (data) resp_copy_string(L, data, "agreement_url", "agreement_url");
    }
    if (meta != NULL && meta->location[0] != '\0' && status >= 300 && status < 400)
        error_set_string(L, "location", meta->location);
    if (meta != NULL && meta->retry_after >= 0) {
        lua_pushnumber(L, meta->retry_after);
        lua_setfield(L, -2, "retry_after");
    }
    /* keep only nil, err */
    lua_replace(L, env + 1);
    lua_pushnil(L);
    lua_replace(L, env);
    lua_settop(L, env + 1);
    return 2;
}

/* The response decoder shared by every transport: status + body + header
 * facts in, result table or nil, err out. Returns the count pushed. */
static int resp_decode(lua_State *L, const ops_op *op, long status, const char *body,
                       size_t len, const cg_resp_meta *meta)
{
    int ok = resp_json(L, body ? body : "", body ? len : 0);
    if (status >= 200 && status < 300)
        return resp_success(L, op, status, lua_gettop(L), ok, body, len);
    return resp_refusal(L, op, status, lua_gettop(L), ok, meta);
}
