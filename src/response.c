/* response.c: the response decoder (envelope to result table) and the error tables. */
#include <string.h>
#include "contiguity.h"

/* Pushes nil and a new error table {kind, message, op, retryable=false};
 * callers add status, request_id, field... to the table on top. */
static int resp_error(lua_State *L, const char *op, const char *kind, const char *message)
{
    lua_pushnil(L);
    lua_createtable(L, 0, 8);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    lua_pushstring(L, op);
    lua_setfield(L, -2, "op");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "retryable");
    compat_setmetatable(L, CG_ERROR_MT);
    return 2;
}

static void resp_set_bool(lua_State *L, const char *k, int v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

/* Pushes v as an integer where the Lua has integers and v is one; any
 * other number (1e308, NaN, 2.5: a server may send anything) stays a
 * float. Converting an out-of-range double is undefined behaviour in C, so
 * the range is checked before the cast. */
static void resp_push_int(lua_State *L, double v)
{
    if (v >= -9223372036854775808.0 && v < 9223372036854775808.0 &&
        (double)(long long)v == v)
        compat_pushint(L, (long long)v);
    else
        lua_pushnumber(L, v);
}

static void resp_set_int(lua_State *L, const char *k, double v)
{
    resp_push_int(L, v);
    lua_setfield(L, -2, k);
}

/* "contiguity: otp.verify: 401 Unauthorized (request err_…)": what a log
 * line or an uncaught error shows. */
static int resp_error_tostring(lua_State *L)
{
    luaL_Buffer b;
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "contiguity: ");
    lua_getfield(L, 1, "op");
    if (lua_isstring(L, -1)) {
        luaL_addvalue(&b);
        luaL_addstring(&b, ": ");
    } else {
        lua_pop(L, 1);
    }
    lua_getfield(L, 1, "status");
    if (lua_type(L, -1) == LUA_TNUMBER) {
        lua_pushfstring(L, "%s ", lua_tostring(L, -1));
        lua_remove(L, -2);
        luaL_addvalue(&b);
    } else {
        lua_pop(L, 1);
    }
    lua_getfield(L, 1, "message");
    if (lua_isstring(L, -1))
        luaL_addvalue(&b);
    else
        lua_pop(L, 1);
    lua_getfield(L, 1, "request_id");
    if (lua_isstring(L, -1)) {
        luaL_addstring(&b, " (request ");
        luaL_addvalue(&b);
        luaL_addchar(&b, ')');
    } else {
        lua_pop(L, 1);
    }
    luaL_pushresult(&b);
    return 1;
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
        resp_push_int(L, v);
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
 * err.retryable and the libcurl transports' retries (curlt_retry_delay). */
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
    cg_registry_push(L, &cg_json_decode_key);
    lua_pushlstring(L, body, len);
    if (lua_pcall(L, 1, 1, 0) != 0)
        return 0;
    return lua_type(L, -1) == LUA_TTABLE;
}

/* The response decoder shared by every transport: status + body + header
 * facts in, result table or nil, err out. Returns the count pushed. */
static int resp_decode(lua_State *L, const ops_op *op, long status, const char *body,
                       size_t len, const cg_resp_meta *meta)
{
    int env, ok = resp_json(L, body ? body : "", body ? len : 0);
    env = lua_gettop(L);
    if (status >= 200 && status < 300) {
        if (!ok) {
            lua_pushfstring(L, "response is not a JSON object%s%s",
                            lua_isstring(L, env) ? ": " : "",
                            lua_isstring(L, env) ? lua_tostring(L, env) : "");
            resp_error(L, op->name, "decode", lua_tostring(L, -1));
            resp_set_int(L, "status", (double)status);
            lua_remove(L, -3);
            lua_remove(L, -3);
            return 2;
        }
        lua_getfield(L, env, "data");
        if (lua_type(L, -1) != LUA_TTABLE) {
            lua_pop(L, 1);
            resp_error(L, op->name, "decode", "response envelope has no data object");
            resp_set_int(L, "status", (double)status);
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
    /* Anything else is the API's refusal: its own words when it gave any. */
    {
        int data = 0;
        const char *msg = NULL;
        if (ok) {
            lua_getfield(L, env, "data");
            if (lua_type(L, -1) == LUA_TTABLE) {
                data = lua_gettop(L);
                lua_getfield(L, data, "error");
                if (lua_type(L, -1) == LUA_TSTRING) msg = lua_tostring(L, -1);
            }
            if (msg == NULL) {
                lua_getfield(L, env, "message");
                if (lua_type(L, -1) == LUA_TSTRING) msg = lua_tostring(L, -1);
            }
            if (msg == NULL) {
                lua_getfield(L, env, "error");
                if (lua_type(L, -1) == LUA_TSTRING) msg = lua_tostring(L, -1);
            }
        }
        if (msg == NULL)
            msg = resp_reason(status);
        resp_error(L, op->name, "api", msg);
        resp_set_int(L, "status", (double)status);
        resp_set_bool(L, "retryable", resp_status_retryable(op, status));
        if (ok) {
            resp_copy_string(L, env, "id", "request_id");
            resp_copy_string(L, env, "agreement_url", "agreement_url");
            if (data) resp_copy_string(L, data, "agreement_url", "agreement_url");
        }
        if (meta != NULL && meta->location[0] != '\0' && status >= 300 && status < 400) {
            lua_pushstring(L, meta->location);
            lua_setfield(L, -2, "location");
        }
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
}
