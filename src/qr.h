/* qr.h: contiguity.qr(text, opts?). */
#ifndef CONTIGUITY_QR_H
#define CONTIGUITY_QR_H

#include "compat.h"

/* contiguity.qr: an SVG, terminal art or a matrix; nil, err for bad values. */
static int qr_encode(lua_State *L);

#endif
