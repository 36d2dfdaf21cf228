/* error.h: the one error constructor and the error type (contiguity.Error). */
#ifndef CONTIGUITY_ERROR_H
#define CONTIGUITY_ERROR_H

#include "compat.h"

#define CG_ERROR_MT "contiguity.Error"

/* Pushes nil and a new error table {kind, message, op, retryable = false}
 * with the contiguity.Error metatable; the message is formatted like
 * lua_pushfstring. Returns 2, the count pushed: `return errorf(...)`. */
static int errorf(lua_State *L, const char *op, const char *kind, const char *fmt, ...);

/* Set a field of the error (or any table) on top. */
static void error_set_bool(lua_State *L, const char *k, int v);
static void error_set_int(lua_State *L, const char *k, double v);
static void error_set_string(lua_State *L, const char *k, const char *v);

/* Creates the contiguity.Error metatable (luaopen). */
static void error_open(lua_State *L);

#endif
