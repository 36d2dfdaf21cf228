-- Entry point of the sandbox (a local stand-in for Contiguity's OTP API),
-- loaded by nginx's Lua module: `handle()` serves every request. Routing
-- uses the raw request line (ngx.var.request_uri), never nginx's decoded
-- and normalised $uri, so ids containing %2F, .. or %3F reach the handler
-- intact and the request log shows exactly what the client sent.
local util = require("contiguity_sandbox.util")
local store = require("contiguity_sandbox.store")
local api = require("contiguity_sandbox.api")
local control = require("contiguity_sandbox.control")
local faults = require("contiguity_sandbox.faults")

local format, alnum, encode = string.format, util.alnum, util.encode

local M = {}

local REASONS = {
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [408] = "Request Timeout", [409] = "Conflict",
  [413] = "Payload Too Large", [422] = "Unprocessable Entity", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout",
}

local HEAD = '","timestamp":'
local TAIL_OK = ',"api_version":"' .. util.API_VERSION .. '","object":"response","data":'
local TAIL_ERR = ',"api_version":"' .. util.API_VERSION .. '","object":"error","data":{"error":'

-- Envelopes are assembled by hand so the timestamp is always an integer.
function M.envelope(status, data)
  if status < 400 then
    return '{"id":"req_' .. alnum(16) .. HEAD .. format("%d", store.now()) .. TAIL_OK .. encode(data) .. "}"
  end
  return '{"id":"err_' .. alnum(16) .. HEAD .. format("%d", store.now()) .. TAIL_ERR
    .. encode(data or REASONS[status] or "Error") .. ',"status":' .. format("%d", status) .. "}}"
end

function M.init_worker()
  math.randomseed(math.floor(ngx.now() * 1000) + ngx.worker.pid() * 65537)
  for _ = 1, 10 do math.random() end
end

local function send(status, body, headers)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  if headers then
    for k, v in pairs(headers) do ngx.header[k] = v end
  end
  ngx.header["Content-Length"] = #body
  ngx.print(body)
end

-- Raw-socket fault actions.
local function truncate(body, headers)
  local head = { "HTTP/1.1 200 OK", "Content-Type: application/json",
                 "Content-Length: " .. #body, "Connection: close" }
  for k, v in pairs(headers or {}) do head[#head + 1] = k .. ": " .. v end
  local sock = assert(ngx.req.socket(true))
  sock:send(table.concat(head, "\r\n") .. "\r\n\r\n" .. body:sub(1, math.floor(#body / 2)))
  ngx.exit(444)
end

-- A 200 whose body is `size` bytes (spaces, then "{}" when size >= 2),
-- streamed in 64 KiB chunks so no more than one chunk is ever held; stops
-- when the client goes away. Content-Length is sent unless length = false
-- (then the body is chunked).
local LARGE_CHUNK = 64 * 1024
local large_spaces = string.rep(" ", LARGE_CHUNK)
local function large(size, length)
  ngx.status = 200
  ngx.header["Content-Type"] = "application/json"
  if length ~= false then ngx.header["Content-Length"] = size end
  local tail = size >= 2 and "{}" or string.rep(" ", size)
  local left = size - #tail
  while left > 0 do
    local n = left < LARGE_CHUNK and left or LARGE_CHUNK
    local ok = ngx.print(n == LARGE_CHUNK and large_spaces or large_spaces:sub(1, n))
    if not ok or not ngx.flush(true) then return ngx.exit(444) end
    left = left - n
  end
  ngx.print(tail)
end

local function no_log() end

-- Applies a fault; returns true when the request has been fully handled,
-- and the function that logs it. A delayed request is logged on arrival:
-- a client that gives up during the delay was still heard by the server.
local function apply_fault(f, method, uri)
  local log = store.log_request
  if f.delay > 0 then
    log(method, uri, 0)
    log = no_log
    ngx.sleep(f.delay)
  end
  local action = f.action
  if action == "none" then return false, log end
  ngx.req.read_body()
  if action == "drop" or action == "drop_after_read" then
    log(method, uri, 444)
    return ngx.exit(444) or true
  elseif action == "status" then
    log(method, uri, f.status)
    send(f.status, f.body or M.envelope(f.status), f.headers)
  elseif action == "malformed" then
    log(method, uri, 200)
    send(200, '{"id":"req_x","data":{', f.headers)
  elseif action == "large" then
    log(method, uri, 200)
    large(f.size, f.length)
  elseif action == "truncate" then
    -- The request is really processed (side effects happen); the response is cut.
    local status, data = api.route(method, (uri:gsub("%?.*$", "")))
    log(method, uri, 200)
    truncate(M.envelope(status, data), f.headers)
  end
  return true, log
end

function M.handle()
  local method = ngx.req.get_method()
  local uri = ngx.var.request_uri
  local q = uri:find("?", 1, true)
  local path = q and uri:sub(1, q - 1) or uri

  if path:sub(1, 10) == "/_sandbox/" or path == "/_sandbox" then
    local status, body, allow = control.handle(method, path)
    return send(status, body, allow and { Allow = allow })
  end

  local log = store.log_request
  local f = faults.match(method, path)
  if f then
    if f.headers then for k, v in pairs(f.headers) do ngx.header[k] = v end end
    local handled
    handled, log = apply_fault(f, method, uri)
    if handled then return end
  end

  local status, data, allow = api.route(method, path)
  log(method, uri, status)
  send(status, M.envelope(status, data), allow and { Allow = allow })
end

return M
