-- bench/report.lua: the table bench/run.sh prints, from the raw results it left in its temporary folder.
-- Usage: lua5.4 bench/report.lua TMPDIR ROUNDS
local dir, rounds = arg[1], tonumber(arg[2])

local function lines(name)
  local f = io.open(dir .. "/" .. name)
  if not f then return function() return nil end end
  local all = {}
  for l in f:lines() do all[#all + 1] = l end
  f:close()
  local i = 0
  return function() i = i + 1; return all[i] end
end

-- results: "group contender round seconds calls errors hwm_kib" or "... fail"
local runs = {}
for l in lines("results") do
  local g, n, r, s, c, e, h = l:match("^(%S+) (%S+) (%d+) (%S+) (%d+) (%d+) (%-?%d+)$")
  local key = (g or l:match("^(%S+ %S+)")):gsub(" ", ".")
  if g then key = g .. "." .. n end
  local t = runs[key] or { rates = {}, by_round = {}, errors = 0, calls = 0, hwm = 0, failed = 0 }
  runs[key] = t
  if g then
    t.rates[#t.rates + 1] = tonumber(c) / tonumber(s)
    t.by_round[tonumber(r)] = tonumber(c) / tonumber(s)
    t.errors = t.errors + tonumber(e)
    t.calls = t.calls + tonumber(c)
    t.hwm = math.max(t.hwm, tonumber(h))
  else
    t.failed = t.failed + 1
  end
end

local median = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/stats.lua").median

local machine = {}
for l in lines("machine") do
  machine[#machine + 1] = l
  local k, v = l:match("^(nginx_worker_hwm_kib) (%d+)")
  if k then machine[k] = tonumber(v) end
end

local function rate(key) return runs[key] and median(runs[key].rates) end

-- The median of per-round ratios: each round of a contender is compared
-- with the reference's round next to it in time, so a burst of load from
-- elsewhere that hits one pair does not skew the ratio.
local function ratio(key, ref)
  local a, b = runs[key], runs[ref]
  if not (a and b) then return nil end
  local rs = {}
  for r, v in pairs(a.by_round) do
    if b.by_round[r] then rs[#rs + 1] = v / b.by_round[r] end
  end
  return median(rs)
end

local function commas(n)
  local s = ("%d"):format(math.floor(n + 0.5))
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

local rows = {
  { "http.floor", "bare libcurl loop (floor)", "http.floor" },
  { "http.module", "contiguity, blocking", "http.floor" },
  { "http.luasocket", "LuaSocket socket.http + cjson", "http.floor" },
  { "http.js", "JS SDK (npm contiguity), Node", "http.floor" },
  { "http-split.floor", "bare libcurl loop (floor)", "http-split.floor" },
  { "http-split.module", "contiguity, blocking", "http-split.floor" },
  { "https.floor", "bare libcurl loop (floor)", "https.floor" },
  { "https.module", "contiguity, blocking", "https.floor" },
  { "https.luasocket", "LuaSec ssl.https + cjson", "https.floor" },
  { "https.js", "JS SDK (npm contiguity), Node", "https.floor" },
  { "https-split.floor", "bare libcurl loop (floor)", "https-split.floor" },
  { "https-split.module", "contiguity, blocking", "https-split.floor" },
  { "conc.wrk", "wrk -t1 -c64", "conc.wrk" },
  { "conc.floor_multi", "bare libcurl multi loop, 64 in flight", "conc.wrk" },
  { "conc.async", "contiguity async, 64 in flight", "conc.wrk" },
  { "sandbox.wrk", "wrk -t1 -c64", "sandbox.wrk" },
  { "sandbox.async", "contiguity async, 64 in flight", "sandbox.wrk" },
  { "nginx.proxy_pass", "nginx proxy_pass location, wrk -c64", "nginx.proxy_pass" },
  { "nginx.resty", "contiguity.resty handler, wrk -c64", "nginx.proxy_pass" },
  { "nginx.capture", "diagnostic: bare ngx.location.capture, no module", "nginx.proxy_pass" },
  { "nginx.noio", "diagnostic: the handler + module, transport without I/O", "nginx.proxy_pass" },
  { "nginx.handler", "diagnostic: the handler alone (decode, encode, no call)", "nginx.proxy_pass" },
}
local section = { http = "HTTP, sequential", https = "HTTPS, sequential",
                  ["http-split"] = "HTTP, sequential, server on the other CPU",
                  ["https-split"] = "HTTPS, sequential, server on the other CPU", conc = "HTTP, 64 concurrent",
                  sandbox = "sandbox (not the stand-in), 64 concurrent",
                  nginx = "nginx (1 worker), 64 concurrent" }

for _, l in ipairs(machine) do
  if not l:match("^nginx_worker_hwm_kib") and not l:match("^envelope") then print(l) end
end
print()
print(("calls/s: median of %d interleaved rounds; ratio: median over rounds of (calls/s / the same round of the first row of its group)."):format(rounds))
print()
print("| group | client | calls/s | µs/call | ratio | peak RSS | errors |")
print("|---|---|---:|---:|---:|---:|---:|")
for _, row in ipairs(rows) do
  local key, label, ref = row[1], row[2], row[3]
  local t, r = runs[key], rate(key)
  if t then
    local q = ratio(key, ref)
    local hwm = t.hwm
    local hwm_s = hwm > 0 and ("%.1f MiB"):format(hwm / 1024) or "-"
    if key:match("^nginx") then
      hwm_s = machine.nginx_worker_hwm_kib and ("%.1f MiB (worker)"):format(machine.nginx_worker_hwm_kib / 1024) or "-"
    end
    print(("| %s | %s | %s | %s | %s | %s | %d%s |"):format(section[key:match("^[%w%-]+")], label,
      r and commas(r) or "-", r and ("%.1f"):format(1e6 / r) or "-",
      q and ("%.2f"):format(q) or "-", hwm_s, t.errors,
      t.failed > 0 and (" (%d runs failed)"):format(t.failed) or ""))
  end
end

-- Targets, on ratios from this same run.
print()
local function target(name, a, b, k)
  local q = ratio(a, b)
  if not q then print(("- %s: not measured"):format(name)); return end
  print(("- %s: %.3f -> %s"):format(name, q, q >= k and "met" or "MISSED"))
end
target("module >= 0.90 x floor, HTTP", "http.module", "http.floor", 0.90)
target("module >= 0.90 x floor, HTTPS", "https.module", "https.floor", 0.90)
target("  server on the other CPU, HTTP", "http-split.module", "http-split.floor", 0.90)
target("  server on the other CPU, HTTPS", "https-split.module", "https-split.floor", 0.90)
target("module >= 3 x JS SDK, HTTP", "http.module", "http.js", 3)
target("module >= 4 x LuaSec + cjson, HTTPS", "https.module", "https.luasocket", 4)
target("async (64 in flight) >= 0.5 x wrk -c64", "conc.async", "conc.wrk", 0.5)
target("  the same against the sandbox", "sandbox.async", "sandbox.wrk", 0.5)
target("contiguity.resty >= 0.7 x proxy_pass, -c64", "nginx.resty", "nginx.proxy_pass", 0.7)

-- What bounds each missed target, from the same run.
local function diag(name, q)
  if q then print(("- %s: %.3f"):format(name, q)) end
end
print()
print("Ceilings (same run):")
diag("bare libcurl multi loop / wrk -c64 (the most any libcurl client reaches)", ratio("conc.floor_multi", "conc.wrk"))
diag("contiguity async / bare libcurl multi loop", ratio("conc.async", "conc.floor_multi"))
diag("bare ngx.location.capture, no module / proxy_pass (the most any capture design reaches)",
  ratio("nginx.capture", "nginx.proxy_pass"))
-- µs the module adds to the floor, and what 0.90 would allow, each from
-- the pair of adjacent runs of one round, then the median over the rounds.
local function paired(key, ref, f)
  local a, b, xs = runs[key], runs[ref], {}
  if not (a and b) then return nil end
  for r, v in pairs(a.by_round) do
    if b.by_round[r] then xs[#xs + 1] = f(1e6 / v, 1e6 / b.by_round[r]) end
  end
  return median(xs)
end
local added = paired("http.module", "http.floor", function(m, f) return m - f end)
local allowed = paired("http.module", "http.floor", function(_, f) return f / 0.9 - f end)
local cjson_r = rate("cjson.alone")
if added and allowed and cjson_r then
  print(("- HTTP, same CPU: the module adds %.1f µs to the floor's call; 0.90 allows %.1f µs;"
    .. " lua-cjson alone (decode the envelope, encode the params, no I/O, hot caches) takes %.1f µs"):format(
    added, allowed, 1e6 / cjson_r))
end
local cpu = {}
for l in lines("cpu") do
  local k, v = l:match("^(%S+) %d+ (%S+)$")
  if k then cpu[k] = cpu[k] or {}; table.insert(cpu[k], tonumber(v)) end
end
local function cpu_us(name) return median(cpu["nginx." .. name] or {}) end
local pc, rc = cpu_us("proxy_pass"), cpu_us("resty")
if pc and rc then
  local parts = {}
  for _, n in ipairs{ "proxy_pass", "resty", "capture", "noio", "handler" } do
    if cpu_us(n) then parts[#parts + 1] = ("%s %.1f"):format(n, cpu_us(n)) end
  end
  print(("- nginx worker CPU µs per request (median of rounds): %s; proxy_pass / resty %.2f; 0.7 allows resty %.1f µs"):format(
    table.concat(parts, ", "), pc / rc, pc / 0.7))
end

-- Memory.
local mem = {}
for l in lines("memory") do
  local k, v = l:match("^(%S+) (%S+)$")
  if k then mem[k] = tonumber(v) end
end
if mem.rss_10k_kib then
  local big
  for k in pairs(mem) do
    local n = tonumber(k:match("^rss_(%d+)k_kib$"))
    if n and n ~= 10 then big = n end
  end
  print()
  print(("Memory, one client (Lua 5.4, HTTP): after 10,000 calls RSS %.1f MiB, Lua heap %.0f KiB;"
    .. " after %s,000 calls RSS %.1f MiB, Lua heap %.0f KiB; growth RSS %d KiB, heap %.1f KiB -> %s."):format(
    mem.rss_10k_kib / 1024, mem.heap_10k_kib, big, mem["rss_" .. big .. "k_kib"] / 1024,
    mem["heap_" .. big .. "k_kib"], mem.rss_growth_kib, mem.heap_growth_kib,
    (mem.rss_growth_kib < 1024 and mem.heap_growth_kib < 1024) and "under 1 MiB: met" or "1 MiB or more: MISSED"))
  print(("One extra idle client (after one call, connection kept open; mean of %d): RSS %.1f KiB, Lua heap %.2f KiB. Errors: %d."):format(
    mem.idle_clients, mem.idle_client_rss_kib, mem.idle_client_heap_kib, mem.errors))
end

-- Callgrind: the difference between 1500 and 500 calls, per call.
local function cg(name)
  local self_mod, total, incl = 0, nil, nil
  for l in lines(name .. ".self") do
    local n = l:match("^%s*([%d,]+)")
    if n then
      n = tonumber((n:gsub(",", "")))
      if l:match("PROGRAM TOTALS") then total = n
      elseif l:match("contiguity%.so%]") then self_mod = self_mod + n end
    end
  end
  for l in lines(name .. ".incl") do
    local n = l:match("^%s*([%d,]+).-:cg_call$") or l:match("^%s*([%d,]+).-:cg_call ")
    if n then incl = math.max(incl or 0, tonumber((n:gsub(",", "")))) end
  end
  return total and { self = self_mod, total = total, incl = incl } or nil
end
local a, b = cg("cg.500"), cg("cg.1500")
local fa, fb = cg("cgf.500"), cg("cgf.1500")
if a and b then
  print()
  print(("Instructions per otp.verify (callgrind, (1500-call run - 500-call run) / 1000, Lua 5.4, HTTP):"
    .. " module's own code (contiguity.so self) %s; cg_call inclusive (module + libcurl + cjson + Lua API) %s;"
    .. " whole process %s."):format(commas((b.self - a.self) / 1000),
    (a.incl and b.incl) and commas((b.incl - a.incl) / 1000) or "-", commas((b.total - a.total) / 1000)))
  if fa and fb then
    print(("The floor's whole process, the same way: %s per call."):format(commas((fb.total - fa.total) / 1000)))
  end
  local ja, jb = cg("cgj.500"), cg("cgj.1500")
  if ja and jb then
    print(("lua-cjson alone (bench/seq.lua cjson: decode the envelope, encode the params), the same way: %s per call."):format(
      commas((jb.total - ja.total) / 1000)))
  end
end
local vg = {}
for l in lines("vg.txt") do
  local k, v = l:match("^(%S+) (%d+) %d+$")
  if k then vg[#vg + 1] = ("%s %s"):format(k, commas(tonumber(v))); vg[k] = tonumber(v) end
end
if #vg > 0 then
  print(("nginx worker, user-space instructions per request (callgrind, one process, wrk -c2 for 3 s a location): %s."):format(
    table.concat(vg, ", ")))
  if vg.proxy_pass and vg.capture then
    print(("A bare capture costs %.2f x a proxy_pass request; contiguity.resty %.2f x."):format(
      vg.capture / vg.proxy_pass, (vg.resty or 0) / vg.proxy_pass))
  end
end
local aa, ab = cg("cga.1000"), cg("cga.3000")
local ma, mb = cg("cgm.1000"), cg("cgm.3000")
if aa and ab and ma and mb then
  print(("Async, 64 in flight ((3000-call run - 1000-call run) / 2000): the module's whole process %s per call,"
    .. " the bare libcurl multi loop's %s."):format(commas((ab.total - aa.total) / 2000), commas((mb.total - ma.total) / 2000)))
end

-- The guard's cost per guarded call (bench/guard.sh's rows and round trips).
local guard_report = loadfile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/guard_report.lua")
if guard_report then guard_report(dir) end
