-- The sliding-window cases every guard store must pass, driven by a fake
-- clock through the store protocol (store:hit(now, limits), store:put).
-- Plain Lua with no busted in it, so that the same cases also run inside
-- nginx against a real lua_shared_dict: each case raises on a failure.
-- Times are multiples of 1/8 s, exact in Redis's milliseconds.
local M = {}

local T0 = 6000000 -- the fake clock's start (seconds)

local function expect(cond, ...)
  if not cond then error(table.concat({ ... }, " "), 2) end
end

local function near(a, b) return type(a) == "number" and math.abs(a - b) < 1e-6 end

local function limit(key, count, window) return { key = key, count = count, window = window } end

-- A linear congruential generator: the same sequence on every Lua.
local function lcg(seed)
  local s = seed
  return function(n)
    s = (s * 1103515245 + 12345) % 2147483648
    return s % n
  end
end

M.cases = {}
local function case(name, fn) M.cases[#M.cases + 1] = { name = name, run = fn } end

case("lets count calls through in a window, then refuses with the time until the oldest leaves",
  function(store, id)
    local l = { limit(id .. ":a", 3, 60) }
    expect(store:hit(T0, l) == true, "1st")
    expect(store:hit(T0 + 10, l) == true, "2nd")
    expect(store:hit(T0 + 20, l) == true, "3rd")
    local ok, i, wait = store:hit(T0 + 30, l)
    expect(ok == false and i == 1, "4th not refused")
    expect(near(wait, 30), "retry after", tostring(wait), "not 30")
    -- an entry stamped t counts in [t, t + window): at T0 + 60 the first has left
    ok, i, wait = store:hit(T0 + 59.875, l)
    expect(ok == false and i == 1 and near(wait, 0.125), "refused just before", tostring(wait))
    expect(store:hit(T0 + 60, l) == true, "allowed as the first leaves")
    ok = store:hit(T0 + 60, l)
    expect(ok == false, "one in, one out")
  end)

case("has no double limit at a fixed-window edge", function(store, id)
  -- a fixed window [T0, T0 + 60) would let 3 through at its end and 3
  -- more at the start of the next one: 6 within a quarter second
  local l = { limit(id .. ":edge", 3, 60) }
  for k = 1, 3 do expect(store:hit(T0 + 59.875, l) == true, "end of window", k) end
  for _, t in ipairs{ 60, 60.125, 90, 119.75 } do
    local ok, _, wait = store:hit(T0 + t, l)
    expect(ok == false, "let through at", tostring(t))
    expect(near(wait, 59.875 + 60 - t), "retry after at", tostring(t), tostring(wait))
  end
  for k = 1, 3 do expect(store:hit(T0 + 119.875, l) == true, "a window later", k) end
end)

case("never lets more than count through in any window-long span, and refuses only a full window",
  function(store, id)
    local rand = lcg(20260101)
    local count, window = 4, 10
    local l = { limit(id .. ":rand", count, window) }
    local t, accepted = T0, {}
    for attempt = 1, 600 do
      t = t + rand(24) / 8 -- 0 to 2.875 s apart, often the same instant
      local inside = {}
      for _, a in ipairs(accepted) do
        if a > t - window then inside[#inside + 1] = a end
      end
      local ok, i, wait = store:hit(t, l)
      if #inside < count then
        expect(ok == true, "attempt", attempt, "refused with", #inside, "in the window")
        accepted[#accepted + 1] = t
      else
        expect(ok == false and i == 1, "attempt", attempt, "let through with", #inside, "in the window")
        expect(near(wait, inside[#inside - count + 1] + window - t), "attempt", attempt, "retry", tostring(wait))
      end
    end
    -- the property itself, over what was let through
    for k = count + 1, #accepted do
      expect(accepted[k] - accepted[k - count] >= window, count + 1, "calls within one window")
    end
    expect(#accepted > 100, "too few let through:", #accepted)
  end)

case("decides over all the limits of a call at once: one full limit counts none", function(store, id)
  local number, total = limit(id .. ":n", 2, 60), limit(id .. ":t", 1, 60)
  expect(store:hit(T0, { number, total }) == true, "first")
  local ok, i = store:hit(T0 + 1, { number, total })
  expect(ok == false and i == 2, "total not refused")
  -- the number's log did not get the refused call: it still has one place
  expect(store:hit(T0 + 2, { number }) == true, "number counted a refused call")
  expect(store:hit(T0 + 3, { number }) == false, "number over its count")
end)

case("counts a resend under the key put for its otp_id", function(store, id)
  local ok = store:put(id .. ":m:otp", "num", 900, T0)
  expect(ok == true, "put")
  local resend = { key = id .. ":n:otp", count = 2, window = 600, map = id .. ":m:otp", via = id .. ":n:" }
  expect(store:hit(T0 + 1, { resend }) == true, "resend 1")
  expect(store:hit(T0 + 2, { limit(id .. ":n:num", 2, 600) }) == true, "the number's own")
  expect(store:hit(T0 + 3, { resend }) == false, "resend counted apart from its number")
  -- an otp_id never put is counted under its own key
  local unknown = { key = id .. ":n:other", count = 1, window = 600, map = id .. ":m:other", via = id .. ":n:" }
  expect(store:hit(T0 + 4, { unknown }) == true, "unknown 1")
  expect(store:hit(T0 + 5, { unknown }) == false, "unknown 2")
end)

case("keeps deciding rightly when a limit's count is lowered", function(store, id)
  local key = id .. ":low"
  for k = 0, 4 do expect(store:hit(T0 + k, { limit(key, 5, 100) }) == true, "fill", k) end
  -- with count 2, the call may go when the 2nd newest (T0 + 3) leaves
  local ok, _, wait = store:hit(T0 + 10, { limit(key, 2, 100) })
  expect(ok == false and near(wait, 93), "lowered count", tostring(wait))
  expect(store:hit(T0 + 103, { limit(key, 2, 100) }) == true, "after the 2nd newest left")
end)

case("keeps counting when the clock steps back", function(store, id)
  local l = { limit(id .. ":back", 2, 60) }
  expect(store:hit(T0 + 100, l) == true, "first")
  expect(store:hit(T0 + 90, l) == true, "earlier clock")
  expect(store:hit(T0 + 95, l) == false, "a third within the window")
  expect(store:hit(T0 + 160, l) == true, "after the window")
end)

-- Runs every case on a fresh store (make_store()); returns the failures
-- as { "name: message", ... } (for nginx) .
function M.run_all(make_store)
  local failures = {}
  for n, c in ipairs(M.cases) do
    local ok, err = pcall(c.run, make_store(), "case" .. n)
    if not ok then failures[#failures + 1] = c.name .. ": " .. tostring(err) end
  end
  return failures
end

---------------------------------------------------------------------------
-- A stand-in for an nginx lua_shared_dict (the methods the guard uses), on
-- a clock the spec moves: lets the shared store's logic run outside nginx.
---------------------------------------------------------------------------
function M.fake_dict(clock)
  local d, data = {}, {}
  clock = clock or function() return 0 end
  local function live(k)
    local e = data[k]
    if e and e.exp and clock() >= e.exp then data[k] = nil; e = nil end
    return e
  end
  local function list(k)
    local e = live(k)
    if e and type(e.value) ~= "table" then return nil, "value not a list" end
    return e
  end
  function d.get(_, k) local e = live(k); if e then return e.value end end
  function d.set(_, k, v, ttl) data[k] = { value = v, exp = ttl and ttl > 0 and clock() + ttl or nil }; return true end
  d.safe_set = d.set
  function d.safe_add(self, k, v, ttl)
    if live(k) then return false, "exists" end
    return self:set(k, v, ttl)
  end
  function d.delete(_, k) data[k] = nil end
  function d.llen(_, k)
    local e, err = list(k)
    if err then return nil, err end
    return e and #e.value or 0
  end
  local function push(k, v, front)
    local e, err = list(k)
    if err then return nil, err end
    if not e then e = { value = {} }; data[k] = e end
    table.insert(e.value, front and 1 or #e.value + 1, v)
    return #e.value
  end
  local function pop(k, front)
    local e, err = list(k)
    if err then return nil, err end
    if not e then return nil end
    local v = table.remove(e.value, front and 1 or #e.value)
    if #e.value == 0 then data[k] = nil end
    return v
  end
  function d.lpush(_, k, v) return push(k, v, true) end
  function d.rpush(_, k, v) return push(k, v, false) end
  function d.lpop(_, k) return pop(k, true) end
  function d.rpop(_, k) return pop(k, false) end
  function d.expire(_, k, ttl)
    local e = live(k)
    if not e then return nil, "not found" end
    e.exp = clock() + ttl
    return true
  end
  return d
end

return M
