-- contiguity.guard: abuse limits for OTP calls (SMS pumping, code guessing):
-- fixed-window counters keyed by an HMAC of the number, kept in a local
-- table, an nginx lua_shared_dict or a store of your own. See doc/guard.md.
-- contiguity.new makes one when its `guard` option is set; the client calls
-- check before any I/O and record after a successful call.
local floor, ceil, max = math.floor, math.ceil, math.max
local type, pairs, ipairs, next, tostring, setmetatable = type, pairs, ipairs, next, tostring, setmetatable

local M = {}

M.DEFAULT_MAX_KEYS = 100000
-- How long resend remembers which number an otp_id was sent to: an OTP
-- lives 15 minutes and resend does not renew it.
M.MAP_TTL = 900
M.PREFIX = "cg:"

-- Which calls the guard looks at, and how.
local OPS = {
  ["otp.new"] = "send",
  ["otp.resend"] = "resend",
  ["otp.verify"] = "verify",
  ["otp.reverse.initiate"] = "initiate",
}

local LIMITS = { sends_per_number = true, verifies_per_otp = true, sends_total = true }
local OPTIONS = {
  sends_per_number = true, verifies_per_otp = true, sends_total = true,
  allow_prefixes = true, shared = true, store = true, key = true, clock = true, max_keys = true,
}

-- Bad options are misuse: they raise from contiguity.new, like its own.
local function bad(name, why)
  error("contiguity.new: guard option '" .. name .. "' " .. why, 0)
end

local function whole(v)
  return type(v) == "number" and v == floor(v) and v >= 1 and v < 2 ^ 31
end

---------------------------------------------------------------------------
-- The in-process store: two generations of counters. New keys go into the
-- current generation; when it holds max_keys/2 keys, or has lived longer
-- than the longest window given to it, it becomes the previous generation
-- and the old previous one is dropped whole (O(1), no scan). A key found in
-- the previous generation moves to the current one, so what is dropped is
-- what was least recently used; a generation is also dropped as soon as
-- everything in it has expired. At most max_keys keys are ever held.
---------------------------------------------------------------------------
local Local = {}
Local.__index = Local

function M.local_store(max_keys, clock)
  max_keys = max_keys or M.DEFAULT_MAX_KEYS
  return setmetatable({
    half = max(1, floor(max_keys / 2)), clock = clock or os.time,
    cv = {}, ce = {}, cn = 0, cborn = nil, cspan = 0, cuntil = -1, -- current
    ov = {}, oe = {}, ountil = -1,                                   -- previous
  }, Local)
end

-- Drops a generation once everything in it has expired.
function Local:_sweep(now)
  if now >= self.ountil and next(self.oe) ~= nil then
    self.ov, self.oe = {}, {}
  end
  if now >= self.cuntil and self.cn > 0 then
    self.cv, self.ce, self.cn, self.cborn, self.cspan, self.cuntil = {}, {}, 0, nil, 0, -1
  end
end

-- The live value and expiry of key, taken out of the previous generation
-- if it is there (the caller puts it back into the current one).
function Local:_take(key, now)
  local e = self.ce[key]
  if e ~= nil then
    if e > now then return self.cv[key], e end
    self.cv[key], self.ce[key], self.cn = nil, nil, self.cn - 1
    return nil
  end
  e = self.oe[key]
  if e ~= nil then
    local v = self.ov[key]
    self.ov[key], self.oe[key] = nil, nil
    if e > now then return v, e end
  end
  return nil
end

function Local:_put(key, v, e, ttl, now)
  if self.ce[key] == nil then
    if self.cn >= self.half or (self.cborn ~= nil and now >= self.cborn + self.cspan) then
      self.ov, self.oe, self.ountil = self.cv, self.ce, self.cuntil
      self.cv, self.ce, self.cn, self.cborn, self.cspan, self.cuntil = {}, {}, 0, nil, 0, -1
    end
    self.cn = self.cn + 1
    if self.cborn == nil then self.cborn = now end
  end
  self.cv[key], self.ce[key] = v, e
  if e > self.cuntil then self.cuntil = e end
  if ttl > self.cspan then self.cspan = ttl end
end

-- store:incr(key, by, ttl) -> count: a new key starts at 0 and lives ttl
-- seconds from its first incr (a fixed window).
function Local:incr(key, by, ttl)
  local now = self.clock()
  self:_sweep(now)
  local v, e = self:_take(key, now)
  if v == nil then v, e = 0, now + ttl end
  v = v + by
  self:_put(key, v, e, ttl, now)
  return v
end

function Local:get(key)
  local now = self.clock()
  self:_sweep(now)
  local v, e = self:_take(key, now)
  if v ~= nil then self:_put(key, v, e, 0, now) end
  return v
end

function Local:set(key, value, ttl)
  local now = self.clock()
  self:_sweep(now)
  self:_take(key, now)
  self:_put(key, value, now + ttl, ttl, now)
  return true
end

-- How many keys it holds (for specs and monitoring).
function Local:count()
  local n = self.cn
  for _ in pairs(self.oe) do n = n + 1 end
  return n
end

---------------------------------------------------------------------------
-- An nginx lua_shared_dict: every worker sees the same counts. incr with
-- init and init_ttl is one atomic operation in the dict.
---------------------------------------------------------------------------
function M.shared_store(dict)
  return {
    incr = function(_, key, by, ttl) return dict:incr(key, by, 0, ttl) end,
    get = function(_, key) return dict:get(key) end,
    set = function(_, key, value, ttl) return dict:set(key, value, ttl) end,
  }
end

---------------------------------------------------------------------------
-- The guard
---------------------------------------------------------------------------
local Guard = {}
Guard.__index = Guard

local function check_limit(opts, name)
  local l = opts[name]
  if l == nil then return nil end
  if type(l) ~= "table" or not whole(l[1]) or type(l[2]) ~= "number" or not (l[2] >= 1)
    or l[2] > 31 * 86400 then
    bad(name, "must be { count, window_seconds } (count >= 1, window 1 s to 31 days)")
  end
  return { l[1], l[2] }
end

-- A per-deployment hashing key when the user gives none: random per
-- process, except in a shared dict, where the first worker's random key is
-- added atomically and every worker reads the same one (else their hashes,
-- and so their counts, would differ).
local function pick_key(opts, lib, dict)
  if opts.key ~= nil then
    if type(opts.key) ~= "string" or opts.key == "" then bad("key", "must be a non-empty string") end
    return opts.key
  end
  local k = lib.random_bytes(32)
  if dict then
    dict:add(M.PREFIX .. "key", k)
    k = dict:get(M.PREFIX .. "key") or k
  end
  return k
end

-- guard.new(opts, lib): lib = { hmac, random_bytes, error_mt } from the C
-- module (contiguity.new passes it; contiguity.hmac/random_bytes are the
-- same functions).
function M.new(opts, lib)
  if type(opts) ~= "table" then bad("guard", "must be a table") end
  lib = lib or require("contiguity")
  for k in pairs(opts) do
    if not OPTIONS[k] then error("contiguity.new: unknown guard option '" .. tostring(k) .. "'", 0) end
  end
  local g = setmetatable({ hmac = lib.hmac, error_mt = lib.error_mt }, Guard)
  for name in pairs(LIMITS) do g[name] = check_limit(opts, name) end

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

  if opts.clock ~= nil and type(opts.clock) ~= "function" then bad("clock", "must be a function") end
  g.clock = opts.clock or (type(ngx) == "table" and ngx.now) or os.time

  if opts.shared ~= nil and opts.store ~= nil then bad("shared", "and 'store' cannot both be set") end
  if opts.max_keys ~= nil and (not whole(opts.max_keys) or opts.max_keys < 2) then
    bad("max_keys", "must be a whole number >= 2")
  end
  local dict
  if opts.shared ~= nil then
    if type(opts.shared) ~= "string" then bad("shared", "must be a lua_shared_dict name") end
    dict = type(ngx) == "table" and ngx.shared and ngx.shared[opts.shared]
    if not dict then
      bad("shared", "names no lua_shared_dict (add `lua_shared_dict " .. opts.shared
        .. " 10m;` to the http block of nginx.conf)")
    end
    g.store = M.shared_store(dict)
  elseif opts.store ~= nil then
    local s = opts.store
    if (type(s) ~= "table" and type(s) ~= "userdata") or type(s.incr) ~= "function" then
      bad("store", "must have an incr(self, key, by, ttl) method")
    end
    if opts.key == nil then
      bad("store", "needs guard.key: every process sharing the store must hash numbers alike")
    end
    g.store = s
  else
    g.store = M.local_store(opts.max_keys, g.clock)
  end
  if opts.max_keys ~= nil and g.store.count == nil then bad("max_keys", "applies only to the local store") end
  g.key = pick_key(opts, lib, dict)
  g.can_map = type(g.store.get) == "function" and type(g.store.set) == "function"
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

-- One fixed window: window index = floor(now / window), one atomic incr of
-- "cg:<name>:<subject>:<index>" that lives until the window ends.
function Guard:_hit(limit, name, subject, op, now)
  local count, window = limit[1], limit[2]
  local index = floor(now / window)
  local left = max(1, ceil((index + 1) * window - now))
  local n, err = self.store:incr(M.PREFIX .. subject .. ":" .. string.format("%d", index), 1, left)
  if type(n) ~= "number" then
    return self:_error(op, "limited", "the guard's store failed (" .. tostring(err)
      .. "); the call was not made", { limit = "store", retry_after = 1 })
  end
  if n > count then
    return self:_error(op, "limited", ("refused by the guard: %s allows %d per %g s; retry after %d s")
      :format(name, count, window, left), { limit = name, retry_after = left })
  end
  return nil
end

local function allowed(prefixes, number)
  for _, p in ipairs(prefixes) do
    if number:sub(1, #p) == p then return true end
  end
  return false
end

-- guard:check(op, arg) -> err, or nil, ticket. arg is the validated params
-- table (or otp_id string). Counts the call: a call it lets through has used
-- one of its allowance whether or not the API then accepts it. The ticket is
-- what record needs, taken from arg now: an async call's params table may
-- have been changed by the time its callback runs.
function Guard:check(op, arg)
  local kind = OPS[op]
  if kind == nil then return nil end
  local now = self.clock()
  if kind == "verify" then
    if self.verifies_per_otp == nil then return nil end
    return self:_hit(self.verifies_per_otp, "verifies_per_otp", "v:" .. self:_hash("o", arg.otp_id), op, now)
  end
  local subject
  if kind == "resend" then
    if self.sends_per_number then
      local id = self:_hash("o", arg.otp_id)
      subject = self.can_map and self.store:get(M.PREFIX .. "m:" .. id)
      if type(subject) ~= "string" then subject = id end -- unknown otp_id: counted per otp_id
    end
  else
    local field = kind == "initiate" and "number" or "to"
    local number = arg[field]
    if self.prefixes and not allowed(self.prefixes, number) then
      return self:_error(op, "invalid", field .. " is outside the guard's allow_prefixes",
        { field = field })
    end
    if self.sends_per_number then subject = self:_hash("n", number) end
  end
  if subject then
    local err = self:_hit(self.sends_per_number, "sends_per_number", "n:" .. subject, op, now)
    if err then return err end
  end
  if self.sends_total then
    local err = self:_hit(self.sends_total, "sends_total", "t", op, now)
    if err then return err end
  end
  -- the ticket: what record needs, fixed now (the caller may change params later)
  if kind == "send" then return nil, subject end
  return nil
end

-- guard:record(op, ticket, result): after a successful call, with the
-- ticket check returned. otp.new's otp_id is remembered (as hashes, for
-- MAP_TTL seconds) so a resend of it counts against its number.
function Guard:record(op, ticket, res)
  if op ~= "otp.new" or type(ticket) ~= "string" or not self.can_map then return end
  local id = type(res) == "table" and res.otp_id
  if type(id) ~= "string" or id == "" then return end
  self.store:set(M.PREFIX .. "m:" .. self:_hash("o", id), ticket, M.MAP_TTL)
end

return M
