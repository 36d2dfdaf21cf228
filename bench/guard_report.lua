-- bench/guard_report.lua: the guard's section of the bench table, from what
-- bench/guard.sh left in DIR (its lines in DIR/results, DIR/guard_rt).
-- Usage: lua5.4 bench/guard_report.lua DIR   (bench/report.lua runs it too)
local dir = ...
dir = dir or arg[1]

local function lines(name)
  local f = io.open(dir .. "/" .. name)
  if not f then return {} end
  local all = {}
  for l in f:lines() do all[#all + 1] = l end
  f:close()
  return all
end

local median = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/stats.lua").median

-- µs per call by group.contender and round
local us, failed = {}, {}
for _, l in ipairs(lines("results")) do
  local g, n, r, s, c = l:match("^(guard%S*) (%S+) (%d+) (%S+) (%d+) %d+ %-?%d+$")
  if g then
    local k = g .. "." .. n
    us[k] = us[k] or {}
    us[k][tonumber(r)] = tonumber(s) * 1e6 / tonumber(c)
  else
    g, n = l:match("^(guard%S*) (%S+) %d+ fail$")
    if g then failed[g .. "." .. n] = (failed[g .. "." .. n] or 0) + 1 end
  end
end
if next(us) == nil then return end

-- the median over rounds of f(this round's µs, the unguarded run's of the same round)
local function paired(key, ref, f)
  local xs = {}
  for r, v in pairs(us[key] or {}) do
    if us[ref] and us[ref][r] then xs[#xs + 1] = f(v, us[ref][r]) end
  end
  return median(xs)
end

local rt = {}
for _, l in ipairs(lines("guard_rt")) do
  local k, calls, trips = l:match("^(%S+) (%d+) (%d+)$")
  if k then rt[k] = tonumber(trips) / tonumber(calls) end
end

local rows = {
  { "guard.none", "guard", "blocking client (Lua 5.4), no guard" },
  { "guard.local", "guard", "  guarded, in-process store" },
  { "guard.redis", "guard", "  guarded, Redis (lua-redis)", "plain" },
  { "guard_nginx.none", "guard_nginx", "contiguity.resty in nginx, no guard" },
  { "guard_nginx.shared", "guard_nginx", "  guarded, lua_shared_dict" },
  { "guard_nginx.redis", "guard_nginx", "  guarded, Redis (resty.redis)", "nginx" },
}
print()
print("The guard's cost per guarded otp.verify (bench/guard.sh: verifies_per_otp + verifies_per_caller,"
  .. " a new otp_id every call; sequential calls to the static stand-in; median of paired rounds):")
print()
print("| client | µs/call | ratio to unguarded | guard's cost, µs/call | Redis round trips/call |")
print("|---|---:|---:|---:|---:|")
for _, row in ipairs(rows) do
  local key, group, label, trips = row[1], row[2], row[3], row[4]
  local ref = group .. ".none"
  local xs = {}
  for _, v in pairs(us[key] or {}) do xs[#xs + 1] = v end
  local m = median(xs)
  if m then
    local ratio = key ~= ref and paired(key, ref, function(a, b) return a / b end)
    local added = key ~= ref and paired(key, ref, function(a, b) return a - b end)
    print(("| %s | %.1f | %s | %s | %s |%s"):format(label, m, ratio and ("%.3f"):format(ratio) or "1",
      added and ("%.1f"):format(added) or "-", trips and rt[trips] and ("%.3f"):format(rt[trips]) or "-",
      failed[key] and (" (%d runs failed)"):format(failed[key]) or ""))
  end
end
