-- A throwaway nginx with the Lua module for specs that run contiguity.resty
-- inside nginx: its own prefix under $TMPDIR, the repo's src/ and the
-- 5.1-ABI build (build/jit) on its Lua paths, started and stopped here.
local socket = require("socket")
local shell = require("spec.helpers.shell")

local M = {}

local MODULES = os.getenv("NGINX_MODULES_DIR") or "/usr/lib/nginx/modules"

-- nginx.new{ name =, port =, workers = 1, http = "..." }: `http` is the
-- inside of the http block after the common lines (temp paths, Lua paths);
-- PORT in it becomes the port. Returns an object with start(), stop(),
-- base (its URL) and prefix.
function M.new(opts)
  local self = {
    port = opts.port,
    base = "http://127.0.0.1:" .. opts.port,
    prefix = (os.getenv("TMPDIR") or "/tmp") .. "/contiguity-" .. opts.name .. "." .. opts.port,
  }
  local user = select(2, shell.run("id -u")):match("^0") and "user nobody nogroup;" or ""
  local conf = ([[
load_module MODULES/ndk_http_module.so;
load_module MODULES/ngx_http_lua_module.so;
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
    lua_package_path "REPO/src/?.lua;REPO/?.lua;/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;;";
    lua_package_cpath "REPO/build/jit/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";
HTTP
}
]]):gsub("MODULES", MODULES):gsub("USER", user):gsub("WORKERS", tostring(opts.workers or 1))
    :gsub("PREFIX", self.prefix):gsub("REPO", shell.REPO)
    :gsub("HTTP", function() return (opts.http:gsub("PORT", tostring(opts.port))) end)

  function self.stop()
    local f = io.open(self.prefix .. "/logs/nginx.pid")
    if f then
      local pid = f:read("*n")
      f:close()
      if pid then
        shell.run("kill -QUIT " .. pid)
        for _ = 1, 100 do
          if not shell.run("kill -0 " .. pid) then break end
          socket.sleep(0.05)
        end
        shell.run("kill -KILL " .. pid)
      end
    end
    shell.run("rm -rf " .. shell.quote(self.prefix))
  end

  function self.start()
    local so = io.open(shell.REPO .. "/build/jit/contiguity.so")
    assert(so, "build/jit/contiguity.so is missing: nginx's LuaJIT needs the 5.1-ABI build (make LUA=jit)")
    so:close()
    self.stop()
    local p = shell.quote(self.prefix)
    assert(shell.run("mkdir -p " .. p .. "/conf " .. p .. "/logs " .. p .. "/tmp && chmod -R a+rX " .. p))
    local f = assert(io.open(self.prefix .. "/conf/nginx.conf", "w"))
    f:write(conf)
    f:close()
    local ok, out = shell.run("nginx -p " .. p .. " -c " .. p .. "/conf/nginx.conf -e " .. p .. "/logs/error.log")
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
