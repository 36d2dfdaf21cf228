-- spec/helpers/tarantool_app.lua: run under `tarantool` by spec/integration/tarantool_spec.lua; prints one JSON report of calls made through examples/tarantool.lua and through libcurl.
--
-- Environment: CONTIGUITY_BUILD_DIR (the LuaJIT build, build/jit),
-- CONTIGUITY_SANDBOX_URL, and TARANTOOL_DELAY, the delay (s) the spec made
-- the sandbox answer otp.new with; it also made otp.verify answer after 2 s.
-- Runs from the repository root.
local build = assert(os.getenv("CONTIGUITY_BUILD_DIR"), "CONTIGUITY_BUILD_DIR is not set")
local base = assert(os.getenv("CONTIGUITY_SANDBOX_URL"), "CONTIGUITY_SANDBOX_URL is not set")
assert(tonumber(os.getenv("TARANTOOL_DELAY")), "TARANTOOL_DELAY is not set")
package.cpath = build .. "/?.so;" .. package.cpath
package.path = "./?.lua;" .. package.path

local fiber = require "fiber"
local clock = require "clock"
local json = require "json"
local report = { tarantool = _TARANTOOL, module_file = package.searchpath("contiguity", package.cpath) }
local ok, contiguity = pcall(require, "contiguity")
if not ok then
  report.load_error = tostring(contiguity)
  print(json.encode(report))
  os.exit(0)
end
local transport = require("examples.tarantool").transport
local httpc = require("http.client").new()
local TOKEN = "contiguity_sk_test_token"

local function client(kind, opts)
  opts = opts or {}
  opts.base_url = opts.base_url or base
  if kind == "host" then opts.transport = transport(httpc) end
  return contiguity.new(TOKEN, opts)
end

-- A result or error table as plain JSON-able data (errors carry a metatable).
local function plain(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = plain(x) end
  return t
end

local function number(i) return string.format("+1555%07d", i) end

-- A fiber that counts 10 ms ticks: it advances only while the server is free.
local ticks = 0
fiber.create(function()
  while true do
    fiber.sleep(0.01)
    ticks = ticks + 1
  end
end)

-- 1. one call through the transport, then 20 at once from 20 fibers
local host = client("host")
local t0, k0 = clock.monotonic(), ticks
local res, err = host.otp.new{ to = number(1), language = "en", name = "Tarantool" }
report.single = { seconds = clock.monotonic() - t0, ticks = ticks - k0, ok = res ~= nil,
                  err = err and tostring(err) }

local done = fiber.channel(20)
t0, k0 = clock.monotonic(), ticks
for i = 1, 20 do
  fiber.create(function()
    local s = clock.monotonic()
    local r, e = host.otp.new{ to = number(100 + i), language = "en", name = "Tarantool" }
    done:put({ i = i, otp_id = r and r.otp_id, err = e and tostring(e), seconds = clock.monotonic() - s })
  end)
end
report.many = { calls = {} }
for _ = 1, 20 do table.insert(report.many.calls, done:get()) end
report.many.seconds = clock.monotonic() - t0
report.many.ticks = ticks - k0

-- the libcurl client blocks the whole server for its call: no tick meanwhile
t0, k0 = clock.monotonic(), ticks
res, err = client("curl").otp.new{ to = number(2), language = "en", name = "Tarantool" }
report.blocking = { seconds = clock.monotonic() - t0, ticks = ticks - k0, ok = res ~= nil,
                    err = err and tostring(err) }

-- 2. the same calls through both clients: a result, a 404, a timeout, a refused connection
report.cases = {}
local cases = {
  ok = { {}, function(c) return c.otp.new{ to = number(3), language = "en", name = "Tarantool" } end },
  not_found = { {}, function(c) return c.otp.reverse.verify("r_otp_missing") end },
  timeout = { { timeout = 0.5 }, function(c) return c.otp.verify{ otp_id = "otp_slow", otp = "123456" } end },
  refused = { { base_url = "http://127.0.0.1:1" },
              function(c) return c.otp.verify{ otp_id = "otp_x", otp = "123456" } end },
}
for name, case in pairs(cases) do
  report.cases[name] = {}
  for _, kind in ipairs({ "host", "curl" }) do
    local opts = {}
    for k, v in pairs(case[1]) do opts[k] = v end
    opts.max_retries = 0 -- a transport call is one attempt: compare like with like
    local c = client(kind, opts)
    local r, e = case[2](c)
    report.cases[name][kind] = { res = plain(r), err = plain(e), message = e and tostring(e) }
    c:close()
  end
end

print(json.encode(report))
os.exit(0)
