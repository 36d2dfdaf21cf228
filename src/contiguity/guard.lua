-- contiguity.guard: abuse limits for OTP calls (SMS pumping, code guessing).
-- Sliding-window limits per number, per OTP, per caller and in total, keyed
-- by an HMAC of the number (never the number), kept in a store: this
-- process (contiguity.guard.local), an nginx lua_shared_dict
-- (contiguity.guard.shared) or Redis (contiguity.guard.redis). See
-- doc/guard.md. contiguity.new makes one when its `guard` option is set;
-- the client calls check before any I/O and record after a successful call.
local ceil, max, floor = math.ceil, math.max, math.floor
local type, pairs, ipairs, tostring, setmetatable, select = type, pairs, ipairs, tostring, setmetatable, select
local unpack = table.unpack or unpack -- luacheck: ignore 143

local M = {}

-- How long resend remembers which number an otp_id was sent to: an OTP
-- lives 15 minutes and resend does not renew it.
M.MAP_TTL = 900

local LIMITS = { "sends_per_number", "sends_per_caller", "sends_total", "verifies_per_otp", "verifies_per_caller" }
local OPTIONS = {
  allow_prefixes = true, caller = true, on_store_error = true, key = true, clock = true,
  shared = true, redis = true, store = true, max_keys = true,
}
for _, name in ipairs(LIMITS) do OPTIONS[name] = true end

-- Bad options are misuse: they raise from contiguity.new, like its own.
local function bad(name, why)
  error("contiguity.new: guard option '" .. name .. "' " .. why, 0)
end

local function whole(v)
  return type(v) == "number" and v == floor(v) and v >= 1 and v < 2 ^ 31
end

local function pack(...) return { n = select("#", ...), ... } end

-- protect(f, ...) -> true, results | false, error: pcall, except that on
-- PUC Lua 5.1 (whose pcall cannot yield) f runs in a coroutine of its own
-- and its yields are passed through, so a store on a yielding client
-- (copas, a host's event loop) still works under a host transport there.
local function protect(f, ...)
  return pcall(f, ...)
end
if _VERSION == "Lua 5.1" and type(jit) ~= "table" then
  local create, resume, status, yield, running = coroutine.create, coroutine.resume, coroutine.status,
    coroutine.yield, coroutine.running
  protect = function(f, ...)
    local co = create(f)
    local r = pack(resume(co, ...))
    while r[1] and status(co) ~= "dead" do
      if running() == nil then return false, "the guard's store yielded outside a coroutine" end
      r = pack(resume(co, yield(unpack(r, 2, r.n))))
    end
    return unpack(r, 1, r.n)
  end
end
M.protect = protect

function M.local_store(max_keys) return require("contiguity.guard.local").new(max_keys) end
function M.shared_store(dict, opts) return require("contiguity.guard.shared").new(dict, opts) end
function M.redis_store(opts) return require("contiguity.guard.redis").new(opts) end

---------------------------------------------------------------------------
-- The guard
---------------------------------------------------------------------------
local Guard = {}
Guard.__index = Guard

local function check_limit(opts, name)
  local l = opts[name]
  if l == nil then return nil end
  -- (l[2] ~= l[2]: NaN)
  if type(l) ~= "table" or not whole(l[1]) or type(l[2]) ~= "number" or l[2] ~= l[2] or l[2] < 1
    or l[2] > 31 * 86400 then
    bad(name, "must be { count, window_seconds } (count >= 1, window 1 s to 31 days)")
  end
  return { count = l[1], window = l[2], name = name }
end

-- The per-deployment hashing key. Without guard.key: random per process,
-- except in a lua_shared_dict, where the first worker's random key is added
-- atomically (safe_add: never evicting another key) and every worker reads
-- the same one (else their hashes, and so their counts, would differ). A
-- store shared beyond one nginx (Redis, your own) needs guard.key.
local function pick_key(opts, lib, store, name)
  if opts.key ~= nil then
    if type(opts.key) ~= "string" or opts.key == "" then bad("key", "must be a non-empty string") end
    return opts.key
  end
  if store.needs_key ~= false then
    bad(name, "needs guard.key: every process sharing the store must hash numbers with the same key")
  end
  local k = lib.random_bytes(32)
  local dict = store.dict
  if dict then
    local slot = store.prefix .. "key"
    local ok, err = dict:safe_add(slot, k)
    if not ok and err ~= "exists" then
      bad("shared", "cannot keep the guard's hashing key in the lua_shared_dict (" .. tostring(err)
        .. "): give it more memory, or set guard.key")
    end
    k = dict:get(slot) or k
  end
  return k
end

-- The clock the guard reads when the store has none of its own, and its
-- resolution: a call stamped t happened in [t, t + resolution), so every
-- window is that much longer (never a shorter one than asked for).
local function default_clock()
  if type(ngx) == "table" and ngx.now and ngx.update_time then
    local now, update = ngx.now, ngx.update_time
    return function() update(); return now() end, 0.001
  end
  local ok, socket = pcall(require, "socket")
  if ok and type(socket) == "table" and socket.gettime then return socket.gettime, 1e-6 end
  return os.time, 1
end

local function make_store(opts)
  local n = (opts.shared ~= nil and 1 or 0) + (opts.redis ~= nil and 1 or 0) + (opts.store ~= nil and 1 or 0)
  if n > 1 then bad("store", "'shared', 'redis' and 'store' are exclusive: give one") end
  if opts.max_keys ~= nil and (not whole(opts.max_keys) or opts.max_keys < 2) then
    bad("max_keys", "must be a whole number >= 2")
  end
  if opts.max_keys ~= nil and n > 0 then bad("max_keys", "applies only to the local store") end
  if opts.shared ~= nil then
    if type(opts.shared) ~= "string" then bad("shared", "must be a lua_shared_dict name") end
    local dict = type(ngx) == "table" and ngx.shared and ngx.shared[opts.shared]
    if not dict then
      bad("shared", "names no lua_shared_dict (add `lua_shared_dict " .. opts.shared
        .. " 10m;` to the http block of nginx.conf)")
    end
    return M.shared_store(dict), "shared"
  elseif opts.redis ~= nil then
    if type(opts.redis) ~= "table" then bad("redis", "must be a table of Redis options") end
    if opts.key == nil then bad("redis", "needs guard.key: every process sharing Redis must hash numbers alike") end
    return require("contiguity.guard.redis").new(opts.redis, "contiguity.new: guard option 'redis'"), "redis"
  elseif opts.store ~= nil then
    local s = opts.store
    if (type(s) ~= "table" and type(s) ~= "userdata") or type(s.hit) ~= "function" then
      bad("store", "must have a hit(self, now, limits) method (see doc/guard.md)")
    end
    return s, "store"
  end
  return M.local_store(opts.max_keys), "store"
end

-- guard.new(opts, lib): lib = { hmac, random_bytes, error_mt, debug } from
-- the C module (contiguity.new passes it; contiguity.hmac/random_bytes are
-- the same functions; debug is the client's debug option).
function M.new(opts, lib)
  if type(opts) ~= "table" then bad("guard", "must be a table") end
  lib = lib or require("contiguity")
  for k in pairs(opts) do
    if not OPTIONS[k] then error("contiguity.new: unknown guard option '" .. tostring(k) .. "'", 0) end
  end
  local g = setmetatable({ hmac = lib.hmac, error_mt = lib.error_mt, debug = lib.debug,
                           -- which calls it counts, how and by which params field: a column
                           -- of the module's operation table (src/ops.c), never a copy here
                           ops = lib.ops or require("contiguity")._guard_ops }, Guard)
  for _, name in ipairs(LIMITS) do g[name] = check_limit(opts, name) end

  if opts.allow_prefixes ~= nil then
    local p = opts.allow_prefixes
    if type(p) ~= "table" or p[1] == nil then bad("allow_prefixes", "must be a non-empty list") end
    g.prefixes = {}
    for i, s in ipairs(p) do
      if type(s) ~= "string" or not s:match("^%+%d+$") or #s > 16 then
        bad("allow_prefixes", "must hold prefixes such as \"+1\" or \"+44\"")
      end
      g.prefixes[i] = s
    end
  end

  if opts.caller ~= nil and type(opts.caller) ~= "function" then bad("caller", "must be a function") end
  g.caller = opts.caller
  if (g.sends_per_caller or g.verifies_per_caller) and not g.caller then
    bad(g.sends_per_caller and "sends_per_caller" or "verifies_per_caller",
      "needs guard.caller, a function that names the caller of each call")
  end

  local policy = opts.on_store_error
  if policy ~= nil and policy ~= "closed" and policy ~= "open" then
    bad("on_store_error", "must be \"closed\" or \"open\"")
  end
  g.fail_open = policy == "open"

  local store, name = make_store(opts)
  g.store = store
  g.key = pick_key(opts, lib, store, name)
  g.can_map = type(store.put) == "function"

  if opts.clock ~= nil then
    if type(opts.clock) ~= "function" then bad("clock", "must be a function") end
    g.clock, g.resolution = opts.clock, 0
  elseif name == "redis" then
    g.clock, g.resolution = nil, 0.001 -- Redis TIME, in whole milliseconds
  else
    g.clock, g.resolution = default_clock()
  end
  -- what the store counts over: the window and the clock's resolution
  for _, limit in ipairs(LIMITS) do
    if g[limit] then g[limit].span = g[limit].window + g.resolution end
  end
  return g
end

-- 32 hex digits (128 bits) of HMAC-SHA256(key, what ":" value): never the
-- number itself, and not reversible by hashing every phone number without
-- the key.
function Guard:_hash(what, value)
  return self.hmac(self.key, what .. ":" .. value):sub(1, 32)
end

function Guard:_error(op, kind, message, fields)
  local e = { kind = kind, message = message, op = op, retryable = kind == "limited" }
  for k, v in pairs(fields) do e[k] = v end
  if self.error_mt then setmetatable(e, self.error_mt) end
  return e
end

-- One line through the client's debug option (never a number, a caller
-- or a key: only hashes ever reach the store, and the store's messages).
function Guard:_say(line)
  local d = self.debug
  if d == true then
    io.stderr:write(line, "\n")
  elseif type(d) == "function" then
    pcall(d, line)
  end
end

-- What to do when the store (or the caller function) failed: refuse the
-- call ("closed", the default) or let it go uncounted ("open").
function Guard:_failed(op, what, err, ticket)
  if self.fail_open then
    self:_say(("contiguity: %s: the guard's %s failed (%s); on_store_error = \"open\": "
      .. "the call goes ahead uncounted"):format(op, what, tostring(err)))
    return nil, ticket
  end
  return self:_error(op, "limited", ("refused by the guard: its %s failed (%s) and on_store_error is \"closed\"; "
    .. "retry after 1 s"):format(what, tostring(err)), { limit = what == "caller function" and "caller" or "store",
    retry_after = 1 })
end

local function allowed(prefixes, number)
  for _, p in ipairs(prefixes) do
    if number:sub(1, #p) == p then return true end
  end
  return false
end

-- The limits that apply to one call, as the store takes them (see
-- contiguity.guard.local's hit), and the ticket record will get; or nil
-- and the refusal (allow_prefixes); or false and why the caller function
-- failed.
local function add(limits, limit, key)
  local l = { key = key, count = limit.count, window = limit.span, name = limit.name }
  limits[#limits + 1] = l
  return l
end

function Guard:_limits(kind, field, op, arg)
  local limits, ticket = {}, nil
  local who
  local per_caller = kind == "verify" and self.verifies_per_caller or kind ~= "verify" and self.sends_per_caller
  if per_caller then
    local ok, id = pcall(self.caller, op, arg)
    if not ok then
      if not self.fail_open then return false, id end
      self:_say(("contiguity: %s: the guard's caller function failed (%s); on_store_error = \"open\": "
        .. "no per-caller limit for this call"):format(op, tostring(id)))
    elseif id ~= nil then
      who = self:_hash("c", tostring(id))
    end
  end
  if kind == "verify" then
    if self.verifies_per_otp then add(limits, self.verifies_per_otp, "v:" .. self:_hash("o", arg[field])) end
    if who then add(limits, per_caller, "cv:" .. who) end
    return limits
  end
  if kind == "resend" then
    if self.sends_per_number then
      local id = self:_hash("o", arg[field])
      -- counted against the number record put under the otp_id; an otp_id
      -- it never saw is counted per otp_id
      local l = add(limits, self.sends_per_number, "n:" .. id)
      if self.can_map then l.map, l.via = "m:" .. id, "n:" end
    end
  else
    local number = arg[field]
    if self.prefixes and not allowed(self.prefixes, number) then
      return nil, self:_error(op, "invalid", field .. " is outside the guard's allow_prefixes",
        { field = field })
    end
    if self.sends_per_number then
      local h = self:_hash("n", number)
      add(limits, self.sends_per_number, "n:" .. h)
      if kind == "send" and self.can_map then ticket = h end
    end
  end
  if who then add(limits, per_caller, "cs:" .. who) end
  if self.sends_total then add(limits, self.sends_total, "t") end
  return limits, ticket
end

-- guard:check(op, arg) -> err | nil, ticket. arg is the validated params
-- table (or otp_id string). Counts the call: a call it lets through has
-- used one of its allowance whether or not the API then accepts it. The
-- ticket (nil when there is nothing to record) goes to record when the
-- call succeeds: what to remember is fixed now, not when the answer comes.
-- Never raises: a failing store or caller function is on_store_error's.
function Guard:check(op, arg)
  local what = self.ops[op]
  if what == nil then return nil end
  local limits, ticket = self:_limits(what.kind, what.field, op, arg)
  if limits == nil then return ticket end
  if limits == false then return self:_failed(op, "caller function", ticket) end
  if #limits == 0 then return nil, ticket end
  local store = self.store
  local now = self.clock and self.clock()
  local ok, verdict, i, wait = protect(store.hit, store, now, limits)
  if not ok then return self:_failed(op, "store", verdict, ticket) end
  if verdict == true then return nil, ticket end
  if verdict == false and limits[i] then
    local l = limits[i]
    local left = max(1, ceil(wait or 1))
    return self:_error(op, "limited", ("refused by the guard: %s allows %d per %g s; retry after %d s")
      :format(l.name, l.count, l.window - self.resolution, left), { limit = l.name, retry_after = left })
  end
  return self:_failed(op, "store", i or "no answer", ticket)
end

-- guard:record(op, ticket, result): after a successful call, with the
-- ticket check returned. otp.new's otp_id is remembered (as hashes, for
-- MAP_TTL seconds) so that a resend of it counts against its number.
-- Never raises: a failure costs that mapping, never the caller's result.
function Guard:record(op, ticket, res)
  if op ~= "otp.new" or type(ticket) ~= "string" then return end
  local id = type(res) == "table" and res.otp_id
  if type(id) ~= "string" or id == "" then return end
  local store = self.store
  local ok, done, err = protect(store.put, store, "m:" .. self:_hash("o", id), ticket, M.MAP_TTL,
    self.clock and self.clock())
  if not (ok and done) then
    self:_say(("contiguity: %s: the guard's store could not remember the otp_id (%s); its resends count per otp_id")
      :format(op, tostring(ok and err or done)))
  end
end

return M
