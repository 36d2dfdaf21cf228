-- Shell helpers for the specs, the same on Lua 5.1-5.4 and LuaJIT (whose
-- io.popen/os.execute results differ).
local M = {}

-- Runs cmd (stderr joined to stdout); returns ok, output, exit code.
function M.run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"rc=$?\""))
  local out = p:read("*a")
  p:close()
  local body, rc = out:match("^(.*)rc=(%d+)%s*$")
  rc = tonumber(rc)
  return rc == 0, body or out, rc
end

-- Quotes s for a POSIX shell.
function M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Writes data (any bytes) to the file name.
function M.write_file(name, data)
  local f = assert(io.open(name, "wb"))
  f:write(data)
  f:close()
end

-- The repository root (the specs run from it).
M.REPO = (function()
  local p = io.popen("pwd")
  local d = p:read("*l")
  p:close()
  return d
end)()

return M
