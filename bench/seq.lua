-- bench/seq.lua: one timed run of N otp.verify calls by one Lua contender, for bench/run.sh.
-- Usage: lua5.4 bench/seq.lua MODE URL CALLS WARMUP [CAINFO]
--   MODE module     the module's blocking client (keep-alive), sequential calls
--        async      the module's async mode, BENCH_INFLIGHT (64) calls in flight
--        luasocket  socket.http / ssl.https + lua-cjson, hand-rolled, sequential
--        cjson      no I/O: lua-cjson alone decoding the envelope (BENCH_ENVELOPE)
--                   and encoding the params, CALLS times (URL is ignored)
-- Env: OTP_ID, OTP_CODE, BENCH_TOKEN. Prints "seconds calls errors vmhwm_kib".
local mode, url, calls, warm, cainfo = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4]), arg[5]
assert(mode and url and calls and warm, "usage: seq.lua MODE URL CALLS WARMUP [CAINFO]")
local socket = require("socket")
local id = os.getenv("OTP_ID") or "otp_missing"
local code = os.getenv("OTP_CODE") or "000000"
local token = os.getenv("BENCH_TOKEN") or "contiguity_sk_bench_token"
local params = { otp_id = id, otp = code }

local function vmhwm()
  local f = io.open("/proc/self/status")
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) or -1
end

-- Each call must decode the envelope into a result: verified is false for
-- the fixed answer, and the envelope id reaches metadata.
local function check(res)
  return res ~= nil and res.verified == false and res.metadata ~= nil and res.metadata.id ~= nil
end

local run = {}

function run.module()
  local c = require("contiguity").new(token, { base_url = url, cainfo = cainfo })
  local errors = 0
  for _ = 1, warm do
    assert(check(c.otp.verify(params)), "module: warm-up call failed")
  end
  local t0 = socket.gettime()
  for _ = 1, calls do
    if not check(c.otp.verify(params)) then errors = errors + 1 end
  end
  return socket.gettime() - t0, errors
end

-- Keeps `inflight` calls running until `calls` have been started; each
-- callback starts the next; wait() drains.
function run.async()
  local inflight = tonumber(os.getenv("BENCH_INFLIGHT") or "64")
  local c = require("contiguity").new(token, { base_url = url, cainfo = cainfo, max_connections = inflight })
  local started, errors, last_err = 0, 0, nil
  local limit
  local function start()
    started = started + 1
    local ok, err = c.otp.verify(params, function(res, e)
      if not check(res) then errors = errors + 1; last_err = e end
      if started < limit then start() end
    end)
    assert(ok, tostring(err))
  end
  local function batch(n)
    started, limit = 0, n
    for _ = 1, math.min(inflight, n) do start() end
    c:wait()
  end
  batch(math.max(warm, inflight))
  assert(errors == 0, "async: warm-up calls failed: " .. tostring(last_err))
  local t0 = socket.gettime()
  batch(calls)
  return socket.gettime() - t0, errors
end

-- What a Lua user writes without the module: socket.http (or ssl.https with
-- the CA) posting the JSON body, lua-cjson decoding the envelope into the
-- same result shape. socket.http closes the connection after each request.
function run.luasocket()
  local cjson = require("cjson")
  local ltn12 = require("ltn12")
  local https = url:match("^https:")
  local http = https and require("ssl.https") or require("socket.http")
  local body = cjson.encode(params)
  local headers = {
    ["Authorization"] = "Token " .. token,
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json",
    ["Content-Length"] = tostring(#body),
  }
  local target = url .. "/otp/verify"
  local function verify()
    local out = {}
    local req = { url = target, method = "POST", headers = headers,
                  source = ltn12.source.string(body), sink = ltn12.sink.table(out) }
    if https then req.cafile = cainfo; req.verify = "peer"; req.protocol = "any" end
    local ok, status = http.request(req)
    if not ok or status ~= 200 then return nil end
    local env = cjson.decode(table.concat(out))
    local res = {}
    for k, v in pairs(env.data) do res[k] = v end
    res.metadata = { id = env.id, timestamp = env.timestamp, api_version = env.api_version, object = env.object }
    return res
  end
  local errors = 0
  for _ = 1, warm do assert(check(verify()), "luasocket: warm-up call failed") end
  local t0 = socket.gettime()
  for _ = 1, calls do
    if not check(verify()) then errors = errors + 1 end
  end
  return socket.gettime() - t0, errors
end

-- The part of every call no Lua client can skip with lua-cjson: the
-- envelope decoded into tables, the params encoded. What the module spends
-- beyond the floor, minus this, is its own.
function run.cjson()
  local cjson = require("cjson").new()
  local envelope = assert(os.getenv("BENCH_ENVELOPE"), "BENCH_ENVELOPE is not set")
  local errors = 0
  local function once()
    local body = cjson.encode(params)
    local env = cjson.decode(envelope)
    return #body > 0 and env.data.verified == false and env.id ~= nil
  end
  for _ = 1, warm do assert(once(), "cjson: unexpected envelope") end
  local t0 = socket.gettime()
  for _ = 1, calls do
    if not once() then errors = errors + 1 end
  end
  return socket.gettime() - t0, errors
end

assert(run[mode], "unknown mode " .. tostring(mode))
local seconds, errors = run[mode]()
print(("%.6f %d %d %d"):format(seconds, calls, errors, vmhwm()))
