/* oom.c: every Lua allocation of a call path failing in turn, under ASan.
 *
 * A host embedding Lua 5.4 with an allocator that fails the Nth growing
 * allocation after the script arms it, for N = 1, 2, 3 ... until a run
 * completes without reaching N. Each run is a fresh state that makes
 * blocking and async calls against the sandbox, waits, closes the client,
 * then lua_close. A failed allocation must surface as a Lua memory error
 * (or be absorbed), never as a crash, a use-after-free or a leak: built
 * with ASan and LeakSanitizer by `make sanitize`, which runs it.
 *
 * Environment: CONTIGUITY_SANDBOX_URL (required), CONTIGUITY_CPATH (where
 * contiguity.so is), OOM_FROM and OOM_MAX (the runs, default 1 to 20000: a
 * range narrows down a failure). Exits 0 when
 * a run reached the end of the script without its allocation failing. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

typedef struct oom_alloc_state {
    long armed;   /* counting the script's allocations */
    long count;   /* growing allocations since armed */
    long fail_at; /* the one that fails */
    int failed;   /* it did */
} oom_alloc_state;

/* Lua may assume that shrinking never fails: only growth does. */
static void *oom_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    oom_alloc_state *s = (oom_alloc_state *)ud;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    /* the Nth fails, and so does Lua 5.4's retry after its emergency
     * collection, so that the failure reaches the code as a memory error */
    if (s->armed && (ptr == NULL || nsize > osize) && ++s->count >= s->fail_at &&
        s->count <= s->fail_at + 1) {
        s->failed = 1;
        return NULL;
    }
    return realloc(ptr, nsize);
}

static int oom_arm(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    ((oom_alloc_state *)ud)->armed = 1;
    return 0;
}

/* The calls under test: the blocking and the async path, the guard's
 * check and record, close with calls in flight; each call protected, as an
 * application that catches errors would, so that what a failed allocation
 * leaves behind is used afterwards. */
static const char oom_script[] =
    "local url, arm = ...\n"
    "local contiguity = require 'contiguity'\n"
    "-- no collection during the run: what a failed call leaves unreferenced\n"
    "-- stays in memory, as it may in a long-lived host, until lua_close\n"
    "collectgarbage('stop')\n"
    "arm()\n"
    "local c = contiguity.new('contiguity_sk_oom_test', { base_url = url, max_retries = 0,\n"
    "  guard = { sends_per_number = { 100, 60 } } })\n"
    "local seen = 0\n"
    "local function cb() seen = seen + 1 end\n"
    "-- an application that catches errors goes on after a memory error\n"
    "for i = 1, 3 do\n"
    "  pcall(c.otp.verify, { otp_id = 'otp_oom_' .. i, otp = '1' }, cb)\n"
    "end\n"
    "pcall(c.otp.new, { to = '+15550001111', language = 'en', name = 'Oom' }, cb)\n"
    "pcall(c.otp.reverse.verify, 'r_oom', cb)\n"
    "pcall(c.otp.verify, { otp_id = 'otp_oom_blocking', otp = '1' })\n"
    "pcall(c.otp.new, { to = '+15550001111', language = 'en', name = 'Oom' })\n"
    "pcall(c.wait, c, 10)\n"
    "-- a second round: whatever the first left in libcurl finishes by now\n"
    "for i = 1, 2 do pcall(c.otp.reverse.verify, 'r_oom_' .. i, cb) end\n"
    "pcall(c.wait, c, 10)\n"
    "pcall(c.otp.verify, { otp_id = 'otp_oom_left', otp = '1' }, cb)\n"
    "c:close()\n"
    "return seen\n";

/* One run failing the fail_at-th allocation; returns 1 when the script
 * ran to its end without reaching it, 0 when it did, -1 on a harness error. */
static int oom_run(const char *url, const char *cpath, long fail_at)
{
    oom_alloc_state s = {0, 0, 0, 0};
    lua_State *L;
    int rc, done;
    s.fail_at = fail_at;
    L = lua_newstate(oom_alloc, &s);
    if (L == NULL)
        return -1;
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_pushstring(L, cpath); /* the module under test first, then the system's (cjson) */
    lua_pushliteral(L, ";");
    lua_getfield(L, -3, "cpath");
    lua_concat(L, 3);
    lua_setfield(L, -2, "cpath");
    lua_getfield(L, -1, "path");
    lua_pushliteral(L, "src/?.lua;"); /* contiguity.guard, from the checkout */
    lua_insert(L, -2);
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    if (luaL_loadbuffer(L, oom_script, sizeof(oom_script) - 1, "=oom") != 0) {
        fprintf(stderr, "oom: %s\n", lua_tostring(L, -1));
        lua_close(L);
        return -1;
    }
    lua_pushstring(L, url);
    lua_pushcfunction(L, oom_arm);
    rc = lua_pcall(L, 2, 1, 0);
    s.armed = 0; /* the rest (collection, close) runs with memory */
    if (rc != 0 && !s.failed) {
        fprintf(stderr, "oom: run %ld failed without a failed allocation: %s\n", fail_at,
                lua_tostring(L, -1));
        lua_close(L);
        return -1;
    }
    done = rc == 0 && !s.failed;
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    lua_close(L);
    return done;
}

int main(void)
{
    const char *url = getenv("CONTIGUITY_SANDBOX_URL");
    const char *cpath = getenv("CONTIGUITY_CPATH");
    const char *max = getenv("OOM_MAX"), *from = getenv("OOM_FROM");
    const char *cjson = getenv("OOM_CJSON_SO");
    long n, limit = max ? atol(max) : 20000;
    if (url == NULL || *url == '\0') {
        fprintf(stderr, "oom: set CONTIGUITY_SANDBOX_URL\n");
        return 2;
    }
    if (cpath == NULL || *cpath == '\0')
        cpath = "build/5.4/?.so";
    /* lua_close unloads lua-cjson; kept loaded, a leak report can name its
     * functions (lsan.supp lists the one leak that is lua-cjson's own) */
    if (cjson != NULL && *cjson != '\0' && dlopen(cjson, RTLD_NOW | RTLD_NODELETE) == NULL)
        fprintf(stderr, "oom: %s\n", dlerror());
    for (n = from ? atol(from) : 1; n <= limit; n++) {
        int r = oom_run(url, cpath, n);
        if (r < 0)
            return 1;
        if (r == 1) {
            printf("oom: the script's first %ld allocations each failed in turn, no crash, no leak\n",
                   n - 1);
            return 0;
        }
    }
    fprintf(stderr, "oom: the script still reached a failing allocation after %ld runs\n", limit);
    return 1;
}
