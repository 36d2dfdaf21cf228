-- ids_spec.lua: an otp_id is one path segment and stays one. Ids made only of
-- dots ("." and ".." are dot segments that libcurl and servers resolve, so
-- "..", sent as is, reaches POST /otp/reverse/) are refused before any I/O, on
-- the libcurl path and on the transport path alike.
local contiguity = require "contiguity"
local sandbox = require "spec.helpers.sandbox"

local DOTS = { ".", "..", "...", "...." }
local BY_ID = { "verify", "cancel" }

local function refused(res, err)
  assert.is_nil(res)
  assert.equals("invalid", err.kind)
  assert.equals("otp_id", err.field)
  assert.matches("dots", err.message)
end

describe("an otp_id made only of dots", function()
  before_each(function() sandbox.reset() end)

  for _, name in ipairs(BY_ID) do
    for _, id in ipairs(DOTS) do
      it(("is refused by reverse.%s(%q) before any request (libcurl, blocking and async)"):format(name, id), function()
        local c = sandbox.client{ max_retries = 0 }
        refused(c.otp.reverse[name](id))
        local res, err = c.otp.reverse[name](id, function() error("no callback for a refused call") end)
        refused(res, err)
        assert.equals(0, c:pending())
        assert.same({}, sandbox.requests())
        c:close()
      end)

      it(("is refused by reverse.%s(%q) before the transport runs"):format(name, id), function()
        local ran = 0
        local c = contiguity.new(sandbox.TOKEN, { base_url = sandbox.url(),
          transport = function() ran = ran + 1; return 200, "{}", {} end })
        refused(c.otp.reverse[name](id))
        assert.equals(0, ran)
      end)
    end
  end

  it("a dot inside an id is still an ordinary character", function()
    local c = sandbox.client{ max_retries = 0 }
    local _, err = c.otp.reverse.verify("a..b")
    assert.equals("api", err.kind)
    assert.equals(404, err.status)
    local log = sandbox.requests()
    assert.equals("/otp/reverse/verify/a..b", log[#log].path)
  end)
end)
