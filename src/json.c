/* json.c: the module's private lua-cjson instance (cjson.new()), kept in the registry.
 *
 * The registry keys are the addresses of two static bytes (never read):
 * light userdata keys cost no string hashing on the per-call path. */
#include "json.h"

static const char json_encode_key = 'e';
static const char json_decode_key = 'd';

static void json_open(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "new");
    if (!lua_isfunction(L, -1))
        luaL_error(L, "contiguity: lua-cjson without cjson.new is not supported");
    lua_call(L, 0, 1);
    lua_pushlightuserdata(L, (void *)&json_encode_key);
    lua_getfield(L, -2, "encode");
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, (void *)&json_decode_key);
    lua_getfield(L, -2, "decode");
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pop(L, 2);
}

static void json_push_encode(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&json_encode_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
}

static void json_push_decode(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&json_decode_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
}
