-- .luacheckrc: luacheck over every Lua file of the project; `make test` runs it
-- (`make lint`) and wants zero warnings.
std = "max"                 -- code that runs on Lua 5.1-5.4 and LuaJIT
max_line_length = 120
max_comment_line_length = false -- a file's first line says what it is for, whole
exclude_files = { "build/**", "lua_modules/**", "tmp/**" }

-- What runs inside nginx's Lua module (OpenResty): the ngx API.
local nginx = { std = "max+ngx_lua" }
files["sandbox/**/*.lua"] = nginx
files["src/contiguity/resty.lua"] = nginx
files["examples/openresty/**/*.lua"] = nginx
files["examples/webhook_openresty.lua"] = nginx
files["bench/resty_handler.lua"] = nginx
files["bench/guard_handler.lua"] = nginx
files["spec/helpers/resty_app.lua"] = nginx
-- The guard and its stores run in plain Lua and in nginx: they look for ngx.
files["src/contiguity/guard.lua"] = { read_globals = { "ngx" } }
files["src/contiguity/guard/*.lua"] = { read_globals = { "ngx" } }

files["spec/**/*.lua"] = { std = "+busted" }
files["spec/helpers/resty_app.lua"] = { std = "max+ngx_lua+busted" }

-- wrk's Lua scripts set its hooks as globals.
files["bench/verify.lua"] = { globals = { "wrk", "request", "response", "done", "setup", "init" } }
-- Spec titles and tables of cases read better whole.
files["spec/**/*.lua"].max_line_length = false
files["bench/report.lua"] = { max_line_length = false }
files["spec/helpers/tarantool_app.lua"] = { read_globals = { "_TARANTOOL" } }
-- The copas socket adapter's methods keep LuaSocket's method shape (self unused).
files["examples/copas.lua"] = { unused_args = false }
