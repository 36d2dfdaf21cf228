-- client_spec.lua: the blocking libcurl client against the sandbox, over real HTTP.
local contiguity = require "contiguity"
local sandbox = require "spec.helpers.sandbox"

local TOKEN = sandbox.TOKEN
local NUMBER = "+15551234567"

local client = sandbox.client

local function send(c, to)
  local res, err = c.otp.new{ to = to or NUMBER, language = "en", name = "MyApp" }
  assert(res, tostring(err))
  return res
end

-- Runs a Lua snippet in a fresh interpreter (the one running these specs)
-- with the given environment; returns its output.
local function run_lua(env, code)
  local lua = os.getenv("CONTIGUITY_SPEC_LUA") or "lua5.4"
  local name = os.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(code)
  f:close()
  local p = assert(io.popen("env " .. env .. " " .. lua .. " " .. name .. " 2>&1"))
  local out = p:read("*a")
  p:close()
  os.remove(name)
  return out
end

local function is_integer_valued(v)
  if math.type then return math.type(v) == "integer" end
  return type(v) == "number" and v == math.floor(v)
end

describe("contiguity module", function()
  before_each(function() sandbox.reset() end)

  it("reports its versions", function()
    local mod, curl, lua = contiguity.version()
    assert.equals(contiguity._VERSION, mod)
    assert.matches("^%d+%.%d+%.%d+", curl)
    assert.matches("Lua", lua)
  end)

  describe("contiguity.new", function()
    it("refuses a token without the contiguity_sk_ prefix, without echoing it", function()
      local ok, err = pcall(contiguity.new, "sk_live_SECRET123", { base_url = sandbox.url() })
      assert.is_false(ok)
      assert.matches("contiguity_sk_", err)
      assert.not_matches("SECRET123", err)
      ok, err = pcall(contiguity.new, "contiguity_sk_abc\r\nX-Evil: 1", { base_url = sandbox.url() })
      assert.is_false(ok)
      assert.not_matches("Evil", err)
    end)

    it("raises on unknown options and bad option values", function()
      assert.has_error(function() client{ timout = 3 } end, "contiguity.new: unknown option 'timout'")
      assert.error_matches(function() client{ timeout = -1 } end, "option 'timeout' must be a number", 1, true)
      assert.error_matches(function() client{ timeout = "3" } end, "option 'timeout' must be a number", 1, true)
      assert.error_matches(function() client{ user_agent = "a\nb" } end, "option 'user_agent' must not contain CR, LF or NUL", 1, true)
      assert.error_matches(function() client{ debug = "yes" } end, "option 'debug' must be a boolean or a function", 1, true)
      assert.error_matches(function() client{ base_url = "ftp://x" } end, "base_url must be an http(s) URL", 1, true)
      assert.error_matches(function() client{ base_url = "https:///no-host" } end, "base_url must be an http(s) URL", 1, true)
      assert.error_matches(function() client{ base_url = "https://a\tb" } end, "base_url must be an http(s) URL", 1, true)
      assert.error_matches(function() contiguity.new(TOKEN, 5) end, "options must be a table", 1, true)
    end)

    it("accepts plain http only for loopback hosts", function()
      assert.error_matches(function() contiguity.new(TOKEN, { base_url = "http://example.com" }) end, "plain http:// is allowed only for loopback", 1, true)
      assert.error_matches(function() contiguity.new(TOKEN, { base_url = "http://127.0.0.1@evil.com" }) end, "plain http:// is allowed only for loopback", 1, true)
      for _, u in ipairs{ "http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1", "https://example.com" } do
        contiguity.new(TOKEN, { base_url = u }):close()
      end
    end)

    it("reads the token and base URL from the environment", function()
      local code = [[
        local c = require("contiguity").new()
        local res, err = c.otp.new{ to = "+15551234567", language = "en", name = "Env" }
        print(res and res.otp_id or tostring(err))
      ]]
      local cpath = "LUA_CPATH='" .. package.cpath .. "' LUA_PATH='" .. package.path .. "'"
      local out = run_lua(cpath .. " CONTIGUITY_API_KEY=" .. TOKEN .. " CONTIGUITY_BASE_URL=" .. sandbox.url(), code)
      assert.matches("^otp_", out)
      out = run_lua(cpath .. " CONTIGUITY_TOKEN=" .. TOKEN .. " CONTIGUITY_BASE_URL=" .. sandbox.url(), code)
      assert.matches("^otp_", out)
      out = run_lua("-u CONTIGUITY_API_KEY -u CONTIGUITY_TOKEN " .. cpath, code)
      assert.matches("no token", out)
    end)
  end)

  describe("calls", function()
    it("sends a code (new and its alias send) and verifies wrong then right", function()
      local c = client()
      local res = send(c)
      assert.matches("^otp_", res.otp_id)
      assert.equals("response", res.metadata.object)
      assert.matches("^req_", res.metadata.id)
      assert.equals("string", type(res.metadata.api_version))
      assert.is_true(is_integer_valued(res.metadata.timestamp))
      assert.is_true(res.metadata.timestamp > 1.7e12)
      local code = sandbox.last_code(NUMBER)
      local wrong = code == "000000" and "111111" or "000000"
      assert.is_false(c.otp.verify{ otp_id = res.otp_id, otp = wrong }.verified)
      assert.is_true(c.otp.verify{ otp_id = res.otp_id, otp = code }.verified)
      local res2 = c.otp.send{ to = "+15550000001", language = "en", name = "Alias" }
      assert.matches("^otp_", res2.otp_id)
      assert.equals(c.otp.new, c.otp.send)
      local out = sandbox.outbox("+15550000001")
      assert.equals(1, #out)
      assert.matches("Your Alias code is %d%d%d%d%d%d", out[1].text)
    end)

    it("resends the same code", function()
      local c = client()
      local res = send(c)
      local r = c.otp.resend{ otp_id = res.otp_id }
      assert.is_true(r.resent)
      local out = sandbox.outbox(NUMBER)
      assert.equals(2, #out)
      assert.equals(out[1].text, out[2].text)
    end)

    it("runs a reverse session: initiate, verify (pending, verified), cancel", function()
      local c = client()
      local s = c.otp.reverse.initiate{ number = NUMBER, factor = "4321", service = "sms", language = "en" }
      assert.matches("^r_otp_", s.otp_id)
      assert.equals(NUMBER, s.number)
      assert.equals("4321", s.factor)
      assert.equals("sms", s.service)
      assert.equals("string", type(s.expires_at))
      assert.equals("table", type(s.ui))
      assert.matches("^sms:", s.ui.qr_code)
      assert.matches("4321", s.ui.text)
      assert.is_nil(s.success_url) -- JSON null becomes nil
      assert.equals("pending", c.otp.reverse.verify(s.otp_id).status)
      assert.is_true(sandbox.inbound(NUMBER, s.to, "4321").matched)
      local st = c.otp.reverse.verify(s.otp_id)
      assert.equals("verified", st.status)
      assert.equals(s.otp_id, st.otp_id)
      local s2 = c.otp.reverse.initiate{ number = NUMBER, success_url = "https://example.com/hook" }
      assert.equals("https://example.com/hook", s2.success_url)
      local cancelled = c.otp.reverse.cancel(s2.otp_id)
      assert.equals("cancelled", cancelled.status)
      assert.equals("cancelled", sandbox.reverse(s2.otp_id).status)
    end)

    it("accepts dot and colon calls alike", function()
      local c = client()
      local a = c.otp:new{ to = NUMBER, language = "en", name = "Colon" }
      assert.matches("^otp_", a.otp_id)
      assert.is_false(c.otp:verify{ otp_id = a.otp_id, otp = "x" }.verified)
      local s = c.otp.reverse:initiate{ number = NUMBER }
      assert.equals("pending", c.otp.reverse:verify(s.otp_id).status)
      assert.equals("cancelled", c.otp.reverse:cancel(s.otp_id).status)
    end)

    it("passes unknown fields through unchanged", function()
      -- the request builder is every transport's: a transport that records
      -- the body and sends it over real HTTP shows what goes on the wire
      local http = require("spec.helpers.http")
      local sent
      local c = client{ transport = function(req)
        sent = req.body
        return http.request(req.method, req.url, { headers = req.headers, body = req.body })
      end }
      local res = c.otp.new{ to = NUMBER, language = "en", name = "X", future_field = { a = 1 } }
      assert.matches("^otp_", res.otp_id)
      assert.same({ a = 1 }, require("cjson").decode(sent).future_field)
    end)

    it("percent-encodes ids in paths so they cannot reach another endpoint", function()
      local c = client()
      local res, err = c.otp.reverse.verify("a b/../c?d")
      assert.is_nil(res)
      assert.equals(404, err.status)
      local log = sandbox.requests()
      assert.equals("/otp/reverse/verify/a%20b%2F..%2Fc%3Fd", log[#log].path)
      c.otp.reverse.cancel("x/../../new")
      log = sandbox.requests()
      assert.equals("/otp/reverse/cancel/x%2F..%2F..%2Fnew", log[#log].path)
    end)

    it("keeps one keep-alive connection across sequential calls", function()
      local c = client()
      local res = send(c)
      for _ = 1, 20 do c.otp.verify{ otp_id = res.otp_id, otp = "999999" } end
      local log = sandbox.requests()
      assert.equals(21, #log)
      for i = 2, #log do assert.equals(log[1].connection, log[i].connection) end
      assert.equals(21, log[#log].connection_requests)
    end)
  end)

  describe("nulls and nested data", function()
    it("turns JSON null into nil at every depth", function()
      local c = client()
      sandbox.fault{ path = "/otp/verify", action = "status", status = 200,
        body = '{"id":"req_1","timestamp":1785380854155,"api_version":"v1","object":"response",' ..
               '"data":{"verified":true,"extra":null,"nested":{"a":null,"b":[1,2],"c":{"d":null,"e":"x"}}}}' }
      local res = c.otp.verify{ otp_id = "otp_x", otp = "123456" }
      assert.is_true(res.verified)
      assert.is_nil(res.extra)
      assert.is_nil(res.nested.a)
      assert.same({ 1, 2 }, res.nested.b)
      assert.is_nil(res.nested.c.d)
      assert.equals("x", res.nested.c.e)
      assert.equals(1785380854155, res.metadata.timestamp)
      assert.is_true(is_integer_valued(res.metadata.timestamp))
    end)
  end)

  it("keeps a timestamp that is no representable integer as a number", function()
    local c = client()
    for _, ts in ipairs{ "1e308", "-1e308", "2.5" } do
      sandbox.fault{ path = "/otp/verify", action = "status", status = 200,
        body = '{"id":"req_1","timestamp":' .. ts .. ',"data":{"verified":false}}' }
      local res = c.otp.verify{ otp_id = "otp_x", otp = "123456" }
      assert.equals(tonumber(ts), res.metadata.timestamp)
    end
  end)

  describe("errors", function()
    local cases = {
      { "otp.new", { language = "en", name = "A" }, "to", "is required" },
      { "otp.new", { to = "5551234567", language = "en", name = "A" }, "to", "E.164" },
      { "otp.new", { to = "+05551234567", language = "en", name = "A" }, "to", "E.164" },
      { "otp.new", { to = "+1", language = "en", name = "A" }, "to", "E.164" },
      { "otp.new", { to = "+1234567890123456", language = "en", name = "A" }, "to", "E.164" },
      { "otp.new", { to = 15551234567, language = "en", name = "A" }, "to", "must be a string" },
      { "otp.new", { to = NUMBER, name = "A" }, "language", "is required" },
      { "otp.new", { to = NUMBER, language = "en" }, "name", "is required" },
      { "otp.new", { to = NUMBER, language = "en", name = "" }, "name", "must not be empty" },
      { "otp.verify", { otp = "123456" }, "otp_id", "is required" },
      { "otp.verify", { otp_id = "", otp = "123456" }, "otp_id", "must not be empty" },
      { "otp.verify", { otp_id = "otp_1", otp = 123456 }, "otp", "leading zeros" },
      { "otp.verify", { otp_id = "otp_1", otp = "" }, "otp", "must not be empty" },
      { "otp.resend", {}, "otp_id", "is required" },
      { "otp.reverse.initiate", {}, "number", "is required" },
      { "otp.reverse.initiate", { number = "12" }, "number", "E.164" },
      { "otp.reverse.initiate", { number = NUMBER, factor = string.rep("9", 17) }, "factor", "at most 16" },
      { "otp.reverse.initiate", { number = NUMBER, to = "646" }, "to", "E.164" },
      { "otp.reverse.initiate", { number = NUMBER, service = "whatsapp" }, "service", "imessage" },
      { "otp.reverse.initiate", { number = NUMBER, success_url = "ftp://x/y" }, "success_url", "http" },
      { "otp.reverse.initiate", { number = NUMBER, success_url = "https://a b" }, "success_url", "http" },
    }
    local function call(c, name, params)
      if name == "otp.new" then return c.otp.new(params) end
      if name == "otp.verify" then return c.otp.verify(params) end
      if name == "otp.resend" then return c.otp.resend(params) end
      return c.otp.reverse.initiate(params)
    end
    for _, case in ipairs(cases) do
      it("refuses " .. case[1] .. " with a bad " .. case[3] .. " (" .. case[4] .. ") before any I/O", function()
        local c = client()
        local res, err = call(c, case[1], case[2])
        assert.is_nil(res)
        assert.equals("invalid", err.kind)
        assert.equals(case[3], err.field)
        assert.equals(case[1], err.op)
        assert.is_false(err.retryable)
        assert.matches(case[4], err.message, 1, true)
        assert.equals(0, #sandbox.requests())
      end)
    end

    it("counts a 16-character factor in characters, not bytes", function()
      local c = client()
      local s = c.otp.reverse.initiate{ number = NUMBER, factor = string.rep("é", 16) }
      assert.matches("^r_otp_", s.otp_id)
    end)

    it("refuses an empty otp_id on reverse calls without I/O", function()
      local c = client()
      local res, err = c.otp.reverse.verify("")
      assert.is_nil(res)
      assert.equals("otp_id", err.field)
      assert.equals(0, #sandbox.requests())
    end)

    it("raises for misuse: params not a table, otp_id not a string", function()
      local c = client()
      assert.error_matches(function() c.otp.new("+15551234567") end, "otp.new: params must be a table, got string", 1, true)
      assert.error_matches(function() c.otp.verify() end, "otp.verify: params must be a table", 1, true)
      assert.error_matches(function() c.otp.reverse.verify(42) end, "otp.reverse.verify: otp_id must be a string, got number", 1, true)
      assert.error_matches(function() c.otp.reverse.cancel({ otp_id = "x" }) end, "otp.reverse.cancel: otp_id must be a string, got table", 1, true)
    end)

    it("refuses params cjson cannot encode as invalid", function()
      local c = client()
      local res, err = c.otp.new{ to = NUMBER, language = "en", name = "A", f = function() end }
      assert.is_nil(res)
      assert.equals("invalid", err.kind)
      assert.matches("JSON", err.message)
    end)

    for _, status in ipairs{ 400, 401, 403, 404, 500 } do
      it("returns the API's " .. status .. " as kind api with its message and request id", function()
        local c = client()
        sandbox.fault{ path = "/otp/verify", action = "status", status = status }
        local res, err = c.otp.verify{ otp_id = "otp_1", otp = "123456" }
        assert.is_nil(res)
        assert.equals("api", err.kind)
        assert.equals(status, err.status)
        assert.matches("^err_", err.request_id)
        assert.equals("otp.verify", err.op)
        assert.equals("string", type(err.message))
        assert.is_false(err.retryable)
        assert.matches("^contiguity: otp%.verify: " .. status .. " .+ %(request err_", tostring(err))
      end)
    end

    it("takes the message from data.error, else the top-level message", function()
      local c = client{ max_retries = 0 }
      sandbox.fault{ path = "/otp/new", action = "status", status = 403,
        body = '{"id":"err_abc","object":"error","data":{"error":"Accept the terms","status":403,' ..
               '"agreement_url":"https://contiguity.com/agree"}}' }
      local _, err = c.otp.new{ to = NUMBER, language = "en", name = "A" }
      assert.equals("Accept the terms", err.message)
      assert.equals("https://contiguity.com/agree", err.agreement_url)
      assert.equals("err_abc", err.request_id)
      sandbox.fault{ path = "/otp/new", action = "status", status = 429, body = '{"message":"Slow down"}' }
      _, err = c.otp.new{ to = NUMBER, language = "en", name = "A" }
      assert.equals("Slow down", err.message)
      assert.equals(429, err.status)
      assert.is_true(err.retryable)
      sandbox.fault{ path = "/otp/new", action = "status", status = 502, body = "<html>bad gateway</html>" }
      _, err = c.otp.new{ to = NUMBER, language = "en", name = "A" }
      assert.equals("api", err.kind)
      assert.equals("Bad Gateway", err.message)
    end)

    it("returns kind network for a closed port", function()
      local c = contiguity.new(TOKEN, { base_url = "http://127.0.0.1:1" })
      local res, err = c.otp.verify{ otp_id = "otp_1", otp = "123456" }
      assert.is_nil(res)
      assert.equals("network", err.kind)
      assert.is_true(err.retryable)
      assert.is_nil(err.status)
      assert.matches("^contiguity: otp%.verify: ", tostring(err))
    end)

    it("returns kind timeout when the sandbox answers after the timeout", function()
      local c = client{ timeout = 0.2 }
      sandbox.fault{ path = "/otp/verify", action = "none", delay = 1 }
      local res, err = c.otp.verify{ otp_id = "otp_1", otp = "123456" }
      assert.is_nil(res)
      assert.equals("timeout", err.kind)
    end)

    it("returns kind decode for a malformed or non-JSON success body", function()
      local c = client()
      sandbox.fault{ path = "/otp/verify", action = "malformed" }
      local res, err = c.otp.verify{ otp_id = "otp_1", otp = "123456" }
      assert.is_nil(res)
      assert.equals("decode", err.kind)
      assert.equals(200, err.status)
      for _, body in ipairs{ "OK", '{"id":"req_1"}', "" } do
        sandbox.fault{ path = "/otp/verify", action = "status", status = 200, body = body }
        res, err = c.otp.verify{ otp_id = "otp_1", otp = "123456" }
        assert.is_nil(res)
        assert.equals("decode", err.kind)
        if body == '{"id":"req_1"}' then assert.matches("data", err.message) end
      end
    end)

    it("returns kind network for a truncated body and a dropped connection", function()
      local c = client()
      sandbox.fault{ path = "/otp/verify", action = "truncate" }
      local res, err = c.otp.verify{ otp_id = "otp_1", otp = "123456" }
      assert.is_nil(res)
      assert.equals("network", err.kind)
      sandbox.fault{ path = "/otp/verify", action = "drop" }
      res, err = c.otp.verify{ otp_id = "otp_1", otp = "123456" }
      assert.is_nil(res)
      assert.equals("network", err.kind)
      -- the client recovers on the next call
      assert.is_false(c.otp.verify{ otp_id = send(c).otp_id, otp = "x" }.verified)
    end)

    it("caps the response body at max_response_bytes", function()
      local c = client{ max_response_bytes = 2048 }
      sandbox.fault{ path = "/otp/verify", action = "status", status = 200, body = string.rep(" ", 4096) .. "{}" }
      local res, err = c.otp.verify{ otp_id = "otp_1", otp = "123456" }
      assert.is_nil(res)
      assert.equals("decode", err.kind)
      assert.matches("max_response_bytes", err.message)
    end)
  end)

  describe("close", function()
    it("closes once, twice harmlessly, and refuses calls afterwards", function()
      local c = client()
      send(c)
      assert.equals("contiguity.Client (open)", tostring(c))
      c:close()
      c:close()
      assert.equals("contiguity.Client (closed)", tostring(c))
      local res, err = c.otp.verify{ otp_id = "otp_1", otp = "1" }
      assert.is_nil(res)
      assert.equals("invalid", err.kind)
      assert.matches("closed", err.message)
      res, err = c.otp.reverse.verify("r_otp_1")
      assert.is_nil(res)
      assert.equals("invalid", err.kind)
    end)

    if _VERSION == "Lua 5.4" then
      it("closes a to-be-closed client at the end of its scope", function()
        local chunk = assert(load([[
          local contiguity, url, token = ...
          local kept
          do
            local c <close> = contiguity.new(token, { base_url = url })
            kept = c
          end
          return tostring(kept)
        ]]))
        assert.equals("contiguity.Client (closed)", chunk(contiguity, sandbox.url(), TOKEN))
      end)
    end

    it("is freed by the garbage collector, its otp closures included", function()
      local weak = setmetatable({}, { __mode = "v" })
      for i = 1, 50 do
        local c = client()
        c.otp.verify{ otp_id = "otp_x", otp = "1" }
        weak[i] = c
        weak[50 + i] = c.otp.reverse.verify -- a closure that holds its client
      end
      collectgarbage()
      collectgarbage()
      assert.is_nil(next(weak))
    end)
  end)

  describe("debug = true", function()
    it("writes one line per request to stderr, without the token", function()
      local code = [[
        local c = require("contiguity").new("contiguity_sk_STDERRSECRET", { base_url = "]] .. sandbox.url() .. [[", debug = true })
        c.otp.verify{ otp_id = "otp_x", otp = "123456" }
        c.otp.reverse.verify("r_otp_y")
      ]]
      local cpath = "LUA_CPATH='" .. package.cpath .. "' LUA_PATH='" .. package.path .. "'"
      local out = run_lua(cpath, code)
      local n = 0
      for line in out:gmatch("[^\n]+") do
        n = n + 1
        assert.matches("^contiguity: otp%.[%a.]+ [A-Z]+ /otp/%S+ %-> api 404 %(request err_%w+%) [%d.]+ ms$", line)
        assert.not_matches("STDERRSECRET", line)
      end
      assert.equals(2, n)
    end)
  end)

  describe("the token stays secret", function()
    it("never appears in errors or debug lines, whatever happens", function()
      local secret = "contiguity_sk_TOPSECRET_0123456789"
      local lines = {}
      local c = contiguity.new(secret, { base_url = sandbox.url(), timeout = 0.3,
        debug = function(line) lines[#lines + 1] = line end })
      local seen = {}
      local function record(res, err)
        if err then seen[#seen + 1] = tostring(err); seen[#seen + 1] = err.message end
        return res
      end
      local sent = record(c.otp.new{ to = NUMBER, language = "en", name = "A" })
      local code = sandbox.last_code(NUMBER)
      record(c.otp.verify{ otp_id = sent.otp_id, otp = code })
      record(c.otp.new{ to = "bad", language = "en", name = "A" })
      for _, f in ipairs{ { action = "status", status = 401 }, { action = "malformed" },
                          { action = "drop" }, { action = "truncate" }, { action = "none", delay = 1 } } do
        f.path = "/otp/verify"
        sandbox.fault(f)
        record(c.otp.verify{ otp_id = sent.otp_id, otp = "123456" })
      end
      record(contiguity.new(secret, { base_url = "http://127.0.0.1:1" }).otp.verify{ otp_id = "x", otp = "1" })
      assert.is_true(#lines >= 7)
      assert.is_true(#seen >= 7)
      for _, s in ipairs(lines) do
        assert.not_matches("TOPSECRET", s)
        assert.not_matches(code, s, 1, true)
        assert.not_matches(NUMBER, s, 1, true)
        assert.matches("^contiguity: otp%.%a+ [A-Z]+ /otp/", s)
      end
      for _, s in ipairs(seen) do assert.not_matches("TOPSECRET", s) end
    end)
  end)
end)
