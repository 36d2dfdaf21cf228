/* qr.c: contiguity.qr(text, opts): a QR code from libqrencode as SVG, terminal art or a matrix. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <qrencode.h>
#include "qr.h"
#include "options.h"
#include "error.h"

#define QR_MAX_WIDTH 177 /* version 40: 17 + 4 * 40 modules */
#define QR_DEFAULT_SIZE 256
#define QR_DEFAULT_MARGIN 4
#define QR_MAX_MARGIN 100
#define QR_MAX_SIZE 100000
#define QR_MAX_BYTES 7089 /* version 40-L, all digits: no longer text fits */

enum { QR_SVG, QR_TERMINAL, QR_MATRIX };

typedef struct qr_opts {
    int format;
    QRecLevel level;
    int size, margin, invert;
} qr_opts;

/* The modules, one byte each (1 = dark), in a userdata allocated before
 * libqrencode runs: its QRcode is malloc'd and is freed before anything
 * that could raise, so a Lua error never leaks it. */
typedef struct qr_bits {
    int width;
    unsigned char m[QR_MAX_WIDTH * QR_MAX_WIDTH];
} qr_bits;

/* A bad value is data (nil, err with the field); a wrong type is misuse
 * and raises, as for contiguity.new's options. */
static int qr_invalid(lua_State *L, const char *field, const char *message)
{
    errorf(L, "qr", "invalid", "%s", message);
    error_set_string(L, "field", field);
    return 2;
}

static int qr_whole_in(double v, double lo, double hi)
{
    return v >= lo && v <= hi && floor(v) == v;
}

/* Reads opts into *o. Returns 0 when valid, else pushes nil, err and
 * returns 2. Unknown keys and wrong types raise. */
static int qr_read_opts(lua_State *L, int idx, qr_opts *o)
{
    static const opt_spec specs[] = {
        {"format", OPT_STRING, "must be a string"}, {"level", OPT_STRING, "must be a string"},
        {"size", OPT_NUMBER, "must be a number"},   {"margin", OPT_NUMBER, "must be a number"},
        {"invert", OPT_BOOLEAN, "must be a boolean"}, {NULL, 0, NULL}};
    static const opt_reader r = {"contiguity.qr", 0, specs};
    const char *s;
    double v;

    o->format = QR_SVG;
    o->level = QR_ECLEVEL_M;
    o->size = QR_DEFAULT_SIZE;
    o->margin = QR_DEFAULT_MARGIN;
    o->invert = 0;
    if (lua_isnoneornil(L, idx))
        return 0;
    if (!lua_istable(L, idx))
        luaL_error(L, "contiguity.qr: options must be a table");
    opt_check(L, idx, &r);

    if ((s = opt_string(L, idx, "format", NULL)) != NULL) {
        if (strcmp(s, "svg") == 0) o->format = QR_SVG;
        else if (strcmp(s, "terminal") == 0) o->format = QR_TERMINAL;
        else if (strcmp(s, "matrix") == 0) o->format = QR_MATRIX;
        else return qr_invalid(L, "format", "format must be one of svg, terminal, matrix");
    }
    if ((s = opt_string(L, idx, "level", NULL)) != NULL) {
        if (strcmp(s, "L") == 0) o->level = QR_ECLEVEL_L;
        else if (strcmp(s, "M") == 0) o->level = QR_ECLEVEL_M;
        else if (strcmp(s, "Q") == 0) o->level = QR_ECLEVEL_Q;
        else if (strcmp(s, "H") == 0) o->level = QR_ECLEVEL_H;
        else return qr_invalid(L, "level", "level must be one of L, M, Q, H");
    }
    v = o->size;
    opt_number(L, idx, "size", &v);
    if (!qr_whole_in(v, 1, QR_MAX_SIZE))
        return qr_invalid(L, "size", "size must be a whole number of pixels from 1 to 100000");
    o->size = (int)v;
    v = o->margin;
    opt_number(L, idx, "margin", &v);
    if (!qr_whole_in(v, 0, QR_MAX_MARGIN))
        return qr_invalid(L, "margin", "margin must be a whole number of modules from 0 to 100");
    o->margin = (int)v;
    opt_get(L, idx, "invert");
    o->invert = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return 0;
}

/* Runs libqrencode and copies its modules into b. Nothing in here raises,
 * so the QRcode is always freed. Returns 0, or an errno value. Text without
 * NUL goes through QRcode_encodeString, which picks numeric/alphanumeric/
 * byte segments and so makes smaller codes; text with NUL as 8-bit data. */
static int qr_encode_bits(const char *text, size_t len, QRecLevel level, qr_bits *b)
{
    QRcode *qr;
    int i, n, err;

    errno = 0;
    if (memchr(text, '\0', len) == NULL)
        qr = QRcode_encodeString(text, 0, level, QR_MODE_8, 1);
    else
        qr = QRcode_encodeData((int)len, (const unsigned char *)text, 0, level);
    if (qr == NULL) {
        err = errno ? errno : EINVAL;
        return err;
    }
    if (qr->width <= 0 || qr->width > QR_MAX_WIDTH) {
        QRcode_free(qr);
        return ERANGE;
    }
    b->width = qr->width;
    n = qr->width * qr->width;
    for (i = 0; i < n; i++)
        b->m[i] = qr->data[i] & 1;
    QRcode_free(qr);
    return 0;
}

/* Module (x, y) of the code with its quiet zone; outside the code is light. */
static int qr_dark(const qr_bits *b, int margin, int x, int y)
{
    x -= margin;
    y -= margin;
    if (x < 0 || y < 0 || x >= b->width || y >= b->width)
        return 0;
    return b->m[y * b->width + x];
}

/* One <path> drawn with a 1-module stroke along each row's dark runs
 * ("M4 4.5h7m2 0h1": a run, then the gap to the next and its length) over a
 * white background: about 7 bytes a run, where one rect per module would be
 * ten times that. crispEdges keeps the module edges sharp at any size. */
static void qr_push_svg(lua_State *L, const qr_bits *b, const qr_opts *o)
{
    luaL_Buffer buf;
    char tmp[160];
    int full = b->width + 2 * o->margin, x, y;

    luaL_buffinit(L, &buf);
    snprintf(tmp, sizeof tmp,
             "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
             "viewBox=\"0 0 %d %d\" shape-rendering=\"crispEdges\">",
             o->size, o->size, full, full);
    luaL_addstring(&buf, tmp);
    snprintf(tmp, sizeof tmp, "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>"
             "<path fill=\"none\" stroke=\"#000\" d=\"", full, full);
    luaL_addstring(&buf, tmp);
    for (y = 0; y < b->width; y++) {
        int end = -1; /* where the row's previous run ended; -1: none yet */
        for (x = 0; x < b->width;) {
            int run;
            if (!b->m[y * b->width + x]) {
                x++;
                continue;
            }
            for (run = 0; x + run < b->width && b->m[y * b->width + x + run]; run++)
                ;
            if (end < 0)
                snprintf(tmp, sizeof tmp, "M%d %d.5h%d", x + o->margin, y + o->margin, run);
            else
                snprintf(tmp, sizeof tmp, "m%d 0h%d", x - end, run);
            luaL_addstring(&buf, tmp);
            x += run;
            end = x;
        }
    }
    luaL_addstring(&buf, "\"/></svg>\n");
    luaL_pushresult(&buf);
}

/* Two modules per character cell with the half blocks. By default the ink
 * (the terminal's foreground) draws the light modules and the quiet zone, so
 * on a dark terminal the code shows dark-on-light with its own light border,
 * as a phone expects; invert draws the dark modules instead, for light
 * terminals. */
static void qr_push_terminal(lua_State *L, const qr_bits *b, const qr_opts *o)
{
    static const char *const cell[4] = {" ", "\xe2\x96\x84", "\xe2\x96\x80", "\xe2\x96\x88"};
    luaL_Buffer buf;
    int full = b->width + 2 * o->margin, x, y;

    luaL_buffinit(L, &buf);
    for (y = 0; y < full; y += 2) {
        for (x = 0; x < full; x++) {
            int top = qr_dark(b, o->margin, x, y) ^ !o->invert;
            int bottom = y + 1 < full ? qr_dark(b, o->margin, x, y + 1) ^ !o->invert : 0;
            luaL_addstring(&buf, cell[top * 2 + bottom]);
        }
        luaL_addchar(&buf, '\n');
    }
    luaL_pushresult(&buf);
}

/* Rows of booleans, true = dark, without the quiet zone. */
static void qr_push_matrix(lua_State *L, const qr_bits *b)
{
    int x, y;
    lua_createtable(L, b->width, 0);
    for (y = 0; y < b->width; y++) {
        lua_createtable(L, b->width, 0);
        for (x = 0; x < b->width; x++) {
            lua_pushboolean(L, b->m[y * b->width + x]);
            lua_rawseti(L, -2, x + 1);
        }
        lua_rawseti(L, -2, y + 1);
    }
}

/* contiguity.qr(text, opts?): the QR code string (or matrix), or nil, err. */
static int qr_encode(lua_State *L)
{
    qr_opts o;
    qr_bits *b;
    size_t len;
    const char *text;
    int err;

    luaL_checktype(L, 1, LUA_TSTRING);
    text = lua_tolstring(L, 1, &len);
    if (qr_read_opts(L, 2, &o) != 0)
        return 2;
    if (len == 0)
        return qr_invalid(L, "text", "text must not be empty");
    b = (qr_bits *)lua_newuserdata(L, sizeof *b);
    /* longer than any QR code holds: the same message, with the level, as any too-long text */
    err = len > QR_MAX_BYTES ? ERANGE : qr_encode_bits(text, len, o.level, b);
    if (err == ENOMEM)
        return luaL_error(L, "contiguity.qr: out of memory");
    if (err == ERANGE) {
        lua_pushfstring(L, "text too long for a QR code at level %s (%d bytes)",
                        o.level == QR_ECLEVEL_L ? "L" : o.level == QR_ECLEVEL_M ? "M"
                        : o.level == QR_ECLEVEL_Q ? "Q" : "H", (int)len);
        return qr_invalid(L, "text", lua_tostring(L, -1));
    }
    if (err != 0)
        return qr_invalid(L, "text", "libqrencode cannot encode this text");
    switch (o.format) {
    case QR_TERMINAL: qr_push_terminal(L, b, &o); break;
    case QR_MATRIX: qr_push_matrix(L, b); break;
    default: qr_push_svg(L, b, &o); break;
    }
    return 1;
}
