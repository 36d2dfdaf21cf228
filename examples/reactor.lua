-- examples/reactor.lua: the smallest host-reactor integration: wait on client:fds() with socket.select, then client:poll(0).
--
--   sandbox/start 8960
--   CONTIGUITY_BASE_URL=http://127.0.0.1:8960 LUA_CPATH="build/5.4/?.so;;" lua5.4 examples/reactor.lua
--
-- LuaSocket's select accepts any object with a getfd() method, so libcurl's
-- raw fds are wrapped in tiny tables. luv, cqueues or a game engine do the
-- same with their own fd watchers: wait for the fds or the timeout, then
-- poll(0). No busy polling: the loop runs only when something happened.
local contiguity = require "contiguity"
local socket = require "socket"

local client = contiguity.new(os.getenv("CONTIGUITY_API_KEY") or "contiguity_sk_test_token",
  { base_url = os.getenv("CONTIGUITY_BASE_URL") or "http://127.0.0.1:8960" })

local function wrap(fds)
  local out = {}
  for i, fd in ipairs(fds) do out[i] = { getfd = function() return fd end } end
  return out
end

for i = 1, 10 do
  client.otp.new({ to = string.format("+1555%07d", i), language = "en", name = "Reactor" }, function(res, err)
    print(i, res and res.otp_id or tostring(err))
  end)
end

local wakeups = 0
while client:pending() > 0 do
  local r, w, timeout = client:fds()
  -- nil timeout: libcurl has no timer, so only the sockets can wake us
  socket.select(wrap(r), wrap(w), timeout or 1)
  client:poll(0)
  wakeups = wakeups + 1
end
print(("all done after %d wake-ups"):format(wakeups))
client:close()
