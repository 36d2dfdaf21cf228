-- resend_spec.lua: no request that is not idempotent is ever sent twice unless the
-- module itself retried it (and counted it in err.attempts). The sandbox reads each
-- request and drops the connection without answering; the specs count what it saw,
-- for every op, on a fresh and on a reused keep-alive connection, blocking and async.
local sandbox = require "spec.helpers.sandbox"

local NUMBER = "+15557650001"

local function count(method, path)
  local n = 0
  for _, r in ipairs(sandbox.requests()) do
    if r.method == method and r.path == path then n = n + 1 end
  end
  return n
end

-- Every op: how to call it, its method and path, whether it is idempotent.
local OPS = {
  { name = "otp.new", method = "POST", path = "/otp/new", idem = false,
    call = function(c, cb) return c.otp.new({ to = NUMBER, language = "en", name = "Once" }, cb) end },
  { name = "otp.verify", method = "POST", path = "/otp/verify", idem = false,
    call = function(c, cb) return c.otp.verify({ otp_id = "once-id", otp = "123456" }, cb) end },
  { name = "otp.resend", method = "POST", path = "/otp/resend", idem = false,
    call = function(c, cb) return c.otp.resend({ otp_id = "once-id" }, cb) end },
  { name = "otp.reverse.initiate", method = "POST", path = "/otp/reverse/initiate", idem = false,
    call = function(c, cb) return c.otp.reverse.initiate({ number = NUMBER }, cb) end },
  { name = "otp.reverse.verify", method = "GET", path = "/otp/reverse/verify/once-id", idem = true,
    call = function(c, cb) return c.otp.reverse.verify("once-id", cb) end },
  { name = "otp.reverse.cancel", method = "POST", path = "/otp/reverse/cancel/once-id", idem = true,
    call = function(c, cb) return c.otp.reverse.cancel("once-id", cb) end },
}

-- Makes the call blocking or async and returns its res, err.
local function run(c, op, async)
  if not async then return op.call(c) end
  local got
  assert.is_true(op.call(c, function(res, err) got = { res, err } end))
  c:wait(10)
  assert.is_table(got, "the callback ran")
  return got[1], got[2]
end

describe("a request read and then dropped by the server", function()
  before_each(function() sandbox.reset() end)

  for _, op in ipairs(OPS) do
    for _, async in ipairs{ false, true } do
      for _, reused in ipairs{ false, true } do
        local title = ("%s, %s, %s connection"):format(op.name, async and "async" or "blocking",
          reused and "reused" or "fresh")
        it(title, function()
          local c = sandbox.client{ max_retries = 0 }
          if reused then
            -- a GET answered 404 leaves a kept-alive connection to reuse
            local warm = op == OPS[5] and OPS[6] or OPS[5]
            assert.equals("api", select(2, run(c, warm, async)).kind)
          end
          sandbox.reset()
          sandbox.fault{ path = op.path, method = op.method, action = "drop" }
          local res, err = run(c, op, async)
          local seen = count(op.method, op.path)
          if op.idem then
            -- idempotent: libcurl may make it again on a reused connection; harmless
            assert.equals(reused and 2 or 1, seen)
          else
            assert.is_nil(res)
            assert.equals("network", err.kind)
            assert.equals(1, err.attempts)
            assert.is_false(err.retryable)
            assert.matches("outcome unknown", err.message)
            assert.equals(1, seen)
          end
          c:close()
        end)
      end
    end
  end
end)
