/* ops.h: the operation table (one row per endpoint), validation and the request builder. */
#ifndef CONTIGUITY_OPS_H
#define CONTIGUITY_OPS_H

#include "compat.h"

/* Mechanism flags of a row.
 * OPF_IDEMPOTENT: making the call twice is harmless, so it may be retried
 * after the request reached the API (502/503/504, a timeout).
 * OPF_NEVER_RESEND: libcurl must never send the request a second time on
 * its own (its silent retry when a reused connection dies): the body goes
 * through a read callback that hands it out once per attempt and refuses
 * to rewind (curl_io.c). Every op that is not idempotent has it. */
#define OPF_IDEMPOTENT 1
#define OPF_NEVER_RESEND 2

/* Where a call's id comes from. */
#define OPS_ID_NONE 0 /* the argument is a params table, sent as the JSON body */
#define OPS_ID_ARG 1  /* the argument is the otp_id string, the path's {otp_id} */

/* A params field: its name, how it is checked, whether it must be there. */
typedef struct ops_field {
    const char *name;
    int check;
    int required;
} ops_field;

/* One endpoint: everything about one call. */
typedef struct ops_op {
    const char *name;     /* "otp.reverse.verify": what errors and debug lines say */
    const char *table;    /* where the call lives in a client: "otp" or "otp.reverse" */
    const char *names[3]; /* its names there (NULL-terminated): {"new", "send"} */
    const char *method;   /* "POST" or "GET" */
    const char *path;     /* under base_url; "{otp_id}" stands for the escaped id */
    int id_from;          /* OPS_ID_* */
    int flags;            /* OPF_* */
    const char *guard;    /* how contiguity.guard counts the call, or NULL */
    const char *subject;  /* the params field it counts by */
    ops_field fields[7];  /* validated before any I/O; ends with a NULL name */
} ops_op;

/* The rows: ops_get(0) .. ops_get(ops_count() - 1). */
static int ops_count(void);
static const ops_op *ops_get(int i);

/* Raises for misuse no data can cause: the argument at arg is not a table
 * (or, for an id op, not a string). */
static void ops_check_arg(lua_State *L, const ops_op *op, int arg);

/* Validates the argument at arg and pushes the path (the id escaped into
 * it) and the body (a JSON string, or nil). Returns 0 when it pushed those
 * two, else 2 with nil, err (kind "invalid") pushed instead. */
static int ops_build(lua_State *L, const ops_op *op, int arg);

#endif
