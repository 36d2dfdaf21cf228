-- rockspec_spec.lua: `luarocks make` in a clean clone installs a module that works.
local sandbox = require "spec.helpers.sandbox"

local sh = require("spec.helpers.shell").run

describe("rockspec", function()
  it("installs a working module from a clean clone with luarocks make", function()
    local lua = os.getenv("CONTIGUITY_SPEC_LUA") or "lua5.4"
    local abi = _VERSION:match("%d+%.%d+") -- LuaJIT reports 5.1
    local dir = os.tmpname()
    os.remove(dir)
    assert.is_true(sh("git clone -q . " .. dir))
    local ok = sh("cd " .. dir .. " && luarocks --lua-version=" .. abi .. " --tree=" .. dir .. "/tree" ..
      " make --deps-mode=none rockspec/contiguity-scm-1.rockspec >" .. dir .. "/log 2>&1")
    local log = io.open(dir .. "/log"):read("*a")
    assert(ok, log)
    local env = "LUA_CPATH='" .. dir .. "/tree/lib/lua/" .. abi .. "/?.so;;' " ..
                "LUA_PATH='" .. dir .. "/tree/share/lua/" .. abi .. "/?.lua;;' "
    local p = io.popen(env .. lua .. [[ -e '
      local contiguity = require "contiguity"
      local c = contiguity.new("contiguity_sk_rock", { base_url = "]] .. sandbox.url() .. [[" })
      local res = assert(c.otp.new{ to = "+15550001111", language = "en", name = "Rock" })
      require "contiguity.resty"; require "contiguity.guard"
      io.write(res.otp_id)' 2>&1]])
    local out = p:read("*a")
    p:close()
    sh("rm -rf " .. dir)
    assert.matches("^otp_", out)
  end)
end)
