-- transport_spec.lua: the `transport` option (a Lua function that moves the
-- bytes) on every Lua: a LuaSocket transport that yields inside a
-- coroutine, the request table it sees, and error/decode parity with the
-- libcurl client.
local contiguity = require("contiguity")
local _ -- the discarded values of multiple assignments
local cjson = require("cjson")
local http = require("spec.helpers.http")
local sandbox = require("spec.helpers.sandbox")

local TOKEN = sandbox.TOKEN
local NUMBER = "+15551234567"
local unpack = table.unpack or unpack

local function pack(...) return { n = select("#", ...), ... } end

-- A host-style transport: it hands the request to its scheduler with
-- coroutine.yield (as cosockets, Skynet or copas would), then does the I/O
-- with LuaSocket when resumed. socket.http gives lower-case header names.
local function socket_transport(req)
  local cmd = coroutine.yield("io", req)
  assert(cmd == "go", "resumed with " .. tostring(cmd))
  return http.request(req.method, req.url, { headers = req.headers, body = req.body })
end

local function client(transport, opts)
  opts = opts or {}
  opts.base_url = opts.base_url or sandbox.url()
  opts.transport = transport
  return contiguity.new(TOKEN, opts)
end

-- A tiny scheduler: runs each function in its own coroutine, resuming them
-- round-robin, so every call is suspended (mid-call, under the module's
-- closure) while the others run. Returns the results of each and how many
-- times each yielded.
local function run_all(fns)
  local cos, out, yields = {}, {}, {}
  for i, f in ipairs(fns) do
    cos[i] = coroutine.create(f)
    yields[i] = 0
  end
  local live = #cos
  local arg = {}
  while live > 0 do
    for i, co in ipairs(cos) do
      if coroutine.status(co) == "suspended" then
        local r = pack(coroutine.resume(co, arg[i]))
        assert(r[1], r[2])
        if coroutine.status(co) == "dead" then
          out[i] = { n = r.n - 1, unpack(r, 2, r.n) }
          live = live - 1
        else
          assert.equals("io", r[2])
          assert.equals("table", type(r[3]))
          yields[i] = yields[i] + 1
          arg[i] = "go"
        end
      end
    end
  end
  return out, yields
end

local function run(f)
  local out, yields = run_all{ f }
  return yields[1], unpack(out[1], 1, out[1].n)
end

-- A transport that records the request and answers with canned values.
local function canned(...)
  local answer = pack(...)
  local seen = {}
  return function(req)
    seen[#seen + 1] = req
    return unpack(answer, 1, answer.n)
  end, seen
end

local function envelope(data)
  return cjson.encode{ id = "req_1", timestamp = 1785380854155, api_version = "v1",
                       object = "response", data = data }
end

describe("the transport option", function()
  before_each(function() sandbox.reset() end)

  describe("a transport that yields inside a coroutine", function()
    it("completes every call on " .. _VERSION .. (jit and " (" .. jit.version .. ")" or ""), function()
      local c = client(socket_transport)
      local n, res, err = run(function()
        return c.otp.new{ to = NUMBER, language = "en", name = "Yield" }
      end)
      assert.is_nil(err)
      assert.equals(1, n)
      assert.matches("^otp_", res.otp_id)
      local code = sandbox.last_code(NUMBER)
      local out = run_all{
        function() return c.otp.verify{ otp_id = res.otp_id, otp = "x" .. code } end,
        function() return c.otp.resend{ otp_id = res.otp_id } end,
        function() return c.otp.reverse.initiate{ number = NUMBER, factor = "4321" } end,
      }
      assert.is_false(out[1][1].verified)
      assert.is_true(out[2][1].resent)
      local s = out[3][1]
      assert.matches("^r_otp_", s.otp_id)
      local _, ok = run(function() return c.otp.verify{ otp_id = res.otp_id, otp = code } end)
      assert.is_true(ok.verified)
      local _, st = run(function() return c.otp.reverse.verify(s.otp_id) end)
      assert.equals("pending", st.status)
      local _, cancelled = run(function() return c.otp.reverse:cancel(s.otp_id) end)
      assert.equals("cancelled", cancelled.status)
      assert.equals(7, #sandbox.requests())
    end)

    it("interleaves calls: each is suspended in the transport while the others run", function()
      local c = client(socket_transport)
      local fns = {}
      for i = 1, 5 do
        fns[i] = function()
          local r, e = c.otp.send{ to = "+1555000000" .. i, language = "en", name = "N" .. i }
          return r and r.otp_id, e
        end
      end
      local out, yields = run_all(fns)
      for i = 1, 5 do
        assert.equals(1, yields[i])
        assert.matches("^otp_", out[i][1])
        assert.equals(out[i][1], select(2, sandbox.last_code("+1555000000" .. i)))
      end
    end)

    it("validates before the transport runs: nothing yields for invalid params", function()
      local c = client(socket_transport)
      local n, res, err = run(function() return c.otp.new{ to = "555", language = "en", name = "A" } end)
      assert.equals(0, n)
      assert.is_nil(res)
      assert.equals("invalid", err.kind)
      assert.equals("to", err.field)
    end)
  end)

  describe("the request table", function()
    it("has method, url, path, headers, body and timeout", function()
      local t, seen = canned(200, envelope{ otp_id = "otp_x" }, {})
      local c = client(t, { timeout = 7, base_url = "http://127.0.0.1:9/" })
      assert.equals("otp_x", c.otp.new{ to = NUMBER, language = "en", name = "A" }.otp_id)
      local req = seen[1]
      assert.equals("POST", req.method)
      assert.equals("http://127.0.0.1:9/otp/new", req.url)
      assert.equals("/otp/new", req.path)
      assert.equals(7, req.timeout)
      assert.same({ to = NUMBER, language = "en", name = "A" }, cjson.decode(req.body))
      assert.equals("Token " .. TOKEN, req.headers.Authorization)
      assert.equals("application/json", req.headers["Content-Type"])
      assert.equals("application/json", req.headers.Accept)
      assert.matches("^contiguity%-lua/", req.headers["User-Agent"])
      c.otp.reverse.verify("a b/../c")
      req = seen[2]
      assert.equals("GET", req.method)
      assert.equals("/otp/reverse/verify/a%20b%2F..%2Fc", req.path)
      assert.equals("http://127.0.0.1:9/otp/reverse/verify/a%20b%2F..%2Fc", req.url)
      assert.is_nil(req.body)
      c.otp.reverse.cancel("r_1")
      assert.equals("POST", seen[3].method)
      assert.equals("/otp/reverse/cancel/r_1", seen[3].path)
    end)

    it("carries a user_agent option after the module's own", function()
      local t, seen = canned(200, envelope{ verified = true })
      client(t, { user_agent = "myapp/2" }).otp.verify{ otp_id = "o", otp = "1" }
      assert.matches("^contiguity%-lua/.* myapp/2$", seen[1].headers["User-Agent"])
    end)
  end)

  describe("errors", function()
    it("maps nil, 'timeout' to kind timeout and nil, 'closed' to kind network", function()
      local res, err = client(canned(nil, "timeout")).otp.verify{ otp_id = "o", otp = "1" }
      assert.is_nil(res)
      assert.equals("timeout", err.kind)
      assert.equals("otp.verify", err.op)
      assert.matches("timeout", err.message)
      _, err = client(canned(nil, "connect timed out")).otp.verify{ otp_id = "o", otp = "1" }
      assert.equals("timeout", err.kind)
      _, err = client(canned(nil, "closed")).otp.verify{ otp_id = "o", otp = "1" }
      assert.equals("network", err.kind)
      assert.matches("closed", err.message)
      assert.is_nil(err.status)
      assert.matches("^contiguity: otp%.verify: ", tostring(err))
      _, err = client(canned(nil)).otp.verify{ otp_id = "o", otp = "1" }
      assert.equals("network", err.kind)
    end)

    it("decodes status and body exactly as the libcurl client does", function()
      local faults = {
        { action = "status", status = 403 },
        { action = "status", status = 429, body = '{"message":"Slow down"}', headers = { ["Retry-After"] = "3" } },
        { action = "status", status = 502, body = "<html>bad gateway</html>" },
        { action = "status", status = 302, headers = { Location = "https://elsewhere.example/x" } },
        { action = "status", status = 403, body = '{"id":"err_abc","object":"error","data":{"error":"Accept",'
            .. '"agreement_url":"https://contiguity.com/agree"}}' },
        { action = "malformed" },
        { action = "status", status = 200, body = "OK" },
        { action = "status", status = 200, body = '{"id":"req_1"}' },
        { action = "status", status = 200, body = '{"id":"req_1","timestamp":1785380854155,"data":'
            .. '{"verified":true,"extra":null,"nested":{"a":null,"b":[1,2],"c":{"d":null}}}}' },
      }
      local curl = client(nil, { max_retries = 0 }) -- one attempt, like the transport
      local host = client(socket_transport)
      for _, f in ipairs(faults) do
        f.path = "/otp/verify"
        f.times = -1 -- the libcurl client may retry some of them
        sandbox.clear_faults()
        sandbox.fault(f)
        local a = pack(curl.otp.verify{ otp_id = "otp_1", otp = "123456" })
        local _, r1, r2 = run(function() return host.otp.verify{ otp_id = "otp_1", otp = "123456" } end)
        local b = { n = 2, r1, r2 }
        assert.same(a[1], b[1])
        if a[2] then
          -- the sandbox makes a fresh request id per response
          local ids = {}
          a[2].attempts = nil -- how often libcurl tried: not part of the decoding
          for _, e in ipairs{ a[2], b[2] } do
            ids[#ids + 1] = (tostring(e):gsub("([a-z]+_)%w+%)", "%1*)"))
            if e.request_id then e.request_id = e.request_id:match("^[a-z]+_") end
          end
          assert.equals(getmetatable(a[2]), getmetatable(b[2]))
          assert.same(a[2], b[2])
          assert.equals(ids[1], ids[2])
        else
          assert.is_nil(b[2])
        end
      end
      sandbox.clear_faults()
      local _, res, err = run(function() return host.otp.verify{ otp_id = "o", otp = "1" } end)
      assert.is_nil(res)
      assert.equals(404, err.status)
    end)

    it("reads Retry-After as seconds or as an HTTP date, as the libcurl client does", function()
      local host = client(socket_transport)
      local cases = {
        { "Wed, 21 Oct 2037 07:28:00 GMT", function(s) return s > 3e8 end }, -- years ahead
        { "Wed, 21 Oct 2015 07:28:00 GMT", function(s) return s == 0 end },  -- in the past
        { "7", function(s) return s == 7 end },
      }
      for _, case in ipairs(cases) do
        sandbox.clear_faults()
        sandbox.fault{ path = "/otp/verify", action = "status", status = 429, times = -1,
                       headers = { ["Retry-After"] = case[1] } }
        local _, res, err = run(function() return host.otp.verify{ otp_id = "otp_1", otp = "123456" } end)
        assert.is_nil(res)
        assert.equals(429, err.status)
        assert.is_true(case[2](err.retry_after), case[1] .. " gave " .. tostring(err.retry_after))
      end
      sandbox.clear_faults()
    end)

    it("turns JSON null into nil and keeps integer timestamps", function()
      local t = canned(200, '{"id":"req_9","timestamp":1785380854155,"api_version":"v1","object":"response",'
        .. '"note":null,"region":"us",'
        .. '"data":{"verified":true,"extra":null,"nested":{"a":null,"c":{"d":null,"e":"x"}}}}')
      local res = client(t).otp.verify{ otp_id = "o", otp = "1" }
      assert.is_true(res.verified)
      assert.is_nil(res.extra)
      assert.is_nil(res.nested.a)
      assert.is_nil(res.nested.c.d)
      assert.equals("x", res.nested.c.e)
      assert.equals(1785380854155, res.metadata.timestamp)
      assert.equals("req_9", res.metadata.id)
      -- metadata is the rest of the envelope: nulls gone there too, data not repeated
      assert.is_nil(res.metadata.note)
      assert.is_nil(res.metadata.data)
      assert.equals("us", res.metadata.region)
      assert.same({ "api_version", "id", "object", "region", "timestamp" }, (function()
        local keys = {}
        for k in pairs(res.metadata) do keys[#keys + 1] = k end
        table.sort(keys)
        return keys
      end)())
    end)

    it("raises a clear error for a callback argument", function()
      local t, seen = canned(200, envelope{})
      local c = client(t)
      assert.has_error(function()
        c.otp.verify({ otp_id = "o", otp = "1" }, function() end)
      end, "contiguity: otp.verify: callbacks need the libcurl transport; a transport function runs the call itself")
      assert.error_matches(function() c.otp.reverse.verify("r_1", function() end) end,
        "otp.reverse.verify: callbacks need the libcurl transport", 1, true)
      assert.equals(0, #seen)
    end)

    it("propagates an error the transport raises", function()
      local boom = { "transport exploded" }
      local c = client(function() error(boom) end)
      local ok, e = pcall(c.otp.verify, { otp_id = "o", otp = "1" })
      assert.is_false(ok)
      assert.equals(boom, e)
      c = client(function() error("host I/O failed", 0) end)
      assert.has_error(function() c.otp.new{ to = NUMBER, language = "en", name = "A" } end, "host I/O failed")
      -- inside a coroutine too
      c = client(function(req) coroutine.yield("io", req); error("after yield", 0) end)
      local co = coroutine.create(function() return c.otp.resend{ otp_id = "o" } end)
      assert.is_true((coroutine.resume(co)))
      local ok2, e2 = coroutine.resume(co, "go")
      assert.is_false(ok2)
      assert.equals("after yield", e2)
    end)
  end)
end)
