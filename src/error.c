/* error.c: the one error constructor (errorf) and the contiguity.Error type.
 *
 * Every failure the module returns as data is `nil, err` with err built
 * here: kind, message, op and retryable, then whatever the caller adds
 * (status, request_id, field ...). Messages are formatted with
 * lua_pushvfstring, so they live on the Lua stack and never in a C buffer
 * that a Lua error could leak. */
#include <stdarg.h>
#include "error.h"

static int errorf(lua_State *L, const char *op, const char *kind, const char *fmt, ...)
{
    va_list ap;
    lua_pushnil(L);
    lua_createtable(L, 0, 8);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_setfield(L, -2, "message");
    lua_pushstring(L, op);
    lua_setfield(L, -2, "op");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "retryable");
    compat_setmetatable(L, CG_ERROR_MT);
    return 2;
}

static void error_set_bool(lua_State *L, const char *k, int v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

static void error_set_int(lua_State *L, const char *k, double v)
{
    compat_pushnumint(L, v);
    lua_setfield(L, -2, k);
}

static void error_set_string(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

/* "contiguity: otp.verify: 401 Unauthorized (request err_…)": what a log
 * line or an uncaught error shows. */
static int error_tostring(lua_State *L)
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
    if (lua_isstring(L, -1)) { /* formatted first: nothing may sit above the buffer while it grows */
        lua_pushfstring(L, " (request %s)", lua_tostring(L, -1));
        lua_remove(L, -2);
        luaL_addvalue(&b);
    } else {
        lua_pop(L, 1);
    }
    luaL_pushresult(&b);
    return 1;
}

static void error_open(lua_State *L)
{
    if (luaL_newmetatable(L, CG_ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, CG_ERROR_MT);
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
}
