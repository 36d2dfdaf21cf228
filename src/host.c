/* host.c: the `transport` option's path: a Lua function of the host moves the bytes.
 *
 * For OpenResty (contiguity.resty), Skynet, copas, cqueues, luv, Tarantool:
 * the host's own HTTP client runs the request, and may yield. Lua 5.1 and
 * LuaJIT cannot yield across a C call, so the call runs in the Lua glue
 * below, which calls into C only for what never yields: build (validate,
 * JSON), the guard's check and record (whose store may itself be a
 * cosocket), and decode. One attempt per call: retries are the libcurl
 * transports' business. */
#include <string.h>
#include "host.h"
#include "response.h"
#include "error.h"

/* build -> guard check -> transport -> decode -> guard record. */
static const char host_glue[] =
    "local build, decode, transport, guard, op = ...\n"
    "if not guard then\n"
    "  return function(...)\n"
    "    local req, err = build(...)\n"
    "    if not req then return nil, err end\n"
    "    return decode(req, transport(req))\n"
    "  end\n"
    "end\n"
    "return function(...)\n"
    "  local req, err, arg = build(...)\n"
    "  if not req then return nil, err end\n"
    "  local refused, ticket = guard:check(op, arg)\n"
    "  if refused then return nil, refused end\n"
    "  local res, err2 = decode(req, transport(req))\n"
    "  if res then guard:record(op, ticket, res) end\n"
    "  return res, err2\n"
    "end\n";

static const char host_glue_key = 'g'; /* the compiled glue, in the registry */

static void host_open(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&host_glue_key);
    if (luaL_loadbuffer(L, host_glue, sizeof(host_glue) - 1, "=contiguity.host") != 0)
        lua_error(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

static void host_push_glue(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&host_glue_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
}

static void host_push_request(lua_State *L, const ops_op *op, int url, int path, int body,
                              double timeout, int auth, int user_agent)
{
    lua_createtable(L, 0, 6);
    lua_pushstring(L, op->method);
    lua_setfield(L, -2, "method");
    lua_pushvalue(L, url);
    lua_setfield(L, -2, "url");
    lua_pushvalue(L, path);
    lua_setfield(L, -2, "path");
    lua_pushvalue(L, body);
    lua_setfield(L, -2, "body");
    lua_pushnumber(L, timeout);
    lua_setfield(L, -2, "timeout");
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, auth);
    lua_setfield(L, -2, "Authorization");
    lua_pushvalue(L, user_agent);
    lua_setfield(L, -2, "User-Agent");
    lua_pushliteral(L, "application/json");
    lua_setfield(L, -2, "Content-Type");
    lua_pushliteral(L, "application/json");
    lua_setfield(L, -2, "Accept");
    lua_setfield(L, -2, "headers");
}

/* Feeds a transport's response headers table (any case of names) to
 * resp_meta_set, the parser the libcurl header callback uses. Keys are
 * only read when they are strings: converting one would break lua_next. */
static void host_meta(lua_State *L, int headers, cg_resp_meta *meta)
{
    if (lua_type(L, headers) != LUA_TTABLE)
        return;
    lua_pushnil(L);
    while (lua_next(L, headers) != 0) {
        int vt = lua_type(L, -1);
        if (lua_type(L, -2) == LUA_TSTRING && (vt == LUA_TSTRING || vt == LUA_TNUMBER)) {
            size_t nlen, vlen;
            const char *name = lua_tolstring(L, -2, &nlen);
            const char *v = lua_tolstring(L, -1, &vlen);
            resp_meta_set(meta, name, nlen, v, vlen);
        }
        lua_pop(L, 1);
    }
}

static int host_outcome(lua_State *L, const ops_op *op, int from, size_t max_response)
{
    cg_resp_meta meta;
    size_t len = 0;
    const char *body;
    double status;
    if (!lua_isnumber(L, from)) {
        const char *msg = lua_isstring(L, from + 1) ? lua_tostring(L, from + 1) : "transport failed";
        return errorf(L, op->name, strstr(msg, "timeout") || strstr(msg, "timed out")
                                       ? "timeout" : "network", "%s", msg);
    }
    status = lua_tonumber(L, from);
    body = lua_tolstring(L, from + 1, &len);
    resp_meta_reset(&meta);
    /* only an error answer reports Location and Retry-After: a 2xx skips
     * the walk through the headers table */
    if (status < 200 || status >= 300)
        host_meta(L, from + 2, &meta);
    if (!(status >= 100 && status < 600))
        return errorf(L, op->name, "network", "transport returned an invalid HTTP status");
    if (len > max_response)
        return errorf(L, op->name, "decode", "response body larger than max_response_bytes");
    return resp_decode(L, op, (long)status, body, len, &meta);
}
