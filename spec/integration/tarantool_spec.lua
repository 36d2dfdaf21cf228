-- tarantool_spec.lua: inside Tarantool (Debian tarantool), calls through examples/tarantool.lua yield their fibers and give the libcurl client's results and errors.
local sandbox = require "spec.helpers.sandbox"
local shell = require "spec.helpers.shell"
local cjson = require "cjson"

local q = shell.quote
local DELAY = 0.3

-- The whole text of file `name`.
local function read(name)
  local f = assert(io.open(name, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- Holds before any skip: the documented transport is the one the spec runs.
describe("doc/transports.md", function()
  it("shows the transport of examples/tarantool.lua, unchanged", function()
    local fn = read("examples/tarantool.lua"):match("\n(local function transport%(httpc%).-\nend)\n")
    assert.is_string(fn)
    assert.is_truthy(read("doc/transports.md"):find(fn, 1, true),
      "doc/transports.md no longer shows examples/tarantool.lua's transport")
  end)
end)

local why_not
if not shell.run("command -v tarantool") then
  why_not = "skipped: tarantool (Debian package tarantool) is not installed"
elseif not jit then
  why_not = "skipped on " .. _VERSION .. ": Tarantool embeds LuaJIT and loads the LuaJIT build "
    .. "(build/jit), so this spec runs in spec/run's LuaJIT pass"
end
if why_not then
  describe("Tarantool fibers calling through http.client", function() pending(why_not) end)
  return
end

-- The LuaJIT pass's build (spec/run sets CONTIGUITY_BUILD_DIR), as an absolute path.
local function build_dir()
  local d = os.getenv("CONTIGUITY_BUILD_DIR") or "build/jit"
  if d:sub(1, 1) ~= "/" then d = shell.REPO .. "/" .. d end
  return d
end

-- Runs spec/helpers/tarantool_app.lua under tarantool; returns its report.
local function run_app()
  local ok, out = shell.run("cd " .. q(shell.REPO) .. " && env CONTIGUITY_BUILD_DIR=" .. q(build_dir())
    .. " CONTIGUITY_SANDBOX_URL=" .. q(sandbox.url()) .. " TARANTOOL_DELAY=" .. DELAY
    .. " timeout 60 tarantool spec/helpers/tarantool_app.lua")
  local line
  for l in out:gmatch("[^\n]+") do if l:sub(1, 1) == "{" then line = l end end
  assert(ok and line, "tarantool failed:\n" .. out)
  return cjson.decode(line)
end

describe("Tarantool fibers calling through http.client", function()
  local report
  setup(function()
    sandbox.reset()
    sandbox.fault{ path = "/otp/new", action = "none", delay = DELAY, times = -1 }
    sandbox.fault{ path = "/otp/verify", action = "none", delay = 2, times = -1 }
    report = run_app()
  end)
  teardown(function() sandbox.clear_faults() end)

  it("loads the LuaJIT build of the module", function()
    assert.is_nil(report.load_error, "Tarantool " .. tostring(report.tarantool)
      .. " cannot load " .. tostring(report.module_file) .. ": " .. tostring(report.load_error))
    assert.equals(build_dir() .. "/contiguity.so", report.module_file)
  end)

  it("runs 20 calls from 20 fibers in about one delay, not twenty, and the server keeps running", function()
    assert.is_nil(report.load_error)
    local single, many = report.single, report.many
    assert.is_true(single.ok, tostring(single.err))
    assert.is_true(single.seconds >= DELAY, "one call took " .. single.seconds .. " s")
    local ids = {}
    assert.equals(20, #many.calls)
    for _, call in ipairs(many.calls) do
      assert.is_string(call.otp_id, tostring(call.err))
      assert.is_nil(ids[call.otp_id])
      ids[call.otp_id] = true
      assert.is_true(call.seconds >= DELAY)
    end
    -- one after another they would take 20 delays
    local ratio = many.seconds / single.seconds
    assert.is_true(ratio < 4, ("20 calls took %.2f s, one took %.2f s"):format(many.seconds, single.seconds))
    -- a fiber ticking every 10 ms kept running while the calls waited, and
    -- stopped dead during one blocking libcurl call of the same length
    assert.is_true(many.ticks >= 5, many.ticks .. " ticks during the 20 calls")
    assert.is_true(report.blocking.ok)
    assert.equals(0, report.blocking.ticks)
    print(("\n  tarantool %s: 1 call %.3f s, 20 fibers %.3f s (ratio %.2f), %d ticks meanwhile")
      :format(report.tarantool, single.seconds, many.seconds, ratio, many.ticks))
  end)

  it("gives the results and errors the libcurl client gives", function()
    assert.is_nil(report.load_error)
    local cases = report.cases
    -- a result: the same fields
    local h, c = cases.ok.host.res, cases.ok.curl.res
    assert.is_string(h.otp_id)
    assert.is_string(c.otp_id)
    assert.equals("number", type(h.metadata.timestamp))
    for k in pairs(c.metadata) do assert.is_not_nil(h.metadata[k], "metadata." .. k) end
    for k in pairs(c) do assert.is_not_nil(h[k], k) end
    for k in pairs(h) do assert.is_not_nil(c[k], k) end
    -- errors: the same kind, status, op and fields (a transport call is one
    -- attempt, so it has no attempts count)
    local want = {
      not_found = { kind = "api", status = 404, op = "otp.reverse.verify" },
      timeout = { kind = "timeout", op = "otp.verify" },
      refused = { kind = "network", op = "otp.verify" },
    }
    for name, w in pairs(want) do
      local he, ce = cases[name].host.err, cases[name].curl.err
      assert(he and ce, name .. ": both clients fail")
      assert.is_nil(cases[name].host.res)
      for _, e in ipairs({ he, ce }) do
        assert.equals(w.kind, e.kind, name)
        assert.equals(w.status, e.status, name)
        assert.equals(w.op, e.op, name)
        assert.is_string(e.message)
      end
      for k in pairs(ce) do
        if k ~= "attempts" then assert.is_not_nil(he[k], name .. ": field " .. k) end
      end
      for k in pairs(he) do assert.is_not_nil(ce[k], name .. ": field " .. k) end
      -- a transport only says that it failed, not whether the request left:
      -- its failures are never retryable, while libcurl knows a refused
      -- connection sent nothing
      if name ~= "refused" then assert.equals(ce.retryable, he.retryable, name) end
      assert.is_nil(cases[name].host.message:find(sandbox.TOKEN, 1, true))
    end
    assert.equals(cases.not_found.curl.err.message, cases.not_found.host.err.message)
  end)
end)
