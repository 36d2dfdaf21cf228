-- webhook_plain.lua: a Contiguity webhook handler for plain Lua: raw body + headers in, status out.
--
--   local hook = dofile("examples/webhook_plain.lua")
--   local status, text = hook.handle(raw_body, headers)   -- from your HTTP server
--
-- Run as a script it also serves one endpoint with LuaSocket, enough to
-- watch the sandbox deliver (any http://127.0.0.1:PORT/... as success_url):
--
--   CONTIGUITY_WEBHOOK_SECRET=whsec_sandbox_secret lua5.4 examples/webhook_plain.lua 8976
local contiguity = require "contiguity"

local M = {}

-- The secret (or a list of secrets while rotating) from the environment.
M.secret = os.getenv("CONTIGUITY_WEBHOOK_SECRET")

-- Header lookup without caring how the server cased the names.
local function header(headers, name)
  name = name:lower()
  for k, v in pairs(headers or {}) do
    if type(k) == "string" and k:lower() == name then return v end
  end
  return nil
end

-- What the application does per event type; keep it idempotent (keyed by
-- event.id): a delivery whose 2xx got lost is delivered again.
M.on = {
  ["otp.reverse.verified"] = function(event)
    print(("reverse OTP %s verified for %s (event %s)"):format(
      event.data.otp_id, event.data.number, event.id))
  end,
}

-- raw_body: the request body exactly as received, never a decoded and
-- re-encoded copy. Returns an HTTP status and a short text.
function M.handle(raw_body, headers)
  if not M.secret or M.secret == "" then return 500, "CONTIGUITY_WEBHOOK_SECRET is not set" end
  local event, err = contiguity.webhook.construct(raw_body, header(headers, "Contiguity-Signature"),
                                                  M.secret)
  if not event then
    -- kind "invalid" with reason missing|malformed|mismatch|expired, or kind "decode"
    return 400, err.reason or err.kind
  end
  local on = M.on[event.type]
  if on then
    local ok, e = pcall(on, event)
    if not ok then return 500, tostring(e) end -- 5xx: Contiguity retries
  end
  return 200, "ok"
end

-- The LuaSocket server of the script mode: one request per connection.
local function serve(port)
  local socket = require "socket"
  local server = assert(socket.bind("127.0.0.1", port))
  print("listening on http://127.0.0.1:" .. port .. "/ (Ctrl-C to stop)")
  while true do
    local conn = server:accept()
    conn:settimeout(5)
    local line = conn:receive("*l")
    local headers, body = {}, ""
    while line do
      local h = conn:receive("*l")
      if not h or h == "" then break end
      local k, v = h:match("^([^:]+):%s*(.-)%s*$")
      if k then headers[k] = v end
    end
    local len = tonumber(header(headers, "Content-Length") or 0) or 0
    if len > 0 and len <= 1024 * 1024 then body = conn:receive(len) or "" end
    local status, text = 400, "bad request"
    if line and line:match("^POST ") then status, text = M.handle(body, headers) end
    conn:send(("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
      .. "Connection: close\r\n\r\n%s"):format(status, status == 200 and "OK" or "Error", #text, text))
    conn:close()
    if status ~= 200 then print(line, "->", status, text) end
  end
end

if arg and arg[0] and arg[0]:match("webhook_plain%.lua$") then
  serve(tonumber(arg[1]) or 8976)
end

return M
