-- contiguity.guard.shared: the guard's store in an nginx lua_shared_dict, so
-- every worker of one nginx sees the same counts. A sliding log per key is a
-- list in the dict (oldest time on the left); one decision over all the
-- limits of a call runs under a short lock in the same dict, so it is
-- atomic across workers. The store protocol is described in doc/guard.md.
local type, setmetatable, tostring = type, setmetatable, tostring

local M = {}

M.PREFIX = "cg:"
-- How long a worker waits for another one's decision (seconds): a decision
-- holds the lock for a few dict operations, microseconds.
M.DEFAULT_LOCK_WAIT = 0.05
-- How long a lock lives if its holder never releases it (a worker killed
-- in the middle of a decision): the guard then fails for that long.
M.LOCK_TTL = 0.5

local Store = {}
Store.__index = Store

local serial = 0

-- shared_store(dict, opts): opts.prefix (default "cg:"), opts.lock_wait.
function M.new(dict, opts)
  opts = opts or {}
  local prefix = opts.prefix or M.PREFIX
  serial = serial + 1
  return setmetatable({
    dict = dict,
    prefix = prefix,
    lock_key = prefix .. "lock",
    -- a value only this store object writes as the lock, so that it never
    -- deletes a lock another worker took after its own expired
    owner = tostring(ngx and ngx.worker and ngx.worker.pid and ngx.worker.pid() or 0) .. ":" .. serial,
    lock_wait = opts.lock_wait or M.DEFAULT_LOCK_WAIT,
    needs_key = false, -- contiguity.guard keeps the hashing key in the dict itself
  }, Store)
end

-- Spins until the lock is ours (the holder is another worker, inside a
-- few dict operations): never yields, so it also works under the blocking
-- client. safe_add never evicts another key to make room.
function Store:_lock()
  local dict, key, owner = self.dict, self.lock_key, self.owner
  local deadline
  local spins = 0
  while true do
    local ok, err = dict:safe_add(key, owner, M.LOCK_TTL)
    if ok then return true end
    if err ~= "exists" then return nil, "lua_shared_dict: " .. tostring(err) end
    spins = spins + 1
    if spins % 64 == 0 then
      ngx.update_time()
      local t = ngx.now()
      deadline = deadline or t + self.lock_wait
      if t >= deadline then
        return nil, "lua_shared_dict: timed out waiting for another worker's guard decision"
      end
    end
  end
end

function Store:_unlock()
  local dict = self.dict
  if dict:get(self.lock_key) == self.owner then dict:delete(self.lock_key) end
end

function Store:_key(limit)
  if limit.map ~= nil then
    local v = self.dict:get(self.prefix .. limit.map)
    if type(v) == "string" then return self.prefix .. limit.via .. v end
  end
  return self.prefix .. limit.key
end

-- The decision, under the lock (see contiguity.guard.local for what hit
-- answers).
function Store:_decide(now, limits)
  local dict = self.dict
  local keys = {}
  for i = 1, #limits do
    local limit = limits[i]
    local key = self:_key(limit)
    local cutoff, count = now - limit.window, limit.count
    local n, err = dict:llen(key)
    if not n then return nil, "lua_shared_dict: " .. tostring(err) end
    local oldest
    while n > 0 do
      oldest = dict:lpop(key)
      if oldest == nil then n = 0; break end
      if oldest > cutoff and n <= count then
        local ok
        ok, err = dict:lpush(key, oldest)
        if not ok then return nil, "lua_shared_dict: " .. tostring(err) end
        break
      end
      n = n - 1
    end
    if n >= count then return false, i, oldest + limit.window - now end
    keys[i] = key
  end
  for i = 1, #limits do
    local ok, err = dict:rpush(keys[i], now)
    if not ok then
      for j = 1, i - 1 do dict:rpop(keys[j]) end -- none is counted, as none was allowed
      return nil, "lua_shared_dict: " .. tostring(err)
    end
    dict:expire(keys[i], limits[i].window)
  end
  return true
end

-- store:hit(now, limits): see contiguity.guard.local.
function Store:hit(now, limits)
  local ok, err = self:_lock()
  if not ok then return nil, err end
  local done, a, b, c = pcall(self._decide, self, now, limits)
  self:_unlock()
  if not done then return nil, "lua_shared_dict: " .. tostring(a) end
  return a, b, c
end

-- store:put(key, value, ttl): never evicts other keys to make room.
function Store:put(key, value, ttl)
  local ok, err = self.dict:safe_set(self.prefix .. key, value, ttl)
  if not ok then return nil, "lua_shared_dict: " .. tostring(err) end
  return true
end

return M
