-- request_spec.lua (unit): the request builder and client-side validation, with
-- no server: a transport function records the request table each call builds.
local contiguity = require "contiguity"

local TOKEN = "contiguity_sk_unit_request"
local BASE = "https://api.example.test"

-- A client whose transport keeps the last request and answers a canned 200.
local function recorder()
  local seen = {}
  local c = contiguity.new(TOKEN, { base_url = BASE, transport = function(req)
    seen[#seen + 1] = req
    return 200, '{"id":"req_1","timestamp":1,"api_version":"v1","object":"response","data":{}}', {}
  end })
  return c, seen
end

-- refused(field, pattern, call(...)): the call's nil, err last, so both arrive.
local function refused(field, pattern, res, err)
  assert.is_nil(res)
  assert.equals("invalid", err.kind)
  assert.equals(field, err.field)
  if pattern then assert.matches(pattern, err.message) end
end

describe("the request builder", function()
  it("builds method, url, path, headers and a JSON body for each op", function()
    local c, seen = recorder()
    assert(c.otp.new{ to = "+15551234567", language = "en", name = "App" })
    assert(c.otp.send{ to = "+15551234567", language = "en", name = "App" })
    assert(c.otp.verify{ otp_id = "otp_1", otp = "012345" })
    assert(c.otp.resend{ otp_id = "otp_1" })
    assert(c.otp.reverse.initiate{ number = "+15551234567" })
    assert(c.otp.reverse.verify("r_1"))
    assert(c.otp.reverse.cancel("r_1"))
    local want = {
      { "POST", "/otp/new" }, { "POST", "/otp/new" }, { "POST", "/otp/verify" }, { "POST", "/otp/resend" },
      { "POST", "/otp/reverse/initiate" }, { "GET", "/otp/reverse/verify/r_1" },
      { "POST", "/otp/reverse/cancel/r_1" },
    }
    for i, w in ipairs(want) do
      assert.equals(w[1], seen[i].method)
      assert.equals(w[2], seen[i].path)
      assert.equals(BASE .. w[2], seen[i].url)
      assert.equals("Token " .. TOKEN, seen[i].headers.Authorization)
      assert.equals("application/json", seen[i].headers["Content-Type"])
    end
    assert.is_nil(seen[6].body)
    assert.is_nil(seen[7].body)
    local body = require("cjson").decode(seen[3].body)
    assert.same({ otp_id = "otp_1", otp = "012345" }, body)
  end)

  it("passes unknown params fields through unchanged", function()
    local c, seen = recorder()
    assert(c.otp.new{ to = "+15551234567", language = "en", name = "App", brand = { color = "red" } })
    assert.same({ color = "red" }, require("cjson").decode(seen[1].body).brand)
  end)

  it("percent-encodes an id into one path segment, and refuses ids made only of dots", function()
    local c, seen = recorder()
    assert(c.otp.reverse.verify("a b/../c?d#e%"))
    assert.equals("/otp/reverse/verify/a%20b%2F..%2Fc%3Fd%23e%25", seen[1].path)
    for _, id in ipairs{ ".", "..", "..." } do
      refused("otp_id", "dots", c.otp.reverse.cancel(id))
    end
    refused("otp_id", "empty", c.otp.reverse.verify(""))
    assert.equals(1, #seen)
  end)

  it("accepts colon calls", function()
    local c, seen = recorder()
    assert(c.otp:verify{ otp_id = "otp_1", otp = "1" })
    assert(c.otp.reverse:verify("r_1"))
    assert.equals(2, #seen)
  end)
end)

describe("validation, before any I/O", function()
  local c, seen
  before_each(function() c, seen = recorder() end)
  after_each(function() assert.equals(0, #seen, "nothing reaches the transport") end)

  local function new(p) return c.otp.new(p) end

  it("checks E.164 numbers without echoing them", function()
    for _, bad in ipairs{ "15551234567", "+0123456", "+1", "+1234567890123456", "+1555-123", "" } do
      local res, err = new{ to = bad, language = "en", name = "App" }
      refused("to", "E%.164", res, err)
      if #bad > 3 then assert.not_matches(bad, err.message, 1, true) end
    end
  end)

  it("names the first missing required field", function()
    refused("to", "required", new{ language = "en", name = "App" })
    refused("otp", "required", c.otp.verify{ otp_id = "x" })
    refused("otp_id", "required", c.otp.resend{})
    refused("number", "required", c.otp.reverse.initiate{})
  end)

  it("refuses a numeric code (it would lose leading zeros)", function()
    refused("otp", "leading zeros", c.otp.verify{ otp_id = "x", otp = 12345 })
  end)

  it("checks factor, service and success_url", function()
    local base = { number = "+15551234567" }
    local function with(k, v) local t = { number = base.number }; t[k] = v; return t end
    refused("factor", "16", c.otp.reverse.initiate(with("factor", string.rep("x", 17))))
    refused("factor", "empty", c.otp.reverse.initiate(with("factor", "")))
    refused("service", "imessage", c.otp.reverse.initiate(with("service", "fax")))
    refused("success_url", "URL", c.otp.reverse.initiate(with("success_url", "ftp://x")))
    refused("to", "E%.164", c.otp.reverse.initiate(with("to", "nope")))
  end)

  it("raises for misuse no data can cause", function()
    assert.error_matches(function() c.otp.new("x") end, "params must be a table, got string")
    assert.error_matches(function() c.otp.reverse.verify(12) end, "otp_id must be a string, got number")
  end)

  it("refuses params that cannot be JSON", function()
    local res, err = new{ to = "+15551234567", language = "en", name = "App", f = function() end }
    assert.is_nil(res)
    assert.equals("invalid", err.kind)
    assert.matches("JSON", err.message)
  end)
end)
