/* lua_host.c: a minimal stand-in for the lua5.4 command (`lua_host script
 * [args...]`), built with the sanitizers by `make sanitize` so the ASan and
 * UBSan runtimes are in the executable itself. Preloading them into the
 * stock, uninstrumented lua5.4 (LD_PRELOAD) would also put them into every
 * child the specs start (curl, zbarimg, a child Lua...), which is not what
 * is being checked and makes some of those children hang or fail.
 *
 * Like lua5.4: the global `arg` table (arg[0] the script, arg[-1] this
 * program), the script gets the arguments as `...`, LUA_PATH/LUA_CPATH are
 * honoured (by the package library), an uncaught error prints a traceback
 * and exits 1, os.exit works. */
#include <stdio.h>
#include <stdlib.h>
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

int main(int argc, char **argv)
{
    lua_State *L;
    int i, status;
    if (argc < 2) {
        fprintf(stderr, "usage: %s script [args...]\n", argv[0]);
        return 2;
    }
    L = luaL_newstate();
    if (L == NULL)
        return 1;
    luaL_openlibs(L);
    lua_createtable(L, argc - 2, 2);
    for (i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");
    lua_pushcfunction(L, host_traceback);
    status = luaL_loadfile(L, argv[1]);
    if (status == LUA_OK) {
        for (i = 2; i < argc; i++)
            lua_pushstring(L, argv[i]);
        status = lua_pcall(L, argc - 2, 0, 1);
    }
    if (status != LUA_OK)
        fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
    lua_close(L);
    return status == LUA_OK ? 0 : 1;
}
