/* client.h: the client userdata (contiguity.Client) that every part of a call reads. */
#ifndef CONTIGUITY_CLIENT_H
#define CONTIGUITY_CLIENT_H

#include "compat.h"
#include "options.h"
#include "curl_io.h"
#include "curl_multi.h"

#define CG_CLIENT_MT "contiguity.Client"

/* The user value of a client (a table) holds its Lua values: base_url,
 * auth, user_agent, cainfo, capath, debug, transport, guard, otp (the call
 * tables) and pending (curl_multi.c). */
typedef struct cg_client {
    cg_config cfg;      /* contiguity.new's options */
    cio_conf cc;        /* what every libcurl handle of the client gets */
    CURL *easy;         /* blocking transfers; NULL when closed or host transport */
    cg_io io;           /* the blocking transfer's buffers */
    multi_state async;  /* many calls in flight (curl_multi.c) */
    int closed;
    int debug;          /* 0 off, 1 stderr, 2 a Lua function (user value's debug) */
    int host;           /* a Lua transport function moves the bytes */
    int guard;          /* a contiguity.guard in the user value */
} cg_client;

#endif
