-- A throwaway redis-server for the specs (Debian package redis-server): a
-- free port, a temporary directory, no persistence, started here and
-- stopped by its pid. Also a minimal RESP client over LuaSocket, for the
-- specs' own commands and as "any client object with eval/evalsha" (it
-- answers like resty.redis: the reply, or nil and the error text).
local socket = require("socket")
local shell = require("spec.helpers.shell")

local M = {}

-- A port nothing listens on now (the kernel's pick for a bound socket).
function M.free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

---------------------------------------------------------------------------
-- The client
---------------------------------------------------------------------------
local Conn = {}
Conn.__index = Conn

local function encode(args)
  local out = { "*" .. #args .. "\r\n" }
  for _, a in ipairs(args) do
    a = tostring(a)
    out[#out + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
  end
  return table.concat(out)
end

function Conn:_read()
  local line, err = self.sock:receive("*l")
  if not line then return nil, err end
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == "+" then return rest end
  if kind == "-" then return false, rest end
  if kind == ":" then return tonumber(rest) end
  if kind == "$" then
    local n = tonumber(rest)
    if n < 0 then return nil end
    local data
    data, err = self.sock:receive(n + 2)
    if not data then return nil, err end
    return data:sub(1, n)
  end
  if kind == "*" then
    local n = tonumber(rest)
    if n < 0 then return nil end
    local t = {}
    for i = 1, n do
      local v, e = self:_read()
      if v == nil and e then return nil, e end
      if v == false then t[i] = { err = e } else t[i] = v end
    end
    return t
  end
  return nil, "bad reply line: " .. line
end

-- conn:call(cmd, ...) -> reply | nil, error (an error reply or a socket error)
function Conn:call(...)
  self.calls = self.calls + 1
  local ok, err = self.sock:send(encode({ ... }))
  if not ok then return nil, err end
  local v, e = self:_read()
  if v == false then return nil, e end
  return v, e
end

function Conn:eval(...) return self:call("EVAL", ...) end
function Conn:evalsha(...) return self:call("EVALSHA", ...) end
function Conn:close() self.sock:close() end

-- connect(port, timeout?) -> conn | nil, err
function M.connect(port, timeout)
  local sock = socket.tcp()
  sock:settimeout(timeout or 2)
  local ok, err = sock:connect("127.0.0.1", port)
  if not ok then sock:close(); return nil, err end
  sock:setoption("tcp-nodelay", true)
  return setmetatable({ sock = sock, calls = 0 }, Conn)
end

---------------------------------------------------------------------------
-- The server
---------------------------------------------------------------------------

-- M.server() -> { port, dir, start(), stop(), pause(), resume(), cli(...) }:
-- start() launches (or relaunches, on the same port) and waits until it
-- answers PING; stop() ends it by pid and waits until the pid is gone.
function M.server()
  local self = { port = M.free_port() }
  local ok, dir = shell.run("mktemp -d \"${TMPDIR:-/tmp}/contiguity-redis.XXXXXX\"")
  assert(ok, dir)
  self.dir = dir:gsub("%s+$", "")

  local function pid()
    local f = io.open(self.dir .. "/redis.pid")
    if not f then return nil end
    local p = f:read("*n")
    f:close()
    return p
  end

  -- Waits (up to 5 s) until cond() is true.
  local function until_(cond, what)
    for _ = 1, 500 do
      if cond() then return end
      socket.sleep(0.01)
    end
    error("redis-server on port " .. self.port .. ": " .. what .. "; log: "
      .. select(2, shell.run("tail -n 5 " .. shell.quote(self.dir .. "/redis.log"))))
  end

  function self.start()
    local cmd = ("redis-server --port %d --bind 127.0.0.1 --dir %s --save '' --appendonly no"
      .. " --daemonize yes --pidfile %s --logfile %s --protected-mode no"):format(self.port,
      shell.quote(self.dir), shell.quote(self.dir .. "/redis.pid"), shell.quote(self.dir .. "/redis.log"))
    local started, out = shell.run(cmd)
    assert(started, "redis-server did not start: " .. out)
    until_(function()
      local c = M.connect(self.port, 0.2)
      if not c then return false end
      local pong = c:call("PING")
      c:close()
      return pong == "PONG"
    end, "no PONG")
  end

  function self.stop()
    local p = pid()
    if not p then return end
    shell.run("kill -CONT " .. p .. "; kill -TERM " .. p)
    until_(function() return not shell.run("kill -0 " .. p) end, "pid " .. p .. " did not exit")
    os.remove(self.dir .. "/redis.pid")
  end

  -- SIGSTOP / SIGCONT: a Redis that hangs (accepts, never answers).
  function self.pause() assert(shell.run("kill -STOP " .. pid())) end
  function self.resume() assert(shell.run("kill -CONT " .. pid())) end

  -- One command on a fresh connection: the reply (raises on an error).
  function self.cli(...)
    local c = assert(M.connect(self.port))
    local v, err = c:call(...)
    c:close()
    assert(v ~= nil or err == nil, err)
    return v
  end

  -- stop() then remove the directory.
  function self.remove()
    self.stop()
    shell.run("rm -rf " .. shell.quote(self.dir))
  end

  return self
end

-- INFO commandstats as { evalsha = calls, eval = calls, ... }.
function M.command_calls(server)
  local info = server.cli("INFO", "commandstats")
  local t = {}
  for name, calls in info:gmatch("cmdstat_([%w|_]+):calls=(%d+)") do t[name] = tonumber(calls) end
  return t
end

return M
