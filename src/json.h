/* json.h: the module's private lua-cjson instance. */
#ifndef CONTIGUITY_JSON_H
#define CONTIGUITY_JSON_H

#include "compat.h"

/* Makes the private instance (luaopen): the host's cjson settings stay the host's. */
static void json_open(lua_State *L);

/* Push the instance's encode or decode function. */
static void json_push_encode(lua_State *L);
static void json_push_decode(lua_State *L);

#endif
