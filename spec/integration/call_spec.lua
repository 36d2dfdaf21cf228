-- call_spec.lua: what one call does around its transport: the guard's check
-- and record, the debug hook, a client closed by Lua code during the call, and
-- contiguity.new's handling of the caller's options table.
local contiguity = require "contiguity"
local sandbox = require "spec.helpers.sandbox"

local A, B = "+15557000001", "+15557000002"

local function params(to) return { to = to, language = "en", name = "Call" } end

describe("one call", function()
  before_each(function() sandbox.reset() end)

  describe("the guard", function()
    it("charges an async send to the number it was made for, even when the caller reuses its params table", function()
      local c = sandbox.client{ guard = { sends_per_number = { 2, 600 } } }
      local p, ids = params(A), {}
      assert.is_true(c.otp.new(p, function(res, err) ids.a = assert(res, tostring(err)).otp_id end))
      p.to = B
      assert.is_true(c.otp.new(p, function(res, err) ids.b = assert(res, tostring(err)).otp_id end))
      c:wait(10)
      -- A's resend counts against A (its second of two) ...
      assert(c.otp.resend{ otp_id = ids.a })
      local _, err = c.otp.resend{ otp_id = ids.a }
      assert.equals("limited", err.kind)
      -- ... so B has used one of its two sends
      assert(c.otp.new(params(B)))
      local _, err2 = c.otp.new(params(B))
      assert.equals("limited", err2.kind)
      c:close()
    end)

    it("with on_store_error = open, says through the client's debug function that a call went uncounted", function()
      local lines = {}
      local store = { hit = function() error("redis is down") end }
      local c = sandbox.client{ debug = function(line) lines[#lines + 1] = line end,
        guard = { sends_per_number = { 1, 60 }, store = store, key = "k", on_store_error = "open" } }
      assert(c.otp.new(params(A)))
      local said = table.concat(lines, "\n")
      assert.matches("on_store_error = \"open\"", said, 1, true)
      assert.matches("redis is down", said, 1, true)
      c:close()
    end)
  end)

  -- Lua code the call itself runs (a guard's store, the params' metamethods)
  -- may close the client: the call is refused, nothing is started or sent.
  local closers = {
    ["the guard's store"] = function()
      local c
      local store = { hit = function() c:close(); return true end }
      c = sandbox.client{ guard = { sends_per_number = { 5, 60 }, store = store, key = "k" } }
      return c, c.otp.new, params(A)
    end,
    ["a params metamethod"] = function()
      local c = sandbox.client()
      return c, c.otp.verify, setmetatable({ otp_id = "x" }, { __index = function(_, k)
        if k == "otp" then c:close(); return "123456" end
      end })
    end,
  }
  for who, make in pairs(closers) do
    for _, async in ipairs{ false, true } do
      it(who .. " closing the client refuses the call (" .. (async and "async" or "blocking") .. ")", function()
        local c, call, p = make()
        local cb = async and function() error("no callback for a refused call") end or nil
        local res, err = call(p, cb)
        assert.is_nil(res)
        assert.equals("invalid", err.kind)
        assert.matches("closed", err.message)
        assert.equals(0, c:pending())
        assert.same({}, sandbox.requests())
      end)
    end
  end

  describe("a debug function that raises", function()
    local function raising() error("hook exploded") end

    it("does not replace a blocking call's result", function()
      local c = sandbox.client{ debug = raising }
      local res, err = c.otp.new(params(A))
      assert.is_nil(err)
      assert.is_string(res.otp_id)
      local _, err2 = c.otp.reverse.verify("nope")
      assert.equals("api", err2.kind) -- an error result is not replaced either
      c:close()
    end)

    it("does not drop an async call's callback", function()
      local c = sandbox.client{ debug = raising }
      local got = 0
      for i = 1, 3 do
        assert.is_true(c.otp.new(params("+1555700001" .. i), function(res) if res then got = got + 1 end end))
      end
      c:wait(10)
      assert.equals(3, got)
      assert.equals(0, c:pending())
      c:close()
    end)
  end)

  describe("contiguity.new", function()
    it("never writes into the caller's options table", function()
      local opts = { base_url = sandbox.url() .. "///", timeout = 5 }
      local c = contiguity.new(sandbox.TOKEN, opts)
      assert.same({ base_url = sandbox.url() .. "///", timeout = 5 }, opts)
      assert(c.otp.new(params(A)))
      local none = {}
      local ok = pcall(contiguity.new, sandbox.TOKEN, none)
      assert.is_true(ok)
      assert.same({}, none)
    end)

    for _, v in ipairs{ 1e300, -1e300, 2 ^ 63, 0 / 0, 1 / 0 } do
      it("refuses max_connections = " .. tostring(v) .. " with a clear message", function()
        assert.error_matches(function() contiguity.new(sandbox.TOKEN, { max_connections = v }) end,
          "option 'max_connections' must be a whole number from 1 to 1024", 1, true)
      end)
    end
  end)
end)
