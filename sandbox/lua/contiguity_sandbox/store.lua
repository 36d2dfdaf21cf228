-- Sandbox state kept in the lua_shared_dict "contiguity_sandbox", so every
-- nginx worker sees the same OTPs, sessions, outbox, clock and request log.
-- Records are written once as JSON; everything that changes later is a
-- separate key changed with an atomic dict operation (add/incr), so
-- concurrent requests cannot double-verify a code or lose a send count.
local util = require("contiguity_sandbox.util")

local dict = ngx.shared.contiguity_sandbox
local encode, decode = util.encode, util.decode
local floor, max, tonumber = math.floor, math.max, tonumber

local M = { dict = dict }

M.OUTBOX_MAX = 10000
M.REQLOG_MAX = 2000

-- Sandbox clock: real time + offset (ms), integer.
function M.offset()
  return dict:get("clock:offset") or 0
end

function M.now()
  return floor(ngx.now() * 1000) + (dict:get("clock:offset") or 0)
end

function M.advance(ms)
  return dict:incr("clock:offset", floor(ms + 0.5), 0)
end

function M.reset()
  dict:flush_all()
  dict:flush_expired()
end

-- Ring buffers: a counter key plus slots "<prefix><n % size>".
local function ring_push(name, size, value)
  local n = dict:incr(name .. ":n", 1, 0)
  dict:set(name .. ":" .. (n % size), value)
  return n
end

local function ring_items(name, size)
  local n = dict:get(name .. ":n") or 0
  local out = {}
  for i = max(1, n - size + 1), n do
    local v = dict:get(name .. ":" .. (i % size))
    if v then out[#out + 1] = v end
  end
  return out
end

-- Request log: one tab-separated string per API request (cheap to write).
function M.log_request(method, path, status)
  ring_push("req", M.REQLOG_MAX, method .. "\t" .. status .. "\t" .. ngx.var.connection
    .. "\t" .. ngx.var.connection_requests .. "\t" .. path)
end

function M.requests()
  local out = {}
  for _, line in ipairs(ring_items("req", M.REQLOG_MAX)) do
    local method, status, conn, creq, path = line:match("^(%S+)\t(%d+)\t(%d+)\t(%d+)\t(.*)$")
    out[#out + 1] = { method = method, status = tonumber(status), connection = tonumber(conn),
                      connection_requests = tonumber(creq), path = path }
  end
  return out
end

function M.clear_requests()
  dict:delete("req:n")
end

-- Outbox of messages the sandbox "sent".
function M.send(to, text, otp_id, kind)
  ring_push("outbox", M.OUTBOX_MAX, encode({ to = to, text = text, otp_id = otp_id, kind = kind, at = M.now() }))
  dict:set("last:" .. to, otp_id)
end

function M.outbox(to)
  local out = {}
  for _, s in ipairs(ring_items("outbox", M.OUTBOX_MAX)) do
    local m = decode(s)
    if m and (to == nil or m.to == to) then out[#out + 1] = m end
  end
  return out
end

function M.last_otp_id(to)
  return dict:get("last:" .. to)
end

-- OTPs: immutable record + "otp_used:<id>" (add = consume once) + "otp_sends:<id>".
function M.put_otp(rec)
  dict:set("otp:" .. rec.otp_id, encode(rec))
  dict:set("otp_sends:" .. rec.otp_id, 0)
end

function M.get_otp(id)
  local s = dict:get("otp:" .. id)
  return s and decode(s)
end

function M.otp_sends(id)
  return dict:get("otp_sends:" .. id) or 0
end

function M.count_send(id)
  return dict:incr("otp_sends:" .. id, 1, 0)
end

function M.otp_used(id)
  return dict:get("otp_used:" .. id) ~= nil
end

-- true only for the first caller: the code is consumed exactly once.
function M.consume_otp(id)
  return (dict:add("otp_used:" .. id, true))
end

-- Reverse sessions: immutable record + "rv_final:<id>" (verified|cancelled,
-- first writer wins) + an index from (number, to, factor) to the newest id.
local function triple(number, to, factor)
  return "rv_idx:" .. number .. "\0" .. to .. "\0" .. factor
end

function M.put_session(rec)
  dict:set("rv:" .. rec.otp_id, encode(rec))
  dict:set(triple(rec.number, rec.to, rec.factor), rec.otp_id)
end

function M.get_session(id)
  local s = dict:get("rv:" .. id)
  return s and decode(s)
end

function M.find_session(number, to, factor)
  return dict:get(triple(number, to, factor))
end

function M.session_status(rec)
  local final = dict:get("rv_final:" .. rec.otp_id)
  if final then return final end
  if M.now() >= rec.expires_at_ms then return "expired" end
  return "pending"
end

-- Move a pending session to verified|cancelled; returns ok, current status.
function M.finish_session(rec, status)
  local cur = M.session_status(rec)
  if cur ~= "pending" then return false, cur end
  local ok = dict:add("rv_final:" .. rec.otp_id, status)
  if not ok then return false, dict:get("rv_final:" .. rec.otp_id) end
  return true, status
end

return M
