/* call.h: one call, whichever transport moves its bytes. */
#ifndef CONTIGUITY_CALL_H
#define CONTIGUITY_CALL_H

#include "compat.h"

struct cg_client;

/* Builds client.otp (and client.otp.reverse ...) from the operation
 * table's rows and stores it as the user value's `otp`. client is the
 * client's index, uv its user value's. */
static void call_make_tables(lua_State *L, struct cg_client *c, int client, int uv);

/* Pushes the table the guard learns the ops it counts from:
 * { ["otp.new"] = { kind = "send", field = "to" }, ... }. */
static void call_push_guard_ops(lua_State *L);

/* The async engine's deliver function (curl_multi.h): a finished call's
 * decode, debug line, guard record and callback. */
static void call_deliver(lua_State *L, int client, int t);

#endif
