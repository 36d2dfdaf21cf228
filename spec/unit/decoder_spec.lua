-- decoder_spec.lua (unit): the response decoder every transport shares, fed canned
-- answers through a transport function: no server.
local contiguity = require "contiguity"

local function client(status, body, headers, opts)
  opts = opts or {}
  opts.base_url = "https://api.example.test"
  opts.transport = function() return status, body, headers or {} end
  return contiguity.new("contiguity_sk_unit_decoder", opts)
end

local function is_integer(v)
  if math.type then return math.type(v) == "integer" end
  return type(v) == "number" and v == math.floor(v)
end

local ENVELOPE = '{"id":"req_9","timestamp":1726502400000,"api_version":"v2","object":"response",'
  .. '"data":{"verified":false,"extra":null,"nested":{"a":null,"b":[1,2]}}}'

describe("the response decoder", function()
  it("puts data's fields at top level and the rest of the envelope in metadata", function()
    local res, err = client(200, ENVELOPE).otp.verify{ otp_id = "x", otp = "1" }
    assert.is_nil(err)
    assert.is_false(res.verified)
    assert.equals("req_9", res.metadata.id)
    assert.equals("v2", res.metadata.api_version)
    assert.equals("response", res.metadata.object)
    assert.equals(1726502400000, res.metadata.timestamp)
    assert.is_true(is_integer(res.metadata.timestamp))
    assert.is_nil(res.metadata.data)
  end)

  it("turns JSON null into nil, nested too", function()
    local res = client(200, ENVELOPE).otp.verify{ otp_id = "x", otp = "1" }
    assert.is_nil(res.extra)
    assert.is_nil(res.nested.a)
    assert.same({ 1, 2 }, res.nested.b)
  end)

  it("reports a 2xx that is not the API's JSON as kind decode", function()
    for _, body in ipairs{ "<html>", "", "[1,2]", '{"id":"req_3"}' } do
      local res, err = client(200, body).otp.verify{ otp_id = "x", otp = "1" }
      assert.is_nil(res)
      assert.equals("decode", err.kind)
      assert.equals(200, err.status)
      assert.equals("otp.verify", err.op)
    end
    local _, err = client(200, '{"id":"req_3"}').otp.verify{ otp_id = "x", otp = "1" }
    assert.equals("req_3", err.request_id)
  end)

  it("reports the API's refusal in its own words, with status and request id", function()
    local _, err = client(404, '{"id":"err_1","data":{"error":"OTP not found"}}').otp.reverse.verify("x")
    assert.equals("api", err.kind)
    assert.equals(404, err.status)
    assert.equals("OTP not found", err.message)
    assert.equals("err_1", err.request_id)
    assert.matches("^contiguity: otp%.reverse%.verify: 404 OTP not found %(request err_1%)$", tostring(err))
    local _, e2 = client(400, '{"message":"bad"}').otp.reverse.verify("x")
    assert.equals("bad", e2.message)
    local _, e3 = client(500, "oops").otp.reverse.verify("x")
    assert.equals("Internal Server Error", e3.message)
  end)

  it("prints a long refusal with its request id (the message grows the buffer)", function()
    for _, n in ipairs{ 995, 2015, 8160 } do
      local body = '{"id":"req_abc","message":"' .. ("x"):rep(n) .. '"}'
      local _, err = client(400, body).otp.verify{ otp_id = "x", otp = "1" }
      local s = tostring(err)
      assert.equals(n, #err.message)
      assert.matches(" %(request req_abc%)$", s)
    end
  end)

  it("marks 429 retryable always, 502/503/504 only for an idempotent op", function()
    for _, st in ipairs{ 502, 503, 504 } do
      assert.is_true(select(2, client(st, "").otp.reverse.verify("x")).retryable)
      assert.is_false(select(2, client(st, "").otp.new{ to = "+15551234567", language = "en", name = "A" }).retryable)
    end
    assert.is_true(select(2, client(429, "").otp.new{ to = "+15551234567", language = "en", name = "A" }).retryable)
    assert.is_false(select(2, client(500, "").otp.reverse.verify("x")).retryable)
  end)

  it("reads Retry-After as seconds or an HTTP date, and Location of a refused redirect", function()
    local _, err = client(429, "", { ["retry-after"] = "7" }).otp.reverse.verify("x")
    assert.equals(7, err.retry_after)
    _, err = client(503, "", { ["Retry-After"] = "Wed, 21 Oct 2015 07:28:00 GMT" }).otp.reverse.verify("x")
    assert.equals(0, err.retry_after) -- a date in the past: now
    _, err = client(302, "", { Location = "https://elsewhere.test/" }).otp.reverse.verify("x")
    assert.equals("https://elsewhere.test/", err.location)
  end)

  it("maps a transport's failures to network and timeout, and refuses what it cannot trust", function()
    local c = contiguity.new("contiguity_sk_unit_decoder", { base_url = "https://api.example.test",
      transport = function() return nil, "connection refused" end })
    assert.equals("network", select(2, c.otp.reverse.verify("x")).kind)
    c = contiguity.new("contiguity_sk_unit_decoder", { base_url = "https://api.example.test",
      transport = function() return nil, "timeout" end })
    assert.equals("timeout", select(2, c.otp.reverse.verify("x")).kind)
    assert.equals("network", select(2, client(99, "").otp.reverse.verify("x")).kind)
    local _, err = client(200, ENVELOPE, nil, { max_response_bytes = 10 }).otp.reverse.verify("x")
    assert.equals("decode", err.kind)
  end)
end)
