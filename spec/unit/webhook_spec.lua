-- webhook_spec.lua (unit): contiguity.webhook (verify, parse, construct) against
-- signatures computed independently with the openssl command line; no server.
local contiguity = require "contiguity"

local webhook = contiguity.webhook
local signing = require "spec.helpers.webhook"
local openssl_hmac, header, is_integer_valued = signing.openssl_hmac, signing.header, signing.is_integer_valued
local SECRET = "whsec_test_8f3a1c"
local NUMBER = "+15551234567"
local NOW = 1726502400
local BODY = '{"id":"evt_dgUIkRo18","type":"otp.reverse.verified","timestamp":1726502400,'
  .. '"api_version":"v2025.12.10","data":{"otp_id":"r_otp_123456","number":"+15551234567",'
  .. '"status":"verified"}}'

local function at(now, extra)
  local o = { now = now }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

describe("contiguity.webhook.verify", function()
  local good
  setup(function() good = header(NOW, SECRET, BODY) end)

  it("accepts a delivery signed with the secret", function()
    assert.same({ true }, { webhook.verify(BODY, good, SECRET, at(NOW)) })
    assert.same({ true }, { webhook.verify(BODY, good, SECRET, at(NOW + 299)) })
  end)

  it("refuses a wrong secret", function()
    assert.same({ false, "mismatch" }, { webhook.verify(BODY, good, SECRET .. "x", at(NOW)) })
    assert.same({ false, "mismatch" },
      { webhook.verify(BODY, header(NOW, "whsec_other", BODY), SECRET, at(NOW)) })
  end)

  it("refuses a body altered by one byte", function()
    local altered = BODY:gsub("r_otp_123456", "r_otp_123457")
    assert.are_not.equal(BODY, altered)
    assert.same({ false, "mismatch" }, { webhook.verify(altered, good, SECRET, at(NOW)) })
    assert.same({ false, "mismatch" }, { webhook.verify(BODY .. " ", good, SECRET, at(NOW)) })
  end)

  it("refuses a body re-serialised with the same meaning", function()
    local reformatted = BODY:gsub(",", ", ")
    assert.same({ false, "mismatch" }, { webhook.verify(reformatted, good, SECRET, at(NOW)) })
  end)

  it("says missing for no header", function()
    assert.same({ false, "missing" }, { webhook.verify(BODY, nil, SECRET) })
    assert.same({ false, "missing" }, { webhook.verify(BODY, "", SECRET) })
  end)

  it("says malformed for a header without t, without v1, or with a bad v1", function()
    local v1 = good:match("v1=(%x+)")
    local cases = {
      "v1=" .. v1,                                   -- no t
      "t=" .. NOW,                                   -- no v1
      "t=" .. NOW .. ",v1=" .. v1:sub(1, 63) .. "g", -- non-hex
      "t=" .. NOW .. ",v1=" .. v1:sub(1, 62),        -- too short
      "t=" .. NOW .. ",v1=" .. v1 .. "00",           -- too long
      "t=" .. NOW .. ",v1=",                         -- empty
      "t=abc,v1=" .. v1,                             -- bad t
      "t=-1,v1=" .. v1,
      "t=,v1=" .. v1,
      "t=1.5,v1=" .. v1,
      "t=" .. NOW .. ",t=" .. NOW .. ",v1=" .. v1,   -- two t
      "t=" .. NOW .. ",garbage,v1=" .. v1,           -- an item that is not key=value
      "nonsense", ",,,", "=", "t", "v1",
    }
    for _, h in ipairs(cases) do
      assert.same({ false, "malformed" }, { webhook.verify(BODY, h, SECRET, at(NOW)) }, h)
    end
    -- a repeated header handed over as a table (OpenResty does that)
    assert.same({ false, "malformed" }, { webhook.verify(BODY, { good, good }, SECRET, at(NOW)) })
  end)

  it("tolerates spaces, empty items, unknown schemes and uppercase hex", function()
    local t, v1 = good:match("t=(%d+),v1=(%x+)")
    for _, h in ipairs({
      " t=" .. t .. " , v1=" .. v1 .. " ",
      "t=" .. t .. ",,v0=whatever,v1=" .. v1 .. ",",
      "v1=" .. v1 .. ",t=" .. t,
      "t=" .. t .. ",v1=" .. v1:upper(),
    }) do
      assert.same({ true }, { webhook.verify(BODY, h, SECRET, at(NOW)) }, h)
    end
  end)

  it("says expired for an old timestamp and for one too far in the future", function()
    assert.same({ false, "expired" }, { webhook.verify(BODY, good, SECRET, at(NOW + 301)) })
    assert.same({ false, "expired" }, { webhook.verify(BODY, good, SECRET, at(NOW - 301)) })
    local old = header(NOW - 3600, SECRET, BODY)
    assert.same({ false, "expired" }, { webhook.verify(BODY, old, SECRET, at(NOW)) })
    local future = header(NOW + 3600, SECRET, BODY)
    assert.same({ false, "expired" }, { webhook.verify(BODY, future, SECRET, at(NOW)) })
    -- against the real clock: a 2024 timestamp is long expired
    assert.same({ false, "expired" }, { webhook.verify(BODY, good, SECRET) })
  end)

  it("honours tolerance, and false disables the time check", function()
    local old = header(NOW - 3600, SECRET, BODY)
    assert.same({ true }, { webhook.verify(BODY, old, SECRET, at(NOW, { tolerance = 3600 })) })
    assert.same({ false, "expired" },
      { webhook.verify(BODY, old, SECRET, at(NOW, { tolerance = 3599 })) })
    assert.same({ true }, { webhook.verify(BODY, old, SECRET, { tolerance = false }) })
    assert.same({ true }, { webhook.verify(BODY, good, SECRET, { tolerance = false }) })
    assert.equals(300, webhook.DEFAULT_TOLERANCE)
  end)

  it("checks the signature before the time: a forged old delivery is a mismatch", function()
    local forged = header(NOW - 3600, "whsec_attacker", BODY)
    assert.same({ false, "mismatch" }, { webhook.verify(BODY, forged, SECRET, at(NOW)) })
  end)

  it("accepts any of several v1 signatures (secret rotation on the sender)", function()
    local old_sig = openssl_hmac("whsec_old", NOW .. "." .. BODY)
    local new_sig = openssl_hmac(SECRET, NOW .. "." .. BODY)
    local h = "t=" .. NOW .. ",v1=" .. old_sig .. ",v1=" .. new_sig
    assert.same({ true }, { webhook.verify(BODY, h, SECRET, at(NOW)) })
    assert.same({ true }, { webhook.verify(BODY, h, "whsec_old", at(NOW)) })
    assert.same({ false, "mismatch" }, { webhook.verify(BODY, h, "whsec_third", at(NOW)) })
  end)

  it("accepts a list of secrets (rotation on the receiver)", function()
    assert.same({ true }, { webhook.verify(BODY, good, { "whsec_next", SECRET }, at(NOW)) })
    assert.same({ true }, { webhook.verify(BODY, good, { SECRET, "whsec_next" }, at(NOW)) })
    assert.same({ false, "mismatch" },
      { webhook.verify(BODY, good, { "whsec_a", "whsec_b" }, at(NOW)) })
  end)

  it("verifies empty and binary bodies", function()
    local bin = "\0\1\2\255 raw\r\n\0"
    assert.same({ true }, { webhook.verify("", header(NOW, SECRET, ""), SECRET, at(NOW)) })
    assert.same({ true }, { webhook.verify(bin, header(NOW, SECRET, bin), SECRET, at(NOW)) })
  end)

  it("raises for misuse, never showing the secret", function()
    local function raises(pattern, ...)
      local ok, err = pcall(webhook.verify, ...)
      assert.is_false(ok)
      assert.matches(pattern, err)
      assert.not_matches("whsec_do_not_print", err)
    end
    raises("raw body must be a string", nil, good, SECRET)
    raises("raw body must be a string", 123, good, SECRET)
    raises("raw body must be a string", { BODY }, good, SECRET)
    raises("string or a list of strings", BODY, good, nil)
    raises("string or a list of strings", BODY, good, 42)
    raises("must not be empty", BODY, good, "")
    raises("list is empty", BODY, good, {})
    raises("non%-empty strings", BODY, good, { "whsec_do_not_print", 7 })
    raises("tolerance", BODY, good, "whsec_do_not_print", { tolerance = "300" })
    raises("tolerance", BODY, good, "whsec_do_not_print", { tolerance = -1 })
    raises("tolerance", BODY, good, "whsec_do_not_print", { tolerance = true })
    raises("now", BODY, good, "whsec_do_not_print", { now = "soon" })
  end)

  it("never fails on arbitrary header bytes or sizes", function()
    math.randomseed(7)
    local alphabet = "tv1=,0123456789abcdefABCDEF \t.-\0\255x"
    local reasons = { malformed = true, mismatch = true, missing = true, expired = true }
    for i = 1, 2000 do
      local n, b = math.random(0, 200), {}
      for j = 1, n do
        if i % 2 == 0 then
          local k = math.random(1, #alphabet)
          b[j] = alphabet:sub(k, k)
        else
          b[j] = string.char(math.random(0, 255))
        end
      end
      local ok, reason = webhook.verify(BODY, table.concat(b), SECRET, at(NOW))
      assert(ok == true or reasons[reason], tostring(reason))
    end
    local v1 = good:match("v1=(%x+)")
    local huge = "t=" .. NOW .. string.rep(",v0=" .. v1, 20000) .. ",v1=" .. v1
    assert.same({ true }, { webhook.verify(BODY, huge, SECRET, at(NOW)) })
    assert.same({ false, "malformed" },
      { webhook.verify(BODY, "t=" .. NOW .. string.rep(",v1=" .. v1, 17), SECRET, at(NOW)) })
    assert.same({ false, "malformed" }, { webhook.verify(BODY, string.rep("t", 1e6), SECRET) })
    assert.same({ false, "malformed" }, { webhook.verify(BODY, "t=" .. string.rep("9", 400) .. ",v1=" .. v1, SECRET) })
  end)
end)

describe("contiguity.webhook.parse", function()
  it("returns the event with integer timestamps", function()
    local ev = assert(webhook.parse(BODY))
    assert.equals("evt_dgUIkRo18", ev.id)
    assert.equals("otp.reverse.verified", ev.type)
    assert.equals(1726502400, ev.timestamp)
    assert.is_true(is_integer_valued(ev.timestamp))
    assert.equals("v2025.12.10", ev.api_version)
    assert.same({ otp_id = "r_otp_123456", number = NUMBER, status = "verified" }, ev.data)
  end)

  it("turns JSON null into nil, at any depth", function()
    local ev = assert(webhook.parse('{"id":"evt_1","type":"email.incoming","timestamp":1,'
      .. '"api_version":"v2","data":{"reply_to":null,"timestamp":1726502400,"from":{"name":null,"address":"a@b"}}}'))
    assert.is_nil(ev.data.reply_to)
    assert.is_nil(ev.data.from.name)
    assert.equals("a@b", ev.data.from.address)
    assert.is_true(is_integer_valued(ev.data.timestamp))
  end)

  it("returns nil, err of kind decode for a body that is not a JSON object", function()
    for _, body in ipairs({ "", "{", "nope", '"a string"', "42", "null", BODY:sub(1, -2) }) do
      local ev, err = webhook.parse(body)
      assert.is_nil(ev)
      assert.equals("decode", err.kind, body)
      assert.equals("webhook.parse", err.op)
      assert.is_false(err.retryable)
      assert.matches("^contiguity: webhook%.parse: webhook body", tostring(err))
    end
  end)

  it("returns nil, err of kind decode when a required field is missing or wrong", function()
    for _, f in ipairs({ "id", "type", "timestamp", "api_version", "data" }) do
      local body = BODY:gsub('"' .. f .. '":', '"x_' .. f .. '":', 1)
      local ev, err = webhook.parse(body)
      assert.is_nil(ev)
      assert.equals("decode", err.kind)
      assert.matches(f, err.message)
    end
    local ev, err = webhook.parse((BODY:gsub('"id":"evt_dgUIkRo18"', '"id":null')))
    assert.is_nil(ev)
    assert.matches("no id string", err.message)
    ev, err = webhook.parse((BODY:gsub('"timestamp":1726502400', '"timestamp":"1726502400"')))
    assert.is_nil(ev)
    assert.matches("timestamp", err.message)
    ev, err = webhook.parse("[1,2,3]")
    assert.is_nil(ev)
    assert.equals("decode", err.kind)
  end)

  it("raises for a body that is not a string", function()
    assert.error_matches(function() webhook.parse(nil) end, "raw body must be a string", 1, true)
    assert.error_matches(function() webhook.parse({}) end, "raw body must be a string", 1, true)
  end)
end)

describe("contiguity.webhook.construct", function()
  it("verifies then parses", function()
    local ev = assert(webhook.construct(BODY, header(NOW, SECRET, BODY), SECRET, at(NOW)))
    assert.equals("otp.reverse.verified", ev.type)
    assert.equals("r_otp_123456", ev.data.otp_id)
  end)

  it("returns kind invalid with the verify reason for a refused signature", function()
    local cases = {
      { nil, "missing" },
      { "t=1", "malformed" },
      { header(NOW, "whsec_other", BODY), "mismatch" },
      { header(NOW - 1000, SECRET, BODY), "expired" },
    }
    for _, c in ipairs(cases) do
      local ev, err = webhook.construct(BODY, c[1], SECRET, at(NOW))
      assert.is_nil(ev)
      assert.equals("invalid", err.kind)
      assert.equals(c[2], err.reason)
      assert.equals("webhook.construct", err.op)
      assert.equals("Contiguity-Signature", err.field)
      assert.matches(c[2], tostring(err))
      assert.not_matches(SECRET, tostring(err))
    end
  end)

  it("returns kind decode for a genuine delivery that is not an event", function()
    local body = '{"hello":"world"}'
    local ev, err = webhook.construct(body, header(NOW, SECRET, body), SECRET, at(NOW))
    assert.is_nil(ev)
    assert.equals("decode", err.kind)
    assert.equals("webhook.construct", err.op)
  end)

  it("raises for misuse like verify", function()
    assert.error_matches(function() webhook.construct(BODY, "t=1", 5) end, "webhook secret must be a string or a list of strings", 1, true)
    assert.error_matches(function() webhook.construct(false, "t=1", SECRET) end, "raw body must be a string", 1, true)
  end)
end)
