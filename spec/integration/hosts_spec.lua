-- hosts_spec.lua: the transport option under copas (examples/copas.lua) and under lua-http
-- on cqueues (examples/lua_http.lua), run against the sandbox: several calls in flight in
-- one OS thread, and the documented error kinds. Debian's lua-copas and lua-http load on
-- Lua 5.1, 5.2 and LuaJIT only; elsewhere these are pending, saying so.
local sandbox = require "spec.helpers.sandbox"
local shell = require "spec.helpers.shell"

local LUA = os.getenv("CONTIGUITY_SPEC_LUA") or "lua5.4"

-- Whether the spec's Lua can load a module (in a child: copas 1.x refuses to load after
-- socket.http, which the spec helpers have loaded).
local function loads(name)
  return (shell.run(LUA .. " -e " .. shell.quote("require '" .. name .. "'")))
end

local function read(name)
  local f = assert(io.open(name, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- Runs `driver` (Lua source) in a child with the example's transport function in scope,
-- taken from the file as the docs show it; returns its output.
local function with_transport(file, preamble, driver)
  local text = read(file)
  local src = text:match("(local function transport%(req%).-\nend)\n")
  assert(src, "no transport function in " .. file)
  local helper = text:match("(local function copas_tcp%(%).-\nend)\n") or ""
  local script = os.tmpname()
  shell.write_file(script, preamble .. helper .. "\n" .. src .. "\n" .. driver)
  local ok, out = shell.run("env SANDBOX=" .. shell.quote(sandbox.url()) .. " TOKEN=" .. sandbox.TOKEN
    .. " timeout 60 " .. LUA .. " " .. script)
  os.remove(script)
  assert(ok, out)
  return out
end

-- Runs an example: exit status and its lines.
local function run_example(file)
  local ok, out = shell.run("env CONTIGUITY_BASE_URL=" .. shell.quote(sandbox.url()) .. " CONTIGUITY_API_KEY="
    .. sandbox.TOKEN .. " timeout 60 " .. LUA .. " " .. file)
  local lines = {}
  for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return ok, lines, out
end

-- The four logins ran at once: every call started before the first finished (a
-- transport that blocked would finish one login before the next starts), and the
-- sandbox saw each code sent and each verify.
local function assert_overlapped(ok, lines, out)
  assert(ok, out)
  local first_done, starts, dones = nil, 0, 0
  for i, line in ipairs(lines) do
    if line:match("^start %d$") then
      starts = starts + 1
      assert(first_done == nil, "a call started after another had finished:\n" .. out)
    elseif line:match("^done %d otp_%w+ verified=false$") then
      dones = dones + 1
      first_done = first_done or i
    else
      error("unexpected line: " .. line .. "\n" .. out)
    end
  end
  assert.are.equal(4, starts)
  assert.are.equal(4, dones)
  assert.are.equal(4, #sandbox.outbox())
  local new, verify = 0, 0
  for _, r in ipairs(sandbox.requests()) do
    if r.path == "/otp/new" then new = new + 1 elseif r.path == "/otp/verify" then verify = verify + 1 end
  end
  assert.are.equal(4, new)
  assert.are.equal(4, verify)
end

describe("copas transport (examples/copas.lua)", function()
  before_each(function() sandbox.reset() end)

  if not loads("copas") then
    pending("lua-copas does not load on " .. (jit and jit.version or _VERSION)
      .. " (Debian packages it for Lua 5.1 and 5.2, which LuaJIT shares)")
    return
  end

  it("runs four logins at once in one OS thread", function()
    assert_overlapped(run_example("examples/copas.lua"))
  end)

  it("reports a refused connection as kind network", function()
    local out = with_transport("examples/copas.lua", [[
local contiguity = require "contiguity"
local copas = require "copas"
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
]], [[
local client = contiguity.new(os.getenv("TOKEN"), { base_url = "http://127.0.0.1:1", transport = transport })
local finished
copas.addthread(function()
  local res, err = client.otp.verify{ otp_id = "otp_x", otp = "123456" }
  print(tostring(res), err.kind, err.op)
  finished = true
end)
while not finished do copas.step(1) end
]])
    assert.are.equal("nil network otp.verify\n", out:gsub("\t", " "))
  end)
end)

describe("lua-http transport (examples/lua_http.lua)", function()
  before_each(function() sandbox.reset() end)

  if not loads("http.request") then
    pending("lua-http does not load on " .. (jit and jit.version or _VERSION)
      .. " (Debian's lua-http loads on 5.1, 5.2 and LuaJIT; its 5.3 files miss lpeg_patterns, 5.4 has none)")
    return
  end

  it("runs four logins at once in one OS thread", function()
    assert_overlapped(run_example("examples/lua_http.lua"))
  end)

  it("reports a timeout as kind timeout and a refused connection as kind network", function()
    sandbox.fault{ path = "/otp/new", action = "none", delay = 2 }
    local out = with_transport("examples/lua_http.lua", [[
local contiguity = require "contiguity"
local cqueues = require "cqueues"
local http_request = require "http.request"
]], [[
local slow = contiguity.new(os.getenv("TOKEN"), { base_url = os.getenv("SANDBOX"), transport = transport, timeout = 0.3 })
local closed = contiguity.new(os.getenv("TOKEN"), { base_url = "http://127.0.0.1:1", transport = transport })
local cq = cqueues.new()
cq:wrap(function()
  local res, err = slow.otp.new{ to = "+15550000001", language = "en", name = "MyApp" }
  print("slow", tostring(res), err.kind, err.op)
end)
cq:wrap(function()
  local res, err = closed.otp.reverse.verify("r_otp_x")
  print("closed", tostring(res), err.kind, err.op)
end)
assert(cq:loop())
]])
    out = out:gsub("\t", " ")
    assert.truthy(out:find("slow nil timeout otp.new\n", 1, true), out)
    assert.truthy(out:find("closed nil network otp.reverse.verify\n", 1, true), out)
  end)
end)
