-- contiguity.guard.local: the guard's in-process store (one Lua state, no
-- I/O): a sliding log of call times per key in plain tables, at most
-- max_keys keys, with a least-recently-used bound that costs O(1) per call.
-- The store protocol (hit, put) is described in doc/guard.md.
local floor, max, type, next, pairs, setmetatable = math.floor, math.max, type, next, pairs, setmetatable

local M = {}

M.DEFAULT_MAX_KEYS = 100000

---------------------------------------------------------------------------
-- A sliding log: the times of the calls a key let through in its window,
-- oldest first, never more than the limit's count. Most keys (one send to
-- a number) hold one time, kept as a bare number; longer logs are a queue
-- table { [head] = t, ..., [tail] = t, head = i, tail = j } so that
-- dropping the oldest time is O(1) even for a large sends_total.
---------------------------------------------------------------------------
local function log_size(log)
  if log == nil then return 0 end
  if type(log) == "number" then return 1 end
  return log.tail - log.head + 1
end

local function log_oldest(log)
  if type(log) == "number" then return log end
  return log[log.head]
end

local function log_newest(log)
  if type(log) == "number" then return log end
  return log[log.tail]
end

-- Drops the times that left the window (t <= cutoff) and any beyond the
-- newest `count` (only the newest `count` decide anything). Returns the
-- log, a bare number when one time is left, or nil when none is.
local function log_trim(log, cutoff, count)
  if log == nil then return nil end
  if type(log) == "number" then
    if log <= cutoff then return nil end
    return log
  end
  local head, tail = log.head, log.tail
  while head <= tail and (log[head] <= cutoff or tail - head + 1 > count) do
    log[head] = nil
    head = head + 1
  end
  if head > tail then return nil end
  if head == tail then return log[head] end
  log.head = head
  return log
end

local function log_push(log, now)
  if log == nil then return now end
  if type(log) == "number" then return { log, now, head = 1, tail = 2 } end
  local tail = log.tail + 1
  log[tail], log.tail = now, tail
  return log
end

---------------------------------------------------------------------------
-- Two generations of keys. New keys go into the current generation; when
-- it holds max_keys/2 keys, or has lived longer than the longest lifetime
-- given to one of its keys, it becomes the previous generation and the old
-- previous one is dropped whole (O(1), no scan). A key used again moves to
-- the current generation, so what is dropped is what was least recently
-- used; a generation is also dropped as soon as every key in it is dead.
---------------------------------------------------------------------------
local function generation()
  return {
    entries = {},   -- key -> sliding log (number or queue), or a put value (string)
    expires = {},   -- key -> when a put value dies (sliding logs die by their window)
    size = 0,       -- how many keys (counted in the current generation only)
    born = nil,     -- when its first key came
    longest = 0,    -- the longest lifetime given to one of its keys
    dead_at = -1,   -- when every key in it is dead
  }
end

local Store = {}
Store.__index = Store

-- local_store(max_keys): the store contiguity.new uses when the guard has
-- no shared, redis or store option. Not shared: no guard.key is needed.
function M.new(max_keys)
  max_keys = max_keys or M.DEFAULT_MAX_KEYS
  return setmetatable({
    per_generation = max(1, floor(max_keys / 2)),
    current = generation(),
    previous = generation(),
    needs_key = false,
  }, Store)
end

-- Drops a generation once every key in it is dead.
function Store:_sweep(now)
  local old, cur = self.previous, self.current
  if now >= old.dead_at and next(old.entries) ~= nil then
    self.previous = generation()
  end
  if now >= cur.dead_at and cur.size > 0 then
    self.current = generation()
  end
end

function Store:_get(key)
  local v = self.current.entries[key]
  if v == nil then v = self.previous.entries[key] end
  return v
end

-- Puts (or with value nil, removes) key in the current generation; dead is
-- when it dies, expires what put values keep to be checked against.
function Store:_set(key, value, dead, now, expires)
  local old = self.previous
  if old.entries[key] ~= nil then
    old.entries[key], old.expires[key] = nil, nil
  end
  local cur = self.current
  if value == nil then
    if cur.entries[key] ~= nil then
      cur.entries[key], cur.expires[key], cur.size = nil, nil, cur.size - 1
    end
    return
  end
  if cur.entries[key] == nil then
    if cur.size >= self.per_generation or (cur.born ~= nil and now >= cur.born + cur.longest) then
      self.previous, cur = cur, generation()
      self.current = cur
    end
    cur.size = cur.size + 1
    if cur.born == nil then cur.born = now end
  end
  cur.entries[key], cur.expires[key] = value, expires
  if dead > cur.dead_at then cur.dead_at = dead end
  if dead - now > cur.longest then cur.longest = dead - now end
end

-- The key a limit counts under: limit.key, or for a resend whose otp_id
-- was put by record, limit.via .. the value put under limit.map.
function Store:_key(limit, now)
  if limit.map ~= nil then
    local v = self:get(limit.map, now)
    if v ~= nil then return limit.via .. v end
  end
  return limit.key
end

-- store:hit(now, limits) -> true | false, i, retry_after: one decision
-- over every limit of a call. Each limit is { key =, count =, window = }.
-- When every log has fewer than count times in the last window seconds,
-- now is added to each and the answer is true; otherwise nothing is added
-- and the answer names the first full limit and the seconds until it has
-- room. Never more than count calls in any window-long span.
function Store:hit(now, limits)
  self:_sweep(now)
  local keys, logs = {}, {}
  for i = 1, #limits do
    local limit = limits[i]
    local key = self:_key(limit, now)
    local log = log_trim(self:_get(key), now - limit.window, limit.count)
    if log ~= nil then self:_set(key, log, log_newest(log) + limit.window, now) else self:_set(key, nil) end
    if log_size(log) >= limit.count then
      return false, i, log_oldest(log) + limit.window - now
    end
    keys[i], logs[i] = key, log
  end
  for i = 1, #limits do
    local log = logs[i]
    -- a clock that stepped back must not reorder the log
    local t = (log ~= nil and log_newest(log) > now) and log_newest(log) or now
    self:_set(keys[i], log_push(log, t), t + limits[i].window, now)
  end
  return true
end

-- store:put(key, value, ttl): value (a string) under key for ttl seconds.
function Store:put(key, value, ttl, now)
  self:_sweep(now)
  self:_set(key, value, now + ttl, now, now + ttl)
  return true
end

-- store:get(key, now) -> the value put under key, or nil.
function Store:get(key, now)
  local v = self:_get(key)
  if type(v) ~= "string" then return nil end
  local cur = self.current
  local e = cur.expires[key]
  if e == nil then e = self.previous.expires[key] end
  if e == nil or e <= now then return nil end
  self:_set(key, v, e, now, e) -- used again: into the current generation
  return v
end

-- How many keys it holds (for specs and monitoring).
function Store:count()
  local n = self.current.size
  for _ in pairs(self.previous.entries) do n = n + 1 end
  return n
end

return M
