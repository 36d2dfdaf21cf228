/* curl_easy.h: blocking calls over one reused easy handle. */
#ifndef CONTIGUITY_CURL_EASY_H
#define CONTIGUITY_CURL_EASY_H

#include "compat.h"
#include "ops.h"

struct cg_client;

/* Creates the client's easy handle (cainfo/capath may be NULL); 1 on success. */
static int easy_open(struct cg_client *c, const char *cainfo, const char *capath);

/* Makes the call: the request is url and the body at index body (nil for
 * a GET); failed attempts are made again when that is safe, never past
 * the call's deadline. Pushes the decoded result (returns 1) or nil, err
 * (returns 2). */
static int easy_perform(lua_State *L, struct cg_client *c, const ops_op *op, const char *url,
                        int body);

static void easy_close(struct cg_client *c);

#endif
