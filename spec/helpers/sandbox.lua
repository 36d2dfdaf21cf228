-- Spec helpers for talking to a running sandbox (sandbox/start PORT):
-- control endpoints (reset, faults, outbox, codes, clock, request log) and
-- raw API calls with the test token. Transport failures raise errors.
local http = require("spec.helpers.http")
local cjson = require("cjson")

local M = {}

M.TOKEN = "contiguity_sk_test_token"

function M.url()
  local u = os.getenv("CONTIGUITY_SANDBOX_URL")
  if not u or u == "" then u = "http://127.0.0.1:8931" end
  return (u:gsub("/+$", ""))
end

-- The sandbox's runtime prefix, where sandbox/start leaves ca.pem and tls_url.
local function prefix()
  local port = M.url():match(":(%d+)$") or "8931"
  local tmp = os.getenv("TMPDIR")
  if not tmp or tmp == "" then tmp = "/tmp" end
  return tmp .. "/contiguity-sandbox." .. port
end

local function read_line(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local line = f:read("*l")
  f:close()
  return line
end

-- The HTTPS base URL of the same sandbox (its certificate names only
-- IP:127.0.0.1): CONTIGUITY_SANDBOX_TLS_URL, else what sandbox/start wrote.
function M.tls_url()
  local u = os.getenv("CONTIGUITY_SANDBOX_TLS_URL")
  if not u or u == "" then u = read_line(prefix() .. "/tls_url") end
  assert(u and u ~= "", "no HTTPS sandbox: " .. prefix() .. "/tls_url is missing")
  return (u:gsub("/+$", ""))
end

-- The throwaway CA (PEM file) that signed the sandbox's HTTPS certificate.
function M.ca_file()
  local p = os.getenv("CONTIGUITY_SANDBOX_CA")
  if not p or p == "" then p = prefix() .. "/ca.pem" end
  return p
end

local function escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end
M.escape = escape

-- Control call: returns status, decoded JSON (asserts the transport worked).
local function control(method, path, body)
  local opts = {}
  if body ~= nil then
    opts.body = type(body) == "string" and body or cjson.encode(body)
    opts.headers = { ["Content-Type"] = "application/json" }
  end
  local status, decoded, raw = http.json(method, M.url() .. path, opts)
  assert(status, "sandbox unreachable at " .. M.url() .. ": " .. tostring(decoded))
  assert(decoded ~= nil, "sandbox returned non-JSON for " .. method .. " " .. path .. ": " .. tostring(raw))
  return status, decoded
end
M.control = control

local function ok(method, path, body)
  local status, decoded = control(method, path, body)
  assert(status == 200, method .. " " .. path .. " -> " .. tostring(status) .. " " .. cjson.encode(decoded))
  return decoded
end

function M.reset() return ok("POST", "/_sandbox/reset") end

function M.health() return ok("GET", "/_sandbox/health") end

-- Queue a fault: {path=, method=, times=, delay=, action=, status=, body=, headers=}.
function M.fault(t) return ok("POST", "/_sandbox/faults", t) end

function M.faults() return ok("GET", "/_sandbox/faults").faults end

function M.clear_faults() return ok("DELETE", "/_sandbox/faults") end

-- Messages sent (oldest first), optionally only those to `to`.
function M.outbox(to)
  return ok("GET", "/_sandbox/outbox" .. (to and ("?to=" .. escape(to)) or "")).messages
end

-- GET a control record: the decoded JSON, or nil on 404.
local function record(path)
  local status, d = control("GET", path)
  if status == 404 then return nil end
  assert(status == 200, path .. " -> " .. tostring(status))
  return d
end

-- code, otp_id of the last OTP sent to `to`; nil when none.
function M.last_code(to)
  local d = record("/_sandbox/last_code?to=" .. escape(to))
  if d then return d.code, d.otp_id end
end

-- The sandbox record of an OTP ({otp_id,to,code,sends,verified,expires_at,...}); nil when unknown.
function M.otp(id) return record("/_sandbox/otp/" .. escape(id)) end

-- The sandbox record of a reverse session (includes status); nil when unknown.
function M.reverse(id) return record("/_sandbox/reverse/" .. escape(id)) end

-- Simulate the user texting `body` from `from` to `to`: {matched=, otp_id=}.
function M.inbound(from, to, body)
  return ok("POST", "/_sandbox/inbound", { from = from, to = to, body = body })
end

function M.clock() return ok("GET", "/_sandbox/clock") end

-- Move the sandbox clock forward by `seconds` (may be fractional): {now=, offset=}.
function M.advance(seconds) return ok("POST", "/_sandbox/clock", { advance = seconds }) end

-- API request log, oldest first: {method, path, connection, connection_requests, status}.
function M.requests() return ok("GET", "/_sandbox/requests").requests end

-- Raw API call with the test token. body: table (JSON-encoded) or string
-- (sent as-is). headers override the defaults (set a header to false to
-- omit it). Returns status, decoded body (nil if not JSON), raw body, headers.
function M.api(method, path, body, headers)
  local h = { ["Authorization"] = "Token " .. M.TOKEN }
  if body ~= nil then h["Content-Type"] = "application/json" end
  for k, v in pairs(headers or {}) do
    for existing in pairs(h) do
      if existing:lower() == k:lower() then h[existing] = nil end
    end
    if v then h[k] = v end
  end
  local opts = { headers = h }
  if body ~= nil then opts.body = type(body) == "string" and body or cjson.encode(body) end
  local status, decoded, raw, resp_headers = http.json(method, M.url() .. path, opts)
  assert(status, "sandbox unreachable at " .. M.url() .. ": " .. tostring(decoded))
  return status, decoded, raw, resp_headers
end

-- A libcurl client of the module pointed at this sandbox: opts as for
-- contiguity.new (base_url defaults to the sandbox), token defaults to TOKEN.
function M.client(opts, token)
  opts = opts or {}
  if opts.base_url == nil then opts.base_url = M.url() end
  return require("contiguity").new(token or M.TOKEN, opts)
end

return M
