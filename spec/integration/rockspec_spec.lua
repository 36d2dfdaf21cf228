-- rockspec_spec.lua: the README's install blocks, run as written (a temporary tree or
-- prefix in place of sudo and /usr/local) on a copy of the working tree, install a
-- module and a contiguity-otp command that work; the rockspec lints and `luarocks test`
-- runs the specs of .busted.
local sandbox = require "spec.helpers.sandbox"
local shell = require "spec.helpers.shell"

local sh, q = shell.run, shell.quote
local LUA = os.getenv("CONTIGUITY_SPEC_LUA") or "lua5.4"
local ABI = _VERSION:match("%d+%.%d+") -- LuaJIT reports 5.1
local JIT = jit ~= nil

local function read(name)
  local f = assert(io.open(name, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- The lines of the README's fenced block whose info string is "sh <tag>".
local function readme_block(tag)
  local lines, inside = {}, false
  for line in (read("README.md") .. "\n"):gmatch("(.-)\n") do
    if inside and line:match("^```") then return lines end
    if inside then lines[#lines + 1] = line end
    if line == "```sh " .. tag then inside = true end
  end
  error("README.md has no ```sh " .. tag .. " block")
end

-- A copy of the working tree (tracked and new files, not build/), as a user's clone.
local function clone()
  local dir = os.tmpname()
  os.remove(dir)
  assert(sh("mkdir -p " .. dir .. " && git ls-files -co --exclude-standard -z | "
    .. "xargs -0 tar cf - 2>/dev/null | tar xf - -C " .. dir))
  return dir
end

-- Runs one README line in dir; returns ok, output.
local function run(dir, line)
  return sh("cd " .. dir .. " && " .. line)
end

-- The README line that installs for this Lua: the --lua-version=5.4 / LUA=5.4 one for
-- PUC Lua 5.2-5.4 (and 5.1 by the same pattern), the 5.1-ABI one for LuaJIT.
local function pick(lines, pattern54, pattern51)
  for _, line in ipairs(lines) do
    if JIT and line:find(pattern51, 1, true) then return line end
    if not JIT and line:find(pattern54, 1, true) then
      return (line:gsub(pattern54:gsub("%p", "%%%0"), (pattern54:gsub("5%.4", ABI))))
    end
  end
  error("no README install line for " .. LUA)
end

-- The installed command against the sandbox: --version, then a real send.
local function check_command(bin)
  local ok, out = sh(bin .. " --version")
  assert(ok, out)
  assert.matches("^contiguity%-otp %d+%.%d+%.%d+\nmodule contiguity %d", out)
  local env = "CONTIGUITY_API_KEY=" .. sandbox.TOKEN .. " CONTIGUITY_BASE_URL=" .. q(sandbox.url()) .. " "
  -- no LUA_PATH/LUA_CPATH pointing at the repository: the command finds its files itself
  ok, out = sh("cd / && env -u LUA_PATH -u LUA_CPATH " .. env .. bin .. " send +15550001111 --json")
  assert(ok, out)
  assert.matches('"otp_id":"otp_', out)
end

describe("install", function()
  local dir
  before_each(function() dir = clone() end)
  after_each(function() sh("rm -rf " .. q(dir)) end)

  it("the rockspec passes luarocks lint", function()
    local ok, out = sh("luarocks lint " .. dir .. "/rockspec/contiguity-scm-1.rockspec")
    assert(ok, out)
  end)

  it("lists every Debian package of the README's apt-get line in .ci/deps.sh", function()
    local readme = read("README.md"):match("sudo apt%-get install (.-)\n#")
    assert(readme, "no apt-get line in the README")
    local deps = read(".ci/deps.sh"):match('PKGS="(.-)"')
    local listed = {}
    for p in deps:gmatch("%S+") do listed[p] = true end
    local extra = read("README.md"):match("for OpenResty / LuaJIT %(the 5.1 ABI%) add: ([^\n]+)")
    for p in (readme:gsub("\\\n", " ") .. " " .. extra):gmatch("[%w][%w.+-]*") do
      assert.is_true(listed[p] == true, p .. " is in the README but not in .ci/deps.sh")
    end
    assert.truthy(readme:find("libssl-dev", 1, true))
    assert.truthy(readme:find("libqrencode-dev", 1, true))
  end)

  it("with luarocks, as the README says: a module and a command that work", function()
    local line = pick(readme_block("install-luarocks"), "--lua-version=5.4", "--lua-version=5.1")
    assert.truthy(line:find("--deps-mode=none", 1, true))
    local tree = dir .. "/tree"
    line = line:gsub("^sudo luarocks ", "luarocks --tree=" .. tree .. " ")
    local ok, out = run(dir, line .. " 2>&1")
    assert(ok, line .. "\n" .. out)
    check_command(tree .. "/bin/contiguity-otp")
    -- the module, from the paths `luarocks path` gives for the tree
    local p = io.popen("cd / && eval \"$(luarocks --lua-version=" .. ABI .. " --tree=" .. tree .. " path)\" && "
      .. LUA .. [[ -e '
      local contiguity = require "contiguity"
      local c = contiguity.new("contiguity_sk_rock", { base_url = "]] .. sandbox.url() .. [[" })
      local res = assert(c.otp.new{ to = "+15550001111", language = "en", name = "Rock" })
      require "contiguity.resty"; require "contiguity.guard"; require "contiguity.cli"
      io.write(res.otp_id)' 2>&1]])
    out = p:read("*a")
    p:close()
    assert.matches("^otp_", out)
    -- the nginx location, where doc/openresty.md says it is
    assert.are.equal(read("nginx/location.conf"), read(tree .. "/share/lua/" .. ABI .. "/contiguity/nginx/location.conf"))
  end)

  it("with make install, as the README says: a module and a command that work", function()
    local line = pick(readme_block("install-make"), "LUA=5.4", "LUA=jit")
    local prefix = dir .. "/prefix"
    line = line:gsub("sudo make install (%S+)", "make install %1 PREFIX=" .. prefix)
    local ok, out = run(dir, line)
    assert(ok, line .. "\n" .. out)
    check_command(prefix .. "/bin/contiguity-otp")
    assert.are.equal(read("nginx/location.conf"), read(prefix .. "/share/lua/" .. ABI .. "/contiguity/nginx/location.conf"))
    assert.are.equal(read("src/contiguity/cli.lua"), read(prefix .. "/share/lua/" .. ABI .. "/contiguity/cli.lua"))
  end)

  it("the installed command says what to run when its files are missing", function()
    local prefix = dir .. "/prefix"
    assert(run(dir, "make install LUA=" .. (JIT and "jit" or ABI) .. " PREFIX=" .. prefix .. " >/dev/null"))
    -- the C module gone: --help and --version still work
    assert(sh("rm " .. prefix .. "/lib/lua/" .. ABI .. "/contiguity.so"))
    local bin = "cd / && env -u LUA_PATH -u LUA_CPATH " .. prefix .. "/bin/contiguity-otp"
    local ok, out = sh(bin .. " --help")
    assert(ok, out)
    assert.matches("^usage: contiguity%-otp", out)
    ok, out = sh(bin .. " --version")
    assert(ok, out)
    assert.matches("module contiguity: not loaded", out)
    local _, _, rc = sh(bin .. " send +15550001111")
    assert.are.equal(2, rc)
    -- contiguity.cli gone too: a message that says what to run
    assert(sh("rm -r " .. prefix .. "/share/lua/" .. ABI .. "/contiguity"))
    _, out, rc = sh(bin .. " --version")
    assert.are.equal(2, rc)
    assert.matches("cannot find contiguity.cli", out)
    assert.matches("luarocks %-%-lua%-version=" .. ABI:gsub("%.", "%%.") .. " %-%-tree=T path", out)
  end)

  it("luarocks test runs busted with .busted", function()
    if ABI ~= "5.4" or JIT then
      pending("once, under lua5.4: luarocks test does not depend on the Lua")
      return
    end
    -- luarocks test wants busted as a rock; Debian's lua-busted is not one, and this
    -- machine has no network to fetch it. A local rock named busted whose command
    -- runs Debian's busted stands in for the one luarocks would install.
    local shim = dir .. "/shim"
    assert(sh("mkdir -p " .. shim))
    shell.write_file(shim .. "/busted.lua", 'require("busted.runner")({ standalone = false })\n')
    shell.write_file(shim .. "/busted-0-0.rockspec", [[
rockspec_format = "3.0"
package = "busted"
version = "0-0"
source = { url = "git+file:///nonexistent" }
build = { type = "builtin", modules = {}, install = { bin = { busted = "busted.lua" } } }
]])
    shell.write_file(shim .. "/config.lua", "rocks_trees = { [[" .. shim .. "/tree]] }\n")
    local ok, out = sh("cd " .. shim .. " && luarocks --lua-version=5.4 --tree=" .. shim
      .. "/tree make --deps-mode=none busted-0-0.rockspec")
    assert(ok, out)
    -- the module built as `make` does: .busted points at build/5.4
    assert(run(dir, "make LUA=5.4 >/dev/null"))
    -- (whether those specs pass is their own business: here, that luarocks ran them)
    -- (spec/run's CONTIGUITY_BUILD_DIR names this run's build, not the copy's)
    out = select(2, run(dir, "env -u CONTIGUITY_BUILD_DIR LUAROCKS_CONFIG=" .. shim
      .. "/config.lua luarocks --lua-version=5.4 test -- -o TAP"))
    assert.matches("\nok %d+ %- contiguity.qr", out)
    assert.matches("ok %d+ %- documentation links", out)
    assert.matches("\n1%.%.%d+\n", out)
  end)
end)
