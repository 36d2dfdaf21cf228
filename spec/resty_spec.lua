-- resty_spec.lua: contiguity.resty inside a real nginx (one worker) that
-- proxies to the sandbox. The spec itself only speaks HTTP to that nginx,
-- so it runs under every Lua; nginx loads build/jit/contiguity.so.
local cjson = require("cjson")
local socket = require("socket")
local http = require("spec.helpers.http")
local sandbox = require("spec.helpers.sandbox")

local NUMBER = "+15551234567"
local REPO = (function()
  local p = io.popen("pwd")
  local d = p:read("*l")
  p:close()
  return d
end)()
local SANDBOX_PORT = tonumber(sandbox.url():match(":(%d+)$"))
local PORT = tonumber(os.getenv("CONTIGUITY_RESTY_PORT") or "") or SANDBOX_PORT + 100
local PREFIX = (os.getenv("TMPDIR") or "/tmp") .. "/contiguity-resty-spec." .. PORT
local MODULES = os.getenv("NGINX_MODULES_DIR") or "/usr/lib/nginx/modules"
local BASE = "http://127.0.0.1:" .. PORT

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  local ok, _, code = p:close()
  if type(ok) == "number" then code = ok; ok = code == 0 end -- Lua 5.1
  return ok == true or ok == 0, out, code
end

local function file_exists(name)
  local f = io.open(name, "r")
  if f then f:close() end
  return f ~= nil
end

-- The internal location as doc/openresty.md documents it, minus TLS (the
-- sandbox is plain http on loopback): path and headers come from the
-- subrequest's ngx.ctx and nothing of the client's request is forwarded.
local function api_location(name, upstream, read_timeout)
  return ([[
        location = NAME {
            internal;
            set_by_lua_block $contiguity_path { return ngx.ctx.contiguity_path }
            set_by_lua_block $contiguity_authorization { return ngx.ctx.contiguity_authorization }
            set_by_lua_block $contiguity_user_agent { return ngx.ctx.contiguity_user_agent }
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
]]):gsub("NAME", name):gsub("UPSTREAM", upstream):gsub("READ", read_timeout)
end

local function nginx_conf()
  local user = select(2, sh("id -u")):match("^0") and "user nobody nogroup;" or ""
  return ([[
load_module MODULES/ndk_http_module.so;
load_module MODULES/ngx_http_lua_module.so;
USER
daemon on;
worker_processes 1;
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
    init_by_lua_block { require("cjson"); require("contiguity.resty").new("TOKEN") } # a client can be made in init

    upstream contiguity_api {
        server 127.0.0.1:SANDBOX;
        keepalive 16;
    }
    upstream contiguity_echo {
        server 127.0.0.1:PORT;
        keepalive 4;
    }
    upstream contiguity_closed {
        server 127.0.0.1:1;
    }

    server {
        listen 127.0.0.1:PORT;
        set $contiguity_token "TOKEN";
        set $contiguity_sandbox "SANDBOX_URL";
LOCATIONS
        location = /phase {
            set_by_lua_block $contiguity_phase_error { return require("spec.helpers.resty_app").phase_error() }
            return 200 $contiguity_phase_error;
        }
        location /t/ { content_by_lua_block { require("spec.helpers.resty_app").handle() } }
        location /otp/ { content_by_lua_block { require("spec.helpers.resty_app").echo() } }
    }
}
]]):gsub("LOCATIONS", function()
    return api_location("/_contiguity", "contiguity_api", "10s")
      .. api_location("/_contiguity_short", "contiguity_api", "200ms")
      .. api_location("/_contiguity_echo", "contiguity_echo", "5s")
      .. api_location("/_contiguity_closed", "contiguity_closed", "5s")
  end):gsub("MODULES", MODULES):gsub("USER", user):gsub("PREFIX", PREFIX):gsub("REPO", REPO)
    :gsub("SANDBOX_URL", sandbox.url()):gsub("SANDBOX", tostring(SANDBOX_PORT))
    :gsub("PORT", tostring(PORT)):gsub("TOKEN", sandbox.TOKEN)
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
  assert(file_exists(REPO .. "/build/jit/contiguity.so"),
    "build/jit/contiguity.so is missing: nginx's LuaJIT needs the 5.1-ABI build (make LUA=jit)")
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

-- One call through the nginx handler: returns res, err (plain tables).
local function call(name, arg, client, headers)
  local status, body = http.request("POST", BASE .. "/t/" .. name .. "?client=" .. (client or "/_contiguity"),
    { body = cjson.encode(arg), headers = headers })
  assert(status == 200, "handler /t/" .. name .. " -> " .. tostring(status) .. " " .. tostring(body))
  local d = cjson.decode(body)
  assert(not (d.err and d.err.raised), "handler raised: " .. tostring(d.err and d.err.raised))
  return d.res, d.err
end

-- Wall time of n concurrent POSTs to one handler (curl --parallel).
local function concurrent(n, name, arg, client)
  local list = os.tmpname()
  local f = assert(io.open(list, "w"))
  local url = BASE .. "/t/" .. name .. "?client=" .. client
  for i = 1, n do
    f:write(('url = "%s"\noutput = "/dev/null"\n'):format(url .. "&i=" .. i))
  end
  f:close()
  local t0 = socket.gettime()
  local ok, out = sh("curl -sS --parallel --parallel-immediate --parallel-max " .. n
    .. " -X POST -H 'Content-Type: application/json' -d '" .. cjson.encode(arg)
    .. "' -w '%{http_code}\\n' -K " .. list)
  local elapsed = socket.gettime() - t0
  os.remove(list)
  assert(ok, out)
  local codes = 0
  for code in out:gmatch("(%d%d%d)\n") do
    assert.equals("200", code)
    codes = codes + 1
  end
  assert.equals(n, codes)
  return elapsed
end

describe("contiguity.resty in nginx", function()
  setup(start_nginx)
  teardown(stop_nginx)
  before_each(function() sandbox.reset() end)

  it("sends, verifies wrong then right, and resends", function()
    local res, err = call("new", { to = NUMBER, language = "en", name = "Resty" })
    assert.is_nil(err)
    assert.matches("^otp_", res.otp_id)
    assert.matches("^req_", res.metadata.id)
    local code = sandbox.last_code(NUMBER)
    local wrong = code == "000000" and "111111" or "000000"
    assert.is_false(call("verify", { otp_id = res.otp_id, otp = wrong }).verified)
    local r = call("resend", { otp_id = res.otp_id })
    assert.is_true(r.resent)
    assert.is_true(call("verify", { otp_id = res.otp_id, otp = code }).verified)
    local res2 = call("send", { to = "+15550000001", language = "en", name = "Alias" })
    assert.matches("^otp_", res2.otp_id)
    local out = sandbox.outbox(NUMBER)
    assert.equals(2, #out)
    assert.matches("Your Resty code is " .. code, out[1].text)
  end)

  it("runs a reverse session: initiate, verify, cancel", function()
    local s = call("initiate", { number = NUMBER, factor = "4321", service = "sms" })
    assert.matches("^r_otp_", s.otp_id)
    assert.equals("4321", s.factor)
    assert.equals("pending", call("reverse_verify", s.otp_id).status)
    assert.is_true(sandbox.inbound(NUMBER, s.to, "4321").matched)
    assert.equals("verified", call("reverse_verify", s.otp_id).status)
    local s2 = call("initiate", { number = NUMBER })
    assert.equals("cancelled", call("cancel", s2.otp_id).status)
    assert.equals("cancelled", sandbox.reverse(s2.otp_id).status)
  end)

  it("sends percent-encoded ids to the API unchanged", function()
    local _, err = call("reverse_verify", "a b/../c?d")
    assert.equals("api", err.kind)
    assert.equals(404, err.status)
    call("cancel", "x/../../new")
    local log = sandbox.requests()
    assert.equals("/otp/reverse/verify/a%20b%2F..%2Fc%3Fd", log[#log - 1].path)
    assert.equals("/otp/reverse/cancel/x%2F..%2F..%2Fnew", log[#log].path)
  end)

  it("returns the API's errors and refuses invalid params before any I/O", function()
    sandbox.fault{ path = "/otp/verify", action = "status", status = 403 }
    local res, err = call("verify", { otp_id = "otp_1", otp = "123456" })
    assert.is_nil(res)
    assert.equals("api", err.kind)
    assert.equals(403, err.status)
    assert.matches("^err_", err.request_id)
    assert.equals("otp.verify", err.op)
    -- the API's own 502/504 stay kind api: only nginx's own failures are mapped
    sandbox.fault{ path = "/otp/verify", action = "status", status = 504 }
    _, err = call("verify", { otp_id = "otp_1", otp = "123456" })
    assert.equals("api", err.kind)
    assert.equals(504, err.status)
    local n = #sandbox.requests()
    _, err = call("new", { to = "5551234567", language = "en", name = "A" })
    assert.equals("invalid", err.kind)
    assert.equals("to", err.field)
    assert.equals(n, #sandbox.requests())
  end)

  it("maps nginx's proxy timeout to kind timeout and a refused connection to network", function()
    sandbox.fault{ path = "/otp/verify", action = "none", delay = 1 }
    local res, err = call("verify", { otp_id = "otp_1", otp = "123456" }, "/_contiguity_short")
    assert.is_nil(res)
    assert.equals("timeout", err.kind, err.message)
    assert.matches("proxy_read_timeout", err.message)
    _, err = call("verify", { otp_id = "otp_1", otp = "123456" }, "/_contiguity_closed")
    assert.equals("network", err.kind)
    assert.is_nil(err.status)
    sandbox.clear_faults()
    sandbox.fault{ path = "/otp/verify", action = "truncate" }
    _, err = call("verify", { otp_id = "otp_1", otp = "123456" })
    assert.equals("network", err.kind)
    sandbox.fault{ path = "/otp/verify", action = "drop" }
    _, err = call("verify", { otp_id = "otp_1", otp = "123456" })
    assert.equals("network", err.kind)
    sandbox.fault{ path = "/otp/verify", action = "malformed" }
    _, err = call("verify", { otp_id = "otp_1", otp = "123456" })
    assert.equals("decode", err.kind)
  end)

  it("sends the module's token and headers, never the client's own request headers", function()
    local headers = {
      Authorization = "Token contiguity_sk_WRONG",
      Cookie = "session=browser-secret",
      ["X-Forwarded-For"] = "203.0.113.9",
      ["User-Agent"] = "browser/1.0",
    }
    local res, err = call("verify", { otp_id = "otp_1", otp = "123456" }, "/_contiguity_echo", headers)
    assert.is_nil(err)
    assert.equals("POST", res.method)
    assert.equals("/otp/verify", res.uri)
    assert.same({ otp_id = "otp_1", otp = "123456" }, cjson.decode(res.body))
    local h = res.headers
    assert.equals("Token " .. sandbox.TOKEN, h.authorization)
    assert.matches("^contiguity%-lua/", h["user-agent"])
    assert.equals("application/json", h["content-type"])
    assert.is_nil(h.cookie)
    assert.is_nil(h["x-forwarded-for"])
    -- a POST without a body sends an empty one, not the client's request body
    res = call("cancel", "r_otp_1", "/_contiguity_echo", headers)
    assert.equals("", res.body)
    assert.equals("/otp/reverse/cancel/r_otp_1", res.uri)
    -- and against the sandbox the calls work with that header present
    local sent = call("new", { to = NUMBER, language = "en", name = "A" }, nil,
      { Authorization = "Basic bm9wZQ==" })
    assert.matches("^otp_", sent.otp_id)
  end)

  it("reuses keep-alive connections to the API", function()
    local res = call("new", { to = NUMBER, language = "en", name = "A" })
    for _ = 1, 10 do call("verify", { otp_id = res.otp_id, otp = "999999" }) end
    local log = sandbox.requests()
    assert.equals(11, #log)
    local conns = {}
    for _, r in ipairs(log) do conns[r.connection] = true end
    local n = 0
    for _ in pairs(conns) do n = n + 1 end
    assert.is_true(n < #log, n .. " connections for " .. #log .. " requests")
    assert.is_true(log[#log].connection_requests > 1)
  end)

  it("raises a clear error when called from a phase that cannot capture", function()
    local status, body = http.request("GET", BASE .. "/phase")
    assert.equals(200, status)
    assert.matches("contiguity.resty: calls need ngx.location.capture, which works only in "
      .. "rewrite_by_lua*, access_by_lua* and content_by_lua* (called from set)", body, 1, true)
    assert.equals(0, #sandbox.requests())
  end)

  describe("does not block the nginx worker", function()
    local ARG = { otp_id = "otp_1", otp = "123456" }

    it("20 concurrent verifies with a 300 ms API take under 1.5 s with contiguity.resty", function()
      call("verify", ARG) -- warm up: the client and a connection exist
      sandbox.fault{ path = "/otp/verify", action = "none", delay = 0.3, times = -1 }
      local elapsed = concurrent(20, "verify", ARG, "/_contiguity")
      print(("\n  contiguity.resty: 20 concurrent verifies in %.2f s"):format(elapsed))
      assert.is_true(elapsed < 1.5, ("took %.2f s"):format(elapsed))
    end)

    it("the same 20 take at least 6 s with the blocking libcurl client (on record)", function()
      call("verify", ARG, "blocking")
      sandbox.fault{ path = "/otp/verify", action = "none", delay = 0.3, times = -1 }
      local elapsed = concurrent(20, "verify", ARG, "blocking")
      print(("\n  blocking libcurl client: 20 concurrent verifies in %.2f s"):format(elapsed))
      assert.is_true(elapsed >= 6, ("took %.2f s"):format(elapsed))
    end)
  end)
end)
