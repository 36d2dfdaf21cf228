-- Scripted faults: POST /_sandbox/faults queues one; the next `times` API
-- requests whose raw path (and method, if given) match get the fault.
-- Stored in the shared dict; the per-fault remaining count is decremented
-- with dict:incr so concurrent requests never consume one slot twice.
local util = require("contiguity_sandbox.util")

local dict = ngx.shared.contiguity_sandbox
local decode, encode = util.decode, util.encode

local M = {}

-- drop and drop_after_read are the same action: both read the whole
-- request body, log the request, then close without answering a byte.
local ACTIONS = { status = true, drop = true, drop_after_read = true, truncate = true,
                  malformed = true, none = true, large = true }
local ACTION_NAMES = "status, drop, drop_after_read, truncate, malformed, large, none"
local LARGE_MAX = 16 * 1024 * 1024 * 1024

local cache = {} -- raw JSON -> decoded spec (per worker)

local function spec_at(i)
  local s = dict:get("fault:" .. i)
  if not s then return nil end
  local f = cache[s]
  if not f then f = decode(s); cache[s] = f end
  return f
end

-- Validates and stores a fault; returns the stored spec or nil, message.
function M.add(t)
  if type(t) ~= "table" then return nil, "body must be a JSON object" end
  if type(t.path) ~= "string" or t.path:sub(1, 1) ~= "/" then return nil, "path must be a string starting with /" end
  if t.method ~= nil and type(t.method) ~= "string" then return nil, "method must be a string" end
  local times = t.times == nil and 1 or t.times
  if type(times) ~= "number" or times % 1 ~= 0 or (times < 1 and times ~= -1) then
    return nil, "times must be a positive integer or -1"
  end
  local delay = t.delay == nil and 0 or t.delay
  if type(delay) ~= "number" or delay < 0 then return nil, "delay must be a number of seconds >= 0" end
  local action = t.action == nil and "status" or t.action
  if not ACTIONS[action] then return nil, "action must be one of " .. ACTION_NAMES end
  local size = t.size
  if action == "large" then
    if type(size) ~= "number" or size % 1 ~= 0 or size < 0 or size > LARGE_MAX then
      return nil, "size must be a whole number of bytes from 0 to " .. LARGE_MAX
    end
  elseif size ~= nil then
    return nil, "size applies only to action large"
  end
  if t.length ~= nil and type(t.length) ~= "boolean" then return nil, "length must be a boolean" end
  local status = t.status == nil and (action == "status" and 500 or nil) or t.status
  if status ~= nil and (type(status) ~= "number" or status % 1 ~= 0 or status < 100 or status > 599) then
    return nil, "status must be an integer HTTP status"
  end
  if t.body ~= nil and type(t.body) ~= "string" then return nil, "body must be a string" end
  local headers = {}
  if t.headers ~= nil then
    if type(t.headers) ~= "table" then return nil, "headers must be an object" end
    for k, v in pairs(t.headers) do
      if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
        return nil, "headers must map names to strings"
      end
      headers[k] = tostring(v)
    end
  end
  local id = dict:incr("fault:n", 1, 0)
  local f = { id = id, path = t.path, method = t.method and t.method:upper() or nil, times = times,
              delay = delay, action = action, status = status, body = t.body, headers = headers,
              size = size, length = t.length }
  dict:set("fault_left:" .. id, times)
  dict:set("fault:" .. id, encode(f))
  f.remaining = times
  return f
end

function M.list()
  local out = {}
  for i = 1, dict:get("fault:n") or 0 do
    local f = spec_at(i)
    if f then
      local copy = {}
      for k, v in pairs(f) do copy[k] = v end
      local left = dict:get("fault_left:" .. i) or 0
      copy.remaining = (f.times == -1) and -1 or math.max(left, 0)
      out[#out + 1] = copy
    end
  end
  return out
end

function M.clear()
  for i = 1, dict:get("fault:n") or 0 do
    dict:delete("fault:" .. i)
    dict:delete("fault_left:" .. i)
  end
  dict:delete("fault:n")
  cache = {}
end

-- The first queued fault matching this request with a slot left, or nil.
-- Hot path when no faults exist: one dict:get.
function M.match(method, path)
  local n = dict:get("fault:n")
  if not n then return nil end
  for i = 1, n do
    local f = spec_at(i)
    if f and f.path == path and (f.method == nil or f.method == method) then
      if f.times == -1 then return f end
      local left = dict:incr("fault_left:" .. i, -1)
      if left and left >= 0 then return f end
    end
  end
  return nil
end

return M
