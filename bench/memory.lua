-- bench/memory.lua: RSS and Lua heap of one client after 10,000 and after 200,000 otp.verify calls, and what one extra idle client costs; for bench/run.sh.
-- Usage: lua5.4 bench/memory.lua URL [TOTAL_CALLS] [IDLE_CLIENTS]
-- Env: OTP_ID, OTP_CODE, BENCH_TOKEN. Prints "key value" lines.
local url = assert(arg[1], "usage: memory.lua URL [TOTAL_CALLS] [IDLE_CLIENTS]")
local total = tonumber(arg[2] or "200000")
local idle = tonumber(arg[3] or "100")
local contiguity = require("contiguity")
local token = os.getenv("BENCH_TOKEN") or "contiguity_sk_bench_token"
local params = { otp_id = os.getenv("OTP_ID") or "otp_missing", otp = os.getenv("OTP_CODE") or "000000" }

local function rss_kib()
  local f = io.open("/proc/self/status")
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

-- Full collections until the heap stops shrinking: figures after it are
-- what stays reachable, not garbage waiting for the next cycle.
local function settle()
  collectgarbage("collect")
  collectgarbage("collect")
  return rss_kib(), collectgarbage("count")
end

local c = contiguity.new(token, { base_url = url })
local errors = 0
local function calls(n)
  for _ = 1, n do
    local res = c.otp.verify(params)
    if not (res and res.verified == false) then errors = errors + 1 end
  end
end

calls(10000)
local rss1, heap1 = settle()
calls(total - 10000)
local rss2, heap2 = settle()
print(("rss_10k_kib %d"):format(rss1))
print(("heap_10k_kib %.1f"):format(heap1))
print(("rss_%dk_kib %d"):format(total // 1000, rss2))
print(("heap_%dk_kib %.1f"):format(total // 1000, heap2))
print(("rss_growth_kib %d"):format(rss2 - rss1))
print(("heap_growth_kib %.1f"):format(heap2 - heap1))
print(("errors %d"):format(errors))

-- Extra idle clients: each made one call, so it holds its easy handle,
-- its open keep-alive connection and its buffers, then sits idle.
local rss0, heap0 = settle()
local keep = {}
for i = 1, idle do
  keep[i] = contiguity.new(token, { base_url = url })
  assert(keep[i].otp.verify(params), "idle client call failed")
end
local rss3, heap3 = settle()
print(("idle_clients %d"):format(idle))
print(("idle_client_rss_kib %.1f"):format((rss3 - rss0) / idle))
print(("idle_client_heap_kib %.2f"):format((heap3 - heap0) / idle))
for i = 1, idle do keep[i]:close() end
c:close()
