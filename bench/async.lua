-- bench/async.lua: POST /otp/verify throughput of the module, 64 async calls in flight vs. sequential blocking calls, next to wrk's figure.
-- Run by bench/async.sh (env: BENCH_URL, OTP_ID, OTP_CODE, WRK_RPS, BENCH_SECONDS, BENCH_INFLIGHT).
local contiguity = require "contiguity"
local socket = require "socket"

local url = assert(os.getenv("BENCH_URL"), "BENCH_URL is not set")
local id = os.getenv("OTP_ID") or "otp_missing"
local code = os.getenv("OTP_CODE") or "000000"
local seconds = tonumber(os.getenv("BENCH_SECONDS") or "5")
local inflight = tonumber(os.getenv("BENCH_INFLIGHT") or "64")
local wrk_rps = tonumber(os.getenv("WRK_RPS") or "")
local token = "contiguity_sk_bench_token"
local params = { otp_id = id, otp = code }

-- Keeps `inflight` calls running: each callback starts the next one until
-- the deadline, then wait() drains what is left.
local function async_run()
  local c = contiguity.new(token, { base_url = url, max_connections = inflight })
  local done, failed, deadline = 0, 0, 0
  local function start()
    local ok, err
    ok, err = c.otp.verify(params, function(res, e)
      if res then done = done + 1 else failed = failed + 1; err = e end
      if socket.gettime() < deadline then start() end
    end)
    assert(ok, tostring(err))
  end
  -- warm-up: open the connections
  deadline = socket.gettime() + 0.5
  for _ = 1, inflight do start() end
  c:wait()
  done, failed = 0, 0
  local t0 = socket.gettime()
  deadline = t0 + seconds
  for _ = 1, inflight do start() end
  c:wait()
  local t = socket.gettime() - t0
  c:close()
  return done / t, failed
end

local function blocking_run()
  local c = contiguity.new(token, { base_url = url })
  local done, failed = 0, 0
  assert(c.otp.verify(params))
  local t0 = socket.gettime()
  local deadline = t0 + seconds
  while socket.gettime() < deadline do
    if c.otp.verify(params) then done = done + 1 else failed = failed + 1 end
  end
  local t = socket.gettime() - t0
  c:close()
  return done / t, failed
end

local a_rps, a_fail = async_run()
local b_rps, b_fail = blocking_run()
local ref = wrk_rps or a_rps
print(("%-40s %12s %10s %8s"):format("client (POST /otp/verify)", "calls/s", "vs wrk", "errors"))
local function row(name, rps, fail)
  print(("%-40s %12.0f %9.0f%% %8s"):format(name, rps, 100 * rps / ref, fail or "-"))
end
if wrk_rps then row(("wrk -c%d"):format(inflight), wrk_rps, 0) end
row(("contiguity async, %d in flight"):format(inflight), a_rps, a_fail)
row("contiguity blocking, sequential", b_rps, b_fail)
print(("async / blocking: %.1fx"):format(a_rps / b_rps))
if wrk_rps then
  print(("target async >= 50%% of wrk: %s"):format(a_rps >= 0.5 * wrk_rps and "met" or "MISSED"))
end
