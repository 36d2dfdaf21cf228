-- bench/guard_handler.lua: the nginx handler bench/guard.sh calls: N sequential
-- otp.verify calls through contiguity.resty inside one request, unguarded or
-- guarded (lua_shared_dict, or Redis through resty.redis), timed in nginx.
-- GET /guard?mode=none|shared|redis&calls=N&warm=W&round=R
-- answers "seconds calls errors -1" like bench/seq.lua.
local resty = require("contiguity.resty")

local M = {}
local clients = {} -- one per mode, per worker

local function client(mode)
  if clients[mode] then return clients[mode] end
  local guard
  if mode ~= "none" then
    guard = {
      verifies_per_otp = { 5, 900 },
      verifies_per_caller = { 100000, 60 },
      caller = function() return ngx.var.remote_addr end,
      key = "bench guard key",
    }
    if mode == "shared" then
      guard.shared = "contiguity_guard"
    else
      assert(mode == "redis", "unknown mode " .. tostring(mode))
      guard.redis = { port = tonumber(ngx.var.bench_redis_port) }
    end
  end
  clients[mode] = resty.new(ngx.var.bench_token, { base_url = ngx.var.bench_base_url, guard = guard })
  return clients[mode]
end

function M.run()
  local mode, round = ngx.var.arg_mode, ngx.var.arg_round
  local calls, warm = tonumber(ngx.var.arg_calls), tonumber(ngx.var.arg_warm)
  local c = client(mode)
  local function call(i)
    local res = c.otp.verify{ otp_id = ("otp_%s_%s_%d"):format(mode, round, i), otp = "123456" }
    return res ~= nil and res.verified == false
  end
  for i = 1, warm do assert(call(-i), "warm-up call failed") end
  local errors = 0
  ngx.update_time()
  local t0 = ngx.now()
  for i = 1, calls do
    if not call(i) then errors = errors + 1 end
  end
  ngx.update_time()
  ngx.say(("%.6f %d %d -1"):format(ngx.now() - t0, calls, errors))
end

return M
