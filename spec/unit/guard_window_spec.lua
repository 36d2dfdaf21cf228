-- guard_window_spec.lua: the guard's sliding windows with a fake clock, no
-- server: the in-process store, and the lua_shared_dict store's logic on a
-- stand-in dict (spec/integration/guard_resty_spec.lua runs the same cases in nginx
-- against a real one, spec/integration/guard_redis_spec.lua against Redis).
local guard = require("contiguity.guard")
local windows = require("spec.helpers.guard_windows")

local stores = {
  ["the local store"] = function() return guard.local_store() end,
  ["the lua_shared_dict store (stand-in dict)"] = function() return guard.shared_store(windows.fake_dict()) end,
}

for name, make in pairs(stores) do
  describe("guard window, " .. name, function()
    for n, c in ipairs(windows.cases) do
      it(c.name, function() c.run(make(), "case" .. n) end)
    end
  end)
end
