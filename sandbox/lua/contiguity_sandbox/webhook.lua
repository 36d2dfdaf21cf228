-- Signed webhook deliveries: when a reverse session becomes verified, POST an
-- otp.reverse.verified event to its success_url with a Contiguity-Signature
-- header (t=<unix seconds>,v1=<hex HMAC-SHA256 of t "." body>), retrying a
-- non-2xx answer. Delivery runs in an ngx.timer (the request that verified
-- the session never waits for it) over a cosocket with a minimal hand-written
-- HTTP/1.1 client: this is a test server talking to loopback listeners, and
-- a proxy location would need a resolver and a change to the generated
-- nginx.conf for what is one request line, a few headers and a status line.
local ffi = require("ffi")
local util = require("contiguity_sandbox.util")
local store = require("contiguity_sandbox.store")

local dict = store.dict
local format, floor = string.format, math.floor

local M = {}

M.DEFAULT_SECRET = "whsec_sandbox_secret"
M.DEFAULT_ATTEMPTS = 3
M.DEFAULT_BACKOFF = 0.2 -- seconds before the 2nd attempt; doubles after
M.LOG_MAX = 1000
M.TIMEOUT_MS = 5000

-- nginx's Lua has only ngx.hmac_sha1; libcrypto's HMAC through LuaJIT's FFI
-- gives SHA-256 (resty.openssl is not packaged in Debian).
pcall(ffi.cdef, [[
  typedef struct evp_md_st EVP_MD;
  const EVP_MD *EVP_sha256(void);
  unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                      const unsigned char *d, size_t n, unsigned char *md, unsigned int *md_len);
]])
local crypto
for _, name in ipairs({ "crypto", "libcrypto.so.3", "libcrypto.so.1.1" }) do
  local ok, lib = pcall(ffi.load, name)
  if ok then crypto = lib break end
end

local mac_buf = ffi.new("unsigned char[64]")
local mac_len = ffi.new("unsigned int[1]")

function M.hmac_sha256_hex(key, msg)
  assert(crypto, "libcrypto not found for HMAC-SHA256")
  local p = crypto.HMAC(crypto.EVP_sha256(), key, #key, msg, #msg, mac_buf, mac_len)
  assert(p ~= nil, "HMAC failed")
  local hex = {}
  for i = 0, mac_len[0] - 1 do hex[#hex + 1] = format("%02x", mac_buf[i]) end
  return table.concat(hex)
end

function M.sign(secret, t, body)
  return "t=" .. t .. ",v1=" .. M.hmac_sha256_hex(secret, t .. "." .. body)
end

-- Settings (POST /_sandbox/webhook), kept in the shared dict so every worker
-- and a reset (which flushes the dict) agree.
function M.config()
  return {
    secret = dict:get("wh:secret") or M.DEFAULT_SECRET,
    attempts = dict:get("wh:attempts") or M.DEFAULT_ATTEMPTS,
    backoff = dict:get("wh:backoff") or M.DEFAULT_BACKOFF,
  }
end

function M.configure(b)
  if b.secret ~= nil and (type(b.secret) ~= "string" or b.secret == "") then
    return nil, "secret must be a non-empty string"
  end
  if b.attempts ~= nil and (type(b.attempts) ~= "number" or b.attempts ~= floor(b.attempts)
      or b.attempts < 1 or b.attempts > 10) then
    return nil, "attempts must be a whole number from 1 to 10"
  end
  if b.backoff ~= nil and (type(b.backoff) ~= "number" or b.backoff < 0 or b.backoff > 10) then
    return nil, "backoff must be a number of seconds from 0 to 10"
  end
  if b.secret then dict:set("wh:secret", b.secret) end
  if b.attempts then dict:set("wh:attempts", b.attempts) end
  if b.backoff then dict:set("wh:backoff", b.backoff) end
  return M.config()
end

-- Delivery log: ring buffer of JSON records, oldest first.
local function log(rec)
  local n = dict:incr("wh:log:n", 1, 0)
  dict:set("wh:log:" .. (n % M.LOG_MAX), util.encode(rec))
end

function M.deliveries()
  local n = dict:get("wh:log:n") or 0
  local out = {}
  for i = math.max(1, n - M.LOG_MAX + 1), n do
    local s = dict:get("wh:log:" .. (i % M.LOG_MAX))
    if s then out[#out + 1] = util.decode(s) end
  end
  return out
end

-- A reset flushes the dict; timers still in flight compare this token and
-- stop, so nothing from before a reset is delivered or logged after it.
local function epoch()
  local e = dict:get("wh:epoch")
  if e then return e end
  dict:add("wh:epoch", util.alnum(12))
  return dict:get("wh:epoch")
end

-- scheme, host, port, path of an http(s) URL; the sandbox has no resolver,
-- so the host must be an IP literal or localhost.
local function split_url(url)
  local scheme, authority, path = url:match("^([hH][tT][tT][pP][sS]?)://([^/?#]+)([^#]*)")
  if not scheme then return nil, "not an http(s) URL" end
  scheme = scheme:lower()
  local host, port = authority:match("^%[([^%]]+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:@]+):?(%d*)$") end
  if not host then return nil, "unsupported URL authority" end
  if host:lower() == "localhost" then host = "127.0.0.1" end
  if not host:match("^[%d%.]+$") and not host:find(":", 1, true) then
    return nil, "the sandbox delivers only to IP addresses or localhost (no resolver)"
  end
  port = tonumber(port ~= "" and port or (scheme == "https" and 443 or 80))
  if path == "" then path = "/" elseif path:sub(1, 1) == "?" then path = "/" .. path end
  return scheme, host, port, path, authority
end

-- One POST; returns the HTTP status or nil, error.
local function post(url, body, signature)
  local scheme, host, port, path, authority = split_url(url)
  if not scheme then return nil, host end
  local sock = ngx.socket.tcp()
  sock:settimeout(M.TIMEOUT_MS)
  local ok, err = sock:connect(host, port)
  if not ok then return nil, "connect: " .. tostring(err) end
  if scheme == "https" then
    ok, err = sock:sslhandshake(nil, nil, false) -- a test server: no verification
    if not ok then sock:close() return nil, "tls: " .. tostring(err) end
  end
  local req = "POST " .. path .. " HTTP/1.1\r\nHost: " .. authority
    .. "\r\nUser-Agent: contiguity-sandbox-webhooks\r\nContent-Type: application/json"
    .. "\r\nContent-Length: " .. #body .. "\r\nContiguity-Signature: " .. signature
    .. "\r\nConnection: close\r\n\r\n" .. body
  ok, err = sock:send(req)
  if not ok then sock:close() return nil, "send: " .. tostring(err) end
  local line
  line, err = sock:receive("*l")
  sock:close()
  if not line then return nil, "receive: " .. tostring(err) end
  local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then return nil, "bad status line" end
  return status
end

local deliver

-- Schedules attempt `attempt` of a job; "wh:pending" counts the attempts
-- scheduled and not yet finished (GET /_sandbox/webhooks shows it), so a
-- test can tell that no delivery is still to come.
local function schedule(delay, job, attempt)
  local ok, err = ngx.timer.at(delay, deliver, job, attempt)
  if ok then dict:incr("wh:pending", 1, 0) end
  return ok, err
end

-- Attempt `attempt` of an event; schedules the next one on failure.
function deliver(premature, job, attempt)
  if premature or dict:get("wh:epoch") ~= job.epoch then return end
  local cfg = M.config()
  local t = format("%d", floor(store.now() / 1000)) -- the sandbox clock: signed now
  local signature = M.sign(job.secret, t, job.body)
  local status, err = post(job.url, job.body, signature)
  if dict:get("wh:epoch") ~= job.epoch then return end -- reset meanwhile: counter gone too
  log({ url = job.url, event_id = job.event_id, attempt = attempt, status = status, error = err,
        body = job.body, signature = signature, at = store.now() })
  if not (status and status >= 200 and status < 300) and attempt < job.attempts then
    local ok, terr = schedule(cfg.backoff * 2 ^ (attempt - 1), job, attempt + 1)
    if not ok then ngx.log(ngx.ERR, "webhook retry not scheduled: ", terr) end
  end
  dict:incr("wh:pending", -1, 0) -- after the next one is counted: never 0 in between
end

-- Delivery attempts scheduled and not finished yet.
function M.pending()
  return dict:get("wh:pending") or 0
end

-- Queue the otp.reverse.verified event of a session just verified.
function M.reverse_verified(rec)
  if not rec.success_url then return end
  local event_id = "evt_" .. util.alnum(16)
  -- by hand, so the timestamp is an integer (like the API envelopes)
  local body = '{"id":"' .. event_id .. '","type":"otp.reverse.verified","timestamp":'
    .. format("%d", floor(store.now() / 1000)) .. ',"api_version":"' .. util.API_VERSION
    .. '","data":' .. util.encode({ otp_id = rec.otp_id, number = rec.number, status = "verified" })
    .. "}"
  local cfg = M.config()
  local job = { url = rec.success_url, body = body, event_id = event_id, secret = cfg.secret,
                attempts = cfg.attempts, epoch = epoch() }
  local ok, err = schedule(0, job, 1)
  if not ok then
    log({ url = job.url, event_id = event_id, attempt = 1, error = "not scheduled: " .. tostring(err),
          body = body, at = store.now() })
  end
  return event_id
end

return M
