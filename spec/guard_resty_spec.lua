-- guard_resty_spec.lua: contiguity.resty with `guard = { shared = ... }` in a
-- real nginx with two workers and one lua_shared_dict: concurrent requests
-- served by both workers never send more than the per-number limit in
-- total. The spec only speaks HTTP to that nginx, so it runs under every
-- Lua; nginx loads build/jit/contiguity.so.
local cjson = require("cjson")
local socket = require("socket")
local sandbox = require("spec.helpers.sandbox")

local NUMBER = "+15551234567"
local LIMIT = 3
local REPO = (function()
  local p = io.popen("pwd")
  local d = p:read("*l")
  p:close()
  return d
end)()
local SANDBOX_PORT = tonumber(sandbox.url():match(":(%d+)$"))
local PORT = tonumber(os.getenv("CONTIGUITY_GUARD_RESTY_PORT") or "") or SANDBOX_PORT + 102
local PREFIX = (os.getenv("TMPDIR") or "/tmp") .. "/contiguity-guard-spec." .. PORT
local MODULES = os.getenv("NGINX_MODULES_DIR") or "/usr/lib/nginx/modules"
local BASE = "http://127.0.0.1:" .. PORT

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  local ok, _, code = p:close()
  if type(ok) == "number" then code = ok; ok = code == 0 end -- Lua 5.1
  return ok == true or ok == 0, out, code
end

-- Each worker makes its client on first use; the handler sleeps a little
-- before the call so that requests overlap in both workers. reuseport
-- makes the kernel spread connections over the workers.
local function nginx_conf()
  local user = select(2, sh("id -u")):match("^0") and "user nobody nogroup;" or ""
  return ([[
load_module MODULES/ndk_http_module.so;
load_module MODULES/ngx_http_lua_module.so;
USER
daemon on;
worker_processes 2;
error_log PREFIX/logs/error.log warn;
pid PREFIX/logs/nginx.pid;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path PREFIX/tmp/client_body;
    proxy_temp_path PREFIX/tmp/proxy;
    fastcgi_temp_path PREFIX/tmp/fastcgi;
    uwsgi_temp_path PREFIX/tmp/uwsgi;
    scgi_temp_path PREFIX/tmp/scgi;
    lua_package_path "REPO/src/?.lua;/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;;";
    lua_package_cpath "REPO/build/jit/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";
    lua_shared_dict contiguity_guard 1m;

    server {
        listen 127.0.0.1:PORT reuseport;

        location = /_contiguity {
            internal;
            set_by_lua_block $contiguity_path { return ngx.ctx.contiguity_path }
            set_by_lua_block $contiguity_authorization { return ngx.ctx.contiguity_authorization }
            proxy_pass http://127.0.0.1:SANDBOX$contiguity_path;
            proxy_http_version 1.1;
            proxy_pass_request_headers off;
            proxy_set_header Authorization $contiguity_authorization;
            proxy_set_header Content-Type application/json;
            proxy_set_header Accept application/json;
        }

        location = /send {
            content_by_lua_block {
                local cjson = require("cjson")
                local c = package.loaded.guard_spec_client
                if not c then
                    c = require("contiguity.resty").new("TOKEN", { guard = {
                        sends_per_number = { LIMIT, 600 }, shared = "contiguity_guard" } })
                    package.loaded.guard_spec_client = c
                end
                ngx.sleep(0.05)
                local res, err = c.otp.new{ to = ngx.unescape_uri(ngx.var.arg_to), language = "en", name = "MyApp" }
                ngx.say(cjson.encode{ worker = ngx.worker.id(), sent = res ~= nil,
                                      kind = err and err.kind, limit = err and err.limit })
            }
        }
    }
}
]]):gsub("MODULES", MODULES):gsub("USER", user):gsub("PREFIX", PREFIX):gsub("REPO", REPO)
    :gsub("SANDBOX", tostring(SANDBOX_PORT)):gsub("PORT", tostring(PORT))
    :gsub("TOKEN", sandbox.TOKEN):gsub("LIMIT", tostring(LIMIT))
end

local function stop_nginx()
  local f = io.open(PREFIX .. "/logs/nginx.pid")
  if f then
    local pid = f:read("*n")
    f:close()
    if pid then
      sh("kill -QUIT " .. pid)
      for _ = 1, 100 do
        if not sh("kill -0 " .. pid) then break end
        socket.sleep(0.05)
      end
      sh("kill -KILL " .. pid)
    end
  end
  sh("rm -rf '" .. PREFIX .. "'")
end

local function start_nginx()
  stop_nginx()
  assert(sh("mkdir -p '" .. PREFIX .. "/conf' '" .. PREFIX .. "/logs' '" .. PREFIX .. "/tmp'"
    .. " && chmod -R a+rX '" .. PREFIX .. "'"))
  local conf = assert(io.open(PREFIX .. "/conf/nginx.conf", "w"))
  conf:write((nginx_conf()))
  conf:close()
  local ok, out = sh("nginx -p '" .. PREFIX .. "' -c '" .. PREFIX .. "/conf/nginx.conf' -e '"
    .. PREFIX .. "/logs/error.log'")
  if not ok then
    local log = select(2, sh("tail -n 5 '" .. PREFIX .. "/logs/error.log'"))
    error("nginx did not start on port " .. PORT .. ": " .. out .. log)
  end
  for _ = 1, 100 do
    local c = socket.tcp()
    c:settimeout(0.1)
    local up = c:connect("127.0.0.1", PORT)
    c:close()
    if up then return end
    socket.sleep(0.05)
  end
  error("nginx did not listen on port " .. PORT)
end

-- n concurrent GET /send?to=number (curl --parallel, one connection each):
-- the decoded answers.
local function concurrent(n, number)
  local list = os.tmpname()
  local f = assert(io.open(list, "w"))
  for i = 1, n do
    f:write(('url = "%s/send?to=%s&i=%d"\n'):format(BASE, sandbox.escape(number), i))
  end
  f:close()
  local ok, out = sh("curl -sS --parallel --parallel-immediate --parallel-max " .. n .. " -K " .. list)
  os.remove(list)
  assert(ok, out)
  local answers = {}
  -- (curl's --parallel progress meter comes on stderr even with -s)
  for line in out:gmatch("{[^\n]*}") do answers[#answers + 1] = cjson.decode(line) end
  assert.equals(n, #answers)
  return answers
end

describe("guard in nginx with two workers and a lua_shared_dict", function()
  setup(start_nginx)
  teardown(stop_nginx)
  before_each(function() sandbox.reset() end)

  it("never sends more than the per-number limit, whichever worker serves", function()
    local workers, sent, limited = {}, 0, 0
    -- two rounds on two numbers: each number's count is shared by both workers
    for round, number in ipairs{ NUMBER, "+15557654321" } do
      local answers = concurrent(24, number)
      local round_sent = 0
      for _, a in ipairs(answers) do
        workers[a.worker] = (workers[a.worker] or 0) + 1
        if a.sent then
          round_sent = round_sent + 1
        else
          assert.equals("limited", a.kind)
          assert.equals("sends_per_number", a.limit)
          limited = limited + 1
        end
      end
      assert.equals(LIMIT, round_sent, "round " .. round)
      assert.equals(LIMIT, #sandbox.outbox(number))
      sent = sent + round_sent
    end
    assert.is_number(workers[0], "worker 0 served nothing")
    assert.is_number(workers[1], "worker 1 served nothing")
    assert.equals(2 * LIMIT, sent)
    assert.equals(48 - 2 * LIMIT, limited)
    assert.equals(2 * LIMIT, #sandbox.outbox())
  end)
end)
