-- webhook_openresty.lua: an OpenResty handler for Contiguity webhooks (see webhook_openresty.conf).
--
-- It verifies the Contiguity-Signature header over the raw request body,
-- exactly as received, then acts on the event: 2xx tells Contiguity the
-- delivery is done, anything else makes it retry. The secret comes from
-- CONTIGUITY_WEBHOOK_SECRET (nginx needs `env CONTIGUITY_WEBHOOK_SECRET;`);
-- during a rotation set CONTIGUITY_WEBHOOK_SECRET_OLD too and both verify.
local contiguity = require "contiguity"

local M = {}

local function secrets()
  local s = { os.getenv("CONTIGUITY_WEBHOOK_SECRET"), os.getenv("CONTIGUITY_WEBHOOK_SECRET_OLD") }
  if not s[1] or s[1] == "" then return nil end
  if s[2] == "" then s[2] = nil end
  return s
end

-- The exact bytes Contiguity signed: from memory, or from the temporary
-- file nginx writes when the body outgrew client_body_buffer_size.
local function raw_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  local path = ngx.req.get_body_file()
  if not path then return "" end -- an empty body
  local f = io.open(path, "rb")
  if not f then return nil end
  body = f:read("*a")
  f:close()
  return body
end

-- What the application does with an event. Deliveries can repeat (a retry
-- after a lost 2xx): make this idempotent, keyed by event.id or otp_id.
local handlers = {
  ["otp.reverse.verified"] = function(event)
    ngx.log(ngx.NOTICE, "reverse OTP ", event.data.otp_id, " verified")
    -- e.g. mark the sign-up of event.data.otp_id as verified in your database
  end,
}

local function reply(status, message)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say('{"message":"', message, '"}')
  return ngx.exit(status)
end

function M.handle()
  local keys = secrets()
  if not keys then
    ngx.log(ngx.ERR, "CONTIGUITY_WEBHOOK_SECRET is not set")
    return reply(500, "not configured") -- 5xx: Contiguity retries later
  end
  local body = raw_body()
  if not body then return reply(500, "cannot read the body") end
  -- a repeated header arrives as a table and is refused as "malformed"
  local signature = ngx.req.get_headers()["Contiguity-Signature"]
  local event, err = contiguity.webhook.construct(body, signature, keys)
  if not event then
    -- err.reason: missing | malformed | mismatch | expired (kind "invalid"),
    -- or kind "decode" for a genuine delivery that is not an event
    ngx.log(ngx.WARN, "webhook refused: ", tostring(err))
    return reply(400, err.reason or err.kind)
  end
  local handler = handlers[event.type]
  if handler then
    local ok, herr = pcall(handler, event)
    if not ok then
      ngx.log(ngx.ERR, "webhook ", event.id, " failed: ", herr)
      return reply(500, "handler failed")
    end
  end
  -- unknown event types are acknowledged, so new ones never pile up retries
  return reply(200, "ok")
end

return M
