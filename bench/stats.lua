-- bench/stats.lua: the statistics the bench reports share (report.lua, guard_report.lua).
local M = {}

-- The median of a list of numbers (nil for an empty one).
function M.median(xs)
  if #xs == 0 then return nil end
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  local m = (#s + 1) // 2
  return #s % 2 == 1 and s[m] or (s[m] + s[m + 1]) / 2
end

return M
