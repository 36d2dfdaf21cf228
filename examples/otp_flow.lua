-- otp_flow.lua: the whole OTP flow, step by step: send, verify, resend, reverse OTP, cancel.
--
-- Against the sandbox (make demo):  CONTIGUITY_BASE_URL=http://127.0.0.1:8931 lua5.4 examples/otp_flow.lua
-- Against the real API:             CONTIGUITY_API_KEY=contiguity_sk_... lua5.4 examples/otp_flow.lua +15551234567
-- With the sandbox the example reads codes from its outbox and plays the
-- user's phone; with the real API it asks you instead.
local contiguity = require "contiguity"

local base_url = os.getenv("CONTIGUITY_BASE_URL")
local sandbox = base_url ~= nil and base_url:match("^http://") ~= nil
local token = os.getenv("CONTIGUITY_API_KEY") or os.getenv("CONTIGUITY_TOKEN")
  or (sandbox and "contiguity_sk_sandbox_demo") or nil
local number = arg[1] or "+15551234567"

if not token then
  io.stderr:write("set CONTIGUITY_API_KEY (or CONTIGUITY_BASE_URL to use the sandbox)\n")
  os.exit(2)
end

local client = contiguity.new(token)
local step = 0

local function say(fmt, ...)
  step = step + 1
  io.write(string.format("%2d. " .. fmt .. "\n", step, ...))
  io.flush()
end

-- Every call returns result or nil, err: a failed step ends the demo.
local function check(res, err)
  if res == nil then
    io.stderr:write("    failed: " .. tostring(err) .. "\n")
    os.exit(1)
  end
  return res
end

-- The sandbox's outbox, read the way the user reads their phone.
local function sandbox_get(path)
  local http = require "socket.http"
  local cjson = require "cjson"
  local body, status = http.request(base_url .. path)
  if status ~= 200 then return nil end
  return cjson.decode(body)
end

local function post(path, tbl)
  local http = require "socket.http"
  local ltn12 = require "ltn12"
  local body = require("cjson").encode(tbl)
  local _, status = http.request{ url = base_url .. path, method = "POST",
    headers = { ["Content-Type"] = "application/json", ["Content-Length"] = tostring(#body) },
    source = ltn12.source.string(body) }
  return status == 200
end

local function read_code()
  if sandbox then
    local out = sandbox_get("/_sandbox/outbox?to=" .. number:gsub("%+", "%%2B"))
    local last = out and out.messages[#out.messages]
    if last then
      io.write("    phone shows: \"" .. last.text .. "\"\n")
      return last.text:match("(%d%d%d%d%d%d)")
    end
    return nil
  end
  io.write("    enter the code you received: ")
  io.flush()
  return io.read("*l")
end

say("Sending a code to %s", number)
local sent = check(client.otp.new{ to = number, language = "en", name = "MyApp" })
io.write("    otp_id " .. sent.otp_id .. " (request " .. tostring(sent.metadata.id) .. ")\n")

local code = read_code() or ""

say("Verifying a wrong code")
local wrong = code == "000000" and "111111" or "000000"
local v = check(client.otp.verify{ otp_id = sent.otp_id, otp = wrong })
io.write("    verified: " .. tostring(v.verified) .. "\n")
if v.verified then os.exit(1) end

say("Resending the code")
local r = check(client.otp.resend{ otp_id = sent.otp_id })
io.write("    resent: " .. tostring(r.resent) .. "\n")

say("Verifying the right code")
v = check(client.otp.verify{ otp_id = sent.otp_id, otp = code })
io.write("    verified: " .. tostring(v.verified) .. "\n")
if not v.verified then os.exit(1) end

say("Starting a reverse OTP session for %s", number)
local s = check(client.otp.reverse.initiate{ number = number, service = "sms", language = "en" })
io.write("    show the user: " .. s.ui.text .. "\n")
io.write("    QR code link:  " .. s.ui.qr_code .. "\n    or the QR code, for the phone's camera:\n\n")
io.write(check(contiguity.qr(s.ui.qr_code, { format = "terminal" })), "\n")
io.write("    expires at:    " .. s.expires_at .. "\n")

say("Session status before the user replies: %s", check(client.otp.reverse.verify(s.otp_id)).status)

if sandbox then
  say("The user texts %s to %s (simulated in the sandbox)", s.factor, s.to)
  if not post("/_sandbox/inbound", { from = number, to = s.to, body = s.factor }) then os.exit(1) end
else
  say("Waiting for the user to text %s to %s", s.factor, s.to)
end

say("Polling the session until it is verified")
local status
for attempt = 1, sandbox and 5 or 30 do
  status = check(client.otp.reverse.verify(s.otp_id)).status
  io.write(string.format("    poll %d: %s\n", attempt, status))
  if status ~= "pending" then break end
  if not sandbox then os.execute("sleep 20") end -- the provider asks for >= 20 s between polls
end
if status ~= "verified" then os.exit(1) end

say("Starting a second session and cancelling it")
local s2 = check(client.otp.reverse.initiate{ number = number })
local c = check(client.otp.reverse.cancel(s2.otp_id))
io.write("    " .. c.otp_id .. ": " .. c.status .. "\n")
if c.status ~= "cancelled" then os.exit(1) end

client:close()
say("Done: every step succeeded")
