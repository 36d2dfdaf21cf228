/* webhook.h: contiguity.webhook (verify, parse, construct signed deliveries). */
#ifndef CONTIGUITY_WEBHOOK_H
#define CONTIGUITY_WEBHOOK_H

#include "compat.h"

/* Sets module.webhook; the module table is on top (luaopen). */
static void wh_open(lua_State *L);

#endif
