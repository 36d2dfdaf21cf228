-- options_spec.lua (unit): contiguity.new's options and token, with no server: what a
-- configuration mistake raises, and what a good one does to the requests.
local contiguity = require "contiguity"

local TOKEN = "contiguity_sk_unit_options"

local function new(opts, token) return contiguity.new(token or TOKEN, opts) end

-- The request table of one call of a client made with opts (a recording transport).
local function first_request(opts)
  local got
  opts.transport = function(req) got = req; return 500, "", {} end
  new(opts).otp.reverse.verify("x")
  return got
end

describe("contiguity.new", function()
  it("raises on unknown options and wrong types, naming the option", function()
    assert.has_error(function() new{ timout = 3 } end, "contiguity.new: unknown option 'timout'")
    assert.error_matches(function() new{ timeout = "3" } end, "option 'timeout' must be a number", 1, true)
    assert.error_matches(function() new{ debug = "yes" } end, "option 'debug' must be a boolean or a function", 1, true)
    assert.error_matches(function() new{ transport = {} } end, "option 'transport' must be a function", 1, true)
    assert.error_matches(function() new{ guard = 1 } end, "option 'guard' must be a table", 1, true)
    assert.error_matches(function() new{ cainfo = 1 } end, "option 'cainfo' must be a string", 1, true)
  end)

  it("checks ranges before converting (no undefined float-to-integer conversion)", function()
    for _, v in ipairs{ 0, 1025, 1.5, 1e300, -1e300, 0 / 0, 1 / 0 } do
      assert.error_matches(function() new{ max_connections = v } end,
        "option 'max_connections' must be a whole number from 1 to 1024", 1, true)
    end
    assert.error_matches(function() new{ max_retries = 11 } end, "from 0 to 10", 1, true)
    assert.error_matches(function() new{ timeout = 0 } end, "seconds > 0", 1, true)
    assert.error_matches(function() new{ deadline = 1e9 } end, "seconds > 0", 1, true)
  end)

  it("refuses a bad token without echoing any of it", function()
    local ok, err = pcall(new, {}, "sk_live_SECRET123")
    assert.is_false(ok)
    assert.matches("contiguity_sk_", err)
    assert.not_matches("SECRET123", err)
    ok, err = pcall(new, {}, "contiguity_sk_abc\r\nX-Evil: 1")
    assert.is_false(ok)
    assert.not_matches("Evil", err)
  end)

  it("normalises base_url without writing into the caller's table", function()
    local opts = { base_url = "https://api.example.test///" }
    local req = first_request(opts)
    assert.equals("https://api.example.test/otp/reverse/verify/x", req.url)
    assert.equals("https://api.example.test///", opts.base_url)
    opts.transport = nil
  end)

  it("reads options raw: an options table's __index never runs", function()
    local ran = 0
    local opts = setmetatable({ base_url = "https://api.example.test" }, { __index = function(_, k)
      ran = ran + 1
      if k == "user_agent" then return ("y"):rep(200000) end
    end })
    local req = first_request(opts)
    assert.not_matches("yyyy", req.headers["User-Agent"])
    assert.equals(0, ran)
  end)

  it("allows plain http only to loopback", function()
    assert.has_no_error(function() new{ base_url = "http://127.0.0.1:9" } end)
    assert.has_no_error(function() new{ base_url = "http://localhost:9" } end)
    assert.has_no_error(function() new{ base_url = "http://[::1]:9" } end)
    assert.error_matches(function() new{ base_url = "http://api.example.test" } end, "loopback", 1, true)
    assert.error_matches(function() new{ base_url = "ftp://x" } end, "http(s) URL", 1, true)
    assert.error_matches(function() new{ base_url = "https:///x" } end, "http(s) URL", 1, true)
  end)

  it("appends user_agent after the module's own, and refuses one that could break the header", function()
    local req = first_request{ base_url = "https://api.example.test", user_agent = "myapp/1.0" }
    assert.matches("^contiguity%-lua/%S+ libcurl/%S+ Lua.* myapp/1%.0$", req.headers["User-Agent"])
    assert.error_matches(function() new{ user_agent = "a\r\nX-Evil: 1" } end, "CR, LF or NUL", 1, true)
  end)

  it("passes the timeout to a transport in seconds", function()
    assert.equals(2.5, first_request{ base_url = "https://api.example.test", timeout = 2.5 }.timeout)
  end)
end)
