/* host.h: the `transport` option's path: a Lua function of the host moves the bytes. */
#ifndef CONTIGUITY_HOST_H
#define CONTIGUITY_HOST_H

#include <stddef.h>
#include "compat.h"
#include "ops.h"

/* Compiles the call glue once per Lua state (luaopen) and pushes it. */
static void host_open(lua_State *L);
static void host_push_glue(lua_State *L);

/* Pushes the request table a transport function gets: method, url, path,
 * body, timeout and headers (Authorization, User-Agent, Content-Type,
 * Accept), from the values at the given indexes. */
static void host_push_request(lua_State *L, const ops_op *op, int url, int path, int body,
                              double timeout, int auth, int user_agent);

/* Turns what the transport returned, at index from: (status, body, headers)
 * or (nil, message), into the decoder's result: pushes the result (1) or
 * nil, err (2). */
static int host_outcome(lua_State *L, const ops_op *op, int from, size_t max_response);

#endif
