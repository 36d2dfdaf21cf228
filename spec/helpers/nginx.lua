-- A throwaway nginx with the Lua module for specs that run contiguity.resty
-- inside nginx, started and stopped here (issue 18 says why it is built so):
-- - its prefix (under $TMPDIR) holds everything it loads: a copy of the
--   5.1-ABI build (build/jit/contiguity.so), of src/contiguity/*.lua and of
--   the handlers' spec/helpers/resty_app.lua. The copies are what nginx
--   reads for the whole run, so a rebuild in the checkout meanwhile (another
--   `make`) cannot change a loaded library under a running worker, and the
--   config names no path of the checkout (which may hold spaces or quotes);
-- - its Lua paths name those copies and the system's Lua 5.1 directories and
--   nothing else: no ';;', which would splice in the LUA_PATH/LUA_CPATH of
--   whoever started nginx (spec/run exports build/<v>/?.so: another Lua's
--   build, loaded in silence when the right one was unreadable);
-- - before it starts, nginx's own LuaJIT loads the copy (an init_by_lua that
--   exits), so a wrong or broken build is an error naming the file;
-- - its workers run as the user who started it, root included: started by
--   root they would otherwise run as nobody, who cannot enter a checkout or
--   a $TMPDIR that is 0700 (root's home, `mktemp -d`, libpam-tmpdir's
--   /tmp/user/0). It is a loopback-only test server run with the spec
--   process's own rights.
local socket = require("socket")
local shell = require("spec.helpers.shell")

local M = {}

local MODULES = os.getenv("NGINX_MODULES_DIR") or "/usr/lib/nginx/modules"

-- The system's Lua 5.1 directories (Debian: /usr/share/lua/5.1 and
-- /usr/lib/<multiarch>/lua/5.1): cjson, resty.core and the like.
local SYSTEM_PATH = "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"
local SYSTEM_CPATH = (function()
  local _, out = shell.run('for d in /usr/lib/*/lua/5.1 /usr/lib/lua/5.1; do [ -d "$d" ] && echo "$d"; done; true')
  local dirs = {}
  for d in out:gmatch("(/[^\n]+)") do dirs[#dirs + 1] = d .. "/?.so" end
  return table.concat(dirs, ";")
end)()

-- `user` for nginx.conf: the invoking user's, when that is root (nginx
-- ignores the directive, with a warning, for anyone else).
local function user_line()
  local _, uid = shell.run("id -u")
  if not uid:match("^0%s") then return "" end
  local _, name = shell.run("id -un")
  local _, group = shell.run("id -gn")
  return ("user %s %s;"):format(name:match("%S+"), group:match("%S+"))
end

-- Whether process pid runs: signalable and not a zombie (a daemonised
-- nginx's parent is init, which may take a second or more to reap it; it
-- has exited, and closed its ports, as soon as it is a zombie).
function M.alive(pid)
  if not shell.run("kill -0 " .. pid) then return false end
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end -- reaped since
  local state = (f:read("*l") or ""):match("%) (%a)")
  f:close()
  return state ~= "Z"
end

-- "NAME='value' ..." for a command line.
local function env_words(env)
  local words = {}
  for k, v in pairs(env or {}) do words[#words + 1] = k .. "=" .. shell.quote(v) .. " " end
  table.sort(words)
  return table.concat(words)
end

local HEAD = [[
load_module MODULES/ndk_http_module.so;
load_module MODULES/ngx_http_lua_module.so;
]]

local LUA_PATHS = [[
    lua_package_path "PREFIX/lua/?.lua;PREFIX/lua/?/init.lua;SYSTEM_PATH";
    lua_package_cpath "PREFIX/lib/?.so;SYSTEM_CPATH";
]]

-- nginx.new{ name =, port =, workers = 1, http = "...", env =, module = }:
-- `http` is the inside of the http block after the common lines (temp
-- paths, Lua paths); PORT in it becomes the port. `env` (a table) is set
-- in nginx's environment; `module` is the contiguity.so to copy (default
-- build/jit/contiguity.so). Returns an object with start(), stop(), base
-- (its URL) and prefix.
function M.new(opts)
  local self = {
    port = opts.port,
    base = "http://127.0.0.1:" .. opts.port,
    prefix = (os.getenv("TMPDIR") or "/tmp") .. "/contiguity-" .. opts.name .. "." .. opts.port,
    module = opts.module or (shell.REPO .. "/build/jit/contiguity.so"),
  }
  local function fill(text)
    return (text:gsub("MODULES", MODULES):gsub("SYSTEM_CPATH", SYSTEM_CPATH):gsub("SYSTEM_PATH", SYSTEM_PATH)
      :gsub("PREFIX", self.prefix))
  end
  local conf = fill(HEAD .. [[
USER
daemon on;
worker_processes WORKERS;
error_log PREFIX/logs/error.log warn;
pid PREFIX/logs/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path PREFIX/tmp/client_body;
    proxy_temp_path PREFIX/tmp/proxy;
    fastcgi_temp_path PREFIX/tmp/fastcgi;
    uwsgi_temp_path PREFIX/tmp/uwsgi;
    scgi_temp_path PREFIX/tmp/scgi;
]] .. LUA_PATHS .. [[
HTTP
}
]]):gsub("USER", user_line()):gsub("WORKERS", tostring(opts.workers or 1))
    :gsub("HTTP", function() return (opts.http:gsub("PORT", tostring(opts.port))) end)
  -- nginx's own LuaJIT loads the module and exits before anything listens
  local preflight = fill(HEAD .. [[
error_log PREFIX/logs/preflight.log warn;
pid PREFIX/logs/preflight.pid;
events {}
http {
]] .. LUA_PATHS .. [[
    init_by_lua_block { require("contiguity"); os.exit(0) }
}
]])

  function self.stop()
    local f = io.open(self.prefix .. "/logs/nginx.pid")
    if f then
      local pid = f:read("*n")
      f:close()
      if pid then
        shell.run("kill -QUIT " .. pid)
        for _ = 1, 100 do
          if not M.alive(pid) then break end
          socket.sleep(0.05)
        end
        if M.alive(pid) then shell.run("kill -KILL " .. pid) end
      end
    end
    shell.run("rm -rf " .. shell.quote(self.prefix))
  end

  function self.start()
    local so = io.open(self.module)
    assert(so, self.module .. " is missing: nginx's LuaJIT needs the 5.1-ABI build (make build LUA=jit)")
    so:close()
    self.stop()
    local p, q = shell.quote(self.prefix), shell.quote
    local ok, out = shell.run(("mkdir -p %s/conf %s/logs %s/tmp %s/lib %s/lua/spec/helpers"
      .. " && cp %s %s/lib/contiguity.so && cp -R %s %s/lua/ && cp %s %s/lua/spec/helpers/")
      :format(p, p, p, p, p, q(self.module), p, q(shell.REPO .. "/src/contiguity"), p,
              q(shell.REPO .. "/spec/helpers/resty_app.lua"), p))
    assert(ok, out)
    shell.write_file(self.prefix .. "/conf/preflight.conf", preflight)
    shell.write_file(self.prefix .. "/conf/nginx.conf", conf)
    local env = env_words(opts.env)
    ok, out = shell.run(env .. "nginx -p " .. p .. " -c " .. p .. "/conf/preflight.conf -e "
      .. p .. "/logs/preflight.log")
    if not ok then
      error(("nginx's LuaJIT cannot load %s/lib/contiguity.so, copied from %s (nginx needs the 5.1-ABI build: "
        .. "make build LUA=jit):\n%s"):format(self.prefix, self.module, out))
    end
    ok, out = shell.run(env .. "nginx -p " .. p .. " -c " .. p .. "/conf/nginx.conf -e " .. p .. "/logs/error.log")
    if not ok then
      local log = select(2, shell.run("tail -n 5 " .. p .. "/logs/error.log"))
      error("nginx did not start on port " .. self.port .. ": " .. out .. log)
    end
    for _ = 1, 100 do
      local c = socket.tcp()
      c:settimeout(0.1)
      local up = c:connect("127.0.0.1", self.port)
      c:close()
      if up then return end
      socket.sleep(0.05)
    end
    error("nginx did not listen on port " .. self.port)
  end

  return self
end

-- The internal location as the README ("OpenResty / nginx") documents it,
-- minus TLS (the sandbox is plain http on loopback): path and headers come
-- from the subrequest's own variables (the capture's vars) and nothing of
-- the client's request is forwarded. upstream: an upstream block's name or
-- host:port.
function M.api_location(name, upstream, read_timeout)
  return (([[
        location = NAME {
            internal;
            set $contiguity_path $contiguity_path;
            set $contiguity_authorization $contiguity_authorization;
            set $contiguity_user_agent $contiguity_user_agent;
            proxy_pass http://UPSTREAM$contiguity_path;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_headers off;
            proxy_set_header Authorization $contiguity_authorization;
            proxy_set_header User-Agent $contiguity_user_agent;
            proxy_set_header Content-Type application/json;
            proxy_set_header Accept application/json;
            proxy_connect_timeout 2s;
            proxy_send_timeout 5s;
            proxy_read_timeout READ;
        }
]]):gsub("NAME", name):gsub("UPSTREAM", upstream):gsub("READ", read_timeout or "10s"))
end

-- Requests to every URL of `urls` at once (curl --parallel, one connection
-- each; `args` are more curl options, already quoted; `discard`: bodies go
-- to /dev/null). Returns curl's stdout; raises when curl fails.
function M.parallel(urls, args, discard)
  local list = os.tmpname()
  local f = assert(io.open(list, "w"))
  for _, url in ipairs(urls) do
    f:write(('url = "%s"\n'):format(url))
    if discard then f:write('output = "/dev/null"\n') end
  end
  f:close()
  local ok, out = shell.run("curl -sS --parallel --parallel-immediate --parallel-max " .. #urls
    .. " " .. (args or "") .. " -K " .. list)
  os.remove(list)
  assert(ok, out)
  return out
end

return M
