-- examples/tarantool.lua: the `transport` option on Tarantool's own http.client, so a call yields its fiber instead of blocking the server.
--
--   sandbox/start 8960
--   CONTIGUITY_BASE_URL=http://127.0.0.1:8960 tarantool examples/tarantool.lua
--
-- Tarantool embeds LuaJIT, so it loads the 5.1-ABI LuaJIT build of the
-- module (make LUA=jit: build/jit/contiguity.so, or the luarocks install
-- for luajit/5.1); lua-cjson comes from Debian's lua-cjson, which
-- Tarantool's default package.cpath already searches.
--
-- Run as a script it sends 10 codes from 10 fibers at once. Required
-- (require "examples.tarantool", or copy the function into your app) it
-- returns { transport = transport }:
--
--   local client = contiguity.new(token, { transport = transport(http_client) })
--
-- Each call then runs in the fiber that makes it: http.client parks that
-- fiber while libcurl waits, and the other fibers (and box requests) run.
-- Results and errors are those of the libcurl client: http.client reports
-- its own failures (no HTTP answer at all) as a response without `proto`,
-- status 595 and libcurl's message as `reason`, or status 408 when the
-- request timed out; those become `nil, message`, which the module turns
-- into kind "network", or "timeout" for a message that says "timed out".
--
-- Keep http.client's default of no keep-alive for these calls (do not set
-- keepalive_idle/keepalive_interval): it then sends `Connection: close`, so
-- a request never goes out on a reused connection, the one case where
-- libcurl re-sends a POST on its own (the module never re-sends otp.new or
-- otp.verify; see doc/reliability.md).
local function transport(httpc)
  return function(req)
    local ok, r = pcall(httpc.request, httpc, req.method, req.url, req.body, {
      headers = req.headers,
      timeout = req.timeout,
      follow_location = false, -- a 3xx is reported, never followed (as the libcurl client does)
    })
    if not ok then return nil, tostring(r) end
    if r.proto == nil then -- http.client's own failure: no HTTP answer
      if r.status == 408 then return nil, "timed out: " .. tostring(r.reason) end
      return nil, tostring(r.reason)
    end
    return r.status, r.body or "", r.headers
  end
end

-- The demo: 10 fibers, each sending one code over one shared client.
local function main()
  local fiber = require "fiber"
  local contiguity = require "contiguity"
  local client = contiguity.new(os.getenv("CONTIGUITY_API_KEY") or "contiguity_sk_test_token", {
    base_url = os.getenv("CONTIGUITY_BASE_URL") or "http://127.0.0.1:8960",
    transport = transport(require("http.client").new()),
  })
  local done = fiber.channel(10)
  for i = 1, 10 do
    fiber.create(function()
      local res, err = client.otp.new{ to = string.format("+1555%07d", i), language = "en", name = "Tarantool" }
      done:put(("%d %s"):format(i, res and res.otp_id or tostring(err)))
    end)
  end
  for _ = 1, 10 do print(done:get()) end
  client:close()
  os.exit(0)
end

-- main() only when this file is the script being run, not when it is required
if arg and arg[0] and debug.getinfo(1, "S").source == "@" .. arg[0] then main() end

return { transport = transport }
