/* lua_host.c: a minimal stand-in for the lua5.4 command (`lua_host [-e
 * chunk]... [--] [script [args...]]`), built with the sanitizers by `make sanitize` so the ASan and
 * UBSan runtimes are in the executable itself. Preloading them into the
 * stock, uninstrumented lua5.4 (LD_PRELOAD) would also put them into every
 * child the specs start (curl, zbarimg, a child Lua...), which is not what
 * is being checked and makes some of those children hang or fail.
 *
 * Like lua5.4: -e runs a chunk, the global `arg` table (arg[0] the script,
 * earlier words at negative indices), the script gets the arguments as `...`, LUA_PATH/LUA_CPATH are
 * honoured (by the package library), an uncaught error prints a traceback
 * and exits 1, os.exit works. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

static int host_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL && !luaL_callmeta(L, 1, "__tostring"))
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    else if (msg == NULL)
        msg = lua_tostring(L, -1);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Runs the function on top with n arguments under the traceback handler;
 * prints the error and returns 0 when it raised. */
static int host_call(lua_State *L, const char *prog, int status, int n)
{
    if (status == LUA_OK) {
        int base = lua_gettop(L) - n;
        lua_pushcfunction(L, host_traceback);
        lua_insert(L, base);
        status = lua_pcall(L, n, 0, base);
        lua_remove(L, base);
    }
    if (status != LUA_OK) {
        fprintf(stderr, "%s: %s\n", prog, lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    lua_State *L;
    int i, script, ok = 1;
    for (script = 1; script < argc; script++) { /* the first word that is not an option */
        if (strcmp(argv[script], "--") == 0) {
            script++;
            break;
        }
        if (strcmp(argv[script], "-e") == 0 && script + 1 < argc)
            script++;
        else if (argv[script][0] != '-' || argv[script][1] == '\0')
            break;
        else {
            fprintf(stderr, "usage: %s [-e chunk]... [--] [script [args...]]\n", argv[0]);
            return 2;
        }
    }
    L = luaL_newstate();
    if (L == NULL)
        return 1;
    luaL_openlibs(L);
    lua_createtable(L, argc, 2);
    for (i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - (script < argc ? script : 0));
    }
    lua_setglobal(L, "arg");
    for (i = 1; ok && i < script; i++)
        if (strcmp(argv[i], "-e") == 0) {
            i++;
            ok = host_call(L, argv[0], luaL_loadbuffer(L, argv[i], strlen(argv[i]), "=(command line)"), 0);
        }
    if (ok && script < argc) {
        int status = luaL_loadfile(L, strcmp(argv[script], "-") == 0 ? NULL : argv[script]);
        if (status == LUA_OK)
            for (i = script + 1; i < argc; i++)
                lua_pushstring(L, argv[i]);
        ok = host_call(L, argv[0], status, status == LUA_OK ? argc - script - 1 : 0);
    }
    lua_close(L);
    return ok ? 0 : 1;
}
