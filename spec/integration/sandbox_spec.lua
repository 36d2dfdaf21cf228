-- Spec for the sandbox (sandbox/): every API and control endpoint over real
-- HTTP against CONTIGUITY_SANDBOX_URL (default http://127.0.0.1:8931).
-- Start one first: sandbox/start 20101, then
--   CONTIGUITY_SANDBOX_URL=http://127.0.0.1:20101 busted spec/integration/sandbox_spec.lua
local sandbox = require("spec.helpers.sandbox")
local shell = require("spec.helpers.shell")
local socket = require("socket")
local cjson = require("cjson")

local api = sandbox.api
local PHONE = "+15551234567"
local OTHER = "+15557654321"
local SANDBOX_NUMBER = "+16465550123"

local function host_port()
  local host, port = sandbox.url():match("^http://([^:/]+):(%d+)")
  return host, tonumber(port)
end

-- Raw HTTP/1.1 over LuaSocket, so faults are observed byte for byte.
local function raw_send(c, method, path, headers, body)
  local host, port = host_port()
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: " .. host .. ":" .. port }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  assert(c:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")))
end

local function connect()
  local host, port = host_port()
  local c = assert(socket.tcp())
  c:settimeout(10)
  assert(c:connect(host, port))
  return c
end

-- One request on a fresh connection (Connection: close); returns every byte
-- the server sent before closing, plus the parsed response when there is one.
local function raw(method, path, body, headers)
  local h = { Authorization = "Token " .. sandbox.TOKEN, Connection = "close" }
  if body then h["Content-Type"] = "application/json" end
  for k, v in pairs(headers or {}) do h[k] = v end
  local c = connect()
  raw_send(c, method, path, h, body)
  local data, err, partial = c:receive("*a")
  c:close()
  data = data or partial
  local res = { bytes = data, err = err }
  local head, rest = data:match("^(.-)\r\n\r\n(.*)$")
  if head then
    res.status = tonumber(head:match("^HTTP/1%.1 (%d+)"))
    res.headers = {}
    for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do res.headers[k:lower()] = v end
    res.body = rest
  end
  return res
end

-- Keep-alive client: several requests over one connection.
local function keepalive()
  local c = connect()
  local self = {}
  function self.request(method, path, body)
    local h = { Authorization = "Token " .. sandbox.TOKEN }
    if body then h["Content-Type"] = "application/json" end
    raw_send(c, method, path, h, body)
    local status = tonumber(assert(c:receive("*l")):match("^HTTP/1%.1 (%d+)"))
    local len = 0
    while true do
      local line = assert(c:receive("*l"))
      if line == "" then break end
      local n = line:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
      if n then len = tonumber(n) end
    end
    return status, assert(c:receive(len))
  end
  function self.close() c:close() end
  self.sock = c
  return self
end

local function new_otp(to, name, language)
  local status, res = api("POST", "/otp/new", { to = to or PHONE, language = language or "en", name = name or "Acme" })
  assert.are.equal(200, status)
  return res.data.otp_id
end

local function initiate(body)
  local status, res, rawbody = api("POST", "/otp/reverse/initiate", body or { number = PHONE })
  assert.are.equal(200, status, rawbody)
  return res.data, rawbody
end

local function assert_error(status, res, want_status, want_message)
  assert.are.equal(want_status, status)
  assert.is_table(res)
  assert.are.equal("error", res.object)
  assert.matches("^err_%w+$", res.id)
  assert.are.equal(16, #res.id - 4)
  assert.are.equal(want_status, res.data.status)
  if want_message then assert.are.equal(want_message, res.data.error) end
end

local function last(t) return t[#t] end

-- Runs a shell command; returns its output and exit code.
local function sh(cmd)
  local _, out, rc = shell.run(cmd)
  return out, rc
end
local quote = shell.quote

describe("sandbox", function()
  before_each(function()
    sandbox.reset()
  end)

  describe("envelopes", function()
    it("wraps success in a response envelope with an integer timestamp", function()
      local status, res, rawbody, headers = api("POST", "/otp/new", { to = PHONE, language = "en", name = "Acme" })
      assert.are.equal(200, status)
      assert.matches("^application/json", headers["content-type"])
      assert.matches("^req_%w+$", res.id)
      assert.are.equal(20, #res.id)
      assert.are.equal("v2026.7.29", res.api_version)
      assert.are.equal("response", res.object)
      assert.matches('"timestamp":%d+[,}]', rawbody)
      assert.is_true(math.abs(res.timestamp - sandbox.clock().now) < 60000)
      assert.matches("^otp_%w+$", res.data.otp_id)
      assert.are.equal(24, #res.data.otp_id)
    end)

    it("wraps errors in an error envelope with an integer timestamp", function()
      local status, res, rawbody = api("POST", "/otp/verify", { otp_id = "otp_nope", otp = "123456" })
      assert_error(status, res, 404, "OTP not found")
      assert.are.equal("v2026.7.29", res.api_version)
      assert.matches('"timestamp":%d+[,}]', rawbody)
    end)
  end)

  describe("auth", function()
    it("rejects a missing token with 401", function()
      local status, res = api("POST", "/otp/new", { to = PHONE, language = "en", name = "Acme" }, { Authorization = false })
      assert_error(status, res, 401, "Unauthorized")
    end)

    it("rejects malformed tokens with 401", function()
      for _, h in ipairs({ "Token sk_live_abc", "Token contiguity_sk_", "Basic contiguity_sk_abc", "contiguity_sk_abc", "Token" }) do
        local status, res = api("POST", "/otp/new", { to = PHONE, language = "en", name = "Acme" }, { Authorization = h })
        assert_error(status, res, 401, "Unauthorized")
      end
    end)

    it("accepts Bearer as well as Token", function()
      local status = api("POST", "/otp/new", { to = PHONE, language = "en", name = "Acme" },
        { Authorization = "Bearer contiguity_sk_other" })
      assert.are.equal(200, status)
    end)

    it("checks auth before the body", function()
      local status, res = api("POST", "/otp/new", "{not json", { Authorization = false })
      assert_error(status, res, 401, "Unauthorized")
    end)
  end)

  describe("request bodies", function()
    it("requires application/json", function()
      local status, res = api("POST", "/otp/new", '{"to":"+15551234567"}', { ["Content-Type"] = "text/plain" })
      assert_error(status, res, 400, "Content-Type must be application/json")
      status, res = api("POST", "/otp/verify", nil)
      assert_error(status, res, 400, "Content-Type must be application/json")
    end)

    it("accepts a charset parameter on the content type", function()
      local status = api("POST", "/otp/new", { to = PHONE, language = "en", name = "Acme" },
        { ["Content-Type"] = "application/json; charset=utf-8" })
      assert.are.equal(200, status)
    end)

    it("rejects malformed JSON and non-objects", function()
      local status, res = api("POST", "/otp/new", '{"to": ')
      assert_error(status, res, 400, "Invalid JSON body")
      status, res = api("POST", "/otp/new", "")
      assert_error(status, res, 400, "Invalid JSON body")
      status, res = api("POST", "/otp/new", '["+15551234567"]')
      assert_error(status, res, 400, "Request body must be a JSON object")
      status, res = api("POST", "/otp/new", '"x"')
      assert_error(status, res, 400, "Request body must be a JSON object")
    end)

    local cases = {
      { "/otp/new", { language = "en", name = "Acme" }, "to is required" },
      { "/otp/new", { to = 15551234567, language = "en", name = "Acme" }, "to must be a string" },
      { "/otp/new", { to = "5551234567", language = "en", name = "Acme" }, "to must be a phone number in E.164 format" },
      { "/otp/new", { to = "+0551234567", language = "en", name = "Acme" }, "to must be a phone number in E.164 format" },
      { "/otp/new", { to = "+1", language = "en", name = "Acme" }, "to must be a phone number in E.164 format" },
      { "/otp/new", { to = "+1234567890123456", language = "en", name = "Acme" }, "to must be a phone number in E.164 format" },
      { "/otp/new", { to = "+1 555 123 4567", language = "en", name = "Acme" }, "to must be a phone number in E.164 format" },
      { "/otp/new", { to = PHONE, name = "Acme" }, "language is required" },
      { "/otp/new", { to = PHONE, language = "en" }, "name is required" },
      { "/otp/new", { to = PHONE, language = "en", name = 7 }, "name must be a string" },
      { "/otp/verify", { otp = "123456" }, "otp_id is required" },
      { "/otp/verify", { otp_id = "otp_x" }, "otp is required" },
      { "/otp/verify", { otp_id = "otp_x", otp = 123456 }, "otp must be a string" },
      { "/otp/verify", { otp_id = 5, otp = "123456" }, "otp_id must be a string" },
      { "/otp/resend", {}, "otp_id is required" },
      { "/otp/resend", { otp_id = true }, "otp_id must be a string" },
      { "/otp/reverse/initiate", {}, "number is required" },
      { "/otp/reverse/initiate", { number = "15551234567" }, "number must be a phone number in E.164 format" },
      { "/otp/reverse/initiate", { number = PHONE, factor = string.rep("x", 17) }, "factor must be at most 16 characters" },
      { "/otp/reverse/initiate", { number = PHONE, factor = 1234 }, "factor must be a string" },
      { "/otp/reverse/initiate", { number = PHONE, to = "+1-646" }, "to must be a phone number in E.164 format" },
      { "/otp/reverse/initiate", { number = PHONE, service = "whatsapp" }, "service must be one of sms, imessage" },
      { "/otp/reverse/initiate", { number = PHONE, language = 1 }, "language must be a string" },
      { "/otp/reverse/initiate", { number = PHONE, success_url = "ftp://example.com/x" }, "success_url must be an http(s) URL" },
      { "/otp/reverse/initiate", { number = PHONE, success_url = "example.com/hook" }, "success_url must be an http(s) URL" },
    }
    for _, case in ipairs(cases) do
      it("POST " .. case[1] .. ": " .. case[3], function()
        local status, res = api("POST", case[1], case[2])
        assert_error(status, res, 400, case[3])
      end)
    end

    it("counts factor length in characters, not bytes", function()
      local data = initiate({ number = PHONE, factor = string.rep("é", 16) })
      assert.are.equal(string.rep("é", 16), data.factor)
    end)
  end)

  describe("OTP", function()
    it("sends a 6-digit code to the outbox and last_code", function()
      local id = new_otp(PHONE, "Acme")
      local code, last_id = sandbox.last_code(PHONE)
      assert.matches("^%d%d%d%d%d%d$", code)
      assert.are.equal(id, last_id)
      local box = sandbox.outbox(PHONE)
      assert.are.equal(1, #box)
      assert.are.same({ to = PHONE, otp_id = id, kind = "otp", text = "Your Acme code is " .. code }, {
        to = box[1].to, otp_id = box[1].otp_id, kind = box[1].kind, text = box[1].text })
      assert.is_number(box[1].at)
      local rec = sandbox.otp(id)
      assert.are.equal(code, rec.code)
      assert.are.equal(1, rec.sends)
      assert.is_false(rec.verified)
      assert.are.equal(PHONE, rec.to)
      assert.are.equal("Acme", rec.name)
      assert.are.equal("en", rec.language)
      assert.are.equal(15 * 60 * 1000, rec.expires_at - rec.created_at)
    end)

    it("localises the message text, falling back to English", function()
      new_otp(PHONE, "Acme", "es")
      new_otp(OTHER, "Acme", "xx")
      local code = sandbox.last_code(PHONE)
      assert.are.equal("Tu código de Acme es " .. code, sandbox.outbox(PHONE)[1].text)
      assert.are.equal("Your Acme code is " .. sandbox.last_code(OTHER), sandbox.outbox(OTHER)[1].text)
    end)

    it("verifies only the right code, once", function()
      local id = new_otp()
      local code = sandbox.last_code(PHONE)
      local wrong = code == "000000" and "000001" or "000000"
      local status, res = api("POST", "/otp/verify", { otp_id = id, otp = wrong })
      assert.are.equal(200, status)
      assert.is_false(res.data.verified)
      status, res = api("POST", "/otp/verify", { otp_id = id, otp = code })
      assert.are.equal(200, status)
      assert.is_true(res.data.verified)
      assert.is_true(sandbox.otp(id).verified)
      status, res = api("POST", "/otp/verify", { otp_id = id, otp = code })
      assert.are.equal(200, status)
      assert.is_false(res.data.verified)
    end)

    it("does not verify an expired code", function()
      local id = new_otp()
      local code = sandbox.last_code(PHONE)
      sandbox.advance(901)
      local _, res = api("POST", "/otp/verify", { otp_id = id, otp = code })
      assert.is_false(res.data.verified)
      assert.is_true(sandbox.otp(id).expired)
    end)

    it("returns 404 for an unknown otp_id", function()
      local status, res = api("POST", "/otp/verify", { otp_id = "otp_doesnotexist", otp = "123456" })
      assert_error(status, res, 404, "OTP not found")
      status, res = api("POST", "/otp/resend", { otp_id = "otp_doesnotexist" })
      assert_error(status, res, 404, "OTP not found")
    end)

    it("resends the same code without renewing the expiry", function()
      local id = new_otp()
      local code = sandbox.last_code(PHONE)
      local before = sandbox.otp(id)
      sandbox.advance(60)
      local status, res = api("POST", "/otp/resend", { otp_id = id })
      assert.are.equal(200, status)
      assert.is_true(res.data.resent)
      local after = sandbox.otp(id)
      assert.are.equal(before.expires_at, after.expires_at)
      assert.are.equal(2, after.sends)
      assert.are.equal(code, after.code)
      local box = sandbox.outbox(PHONE)
      assert.are.equal(2, #box)
      assert.are.equal("otp", box[1].kind)
      assert.are.equal("resend", box[2].kind)
      assert.are.equal("Your Acme code is " .. code, box[2].text)
      -- 60 + 841 = 901 s after sending: expired, even though it was resent.
      sandbox.advance(841)
      status, res = api("POST", "/otp/resend", { otp_id = id })
      assert.are.equal(200, status)
      assert.is_false(res.data.resent)
      status, res = api("POST", "/otp/verify", { otp_id = id, otp = code })
      assert.are.equal(200, status)
      assert.is_false(res.data.verified)
      assert.are.equal(2, sandbox.otp(id).sends)
    end)

    it("does not resend a verified code", function()
      local id = new_otp()
      api("POST", "/otp/verify", { otp_id = id, otp = sandbox.last_code(PHONE) })
      local _, res = api("POST", "/otp/resend", { otp_id = id })
      assert.is_false(res.data.resent)
      assert.are.equal(1, #sandbox.outbox(PHONE))
    end)

    it("last_code follows the most recent OTP to a number", function()
      new_otp()
      local id2 = new_otp()
      local code, id = sandbox.last_code(PHONE)
      assert.are.equal(id2, id)
      assert.are.equal(sandbox.otp(id2).code, code)
      assert.is_nil(sandbox.last_code(OTHER))
    end)
  end)

  describe("reverse OTP", function()
    it("initiates with documented defaults", function()
      local data, rawbody = initiate({ number = PHONE })
      assert.matches("^r_otp_%w+$", data.otp_id)
      assert.are.equal(26, #data.otp_id)
      assert.are.equal(PHONE, data.number)
      assert.matches("^%d%d%d%d$", data.factor)
      assert.are.equal(SANDBOX_NUMBER, data.to)
      assert.are.equal("sms", data.service)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", data.expires_at)
      assert.are.equal("Text " .. data.factor .. " to +1 (646) 555-0123 to verify your phone number.", data.ui.text)
      assert.are.equal("sms:+16465550123?body=" .. data.factor, data.ui.qr_code)
      assert.are.equal(cjson.null, data.success_url)
      assert.matches('"success_url":null', rawbody)
      local rec = sandbox.reverse(data.otp_id)
      assert.are.equal(15 * 60 * 1000, rec.expires_at_ms - rec.created_at)
      assert.are.equal("pending", rec.status)
      assert.are.equal("en", rec.language)
    end)

    it("initiates with every option", function()
      local data = initiate({ number = PHONE, factor = "hi there&", to = "+447700900123", service = "imessage",
                              language = "en", success_url = "https://example.com/hook?x=1" })
      assert.are.equal("hi there&", data.factor)
      assert.are.equal("+447700900123", data.to)
      assert.are.equal("imessage", data.service)
      assert.are.equal("https://example.com/hook?x=1", data.success_url)
      assert.are.equal("Text hi there& to +447700900123 to verify your phone number.", data.ui.text)
      assert.are.equal("sms:+447700900123?body=hi%20there%26", data.ui.qr_code)
    end)

    it("is pending, then verified when the right number texts the factor", function()
      local data = initiate({ number = PHONE, factor = "1234" })
      local path = "/otp/reverse/verify/" .. data.otp_id
      local status, res = api("GET", path)
      assert.are.equal(200, status)
      assert.are.same({ otp_id = data.otp_id, status = "pending", expires_at = data.expires_at }, res.data)
      assert.is_false(sandbox.inbound(PHONE, SANDBOX_NUMBER, "4321").matched)
      assert.is_false(sandbox.inbound(OTHER, SANDBOX_NUMBER, "1234").matched)
      assert.is_false(sandbox.inbound(PHONE, "+16465550199", "1234").matched)
      assert.are.equal("pending", select(2, api("GET", path)).data.status)
      local m = sandbox.inbound(PHONE, SANDBOX_NUMBER, "  1234\n")
      assert.is_true(m.matched)
      assert.are.equal(data.otp_id, m.otp_id)
      assert.are.equal("verified", select(2, api("GET", path)).data.status)
      assert.is_false(sandbox.inbound(PHONE, SANDBOX_NUMBER, "1234").matched)
    end)

    it("cancels a pending session, and refuses to cancel it again", function()
      local data = initiate()
      local status, res = api("POST", "/otp/reverse/cancel/" .. data.otp_id)
      assert.are.equal(200, status)
      assert.are.same({ otp_id = data.otp_id, status = "cancelled" }, res.data)
      assert.are.equal("cancelled", select(2, api("GET", "/otp/reverse/verify/" .. data.otp_id)).data.status)
      status, res = api("POST", "/otp/reverse/cancel/" .. data.otp_id)
      assert_error(status, res, 400, "session is cancelled")
      assert.is_false(sandbox.inbound(PHONE, SANDBOX_NUMBER, data.factor).matched)
    end)

    it("refuses to cancel a verified session", function()
      local data = initiate()
      assert.is_true(sandbox.inbound(PHONE, SANDBOX_NUMBER, data.factor).matched)
      local status, res = api("POST", "/otp/reverse/cancel/" .. data.otp_id)
      assert_error(status, res, 400, "session is verified")
    end)

    it("expires on the sandbox clock", function()
      local data = initiate()
      sandbox.advance(899)
      assert.are.equal("pending", select(2, api("GET", "/otp/reverse/verify/" .. data.otp_id)).data.status)
      sandbox.advance(2)
      assert.are.equal("expired", select(2, api("GET", "/otp/reverse/verify/" .. data.otp_id)).data.status)
      assert.is_false(sandbox.inbound(PHONE, SANDBOX_NUMBER, data.factor).matched)
      local status, res = api("POST", "/otp/reverse/cancel/" .. data.otp_id)
      assert_error(status, res, 400, "session is expired")
    end)

    it("returns 404 for unknown sessions", function()
      local status, res = api("GET", "/otp/reverse/verify/r_otp_nope")
      assert_error(status, res, 404)
      status, res = api("POST", "/otp/reverse/cancel/r_otp_nope")
      assert_error(status, res, 404)
    end)
  end)

  describe("routing", function()
    it("routes on the raw path and decodes the id segment itself", function()
      local path = "/otp/reverse/verify/a%20b%2F..%2Fc%3Fd"
      local status, res = api("GET", path)
      assert_error(status, res, 404, "Reverse OTP session not found: a b/../c?d")
      local log = sandbox.requests()
      assert.are.equal(path, last(log).path)
      assert.are.equal("GET", last(log).method)
      assert.are.equal(404, last(log).status)
    end)

    it("answers 404 for unknown paths and 405 for wrong methods", function()
      for _, p in ipairs({ "/otp/nope", "/otp/new/", "/otp/reverse/verify/", "/otp/reverse/verify/a/b", "/", "/otp" }) do
        local status, res = api("GET", p)
        assert_error(status, res, 404)
      end
      local status, res, _, headers = api("GET", "/otp/new")
      assert_error(status, res, 405)
      assert.are.equal("POST", headers["allow"])
      status, res = api("DELETE", "/otp/reverse/verify/r_otp_x")
      assert_error(status, res, 405)
      status, res = api("GET", "/otp/reverse/cancel/r_otp_x")
      assert_error(status, res, 405)
    end)

    it("logs API requests with their connection, reusing keep-alive connections", function()
      local c = keepalive()
      for _ = 1, 3 do
        local status = c.request("POST", "/otp/verify?x=1", '{"otp_id":"otp_x","otp":"1"}')
        assert.are.equal(404, status)
      end
      c.close()
      local log = sandbox.requests()
      assert.are.equal(3, #log)
      for i, r in ipairs(log) do
        assert.are.equal("POST", r.method)
        assert.are.equal("/otp/verify?x=1", r.path)
        assert.are.equal(404, r.status)
        assert.are.equal(log[1].connection, r.connection)
        assert.are.equal(log[1].connection_requests + i - 1, r.connection_requests)
      end
    end)
  end)

  describe("faults", function()
    it("answers with a scripted status, body and headers", function()
      sandbox.fault({ path = "/otp/new", action = "status", status = 503, body = "busy", headers = { ["Retry-After"] = "7" } })
      local r = raw("POST", "/otp/new", '{"to":"+15551234567","language":"en","name":"Acme"}')
      assert.are.equal(503, r.status)
      assert.are.equal("busy", r.body)
      assert.are.equal("7", r.headers["retry-after"])
      assert.are.equal(0, #sandbox.outbox())
      -- used up: the next request is normal
      assert.are.equal(200, (api("POST", "/otp/new", { to = PHONE, language = "en", name = "Acme" })))
    end)

    it("defaults the body to an error envelope for the status", function()
      sandbox.fault({ path = "/otp/verify", status = 429 })
      local status, res = api("POST", "/otp/verify", { otp_id = "otp_x", otp = "1" })
      assert_error(status, res, 429, "Too Many Requests")
    end)

    it("drops the connection without sending a byte", function()
      sandbox.fault({ path = "/otp/verify", action = "drop" })
      local r = raw("POST", "/otp/verify", '{"otp_id":"otp_x","otp":"1"}')
      assert.are.equal("", r.bytes)
      assert.are.equal("closed", r.err)
      assert.are.equal(444, last(sandbox.requests()).status)
    end)

    it("truncates the body after the headers", function()
      sandbox.fault({ path = "/otp/new", action = "truncate" })
      local r = raw("POST", "/otp/new", '{"to":"+15551234567","language":"en","name":"Acme"}')
      assert.are.equal(200, r.status)
      local len = tonumber(r.headers["content-length"])
      assert.is_true(len > 0)
      assert.is_true(#r.body < len)
      assert.is_true(#r.body > 0)
      assert.are.equal(1, #sandbox.outbox(PHONE)) -- the request itself was processed
    end)

    it("sends a malformed JSON body", function()
      sandbox.fault({ path = "/otp/verify", action = "malformed" })
      local r = raw("POST", "/otp/verify", '{"otp_id":"otp_x","otp":"1"}')
      assert.are.equal(200, r.status)
      assert.is_false((pcall(cjson.decode, r.body)))
    end)

    it("delays before answering", function()
      sandbox.fault({ path = "/otp/verify", action = "none", delay = 0.3 })
      local body = '{"otp_id":"otp_x","otp":"1"}'
      local c = connect()
      raw_send(c, "POST", "/otp/verify", { Authorization = "Token " .. sandbox.TOKEN,
        ["Content-Type"] = "application/json", Connection = "close" }, body)
      -- nothing yet a tenth of a second in (an undelayed answer takes ~1 ms) ...
      c:settimeout(0.1)
      local line, err = c:receive("*l")
      assert.is_nil(line)
      assert.equals("timeout", err)
      -- ... and then the answer itself
      c:settimeout(5)
      line = assert(c:receive("*l"))
      c:close()
      assert.equals("HTTP/1.1 404 Not Found", line)
    end)

    it("counts down `times` and lists what is left", function()
      sandbox.fault({ path = "/otp/verify", status = 500, times = 2 })
      local f = sandbox.faults()
      assert.are.equal(1, #f)
      assert.are.equal(2, f[1].remaining)
      assert.are.equal(500, (api("POST", "/otp/verify", { otp_id = "otp_x", otp = "1" })))
      assert.are.equal(1, sandbox.faults()[1].remaining)
      assert.are.equal(500, (api("POST", "/otp/verify", { otp_id = "otp_x", otp = "1" })))
      assert.are.equal(404, (api("POST", "/otp/verify", { otp_id = "otp_x", otp = "1" })))
      assert.are.equal(0, sandbox.faults()[1].remaining)
      assert.are.equal(3, #sandbox.requests())
    end)

    it("applies times = -1 until cleared", function()
      sandbox.fault({ path = "/otp/verify", status = 502, times = -1 })
      for _ = 1, 4 do assert.are.equal(502, (api("POST", "/otp/verify", { otp_id = "otp_x", otp = "1" }))) end
      sandbox.clear_faults()
      assert.are.same({}, sandbox.faults())
      assert.are.equal(404, (api("POST", "/otp/verify", { otp_id = "otp_x", otp = "1" })))
    end)

    it("filters on method and on the path without its query", function()
      sandbox.fault({ path = "/otp/reverse/verify/r_otp_x", method = "POST", status = 500 })
      sandbox.fault({ path = "/otp/reverse/verify/r_otp_x", method = "get", status = 418 })
      assert.are.equal(418, (api("GET", "/otp/reverse/verify/r_otp_x?a=b")))
      assert.are.equal(404, (api("GET", "/otp/reverse/verify/r_otp_x")))
      assert.are.equal(1, sandbox.faults()[1].remaining)
    end)

    it("sets Location and Retry-After on a status fault, verbatim", function()
      sandbox.fault({ path = "/otp/new", status = 302,
                      headers = { Location = "/elsewhere?x=1", ["Retry-After"] = "Wed, 21 Oct 2037 07:28:00 GMT" } })
      sandbox.fault({ path = "/otp/new", status = 301, headers = { Location = "https://evil.example/otp/new" } })
      local r = raw("POST", "/otp/new", '{"to":"+15551234567","language":"en","name":"Acme"}')
      assert.are.equal(302, r.status)
      assert.are.equal("/elsewhere?x=1", r.headers["location"])
      assert.are.equal("Wed, 21 Oct 2037 07:28:00 GMT", r.headers["retry-after"])
      r = raw("POST", "/otp/new", '{"to":"+15551234567","language":"en","name":"Acme"}')
      assert.are.equal(301, r.status)
      assert.are.equal("https://evil.example/otp/new", r.headers["location"])
      assert.are.equal(0, #sandbox.outbox())
    end)

    it("drop_after_read reads the whole POST on a reused connection, then closes without a byte", function()
      sandbox.fault({ path = "/otp/new", action = "drop_after_read" })
      local c = keepalive()
      assert.are.equal(404, (c.request("POST", "/otp/verify", '{"otp_id":"otp_x","otp":"1"}')))
      -- a body far larger than a socket buffer: the server must read it all
      local body = '{"to":"+15551234567","language":"en","name":"Acme","pad":"' .. string.rep("x", 512 * 1024) .. '"}'
      raw_send(c.sock, "POST", "/otp/new",
               { Authorization = "Token " .. sandbox.TOKEN, ["Content-Type"] = "application/json" }, body)
      local data, err, partial = c.sock:receive("*a")
      c.close()
      assert.is_nil(data)
      assert.are.equal("closed", err)
      assert.are.equal("", partial)
      local log = sandbox.requests()
      assert.are.equal(2, #log)
      assert.are.same({ "POST", "/otp/new", 444 }, { log[2].method, log[2].path, log[2].status })
      assert.are.equal(log[1].connection, log[2].connection)
      assert.are.equal(log[1].connection_requests + 1, log[2].connection_requests)
      assert.are.equal(0, #sandbox.outbox())
    end)

    it("drop also reads the request body before closing", function()
      sandbox.fault({ path = "/otp/new", action = "drop" })
      local body = '{"to":"+15551234567","pad":"' .. string.rep("y", 512 * 1024) .. '"}'
      local r = raw("POST", "/otp/new", body)
      assert.are.equal("", r.bytes)
      assert.are.equal("closed", r.err)
      assert.are.equal(1, #sandbox.requests())
    end)

    it("streams a large body of spaces then {} with its Content-Length", function()
      local size = 3 * 1024 * 1024 + 7
      sandbox.fault({ path = "/otp/verify", action = "large", size = size })
      local c = keepalive()
      local status, head
      head = {}
      raw_send(c.sock, "POST", "/otp/verify",
               { Authorization = "Token " .. sandbox.TOKEN, ["Content-Type"] = "application/json" }, "{}")
      status = tonumber(assert(c.sock:receive("*l")):match("^HTTP/1%.1 (%d+)"))
      while true do
        local line = assert(c.sock:receive("*l"))
        if line == "" then break end
        local k, v = line:match("^([^:]+):%s*(.*)$")
        head[k:lower()] = v
      end
      assert.are.equal(200, status)
      assert.are.equal(tostring(size), head["content-length"])
      local got, spaces_only, tail = 0, true, ""
      while got < size do
        local chunk = assert(c.sock:receive(math.min(65536, size - got)))
        got = got + #chunk
        tail = (tail .. chunk):sub(-2)
        if got < size - 2 and chunk:find("[^ ]") then spaces_only = false end
      end
      c.close()
      assert.are.equal(size, got)
      assert.is_true(spaces_only)
      assert.are.equal("{}", tail)
      assert.are.equal(200, last(sandbox.requests()).status)
    end)

    it("streams 100 MB chunked when length = false, and survives a client that hangs up", function()
      sandbox.fault({ path = "/otp/verify", action = "large", size = 100 * 1024 * 1024, length = false })
      local out, rc = sh("curl -sS -o /dev/null -w '%{http_code} %{size_download}' -X POST"
        .. " -H 'Authorization: Token " .. sandbox.TOKEN .. "' -H 'Content-Type: application/json'"
        .. " -d '{}' " .. quote(sandbox.url() .. "/otp/verify"))
      assert.are.equal(0, rc)
      assert.are.equal("200 " .. (100 * 1024 * 1024), out)
      -- a client that reads the head and leaves: the sandbox carries on
      sandbox.fault({ path = "/otp/verify", action = "large", size = 100 * 1024 * 1024 })
      local c = keepalive()
      raw_send(c.sock, "POST", "/otp/verify",
               { Authorization = "Token " .. sandbox.TOKEN, ["Content-Type"] = "application/json" }, "{}")
      assert.matches("^HTTP/1%.1 200", assert(c.sock:receive("*l")))
      c.close()
      assert.are.equal(404, (api("POST", "/otp/verify", { otp_id = "otp_x", otp = "1" })))
    end)

    it("rejects a large fault without a valid size, and size on other actions", function()
      assert.are.equal(400, (sandbox.control("POST", "/_sandbox/faults", { path = "/otp/new", action = "large" })))
      assert.are.equal(400, (sandbox.control("POST", "/_sandbox/faults", { path = "/otp/new", action = "large", size = -1 })))
      assert.are.equal(400, (sandbox.control("POST", "/_sandbox/faults", { path = "/otp/new", action = "large", size = 1.5 })))
      assert.are.equal(400, (sandbox.control("POST", "/_sandbox/faults", { path = "/otp/new", action = "drop", size = 10 })))
      assert.are.same({}, sandbox.faults())
    end)

    it("rejects invalid fault specs", function()
      assert.are.equal(400, (sandbox.control("POST", "/_sandbox/faults", { action = "drop" })))
      assert.are.equal(400, (sandbox.control("POST", "/_sandbox/faults", { path = "/otp/new", action = "explode" })))
      assert.are.equal(400, (sandbox.control("POST", "/_sandbox/faults", { path = "/otp/new", times = 0 })))
    end)
  end)

  describe("HTTPS listener", function()
    local function curl_tls(url, extra)
      return sh("curl -sS -o /dev/null -w '%{http_code}' " .. (extra or "") .. " " .. quote(url))
    end

    it("serves the same app with a certificate for IP:127.0.0.1 signed by the sandbox CA", function()
      assert.matches("^https://127%.0%.0%.1:%d+$", sandbox.tls_url())
      local out, rc = curl_tls(sandbox.tls_url() .. "/_sandbox/health", "--cacert " .. quote(sandbox.ca_file()))
      assert.are.equal(0, rc)
      assert.are.equal("200", out)
    end)

    it("fails verification for localhost (wrong hostname) and without the CA", function()
      local port = sandbox.tls_url():match(":(%d+)$")
      local _, rc = curl_tls("https://localhost:" .. port .. "/_sandbox/health", "--cacert " .. quote(sandbox.ca_file()))
      assert.are.equal(60, rc) -- CURLE_PEER_FAILED_VERIFICATION
      _, rc = curl_tls(sandbox.tls_url() .. "/_sandbox/health") -- the system CAs do not know it
      assert.are.equal(60, rc)
    end)

    it("shares state with the plain listener (LuaSec client, CA verified)", function()
      local https = require("ssl.https")
      local chunks = {}
      local body = cjson.encode({ to = PHONE, language = "en", name = "Acme" })
      local ok, status = https.request({
        url = sandbox.tls_url() .. "/otp/new", method = "POST",
        headers = { ["Authorization"] = "Token " .. sandbox.TOKEN, ["Content-Type"] = "application/json",
                    ["Content-Length"] = tostring(#body) },
        source = require("ltn12").source.string(body), sink = require("ltn12").sink.table(chunks),
        cafile = sandbox.ca_file(), verify = "peer", protocol = "any",
      })
      assert.are.equal(1, ok)
      assert.are.equal(200, status)
      local otp_id = cjson.decode(table.concat(chunks)).data.otp_id
      local code, id = sandbox.last_code(PHONE)
      assert.are.equal(otp_id, id)
      assert.matches("^%d%d%d%d%d%d$", code)
      assert.are.equal("/otp/new", last(sandbox.requests()).path)
      -- LuaSec with verification and no CA refuses the handshake
      local nok, err = https.request({ url = sandbox.tls_url() .. "/_sandbox/health", verify = "peer",
                                       cafile = "/dev/null", protocol = "any" })
      assert.is_nil(nok)
      assert.is_string(err)
    end)
  end)

  describe("control endpoints", function()
    it("reports health", function()
      assert.are.same({ ok = true }, sandbox.health())
    end)

    it("reads and advances the clock", function()
      local c = sandbox.clock()
      assert.are.equal(0, c.offset)
      local c2 = sandbox.advance(1.5)
      assert.are.equal(1500, c2.offset)
      assert.is_true(c2.now - c.now >= 1500)
    end)

    it("lists an empty outbox and request log as JSON arrays", function()
      local _, _, body = require("spec.helpers.http").json("GET", sandbox.url() .. "/_sandbox/outbox")
      assert.are.equal('{"messages":[]}', body)
      _, _, body = require("spec.helpers.http").json("GET", sandbox.url() .. "/_sandbox/requests")
      assert.are.equal('{"requests":[]}', body)
    end)

    it("filters the outbox by recipient, oldest first", function()
      local a = new_otp(PHONE)
      local b = new_otp(OTHER)
      local c = new_otp(PHONE)
      local all = sandbox.outbox()
      assert.are.same({ a, b, c }, { all[1].otp_id, all[2].otp_id, all[3].otp_id })
      local mine = sandbox.outbox(PHONE)
      assert.are.same({ a, c }, { mine[1].otp_id, mine[2].otp_id })
    end)

    it("returns 404 for unknown records", function()
      assert.is_nil(sandbox.otp("otp_nope"))
      assert.is_nil(sandbox.reverse("r_otp_nope"))
      local status, res = sandbox.control("GET", "/_sandbox/nope")
      assert.are.equal(404, status)
      assert.is_string(res.error)
      status = sandbox.control("DELETE", "/_sandbox/clock")
      assert.are.equal(405, status)
    end)

    it("does not log control requests", function()
      sandbox.clock()
      sandbox.outbox()
      assert.are.same({}, sandbox.requests())
    end)

    it("resets every kind of state", function()
      local id = new_otp()
      local rv = initiate()
      sandbox.advance(10)
      sandbox.fault({ path = "/otp/new", status = 500, times = -1 })
      sandbox.reset()
      assert.is_nil(sandbox.otp(id))
      assert.is_nil(sandbox.reverse(rv.otp_id))
      assert.is_nil(sandbox.last_code(PHONE))
      assert.are.same({}, sandbox.outbox())
      assert.are.same({}, sandbox.faults())
      assert.are.same({}, sandbox.requests())
      assert.are.equal(0, sandbox.clock().offset)
      assert.are.equal(200, (api("POST", "/otp/new", { to = PHONE, language = "en", name = "Acme" })))
    end)
  end)
end)
