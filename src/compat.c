/* compat.c: the few Lua 5.1-5.4 / LuaJIT differences that need a function body (compat.h). */
#include "compat.h"

#if LUA_VERSION_NUM == 501 && !defined(LUAJIT_VERSION)
/* luaL_setfuncs of 5.2+, for PUC 5.1. */
static void compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    luaL_checkstack(L, nup + 1, "too many upvalues");
    for (; l->name != NULL; l++) {
        int i;
        for (i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}

/* luaL_setmetatable of 5.2+, for PUC 5.1. */
static void compat_setmetatable(lua_State *L, const char *tname)
{
    luaL_getmetatable(L, tname);
    lua_setmetatable(L, -2);
}
#endif

/* A server may send any number (1e308, NaN, 2.5); converting an
 * out-of-range double is undefined behaviour in C, so the range is checked
 * before the cast. */
static void compat_pushnumint(lua_State *L, double v)
{
    if (v >= -9223372036854775808.0 && v < 9223372036854775808.0 &&
        (double)(long long)v == v)
        compat_pushint(L, (long long)v);
    else
        lua_pushnumber(L, v);
}
