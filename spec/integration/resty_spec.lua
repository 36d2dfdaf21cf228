-- resty_spec.lua: contiguity.resty inside a real nginx (one worker) that
-- proxies to the sandbox. The spec itself only speaks HTTP to that nginx,
-- so it runs under every Lua; nginx loads build/jit/contiguity.so.
local cjson = require("cjson")
local _ -- the discarded values of multiple assignments
local socket = require("socket")
local http = require("spec.helpers.http")
local sandbox = require("spec.helpers.sandbox")
local nginx = require("spec.helpers.nginx")

local NUMBER = "+15551234567"
local SANDBOX_PORT = tonumber(sandbox.url():match(":(%d+)$"))
local PORT = tonumber(os.getenv("CONTIGUITY_RESTY_PORT") or "") or SANDBOX_PORT + 100
local BASE = "http://127.0.0.1:" .. PORT

-- One worker, the internal locations and the spec's handlers (spec/helpers/resty_app.lua).
local server = nginx.new{ name = "resty-spec", port = PORT, http = ([[
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
]]):gsub("LOCATIONS", function()
    return nginx.api_location("/_contiguity", "contiguity_api", "10s")
      .. nginx.api_location("/_contiguity_short", "contiguity_api", "200ms")
      .. nginx.api_location("/_contiguity_echo", "contiguity_echo", "5s")
      .. nginx.api_location("/_contiguity_closed", "contiguity_closed", "5s")
  end):gsub("SANDBOX_URL", sandbox.url()):gsub("SANDBOX", tostring(SANDBOX_PORT)):gsub("TOKEN", sandbox.TOKEN) }

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
  local urls = {}
  for i = 1, n do urls[i] = BASE .. "/t/" .. name .. "?client=" .. client .. "&i=" .. i end
  local t0 = socket.gettime()
  local out = nginx.parallel(urls, "-X POST -H 'Content-Type: application/json' -d '"
    .. cjson.encode(arg) .. "' -w '%{http_code}\\n'", true)
  local elapsed = socket.gettime() - t0
  local codes = 0
  for code in out:gmatch("(%d%d%d)\n") do
    assert.equals("200", code)
    codes = codes + 1
  end
  assert.equals(n, codes)
  return elapsed
end

describe("contiguity.resty in nginx", function()
  setup(server.start)
  teardown(server.stop)
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
    assert.is_true(n <= 2, n .. " connections for " .. #log .. " requests")
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
