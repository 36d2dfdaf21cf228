-- webhook_delivery_spec.lua: the sandbox's signed otp.reverse.verified deliveries,
-- end to end, verified with contiguity.webhook.
local contiguity = require "contiguity"
local sandbox = require "spec.helpers.sandbox"
local socket = require "socket"

local webhook = contiguity.webhook
local signing = require "spec.helpers.webhook"
local header, is_integer_valued = signing.header, signing.is_integer_valued
local NUMBER = "+15551234567"

-- A one-connection-at-a-time HTTP listener for the sandbox's deliveries.
local function listener()
  local server = assert(socket.bind("127.0.0.1", 0))
  local _, port = server:getsockname()
  return server, "http://127.0.0.1:" .. port .. "/hooks/contiguity?src=sandbox"
end

-- Waits (bounded) for one request; answers `status`. Returns the raw body,
-- lowercased headers and request line, or raises on timeout.
local function receive(server, status, timeout)
  local deadline = socket.gettime() + (timeout or 5)
  server:settimeout(0.1)
  local conn
  repeat
    conn = server:accept()
  until conn or socket.gettime() > deadline
  assert(conn, "no webhook delivery arrived within the deadline")
  conn:settimeout(2)
  local line = assert(conn:receive("*l"))
  local headers = {}
  while true do
    local h = assert(conn:receive("*l"))
    if h == "" then break end
    local k, v = h:match("^([^:]+):%s*(.-)%s*$")
    headers[k:lower()] = v
  end
  local body = assert(conn:receive(tonumber(headers["content-length"])))
  local reason = status == 200 and "OK" or "Internal Server Error"
  conn:send("HTTP/1.1 " .. status .. " " .. reason .. "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
  conn:close()
  return body, headers, line
end

local function deliveries()
  local status, d = sandbox.control("GET", "/_sandbox/webhooks")
  assert.equals(200, status)
  return d.deliveries, d.pending
end

-- The delivery log once the sandbox has no attempt left to make (it counts
-- the attempts it has scheduled and not finished): nothing can come later.
local function settled()
  local deadline = socket.gettime() + 5
  while true do
    local log, pending = deliveries()
    if pending == 0 then return log end
    assert(socket.gettime() < deadline, pending .. " webhook attempts still pending after 5 s")
    socket.sleep(0.02)
  end
end

describe("sandbox webhook delivery", function()
  local client, server, url

  before_each(function()
    sandbox.reset()
    client = contiguity.new(sandbox.TOKEN, { base_url = sandbox.url() })
    server, url = listener()
  end)

  after_each(function()
    client:close()
    server:close()
  end)

  local function verify_session()
    local s = assert(client.otp.reverse.initiate{ number = NUMBER, factor = "4321", success_url = url })
    assert.same({ matched = true, otp_id = s.otp_id },
      (function(m) m.event_id = nil return m end)(sandbox.inbound(NUMBER, nil, "4321")))
    return s
  end

  it("POSTs a signed otp.reverse.verified event that construct accepts", function()
    local s = verify_session()
    local body, headers, line = receive(server, 200)
    assert.equals("POST /hooks/contiguity?src=sandbox HTTP/1.1", line)
    assert.matches("^application/json", headers["content-type"])
    local sig = headers["contiguity-signature"]
    assert.matches("^t=%d+,v1=%x+$", sig)

    local ev = assert(webhook.construct(body, sig, "whsec_sandbox_secret"))
    assert.equals("otp.reverse.verified", ev.type)
    assert.matches("^evt_", ev.id)
    assert.is_true(is_integer_valued(ev.timestamp))
    assert.is_true(math.abs(ev.timestamp - os.time()) < 60)
    assert.same({ otp_id = s.otp_id, number = NUMBER, status = "verified" }, ev.data)
    -- the signature is exactly HMAC(t "." raw body), as openssl computes it
    local t = sig:match("^t=(%d+)")
    assert.equals(header(t, "whsec_sandbox_secret", body), sig)

    -- one byte changed anywhere is refused
    local i = assert(body:find('"verified"', 1, true))
    local tampered = body:sub(1, i) .. "V" .. body:sub(i + 2)
    assert.are_not.equal(body, tampered)
    local bad, err = webhook.construct(tampered, sig, "whsec_sandbox_secret")
    assert.is_nil(bad)
    assert.equals("invalid", err.kind)
    assert.equals("mismatch", err.reason)
    assert.same({ false, "mismatch" }, { webhook.verify(body, sig, "whsec_wrong") })

    local log = settled()
    assert.equals(1, #log)
    assert.equals(url, log[1].url)
    assert.equals(ev.id, log[1].event_id)
    assert.equals(1, log[1].attempt)
    assert.equals(200, log[1].status)
    assert.equals(body, log[1].body)
    assert.equals(sig, log[1].signature)
  end)

  it("signs with the secret set by POST /_sandbox/webhook", function()
    local status = sandbox.control("POST", "/_sandbox/webhook", { secret = "whsec_rotated_1" })
    assert.equals(200, status)
    verify_session()
    local body, headers = receive(server, 200)
    local sig = headers["contiguity-signature"]
    assert.same({ true }, { webhook.verify(body, sig, "whsec_rotated_1") })
    assert.same({ false, "mismatch" }, { webhook.verify(body, sig, "whsec_sandbox_secret") })
    assert.same({ true }, { webhook.verify(body, sig, { "whsec_sandbox_secret", "whsec_rotated_1" }) })
    -- a reset restores the default secret
    sandbox.reset()
    local _, cfg = sandbox.control("GET", "/_sandbox/webhook")
    assert.equals("whsec_sandbox_secret", cfg.secret)
    assert.same({}, deliveries())
  end)

  it("retries a non-2xx answer with the same event", function()
    sandbox.control("POST", "/_sandbox/webhook", { backoff = 0.05 })
    verify_session()
    local body1, h1 = receive(server, 500)
    local body2, h2 = receive(server, 200)
    assert.equals(body1, body2)
    assert.same({ true }, { webhook.verify(body2, h2["contiguity-signature"], "whsec_sandbox_secret") })
    assert.same({ true }, { webhook.verify(body1, h1["contiguity-signature"], "whsec_sandbox_secret") })

    local log = settled() -- and so no third attempt after the 2xx
    assert.equals(2, #log)
    assert.same({ 1, 500 }, { log[1].attempt, log[1].status })
    assert.same({ 2, 200 }, { log[2].attempt, log[2].status })
    assert.equals(log[1].event_id, log[2].event_id)
    assert.equals(body1, log[1].body)
  end)

  it("gives up after the configured attempts and logs the errors", function()
    sandbox.control("POST", "/_sandbox/webhook", { backoff = 0, attempts = 2 })
    server:close() -- nobody listens on url any more
    verify_session()
    local log = settled()
    assert.equals(2, #log)
    assert.is_nil(log[1].status)
    assert.matches("connect", log[1].error)
    assert.equals(2, log[2].attempt)
  end)

  it("delivers nothing for a session without success_url", function()
    local s = assert(client.otp.reverse.initiate{ number = NUMBER, factor = "777" })
    assert.is_true(sandbox.inbound(NUMBER, nil, "777").matched)
    assert.equals("verified", sandbox.reverse(s.otp_id).status)
    assert.same({}, settled())
  end)
end)
