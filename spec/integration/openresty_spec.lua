-- openresty_spec.lua: the shipped OpenResty example, in a real nginx. `make install LUA=jit`
-- into a temporary prefix, examples/openresty/app/otp.lua copied where the configuration
-- looks for it, and examples/openresty/nginx-staging.conf started as written except for
-- these swaps: /usr/local/ -> the temporary prefix, /etc/nginx/lua/ -> the copy of the
-- application, `listen 80` -> a free loopback port, the sandbox port 8931 -> the spec's
-- sandbox (the upstream api.contiguity.com:443 -> the sandbox's HTTPS port), and (so that it runs as any user, wherever the clone is) temp paths and logs
-- under the temporary directory. nginx gets no LUA_PATH/LUA_CPATH. The handler is checked
-- for the statuses doc/openresty.md promises; nginx.conf and nginx-openresty.conf (the real
-- API over TLS) are checked with `nginx -t` (OpenResty itself is not installable here:
-- Debian's nginx with the two load_module lines stands in for it).
local cjson = require "cjson"
local socket = require "socket"
local http = require "spec.helpers.http"
local sandbox = require "spec.helpers.sandbox"
local shell = require "spec.helpers.shell"

local q = shell.quote
local LUA = os.getenv("CONTIGUITY_SPEC_LUA") or "lua5.4"
local SANDBOX = sandbox.url():match("^http://(.-)/?$")
local TLS = sandbox.tls_url():match("^https://(.-)/?$")
local PORT = tonumber(sandbox.url():match(":(%d+)$")) + 150
local BASE = "http://127.0.0.1:" .. PORT
-- the example's guard allows 3 codes per number in 10 minutes, whatever the sandbox
-- forgets between cases: each case sends to numbers of its own
local NUMBER, LIMITED, FAILING = "+15551230001", "+15551230002", "+15551230003"

local function read(name)
  local f = assert(io.open(name, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- The configuration with the swaps above, for the temporary directory dir.
local function swapped(conf, dir)
  local function lit(s) return (s:gsub("%p", "%%%0")) end -- a pattern matching s
  local function rep(s) return (s:gsub("%%", "%%%%")) end -- a replacement giving s
  conf = conf:gsub(lit("/usr/local/"), rep(dir .. "/usr/local/"))
    :gsub(lit("/etc/nginx/lua/"), rep(dir .. "/etc/nginx/lua/"))
    :gsub(lit("$prefix/lua/"), rep(dir .. "/etc/nginx/lua/"))
    :gsub("listen 80;", "listen 127.0.0.1:" .. PORT .. ";")
    :gsub(lit("127.0.0.1:8931"), rep(SANDBOX))
    :gsub(lit("server api.contiguity.com:443;"), rep("server " .. TLS .. ";")) -- no DNS here
  local temp = ("\n    access_log off;\n    client_body_temp_path D/tmp/body;\n    proxy_temp_path D/tmp/proxy;\n"
    .. "    fastcgi_temp_path D/tmp/fastcgi;\n    uwsgi_temp_path D/tmp/uwsgi;\n    scgi_temp_path D/tmp/scgi;\n")
    :gsub("D", rep(dir))
  local n
  conf, n = conf:gsub("\nhttp {\n", function() return "\nhttp {" .. temp end)
  assert(n == 1, "no http block")
  return conf
end

local function nginx_cmd(dir, conf, extra)
  return "env -u LUA_PATH -u LUA_CPATH CONTIGUITY_API_KEY=" .. q(sandbox.TOKEN) .. " nginx -p " .. q(dir)
    .. " -c " .. q(dir .. "/" .. conf) .. " -e " .. q(dir .. "/logs/error.log")
    .. " -g " .. q("pid " .. dir .. "/logs/nginx.pid; error_log " .. dir .. "/logs/error.log info;") .. (extra or "")
end

local function post(path, body)
  local status, raw, headers = http.request("POST", BASE .. path, { body = body })
  assert(status, "nginx unreachable: " .. tostring(raw))
  local ok, decoded = pcall(cjson.decode, raw)
  return status, ok and decoded or raw, headers
end

if LUA ~= "luajit" and LUA ~= "lua5.4" then
  describe("the OpenResty example", function()
    pending("runs under luajit and lua5.4 only: nginx runs its own LuaJIT whatever the spec's Lua is")
  end)
  return
end

describe("the OpenResty example (examples/openresty)", function()
  local dir

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(shell.run("mkdir -p " .. dir .. "/etc/nginx/lua/app " .. dir .. "/logs " .. dir .. "/tmp"))
    local ok, out = shell.run("make --no-print-directory -s install LUA=jit PREFIX=" .. q(dir .. "/usr/local"))
    assert(ok, out)
    assert(shell.run("cp examples/openresty/app/otp.lua " .. q(dir .. "/etc/nginx/lua/app/")))
    for _, name in ipairs { "nginx.conf", "nginx-staging.conf", "nginx-openresty.conf" } do
      shell.write_file(dir .. "/" .. name, swapped(read("examples/openresty/" .. name), dir))
    end
    -- OpenResty has the Lua module built in; Debian's nginx needs it loaded
    shell.write_file(dir .. "/nginx-openresty.conf", "load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
      .. "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;\n" .. read(dir .. "/nginx-openresty.conf"))
    assert(shell.run("chmod -R a+rX " .. q(dir) .. " && chmod a+rwx " .. q(dir .. "/tmp")))
    ok, out = shell.run(nginx_cmd(dir, "nginx-staging.conf"))
    assert(ok, out .. select(2, shell.run("tail -5 " .. q(dir .. "/logs/error.log"))))
    for _ = 1, 100 do
      local c = socket.tcp()
      c:settimeout(0.1)
      local up = c:connect("127.0.0.1", PORT)
      c:close()
      if up then return end
      socket.sleep(0.05)
    end
    error("nginx did not listen on " .. PORT)
  end)

  teardown(function()
    local f = io.open(dir .. "/logs/nginx.pid")
    local pid = f and f:read("*n")
    if f then f:close() end
    if pid then
      shell.run("kill -QUIT " .. pid)
      for _ = 1, 100 do
        if not shell.run("kill -0 " .. pid) then break end
        socket.sleep(0.05)
      end
    end
    shell.run("rm -rf " .. q(dir))
  end)

  before_each(function() sandbox.reset() end)

  it("the production configurations pass nginx -t (Debian's nginx, OpenResty's)", function()
    for _, name in ipairs { "nginx.conf", "nginx-openresty.conf" } do
      local ok, out = shell.run(nginx_cmd(dir, name, " -t -q"))
      assert(ok, name .. ": " .. out)
    end
  end)

  it("sends a code and verifies it (200)", function()
    local status, res = post("/otp/start", cjson.encode{ phone = NUMBER })
    assert.are.equal(200, status, cjson.encode(res))
    local code, id = sandbox.last_code(NUMBER)
    assert.are.equal(id, res.otp_id)
    local wrong = code == "000000" and "111111" or "000000"
    status, res = post("/otp/check", cjson.encode{ otp_id = id, code = wrong })
    assert.are.equal(200, status)
    assert.is_false(res.verified)
    status, res = post("/otp/check", cjson.encode{ otp_id = id, code = code })
    assert.are.equal(200, status)
    assert.is_true(res.verified)
  end)

  it("answers invalid input with 400 and the field", function()
    local status, res = post("/otp/start", cjson.encode{ phone = "555-1234" })
    assert.are.equal(400, status)
    assert.are.equal("invalid", res.error.kind)
    assert.are.equal("phone", res.error.field)
    status, res = post("/otp/check", cjson.encode{ otp_id = "otp_x", code = 123456 })
    assert.are.equal(400, status)
    assert.are.equal("code", res.error.field)
    assert.are.equal(0, #sandbox.requests())
  end)

  it("answers a malformed body with 400, never a traceback", function()
    for _, body in ipairs { "not json", "[1,2]", "null", "", '{"phone":', '"+15551234567"' } do
      local status, res = post("/otp/start", body)
      assert.are.equal(400, status, body)
      assert.are.equal("the body must be a JSON object", res.error.message, body)
    end
    local log = read(dir .. "/logs/error.log")
    assert.is_nil(log:find("traceback", 1, true), log)
    assert.is_nil(log:find("runtime error", 1, true), log)
    assert.are.equal(0, #sandbox.requests())
  end)

  it("answers an unknown otp_id with 404", function()
    local status, res = post("/otp/check", cjson.encode{ otp_id = "otp_unknown", code = "123456" })
    assert.are.equal(404, status)
    assert.are.equal("api", res.error.kind)
  end)

  it("answers too many codes with 429 and Retry-After: the guard, and the API's own 429", function()
    for _ = 1, 3 do assert.are.equal(200, (post("/otp/start", cjson.encode{ phone = LIMITED }))) end
    local status, res, headers = post("/otp/start", cjson.encode{ phone = LIMITED })
    assert.are.equal(429, status)
    assert.are.equal("limited", res.error.kind)
    local after = tonumber(headers["retry-after"])
    assert.is_true(after ~= nil and after >= 1 and after <= 600, tostring(headers["retry-after"]))
    assert.are.equal(3, #sandbox.outbox(LIMITED)) -- the fourth never reached the API
    sandbox.fault{ path = "/otp/new", status = 429, headers = { ["Retry-After"] = "7" } }
    status, res, headers = post("/otp/start", cjson.encode{ phone = "+15557654321" })
    assert.are.equal(429, status)
    assert.are.equal("api", res.error.kind)
    assert.are.equal("7", headers["retry-after"])
  end)

  it("answers the API failing with 502, unreachable with 503, too slow with 504", function()
    sandbox.fault{ path = "/otp/new", status = 500 }
    local status, res = post("/otp/start", cjson.encode{ phone = FAILING })
    assert.are.equal(502, status)
    assert.are.equal("api", res.error.kind)
    assert.is_nil(res.error.message:find("500", 1, true)) -- the caller gets no internals
    sandbox.fault{ path = "/otp/verify", action = "drop" }
    local headers
    status, res, headers = post("/otp/check", cjson.encode{ otp_id = "otp_x", code = "123456" })
    assert.are.equal(503, status)
    assert.are.equal("network", res.error.kind)
    assert.truthy(headers["retry-after"])
    -- location-sandbox.conf's proxy_read_timeout is 3 s
    sandbox.fault{ path = "/otp/verify", action = "none", delay = 5 }
    status, res = post("/otp/check", cjson.encode{ otp_id = "otp_x", code = "123456" })
    assert.are.equal(504, status)
    assert.are.equal("timeout", res.error.kind)
  end)
end)
