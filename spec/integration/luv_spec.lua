-- luv_spec.lua: examples/luv.lua drives async calls from a libuv loop (Debian lua-luv) against the sandbox.
local sandbox = require "spec.helpers.sandbox"
local socket = require "socket"

local has_uv, uv = pcall(require, "luv")
if not has_uv then
  describe("a luv loop driving client:fds() and client:poll(0)", function()
    pending("skipped: luv (Debian lua-luv) does not load on " .. _VERSION .. ": "
      .. tostring(uv):match("^[^\n]*"))
  end)
  return
end
local attach = require("examples.luv").attach

local function number(i) return string.format("+1555%07d", i) end

-- The client as attach sees it, counting the turns (poll calls) the loop
-- made and keeping the last timeout fds() reported; the calls are the
-- client's own.
local function counted(c)
  local n = { polls = 0 }
  return {
    poll = function(_, t) n.polls = n.polls + 1; return c:poll(t) end,
    fds = function()
      local r, w, t = c:fds()
      n.timeout = t
      return r, w, t
    end,
    pending = function() return c:pending() end,
  }, n
end

-- Runs the loop until it returns by itself, or stops it after `limit`
-- seconds (a watchdog that does not keep the loop alive). Returns whether
-- it ended by itself, the wall time and the process CPU time it took.
local function run_loop(limit)
  local stopped = false
  local dog = uv.new_timer()
  dog:start(limit * 1000, 0, function() stopped = true; uv.stop() end)
  dog:unref()
  local t0, c0 = socket.gettime(), os.clock()
  uv.run()
  local wall, cpu = socket.gettime() - t0, os.clock() - c0
  dog:close()
  return not stopped, wall, cpu
end

-- What a call's callback saw, as one string: "ok", or "kind status".
local function outcome(res, err)
  if res then return "ok" end
  return err.kind .. (err.status and (" " .. err.status) or "")
end

-- Logged API requests per path.
local function requests_by_path()
  local n = {}
  for _, r in ipairs(sandbox.requests()) do n[r.path] = (n[r.path] or 0) + 1 end
  return n
end

describe("a luv loop driving client:fds() and client:poll(0)", function()
  local c
  before_each(function() sandbox.reset() end)
  after_each(function()
    sandbox.clear_faults()
    if c then c:close() end
    c = nil
    -- a failed case may leave handles open: close them before the next one
    uv.walk(function(h) if not h:is_closing() then h:close() end end)
    uv.run()
  end)

  it("runs 200 calls with backoffs and timeouts: each callback once, exits by itself, no spinning", function()
    c = sandbox.client{ timeout = 1.5, max_connections = 200 }
    -- made before any fault: 20 codes to verify and resend, 40 reverse sessions
    local otps, sessions = {}, {}
    for i = 1, 20 do
      local res = assert(c.otp.new{ to = number(1000 + i), language = "en", name = "Luv" })
      otps[i] = { id = res.otp_id, code = (sandbox.last_code(number(1000 + i))) }
    end
    for i = 1, 40 do sessions[i] = assert(c.otp.reverse.initiate{ number = number(2000 + i) }).otp_id end
    local DELAY = 0.5
    sandbox.fault{ path = "/otp/new", action = "none", delay = DELAY, times = -1 }
    sandbox.fault{ path = "/otp/verify", action = "status", status = 429,
                   headers = { ["Retry-After"] = "1" }, times = 20 }
    sandbox.fault{ path = "/otp/resend", action = "none", delay = 4, times = -1 }
    for i = 1, 20 do
      sandbox.fault{ path = "/otp/reverse/verify/" .. sessions[i], action = "status", status = 503 }
    end
    local client, turns = counted(c)
    local errors = {}
    local update = attach(uv, client, function(err) errors[#errors + 1] = tostring(err) end)

    local calls, out, kinds, t0 = {}, {}, {}, socket.gettime()
    local function start(i, kind, fn, arg)
      calls[i], kinds[i] = 0, kind
      assert.is_true(fn(arg, function(res, err)
        calls[i] = calls[i] + 1
        out[i] = { res = res, err = err, at = socket.gettime() - t0 }
      end))
    end
    for i = 1, 120 do
      start(i, "new", c.otp.new, { to = number(i), language = "en", name = "Luv" })
    end
    for i = 1, 20 do start(120 + i, "verify", c.otp.verify, { otp_id = otps[i].id, otp = otps[i].code }) end
    for i = 1, 40 do start(140 + i, i <= 20 and "reverse 503" or "reverse", c.otp.reverse.verify, sessions[i]) end
    for i = 1, 20 do start(180 + i, "resend", c.otp.resend, { otp_id = otps[i].id }) end
    assert.equals(200, c:pending())
    update()

    local exited, wall, cpu = run_loop(20)
    assert.is_true(exited, "the loop did not end by itself within 20 s; pending: " .. c:pending())
    assert.equals(0, c:pending())
    assert.same({}, errors)

    local tally, ids = {}, {}
    for i = 1, 200 do
      assert.equals(1, calls[i], "call " .. i .. " (" .. kinds[i] .. ")")
      local key = kinds[i] .. ": " .. outcome(out[i].res, out[i].err)
      tally[key] = (tally[key] or 0) + 1
    end
    assert.same({ ["new: ok"] = 120, ["verify: ok"] = 20, ["reverse 503: ok"] = 20,
                  ["reverse: ok"] = 20, ["resend: timeout"] = 20 }, tally)
    for i = 1, 200 do
      local o = out[i]
      if kinds[i] == "new" then
        assert.is_nil(ids[o.res.otp_id])
        ids[o.res.otp_id] = true
      elseif kinds[i] == "verify" then
        assert.is_true(o.res.verified)
      elseif kinds[i]:match("^reverse") then
        assert.equals("pending", o.res.status)
      else
        assert.equals(1, o.err.attempts)
        assert.equals("otp.resend", o.err.op)
      end
      -- the last thing due is a 1.5 s timeout: the timers fds() reported
      -- (libcurl's, a backoff's end) woke the loop long before the
      -- sandbox's answers to the resends, at 4 s, could have
      assert.is_true(o.at < 3.5, ("%s ended after %.2f s"):format(kinds[i], o.at))
    end
    -- the backoffs really happened: each 429 and 503 was followed by one retry
    local n = requests_by_path()
    assert.equals(40, n["/otp/verify"])
    for i = 1, 40 do assert.equals(i <= 20 and 2 or 1, n["/otp/reverse/verify/" .. sessions[i]]) end
    assert.equals(20, n["/otp/resend"])
    -- the loop waited on the delays (0.5 s answers, a 1 s Retry-After, 1.5 s
    -- timeouts) instead of spinning: a busy loop burns CPU for the whole run
    assert.is_true(wall >= 1.5, "wall " .. wall)
    assert.is_true(turns.polls < 2000, turns.polls .. " turns for 200 calls")
    if not os.getenv("CONTIGUITY_UNDER_VALGRIND") then -- valgrind multiplies CPU time, not waits
      assert.is_true(cpu / wall < 0.3, ("CPU %.3f s over %.3f s of wall time"):format(cpu, wall))
    end
    print(("\n  luv: 200 calls, wall %.2f s, CPU %.3f s (ratio %.3f), %d turns")
      :format(wall, cpu, cpu / wall, turns.polls))
  end)

  it("keeps the timer on a backoff that ended while the host was busy", function()
    -- issue 14, item 2: the first fds() after a backoff ended reported a
    -- timeout of about 1e9 s, and a loop that trusts fds() slept forever
    c = sandbox.client()
    local s = assert(c.otp.reverse.initiate{ number = number(1) })
    sandbox.fault{ path = "/otp/reverse/verify/" .. s.otp_id, action = "status", status = 503,
                   headers = { ["Retry-After"] = "1" } }
    sandbox.fault{ path = "/otp/verify", action = "none", delay = 1.3 }
    local client, seen = counted(c)
    local update = attach(uv, client)
    local calls, got, busy = 0, nil, nil
    assert.is_true(c.otp.reverse.verify(s.otp_id, function(st, err)
      calls = calls + 1
      got = st or err
    end))
    update()
    -- Once the call is backing off (no socket, a timeout of a second or so),
    -- the host does 1.3 s of other work, here a blocking call on the same
    -- client, and then asks update() what to wait on.
    local check = uv.new_check()
    check:start(function()
      local r, w, t = c:fds()
      if #r == 0 and #w == 0 and t and t > 0.5 then
        check:stop()
        local res, err = c.otp.verify{ otp_id = "otp_elsewhere", otp = "123456" }
        busy = res or err
        update()
      end
    end)
    check:unref()
    local exited = run_loop(8)
    check:close()
    assert(busy, "fds() never showed the call backing off (no socket, a timeout near 1 s)")
    assert.equals(404, busy.status)
    assert.is_true(exited, "the loop did not end within 8 s: the last fds() said wait "
      .. tostring(seen.timeout) .. " s, with " .. c:pending() .. " call pending")
    assert.equals(1, calls)
    assert.equals("pending", got.status)
  end)

  it("runs calls started inside callbacks, and the others when a callback raises", function()
    c = sandbox.client()
    local errors = {}
    local update = attach(uv, c, function(err) errors[#errors + 1] = tostring(err) end)
    local sent, verified = 0, {}
    for i = 1, 5 do
      c.otp.new({ to = number(i), language = "en", name = "Luv" }, function(res, err)
        assert(res, tostring(err))
        sent = sent + 1
        local code = sandbox.last_code(number(i))
        c.otp.verify({ otp_id = res.otp_id, otp = code }, function(v)
          verified[#verified + 1] = v and v.verified
          if #verified == 1 then error("boom from a callback") end
        end)
      end)
    end
    update()
    assert.is_true(run_loop(10), "the loop did not end by itself")
    assert.equals(5, sent)
    assert.same({ true, true, true, true, true }, verified)
    assert.equals(1, #errors)
    assert.matches("boom from a callback", errors[1])
    assert.equals(0, c:pending())
  end)
end)
