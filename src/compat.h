/* compat.h: the differences between Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT 2.1, and nothing else. */
#ifndef CONTIGUITY_COMPAT_H
#define CONTIGUITY_COMPAT_H

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

/* LuaJIT's lualib.h names its jit library; its version is in luajit.h. */
#if defined(LUA_JITLIBNAME) && !defined(LUAJIT_VERSION)
#include <luajit.h>
#endif

/* Every name here carries the compat_ prefix: the lua_/luaL_ namespace is
 * Lua's own, and a module that defines names in it breaks when linked into a
 * host that has them. */

#if LUA_VERSION_NUM == 501 && !defined(LUAJIT_VERSION)
/* PUC 5.1 lacks luaL_setfuncs and luaL_setmetatable (compat.c); LuaJIT 2.1 has them. */
static void compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup);
static void compat_setmetatable(lua_State *L, const char *tname);
#else
#define compat_setfuncs luaL_setfuncs
#define compat_setmetatable luaL_setmetatable
#endif

#if LUA_VERSION_NUM == 501
#define compat_rawlen(L, i) lua_objlen((L), (i))
#define compat_absindex(L, i) \
    (((i) > 0 || (i) <= LUA_REGISTRYINDEX) ? (i) : lua_gettop(L) + (i) + 1)
#else
#define compat_rawlen(L, i) lua_rawlen((L), (i))
#define compat_absindex(L, i) lua_absindex((L), (i))
#endif

/* One user value per userdata: 5.1's environment table, 5.2/5.3's user
 * value, 5.4's first user value. Always a table here. */
#if LUA_VERSION_NUM >= 504
#define compat_newuserdata(L, sz) lua_newuserdatauv((L), (sz), 1)
#define compat_getuservalue(L, i) ((void)lua_getiuservalue((L), (i), 1))
#define compat_setuservalue(L, i) ((void)lua_setiuservalue((L), (i), 1))
#elif LUA_VERSION_NUM >= 502
#define compat_newuserdata(L, sz) lua_newuserdata((L), (sz))
#define compat_getuservalue(L, i) ((void)lua_getuservalue((L), (i)))
#define compat_setuservalue(L, i) lua_setuservalue((L), (i))
#else
#define compat_newuserdata(L, sz) lua_newuserdata((L), (sz))
#define compat_getuservalue(L, i) lua_getfenv((L), (i))
#define compat_setuservalue(L, i) ((void)lua_setfenv((L), (i)))
#endif

/* Integers where the Lua has them; an integral float on 5.1, 5.2 and LuaJIT. */
#if LUA_VERSION_NUM >= 503
#define compat_pushint(L, n) lua_pushinteger((L), (lua_Integer)(n))
#else
#define compat_pushint(L, n) lua_pushnumber((L), (lua_Number)(n))
#endif

/* Pushes v as an integer where the Lua has integers and v is one; any
 * other number stays a float (compat.c). */
static void compat_pushnumint(lua_State *L, double v);

/* The interpreter's name for version strings and the User-Agent. */
#if defined(LUAJIT_VERSION)
#define COMPAT_LUA_NAME LUAJIT_VERSION
#else
#define COMPAT_LUA_NAME LUA_VERSION
#endif

#endif
