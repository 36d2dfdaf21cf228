-- examples/game_loop.lua: a 20 ticks/s game loop logging in 200 players over async calls without ever stalling a tick.
--
--   sandbox/start 8960
--   CONTIGUITY_BASE_URL=http://127.0.0.1:8960 LUA_CPATH="build/5.4/?.so;;" lua5.4 examples/game_loop.lua
--
-- Each login is otp.new, then (the "player" reads the SMS: here the
-- sandbox's /_sandbox/last_code, fetched with LuaSocket) otp.verify, both
-- async. The loop spends the rest of every tick in client:poll(remaining),
-- which runs finished calls' callbacks and sleeps on libcurl's sockets
-- otherwise: no busy waiting, no tick blocked by the network. LOGIN_DELAY
-- (seconds, default 0.5; 0 for none) makes the sandbox answer otp.new that
-- late, so the logins span many ticks as over a real network.
local contiguity = require "contiguity"
local socket = require "socket"
local http = require "socket.http"

local base = os.getenv("CONTIGUITY_BASE_URL") or "http://127.0.0.1:8960"
local token = os.getenv("CONTIGUITY_API_KEY") or "contiguity_sk_test_token"
local PLAYERS, TICK = 200, 1 / 20

local client = contiguity.new(token, { base_url = base, max_connections = 64 })

local delay = tonumber(os.getenv("LOGIN_DELAY") or "0.5")
if delay > 0 then
  local ltn12 = require "ltn12"
  local body = string.format('{"path":"/otp/new","action":"none","delay":%g,"times":%d}', delay, PLAYERS)
  assert(http.request{ url = base .. "/_sandbox/faults", method = "POST", source = ltn12.source.string(body),
    headers = { ["Content-Type"] = "application/json", ["Content-Length"] = #body } })
end

-- The sandbox's control endpoint stands in for the player typing the code.
local function code_for(number)
  local body, status = http.request(base .. "/_sandbox/last_code?to=" .. number:gsub("%+", "%%2B"))
  return status == 200 and body:match('"code"%s*:%s*"(%d+)"') or nil
end

local logged_in, failed = 0, 0
local function login(i)
  local number = string.format("+1555%07d", i)
  assert(client.otp.new({ to = number, language = "en", name = "MyGame" }, function(sent, err)
    if not sent then failed = failed + 1; print("player " .. i .. ": " .. tostring(err)); return end
    client.otp.verify({ otp_id = sent.otp_id, otp = code_for(number) or "" }, function(res, err2)
      if res and res.verified then logged_in = logged_in + 1
      else failed = failed + 1; print("player " .. i .. ": " .. tostring(err2 or "not verified")) end
    end)
  end))
end

local ticks, waiting_ticks, late = 0, 0, 0
local next_tick = socket.gettime()
local t0 = next_tick
while true do
  ticks = ticks + 1
  -- game work of this tick: here, 50 players press "log in" per tick
  for i = (ticks - 1) * 50 + 1, math.min(ticks * 50, PLAYERS) do login(i) end
  if client:pending() > 0 then waiting_ticks = waiting_ticks + 1 end
  if client:pending() == 0 and ticks * 50 >= PLAYERS then break end
  -- the rest of the tick: drive the network until the next tick is due
  next_tick = next_tick + TICK
  local left = next_tick - socket.gettime()
  while left > 0 do
    client:poll(left)
    left = next_tick - socket.gettime()
  end
  if left < -TICK / 2 then late = late + 1 end
end
local elapsed = socket.gettime() - t0
client:close()
print(("%d ticks in %.2f s (%.1f ticks/s, target %d; %d late), %d of them while logins were in flight"):format(
  ticks, elapsed, (ticks - 1) / elapsed, 1 / TICK, late, waiting_ticks))
print(("%d of %d logins succeeded, %d failed"):format(logged_in, PLAYERS, failed))
os.exit(logged_in == PLAYERS and 0 or 1)
