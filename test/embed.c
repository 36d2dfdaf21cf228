/* embed.c: a C host embedding Lua 5.4 the way game servers do, to check the
 * module under a sanitizer or a thread checker.
 *
 *   (a) 1000 cycles: new state, openlibs, require "contiguity", a blocking
 *       call against the sandbox (a 404 api error), async calls left in
 *       flight (some half-driven), then lua_close without waiting;
 *   (b) 8 threads, each with its own Lua state, making blocking and async
 *       calls at the same time, then joined.
 *
 * Environment: CONTIGUITY_SANDBOX_URL (the sandbox base URL, required),
 * CONTIGUITY_CPATH (where contiguity.so is, e.g. "build/5.4/?.so"),
 * EMBED_CYCLES and EMBED_THREAD_ROUNDS (smaller under slow tools).
 * Exits 0 only when every cycle and every thread succeeded. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#define EMBED_THREADS 8

static const char *embed_url;
static const char *embed_cpath;

/* One cycle's Lua side. mode: 0 leave async calls queued, 1 drive them
 * half-way with poll(0), 2 close the client explicitly (callbacks run with
 * "cancelled"), 3 wait for them all and check each result, 4 a <close>
 * client. Returns true or raises. */
static const char embed_script[] =
    "local url, mode, tag = ...\n"
    "local contiguity = require 'contiguity'\n"
    "local function check_404(res, err, what)\n"
    "  if res ~= nil or type(err) ~= 'table' or err.kind ~= 'api' or err.status ~= 404 then\n"
    "    error(what .. ': expected a 404 api error, got ' .. tostring(res) .. ', ' .. tostring(err), 0)\n"
    "  end\n"
    "end\n"
    "local c = contiguity.new('contiguity_sk_embed_test', { base_url = url, timeout = 20 })\n"
    "local res, err = c.otp.verify({ otp_id = 'otp_embed_' .. tag, otp = '123456' })\n"
    "check_404(res, err, 'verify')\n"
    "local seen = 0\n"
    "for i = 1, 3 do\n"
    "  assert(c.otp.verify({ otp_id = 'otp_async_' .. tag .. '_' .. i, otp = '1' }, function(res, err)\n"
    "    seen = seen + 1\n"
    "    if mode == 3 then check_404(res, err, 'async verify') end\n"
    "  end))\n"
    "end\n"
    "assert(c.otp.reverse.verify('r_otp_embed_' .. tag, function() seen = seen + 1 end))\n"
    "if mode == 1 then c:poll(0); c:poll(0.001)\n"
    "elseif mode == 2 then c:close(); assert(seen == 4, 'close ran ' .. seen .. ' callbacks')\n"
    "elseif mode == 3 then c:wait(20); assert(seen == 4, 'wait ran ' .. seen .. ' callbacks')\n"
    "elseif mode == 4 then\n"
    "  local d <close> = contiguity.new('contiguity_sk_embed_test', { base_url = url })\n"
    "  d.otp.verify({ otp_id = 'otp_close', otp = '1' }, function() end)\n"
    "  d:poll(0)\n"
    "end\n"
    "return true\n";

/* A fresh state that finds the module under test first. */
static lua_State *embed_state(void)
{
    lua_State *L = luaL_newstate();
    if (L == NULL)
        return NULL;
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_pushstring(L, embed_cpath);
    lua_pushliteral(L, ";");
    lua_getfield(L, -3, "cpath");
    lua_concat(L, 3);
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);
    return L;
}

/* Runs the script once in L; prints the error and returns 0 on failure. */
static int embed_run(lua_State *L, int mode, const char *tag)
{
    if (luaL_loadbuffer(L, embed_script, sizeof(embed_script) - 1, "=embed") != LUA_OK) {
        fprintf(stderr, "embed: load: %s\n", lua_tostring(L, -1));
        return 0;
    }
    lua_pushstring(L, embed_url);
    lua_pushinteger(L, mode);
    lua_pushstring(L, tag);
    if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
        fprintf(stderr, "embed: %s (mode %d): %s\n", tag, mode, lua_tostring(L, -1));
        return 0;
    }
    lua_pop(L, 1);
    return 1;
}

/* (a): a whole state lifetime per cycle, so load, init and teardown of the
 * module run 1000 times, with calls still in flight at lua_close. */
static int embed_cycles(int cycles)
{
    int i, failed = 0;
    for (i = 0; i < cycles; i++) {
        char tag[32];
        lua_State *L = embed_state();
        if (L == NULL) {
            fprintf(stderr, "embed: cannot create a Lua state\n");
            return 1;
        }
        snprintf(tag, sizeof(tag), "c%d", i);
        failed += !embed_run(L, i % 5, tag);
        lua_close(L);
        if (failed > 5)
            break;
    }
    return failed;
}

typedef struct embed_thread {
    pthread_t id;
    int n, rounds, failed;
} embed_thread;

/* (b): one Lua state per thread; every mode, so blocking calls, async
 * calls, close and teardown race with the other threads'. */
static void *embed_thread_main(void *arg)
{
    embed_thread *t = (embed_thread *)arg;
    lua_State *L = embed_state();
    int r;
    if (L == NULL) {
        t->failed = 1;
        return NULL;
    }
    for (r = 0; r < t->rounds; r++) {
        char tag[32];
        snprintf(tag, sizeof(tag), "t%d_%d", t->n, r);
        t->failed += !embed_run(L, r % 5, tag);
        if (r % 10 == 9) { /* and a brand new state now and then */
            lua_close(L);
            L = embed_state();
            if (L == NULL) {
                t->failed++;
                return NULL;
            }
        }
    }
    lua_close(L);
    return NULL;
}

static int embed_threads(int rounds)
{
    embed_thread t[EMBED_THREADS];
    int i, failed = 0;
    for (i = 0; i < EMBED_THREADS; i++) {
        t[i].n = i;
        t[i].rounds = rounds;
        t[i].failed = 0;
        if (pthread_create(&t[i].id, NULL, embed_thread_main, &t[i]) != 0) {
            fprintf(stderr, "embed: pthread_create failed\n");
            return 1;
        }
    }
    for (i = 0; i < EMBED_THREADS; i++) {
        pthread_join(t[i].id, NULL);
        failed += t[i].failed;
    }
    return failed;
}

static int embed_env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? atoi(v) : def;
}

int main(void)
{
    int cycles = embed_env_int("EMBED_CYCLES", 1000);
    int rounds = embed_env_int("EMBED_THREAD_ROUNDS", 40);
    int failed;
    embed_url = getenv("CONTIGUITY_SANDBOX_URL");
    embed_cpath = getenv("CONTIGUITY_CPATH");
    if (embed_url == NULL || *embed_url == '\0') {
        fprintf(stderr, "embed: set CONTIGUITY_SANDBOX_URL to a running sandbox\n");
        return 2;
    }
    if (embed_cpath == NULL || *embed_cpath == '\0')
        embed_cpath = "build/5.4/?.so";
    failed = embed_cycles(cycles);
    printf("embed: %d state cycles, %d failed\n", cycles, failed);
    if (failed == 0) {
        failed = embed_threads(rounds);
        printf("embed: %d threads x %d rounds, %d failed\n", EMBED_THREADS, rounds, failed);
    }
    return failed == 0 ? 0 : 1;
}
