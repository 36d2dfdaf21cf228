/* options.h: one reader for option tables (contiguity.new, contiguity.qr, webhook opts). */
#ifndef CONTIGUITY_OPTIONS_H
#define CONTIGUITY_OPTIONS_H

#include "compat.h"

/* The Lua types an option may have (nil, "absent", always may). */
#define OPT_STRING 1
#define OPT_NUMBER 2
#define OPT_BOOLEAN 4
#define OPT_FALSE 8 /* false only: "off" */
#define OPT_FUNCTION 16
#define OPT_TABLE 32

typedef struct opt_spec {
    const char *name;
    int types;        /* OPT_* bits */
    const char *must; /* the rest of "option 'name' ..." when it is wrong */
} opt_spec;

/* Who reads: the name in messages, and the argument a bad table is
 * reported against (0: a plain "who: option ..." error instead of
 * luaL_argerror). specs ends with a NULL name. */
typedef struct opt_reader {
    const char *who;
    int arg;
    const opt_spec *specs;
} opt_reader;

/* Raises unless every key of the table at idx is a known option of a
 * permitted type: wrong options are misuse, never data. */
static void opt_check(lua_State *L, int idx, const opt_reader *r);

/* Raises "option 'name' <must>" for a value out of its range. */
static int opt_fail(lua_State *L, const opt_reader *r, const char *name);

/* Pushes option k of the table at idx, read raw: an options table's
 * metamethods never run (opt_check walks it with lua_next, raw too), so
 * nothing the module has not checked, and no Lua code, gets in. */
static void opt_get(lua_State *L, int idx, const char *k);

/* Typed reads after opt_check. A string stays valid while the options
 * table holds it: raw reads run no code that could take it out. */
static const char *opt_string(lua_State *L, int idx, const char *k, size_t *len);
static int opt_number(lua_State *L, int idx, const char *k, double *v); /* 1 when set */

/* An absolute http(s) URL with a host and no whitespace or control bytes
 * (base_url, and success_url in ops.c). */
static int opt_is_url(const char *s, size_t n);

/* The plain C configuration of a client (contiguity.new). */
typedef struct cg_config {
    double timeout, connect_timeout, deadline; /* seconds */
    int localhost;        /* base_url's host is localhost (connected without a lookup) */
    long max_connections;
    size_t max_response;
    int max_retries;
} cg_config;

/* contiguity.new's options at idx: opt_check_client raises for unknown
 * keys and wrong types; opt_client reads the values into cfg, raising for
 * one out of range, and pushes the normalised base_url (the option, else
 * CONTIGUITY_BASE_URL, else the real API). */
static void opt_check_client(lua_State *L, int idx);

/* The token: the string at index 1, else CONTIGUITY_API_KEY, else
 * CONTIGUITY_TOKEN, left at index 1; raises when there is none or it looks
 * wrong, never echoing it. */
static void opt_token(lua_State *L);

/* Pushes the User-Agent: "contiguity-lua/VERSION libcurl/LIBCURL Lua/5.4",
 * then the user_agent option (raises if it could break the header). */
static void opt_push_user_agent(lua_State *L, int opts, const char *version,
                                const char *libcurl);
static void opt_client(lua_State *L, int idx, cg_config *cfg);

#endif
