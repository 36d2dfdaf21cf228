-- Control endpoints under /_sandbox/ (never part of the real API, no auth):
-- read codes and the outbox, simulate inbound texts, move the clock, script
-- faults, read the request log, reset. Responses are plain JSON objects.
local util = require("contiguity_sandbox.util")
local store = require("contiguity_sandbox.store")
local faults = require("contiguity_sandbox.faults")
local api = require("contiguity_sandbox.api")
local webhook = require("contiguity_sandbox.webhook")

local encode, encode_list = util.encode, util.encode_list

local M = {}

local function err(status, msg)
  return status, encode({ error = msg })
end

-- Query parameter, decoded without turning '+' into a space (so
-- ?to=+15551234567 works as well as ?to=%2B15551234567).
local function query_arg(name)
  local q = ngx.var.args
  if not q then return nil end
  for pair in q:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    if ngx.unescape_uri(k) == name then return (ngx.unescape_uri((v:gsub("%+", "%%2B")))) end
  end
  return nil
end

-- JSON object body or nil, message. An empty body counts as {}.
local function body()
  ngx.req.read_body()
  local raw = ngx.req.get_body_data()
  if not raw or raw:match("^%s*$") then return {} end
  local t = util.decode(raw)
  if type(t) ~= "table" or t[1] ~= nil then return nil, "body must be a JSON object" end
  return t
end

local function otp_view(rec)
  local now = store.now()
  return {
    otp_id = rec.otp_id, to = rec.to, code = rec.code, name = rec.name, language = rec.language,
    sends = store.otp_sends(rec.otp_id), verified = store.otp_used(rec.otp_id),
    created_at = rec.created_at, expires_at = rec.expires_at, expired = now >= rec.expires_at,
  }
end

local function clock()
  return 200, encode({ now = store.now(), offset = store.offset() })
end

local routes = {}

routes["/_sandbox/health"] = { GET = function() return 200, '{"ok":true}' end }

routes["/_sandbox/reset"] = { POST = function()
  store.reset()
  faults.clear()
  return 200, '{"ok":true}'
end }

routes["/_sandbox/otp/"] = { GET = function(id)
  local rec = store.get_otp(id)
  if not rec then return err(404, "OTP not found") end
  return 200, encode(otp_view(rec))
end }

routes["/_sandbox/last_code"] = { GET = function()
  local to = query_arg("to")
  if not to or to == "" then return err(400, "to query parameter is required") end
  local id = store.last_otp_id(to)
  local rec = id and store.get_otp(id)
  if not rec then return err(404, "no OTP sent to " .. to) end
  return 200, encode({ to = to, otp_id = rec.otp_id, code = rec.code })
end }

routes["/_sandbox/outbox"] = { GET = function()
  return 200, '{"messages":' .. encode_list(store.outbox(query_arg("to"))) .. "}"
end }

routes["/_sandbox/inbound"] = { POST = function()
  local b, e = body()
  if not b then return err(400, e) end
  if type(b.from) ~= "string" then return err(400, "from must be a string") end
  if type(b.body) ~= "string" then return err(400, "body must be a string") end
  if b.to ~= nil and type(b.to) ~= "string" then return err(400, "to must be a string") end
  local to = b.to or util.SANDBOX_NUMBER
  local id = store.find_session(b.from, to, util.trim(b.body))
  local rec = id and store.get_session(id)
  if rec and store.finish_session(rec, "verified") then
    -- signed otp.reverse.verified to success_url, delivered by a timer
    local event_id = webhook.reverse_verified(rec)
    return 200, encode({ matched = true, otp_id = rec.otp_id, event_id = event_id })
  end
  return 200, '{"matched":false}'
end }

routes["/_sandbox/reverse/"] = { GET = function(id)
  local rec = store.get_session(id)
  if not rec then return err(404, "Reverse OTP session not found") end
  local v = api.session_view(rec)
  v.language = rec.language
  v.status = store.session_status(rec)
  v.created_at = rec.created_at
  v.expires_at_ms = rec.expires_at_ms
  return 200, encode(v)
end }

routes["/_sandbox/clock"] = {
  GET = clock,
  POST = function()
    local b, e = body()
    if not b then return err(400, e) end
    if b.advance ~= nil then
      if type(b.advance) ~= "number" then return err(400, "advance must be a number of seconds") end
      store.advance(b.advance * 1000)
    end
    return clock()
  end,
}

-- A POST route that hands the JSON body to fn(body) -> value | nil, why and
-- answers the value, or 400 with the reason.
local function apply(fn)
  return function()
    local b, e = body()
    if not b then return err(400, e) end
    local v, why = fn(b)
    if not v then return err(400, why) end
    return 200, encode(v)
  end
end

routes["/_sandbox/faults"] = {
  GET = function() return 200, '{"faults":' .. encode_list(faults.list()) .. "}" end,
  POST = apply(faults.add),
  DELETE = function()
    faults.clear()
    return 200, '{"ok":true}'
  end,
}

-- Webhook settings ({secret=, attempts=, backoff=}; a reset restores the
-- defaults) and the log of delivery attempts, oldest first.
routes["/_sandbox/webhook"] = {
  GET = function() return 200, encode(webhook.config()) end,
  POST = apply(webhook.configure),
}

routes["/_sandbox/webhooks"] = {
  GET = function()
    return 200, '{"deliveries":' .. encode_list(webhook.deliveries()) .. ',"pending":'
      .. webhook.pending() .. "}"
  end,
}

routes["/_sandbox/requests"] = {
  GET = function() return 200, '{"requests":' .. encode_list(store.requests()) .. "}" end,
  DELETE = function()
    store.clear_requests()
    return 200, '{"ok":true}'
  end,
}

-- Returns status, JSON body string, allow header (405 only).
function M.handle(method, path)
  local methods, arg = routes[path], nil
  if not methods then
    local prefix, seg = path:match("^(/_sandbox/%w+/)([^/]+)$")
    if prefix and routes[prefix] then methods, arg = routes[prefix], ngx.unescape_uri(seg) end
  end
  if not methods then return 404, encode({ error = "no such sandbox endpoint" }) end
  local h = methods[method]
  if not h then
    local allow = {}
    for m in pairs(methods) do allow[#allow + 1] = m end
    table.sort(allow)
    return 405, encode({ error = "method not allowed" }), table.concat(allow, ", ")
  end
  return h(arg)
end

return M
