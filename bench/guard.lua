-- bench/guard.lua: one timed run of N otp.verify calls on the blocking client,
-- unguarded or guarded, for bench/guard.sh (the guard's cost per call).
-- Usage: lua5.4 bench/guard.lua MODE URL CALLS WARMUP ROUND [REDIS_PORT]
--   MODE none   no guard
--        local  verifies_per_otp + verifies_per_caller in the in-process store
--        redis  the same limits in Redis through lua-redis (one EVALSHA a call)
-- Each call verifies another otp_id (as real traffic does: no limit is ever
-- reached) for one of 100 callers. Env: BENCH_TOKEN. Prints
-- "seconds calls errors vmhwm_kib" like bench/seq.lua.
local mode, url, calls, warm, round, redis_port = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4]), arg[5],
  tonumber(arg[6])
assert(mode and url and calls and warm and round, "usage: guard.lua MODE URL CALLS WARMUP ROUND [REDIS_PORT]")
local socket = require("socket")
local token = os.getenv("BENCH_TOKEN") or "contiguity_sk_bench_token"

local caller
local guard = {
  verifies_per_otp = { 5, 900 },
  verifies_per_caller = { 100000, 60 },
  caller = function() return caller end,
  key = "bench guard key",
}
if mode == "none" then
  guard = nil
elseif mode == "redis" then
  guard.redis = { port = assert(redis_port, "redis needs REDIS_PORT") }
else
  assert(mode == "local", "unknown mode " .. tostring(mode))
end

local c = require("contiguity").new(token, { base_url = url, guard = guard })
local callers = {}
for i = 1, 100 do callers[i] = "198.51.100." .. i end

local function call(i)
  caller = callers[i % 100 + 1]
  local res = c.otp.verify{ otp_id = ("otp_%s_%s_%d"):format(mode, round, i), otp = "123456" }
  return res ~= nil and res.verified == false
end

local function vmhwm()
  local f = io.open("/proc/self/status")
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) or -1
end

for i = 1, warm do assert(call(-i), "warm-up call failed") end
local errors = 0
local t0 = socket.gettime()
for i = 1, calls do
  if not call(i) then errors = errors + 1 end
end
local seconds = socket.gettime() - t0
print(("%.6f %d %d %d"):format(seconds, calls, errors, vmhwm()))
