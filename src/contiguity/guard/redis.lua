-- contiguity.guard.redis: the guard's store in Redis, so that every process
-- and machine behind a load balancer shares the same counts. One call is one
-- round trip: EVALSHA of one server-side script that decides over every
-- limit of the call at once (falling back to EVAL on NOSCRIPT), with the
-- time taken from Redis (TIME). Clients: resty.redis on nginx cosockets,
-- lua-redis on LuaSocket, or any object with eval/evalsha. See doc/guard.md.
local type, tostring, tonumber, pairs, setmetatable = type, tostring, tonumber, pairs, setmetatable
local floor, ceil = math.floor, math.ceil
local unpack = table.unpack or unpack -- luacheck: ignore 143

local M = {}

M.DEFAULT_PREFIX = "{cg}:"
M.DEFAULT_CONNECT_TIMEOUT = 0.05
M.DEFAULT_TIMEOUT = 0.05
M.DEFAULT_POOL_SIZE = 64
M.DEFAULT_KEEPALIVE = 60

-- The server-side script, run atomically by Redis. Every key is a list of
-- call times in milliseconds, oldest on the left, never longer than its
-- limit's count (a sliding log). Keep it in step with contiguity.guard.local
-- (the same decision) and with M.SHA (its SHA-1, checked by the specs).
--   hit: KEYS = the log key of each limit, then the resend map key if any;
--        ARGV = "hit", now in ms ("" = Redis TIME), number of limits,
--        which limit counts under the mapped key (0: none), that key's
--        prefix, then count and window (ms) of each limit.
--        Returns {0, now} when the call may go (now added to every log),
--        {i, ms until limit i has room} when it may not (nothing added).
--   put: KEYS = { key }, ARGV = "put", value, ttl in ms.
M.SCRIPT = [[
if ARGV[1] == "put" then
  redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
  return 1
end
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local n, via = tonumber(ARGV[3]), tonumber(ARGV[4])
local keys = {}
for i = 1, n do keys[i] = KEYS[i] end
if via > 0 then
  local v = redis.call("GET", KEYS[n + 1])
  if v then keys[via] = ARGV[5] .. v end
end
for i = 1, n do
  local key, count, window = keys[i], tonumber(ARGV[4 + 2 * i]), tonumber(ARGV[5 + 2 * i])
  local len = redis.call("LLEN", key)
  if len > count then
    redis.call("LTRIM", key, len - count, -1)
    len = count
  end
  while len > 0 do
    local oldest = tonumber(redis.call("LINDEX", key, 0))
    if oldest > now - window then
      if len >= count then return { i, oldest + window - now } end
      break
    end
    redis.call("LPOP", key)
    len = len - 1
  end
end
for i = 1, n do
  local last = tonumber(redis.call("LINDEX", keys[i], -1))
  redis.call("RPUSH", keys[i], (last and last > now) and last or now)
  redis.call("PEXPIRE", keys[i], ARGV[5 + 2 * i])
end
return { 0, now }
]]
M.SHA = "15199dfcb1fc1597e63da510fd1ccd70f24a6a43"

-- Runs the script on conn: EVALSHA, then EVAL when Redis does not have it
-- yet (NOSCRIPT: a restart, SCRIPT FLUSH, a new replica). Clients differ
-- in how they fail: resty.redis returns nil/false, err; lua-redis and
-- most others raise. args = { sha, numkeys, keys..., argv... }.
local function run(protect, conn, args)
  local ok, res, err = protect(conn.evalsha, conn, unpack(args))
  if ok and res ~= nil and res ~= false then return res end
  if not ok then err = res end
  if tostring(err):find("NOSCRIPT", 1, true) then
    args[1] = M.SCRIPT
    ok, res, err = protect(conn.eval, conn, unpack(args))
    if ok and res ~= nil and res ~= false then return res end
    if not ok then err = res end
  end
  return nil, tostring(err or "no reply")
end

local Store = {}
Store.__index = Store

local YIELD_HINT = "the Redis store runs on nginx cosockets, which cannot yield under the blocking "
  .. "libcurl client: in nginx use contiguity.resty (or a transport)"

-- One round trip on a connection of the store: the connection kept between
-- calls (lua-redis, a `connect` function), the host's own client, or one
-- taken from the cosocket pool for this call (resty.redis).
function Store:_call(args)
  if self.client ~= nil then return run(self.protect, self.client, args) end
  if self.resty ~= nil then
    -- (pcall: LuaJIT's yields across it; a cosocket under a C call cannot)
    local ok, res, err = pcall(self._resty_call, self, args)
    if ok then return res, err end
    if tostring(res):find("yield across", 1, true) then return nil, YIELD_HINT end
    return nil, tostring(res)
  end
  local conn = self.conn
  if conn == nil then
    local ok, c, err = self.protect(self.open, self)
    if not ok or not c then return nil, "connect: " .. tostring(ok and err or c) end
    conn = c
    self.conn = conn
  end
  local res, err = run(self.protect, conn, args)
  if res == nil then
    -- a timed-out reply may still come: never read it as the next call's
    self.conn = nil
    self.protect(self.close, conn)
  end
  return res, err
end

function Store:_resty_call(args)
  if coroutine.isyieldable and not coroutine.isyieldable() then return nil, YIELD_HINT end
  local red, err = self.resty:new()
  if not red then return nil, tostring(err) end
  red:set_timeout(self.connect_ms)
  local ok
  ok, err = red:connect(self.host, self.port)
  if not ok then return nil, "connect: " .. tostring(err) end
  red:set_timeout(self.timeout_ms)
  if red:get_reused_times() == 0 then
    ok, err = self:_login(red)
    if not ok then red:close(); return nil, err end
  end
  local res
  res, err = run(self.protect, red, args)
  if res ~= nil then red:set_keepalive(self.keepalive_ms, self.pool_size) else red:close() end
  return res, err
end

-- AUTH and SELECT on a new connection (resty.redis: nil, err on failure).
function Store:_login(red)
  local ok, err = true, nil
  if self.password then ok, err = red:auth(self.password) end
  if ok and self.db then ok, err = red:select(self.db) end
  if not ok then return nil, "login: " .. tostring(err) end
  return true
end

-- A lua-redis connection with bounded connect and command timeouts.
local function luasocket_open(self)
  local redis = require("redis")
  local conn = redis.connect({ host = self.host, port = self.port, timeout = self.connect_timeout })
  conn.network.socket:settimeout(self.timeout)
  if self.password then conn:auth(self.password) end
  if self.db then conn:select(self.db) end
  return conn
end

local function luasocket_close(conn)
  conn.network.socket:close()
end

local function ms(seconds) return ("%.0f"):format(ceil(seconds * 1000)) end

-- store:hit(now, limits): see contiguity.guard.local. now nil: Redis TIME.
function Store:hit(now, limits)
  local n, p = #limits, self.prefix
  local args = { M.SHA, 0 }
  local argv = { "hit", now and ("%.0f"):format(floor(now * 1000)) or "", n, 0, "" }
  for i = 1, n do
    local limit = limits[i]
    args[2 + i] = p .. limit.key
    argv[4 + 2 * i], argv[5 + 2 * i] = limit.count, ms(limit.window)
    if limit.map ~= nil then
      argv[4], argv[5] = i, p .. limit.via
      args[3 + n] = p .. limit.map
    end
  end
  args[2] = #args - 2
  for i = 1, #argv do args[#args + 1] = argv[i] end
  local res, err = self:_call(args)
  if not res then return nil, "redis: " .. err end
  if type(res) ~= "table" then return nil, "redis: unexpected reply from the guard's script" end
  local i, x = tonumber(res[1]), tonumber(res[2])
  if i == 0 and x then return true end
  if i and x and limits[i] then return false, i, x / 1000 end
  return nil, "redis: unexpected reply from the guard's script"
end

-- store:put(key, value, ttl)
function Store:put(key, value, ttl)
  local res, err = self:_call({ M.SHA, 1, self.prefix .. key, "put", value, ms(ttl) })
  if not res then return nil, "redis: " .. err end
  return true
end

local function seconds(o, name, default, bad)
  local v = o[name]
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v <= 0 or v > 60 then bad(name, "must be a number of seconds (0 < s <= 60)") end
  return v
end

-- redis_store(opts): opts as in doc/guard.md (host, port, password, db,
-- prefix, connect_timeout, timeout, pool_size, keepalive, client, connect,
-- driver). Raises on a bad option; connects only when first used.
function M.new(opts, where)
  where = where or "contiguity.guard.redis_store"
  local function bad(name, why) error(where .. ": redis option '" .. name .. "' " .. why, 0) end
  if type(opts) ~= "table" then error(where .. ": the redis options must be a table", 0) end
  local known = { host = 1, port = 1, password = 1, db = 1, prefix = 1, connect_timeout = 1, timeout = 1,
                  pool_size = 1, keepalive = 1, client = 1, connect = 1, close = 1, driver = 1 }
  for k in pairs(opts) do
    if not known[k] then error(where .. ": unknown redis option '" .. tostring(k) .. "'", 0) end
  end
  local self = setmetatable({ needs_key = true, protect = require("contiguity.guard").protect }, Store)
  self.prefix = opts.prefix or M.DEFAULT_PREFIX
  if type(self.prefix) ~= "string" then bad("prefix", "must be a string") end
  self.host = opts.host or "127.0.0.1"
  if type(self.host) ~= "string" or self.host == "" then bad("host", "must be a host name or address") end
  self.port = opts.port or 6379
  if type(self.port) ~= "number" or self.port ~= floor(self.port) or self.port < 1 or self.port > 65535 then
    bad("port", "must be a port number")
  end
  if opts.password ~= nil and (type(opts.password) ~= "string" or opts.password == "") then
    bad("password", "must be a non-empty string")
  end
  self.password = opts.password
  if opts.db ~= nil and (type(opts.db) ~= "number" or opts.db ~= floor(opts.db) or opts.db < 0) then
    bad("db", "must be a database number")
  end
  self.db = opts.db
  self.connect_timeout = seconds(opts, "connect_timeout", M.DEFAULT_CONNECT_TIMEOUT, bad)
  self.timeout = seconds(opts, "timeout", M.DEFAULT_TIMEOUT, bad)
  self.connect_ms, self.timeout_ms = self.connect_timeout * 1000, self.timeout * 1000
  self.pool_size = opts.pool_size or M.DEFAULT_POOL_SIZE
  if type(self.pool_size) ~= "number" or self.pool_size < 1 or self.pool_size ~= floor(self.pool_size) then
    bad("pool_size", "must be a whole number >= 1")
  end
  local keepalive = opts.keepalive or M.DEFAULT_KEEPALIVE
  if type(keepalive) ~= "number" or keepalive ~= keepalive or keepalive <= 0 then
    bad("keepalive", "must be a number of seconds > 0")
  end
  self.keepalive_ms = keepalive * 1000

  if opts.client ~= nil then
    local c = opts.client
    if (type(c) ~= "table" and type(c) ~= "userdata") or not c.eval or not c.evalsha then
      bad("client", "must be a Redis client object with eval and evalsha methods")
    end
    if opts.connect ~= nil or opts.driver ~= nil then bad("client", "cannot be given with 'connect' or 'driver'") end
    self.client = c
    return self
  end
  if opts.connect ~= nil then
    if type(opts.connect) ~= "function" then bad("connect", "must be a function returning a client") end
    if opts.close ~= nil and type(opts.close) ~= "function" then bad("close", "must be a function") end
    if opts.driver ~= nil then bad("connect", "cannot be given with 'driver'") end
    local connect, close = opts.connect, opts.close
    self.open = function() return connect() end
    self.close = close or function(conn) if conn.close then conn:close() end end
    return self
  end
  local driver = opts.driver
  if driver == nil then
    driver = (type(ngx) == "table" and type(ngx.socket) == "table" and ngx.socket.tcp) and "resty" or "luasocket"
  end
  if driver == "resty" then
    local ok, lib = pcall(require, "resty.redis")
    if not ok then ok, lib = pcall(require, "nginx.redis") end -- Debian's lua-nginx-redis
    if not ok then bad("driver", "\"resty\" needs lua-resty-redis (resty.redis)") end
    self.resty = lib
  elseif driver == "luasocket" then
    if not pcall(require, "redis") then bad("driver", "\"luasocket\" needs lua-redis (require \"redis\")") end
    self.open, self.close = luasocket_open, luasocket_close
  else
    bad("driver", "must be \"resty\" or \"luasocket\"")
  end
  return self
end

return M
