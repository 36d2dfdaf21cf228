-- nginx_paths_spec.lua: every nginx this project starts (the specs' helper,
-- sandbox/start, examples/webhook_openresty.conf) and `make demo` load
-- exactly the files they name, wherever the checkout is and whoever runs
-- them (issue 18): the caller's LUA_PATH/LUA_CPATH never reach them, a wrong
-- build is an error naming the file, and a copy of the checkout in a 0700
-- directory (as root: nginx's workers would run as nobody) passes the nginx
-- specs and the demo.
local cjson = require("cjson")
local socket = require("socket")
local http = require("spec.helpers.http")
local sandbox = require("spec.helpers.sandbox")
local nginx = require("spec.helpers.nginx")
local shell = require("spec.helpers.shell")

local q = shell.quote
local REPO = shell.REPO
local SPEC_LUA = os.getenv("CONTIGUITY_SPEC_LUA") or "lua5.4"
local BUILD_DIR = os.getenv("CONTIGUITY_BUILD_DIR") or "build/5.4"

local function bindable(port)
  local s = socket.tcp()
  s:setoption("reuseaddr", true)
  local ok = s:bind("127.0.0.1", port)
  s:close()
  return ok ~= nil
end

-- A port the system hands out, such that port + each offset is free too.
local function free_port(offsets)
  for _ = 1, 50 do
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, p = s:getsockname()
    s:close()
    p = tonumber(p)
    local ok = true
    for _, o in ipairs(offsets or {}) do
      if p + o > 65535 or not bindable(p + o) then ok = false; break end
    end
    if ok then return p end
  end
  error("no free port")
end

local function mktemp_dir()
  local ok, out = shell.run("mktemp -d")
  assert(ok, out)
  return (out:gsub("%s+$", ""))
end

local function read_file(name)
  local f = assert(io.open(name, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- Stops the nginx whose pid file is `pidfile` (by its pid) and waits for it.
local function stop_pid_file(pidfile)
  local f = io.open(pidfile)
  local pid = f and f:read("*n")
  if f then f:close() end
  if not pid then return end
  shell.run("kill -QUIT " .. pid)
  for _ = 1, 100 do
    if not nginx.alive(pid) then return end
    socket.sleep(0.05)
  end
  shell.run("kill -KILL " .. pid)
end

-- A module build nginx's LuaJIT cannot load: another Lua's build (the
-- issue's case: the 5.4 build, "undefined symbol: lua_rotate"), else a file
-- that is not a library at all.
local function wrong_build(dir)
  for _, v in ipairs{ "5.4", "5.3", "5.2" } do
    local src = REPO .. "/build/" .. v .. "/contiguity.so"
    if io.open(src) then return src end
  end
  local name = dir .. "/wrong-contiguity.so"
  shell.write_file(name, "not a shared library\n")
  return name
end

-- Decoys where LUA_PATH/LUA_CPATH point: the module (another Lua's build),
-- cjson and contiguity.resty, each failing loudly if anything loads it.
local decoy, WRONG
local DECOY_ENV

lazy_setup(function()
  decoy = mktemp_dir()
  assert(shell.run("chmod 755 " .. q(decoy) .. " && mkdir -p " .. q(decoy .. "/contiguity")))
  WRONG = wrong_build(decoy)
  assert(shell.run("cp " .. q(WRONG) .. " " .. q(decoy .. "/contiguity.so")))
  shell.write_file(decoy .. "/cjson.so", "decoy cjson.so from LUA_CPATH\n")
  shell.write_file(decoy .. "/contiguity/resty.lua", "error('decoy contiguity.resty from LUA_PATH')\n")
  shell.write_file(decoy .. "/cjson.lua", "error('decoy cjson from LUA_PATH')\n")
  DECOY_ENV = {
    LUA_PATH = decoy .. "/?.lua;;", LUA_CPATH = decoy .. "/?.so;;",
    LUA_PATH_5_2 = decoy .. "/?.lua;;", LUA_CPATH_5_2 = decoy .. "/?.so;;",
    LUA_PATH_5_3 = decoy .. "/?.lua;;", LUA_CPATH_5_3 = decoy .. "/?.so;;",
    LUA_PATH_5_4 = decoy .. "/?.lua;;", LUA_CPATH_5_4 = decoy .. "/?.so;;",
  }
end)

lazy_teardown(function()
  if decoy then shell.run("rm -rf " .. q(decoy)) end
end)

-- "NAME=value ..." for a shell command line.
local function env_words(env)
  local words = {}
  for k, v in pairs(env) do words[#words + 1] = k .. "=" .. q(v) end
  table.sort(words)
  return table.concat(words, " ")
end

describe("nginx started by the specs", function()
  it("loads the module and the Lua files from its own prefix, whatever LUA_PATH and LUA_CPATH name", function()
    local port = free_port()
    local server = nginx.new{ name = "paths-spec", port = port, env = DECOY_ENV, http = ([[
    server {
        listen 127.0.0.1:PORT;
        location = /paths {
            content_by_lua_block {
                local cjson = require("cjson")
                local contiguity = require("contiguity")
                local resty = require("contiguity.resty")
                local c = contiguity.new("TOKEN", { base_url = "SANDBOX" })
                local res, err = c.otp.new{ to = "+15550001818", language = "en", name = "MyApp" }
                ngx.say(cjson.encode{ path = package.path, cpath = package.cpath,
                    so = package.searchpath("contiguity", package.cpath),
                    resty = package.searchpath("contiguity.resty", package.path),
                    has_new = type(resty.new) == "function",
                    otp_id = res and res.otp_id, err = err and tostring(err) })
            }
        }
    }
]]):gsub("TOKEN", sandbox.TOKEN):gsub("SANDBOX", sandbox.url()) }
    finally(server.stop)
    server.start()
    local status, body = http.request("GET", server.base .. "/paths")
    assert.equal(200, status, body)
    local d = cjson.decode(body)
    assert.is_nil(d.path:find(decoy, 1, true), d.path)
    assert.is_nil(d.cpath:find(decoy, 1, true), d.cpath)
    assert.is_nil(d.cpath:find(";;", 1, true), d.cpath)
    -- nothing comes from the checkout either: nginx reads its own copies
    assert.equal(server.prefix .. "/", d.so:sub(1, #server.prefix + 1))
    assert.equal(server.prefix .. "/", d.resty:sub(1, #server.prefix + 1))
    assert.is_true(d.has_new)
    assert.is_string(d.otp_id, d.err)
  end)

  it("refuses a wrong build at start with an error that names the file", function()
    local server = nginx.new{ name = "paths-wrong", port = free_port(), module = WRONG,
                              http = "server { listen 127.0.0.1:PORT; }" }
    finally(server.stop)
    local ok, err = pcall(server.start)
    assert.is_false(ok, "nginx started with " .. WRONG)
    assert.truthy(tostring(err):find(WRONG, 1, true), tostring(err))
  end)
end)

describe("sandbox/start", function()
  it("loads only its own Lua files and the system's, whatever LUA_PATH and LUA_CPATH name", function()
    local port = free_port({ 1000 })
    finally(function() shell.run("sandbox/stop " .. port) end)
    local ok, out = shell.run(env_words(DECOY_ENV) .. " sandbox/start " .. port)
    assert(ok, out)
    local base = "http://127.0.0.1:" .. port
    local status, body = http.request("POST", base .. "/otp/new", {
      headers = { Authorization = "Token " .. sandbox.TOKEN, ["Content-Type"] = "application/json" },
      body = cjson.encode{ to = "+15550001818", language = "en", name = "MyApp" } })
    assert.equal(200, status, body)
    local tmp = os.getenv("TMPDIR")
    if not tmp or tmp == "" then tmp = "/tmp" end
    local conf = read_file(tmp .. "/contiguity-sandbox." .. port .. "/conf/nginx.conf")
    assert.is_nil(conf:find(";;", 1, true), "a ';;' in the sandbox's Lua paths")
  end)
end)

-- The checkout copied into a fresh `mktemp -d` (mode 0700, files readable by
-- their owner only, as a clone made with umask 077 leaves them), with TMPDIR
-- inside it too (as Debian's libpam-tmpdir sets it): nothing nginx needs may
-- depend on anyone but the invoking user reaching into it.
describe("a copy of the checkout in a 0700 directory", function()
  local dir, checkout, tmp

  lazy_setup(function()
    dir = mktemp_dir()
    checkout, tmp = dir .. "/checkout", dir .. "/tmp"
    local builds = { "build/jit" }
    if not BUILD_DIR:find("^/") and BUILD_DIR ~= "build/jit" then builds[2] = BUILD_DIR end
    local cmd = ("mkdir -p %s %s && tar -C %s --exclude=./.git --exclude=./build -cf - . | tar -C %s -xf -")
      :format(q(checkout), q(tmp), q(REPO), q(checkout))
    for _, b in ipairs(builds) do
      cmd = cmd .. (" && mkdir -p %s && cp %s/contiguity.so %s/"):format(q(checkout .. "/" .. b),
        q(REPO .. "/" .. b), q(checkout .. "/" .. b))
    end
    cmd = cmd .. " && chmod -R go-rwx " .. q(dir)
    local ok, out = shell.run(cmd)
    assert(ok, out)
  end)

  lazy_teardown(function()
    if dir then shell.run("rm -rf " .. q(dir)) end
  end)

  it("is a directory only its owner can enter", function()
    local ok, out = shell.run("stat -c %a " .. q(dir))
    assert(ok, out)
    assert.equal("700", (out:gsub("%s+$", "")))
  end)

  it("passes the nginx specs, with a sandbox started from it, by spec/run", function()
    local port = free_port({ 1000, 100, 102 })
    local v = BUILD_DIR:match("([^/]+)$")
    local ok, out = shell.run(("cd %s && TMPDIR=%s LUAS=%s PORT=%d LUA_WRAPPER= "
      .. "SPECS='--filter-out=does.not.block spec/integration/guard_resty_spec.lua spec/integration/resty_spec.lua' sh spec/run")
      :format(q(checkout), q(tmp), q(v), port))
    -- (the nested run's closing line must not read as this run's)
    out = out:gsub("specs: ", "nested specs: ")
    assert(ok, out)
    local passed, failed = out:match("nested specs: (%d+) passed, (%d+) failed")
    assert(tonumber(passed) and tonumber(passed) >= 5 and failed == "0", out)
  end)

  it("runs `make demo` (examples/run-demo.sh), whatever LUA_PATH and LUA_CPATH name", function()
    local port = free_port({ 1000 })
    local ok, out = shell.run(("cd %s && %s TMPDIR=%s PORT=%d LUA_BIN=%s BUILD=%s sh examples/run-demo.sh")
      :format(q(checkout), env_words(DECOY_ENV), q(tmp), port, q(SPEC_LUA), q(BUILD_DIR)))
    assert(ok, out)
    assert.truthy(out:find("sandbox: http://127.0.0.1:" .. port, 1, true), out)
  end)

  it("serves examples/webhook_openresty.conf as its comment says to run it", function()
    local port = free_port()
    local run = dir .. "/webhook"
    assert(shell.run("mkdir -p " .. q(run .. "/logs")))
    local conf = read_file(checkout .. "/examples/webhook_openresty.conf")
    local n1, n2
    conf, n1 = conf:gsub("listen 127%.0%.0%.1:8080;", "listen 127.0.0.1:" .. port .. ";")
    conf, n2 = conf:gsub("/tmp/contiguity%-webhook", run)
    assert.is_true(n1 == 1 and n2 > 0, "the example's port or runtime directory moved")
    shell.write_file(run .. "/webhook.conf", conf)
    local pidfile = run .. "/nginx.pid"
    finally(function() stop_pid_file(pidfile) end)
    local ok, out = shell.run(("cd %s && %s CONTIGUITY_WEBHOOK_SECRET=whsec_sandbox_secret "
      .. "nginx -p \"$PWD\" -c %s -g %s")
      :format(q(checkout), env_words(DECOY_ENV), q(run .. "/webhook.conf"), q("pid " .. pidfile .. ";")))
    assert(ok, out)
    -- (a daemonised nginx has its listening socket open when the command returns)
    local status, body = http.request("POST", "http://127.0.0.1:" .. port .. "/hooks/contiguity",
      { body = "{}", headers = { ["Content-Type"] = "application/json" } })
    -- the handler ran with the module loaded: an unsigned delivery is refused as such
    assert.equal(400, status, tostring(body) .. read_file(run .. "/logs/error.log"))
    assert.equal("missing", cjson.decode(body).message)
  end)
end)
