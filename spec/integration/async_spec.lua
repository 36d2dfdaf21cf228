-- async_spec.lua: callbacks on the libcurl multi handle (poll, wait, pending, fds, close) against the sandbox.
local contiguity = require "contiguity"
local sandbox = require "spec.helpers.sandbox"
local socket = require "socket"

local TOKEN = sandbox.TOKEN
local NUMBER = "+15551234567"

local client = sandbox.client

local function number(i) return string.format("+1555%07d", i) end

local function params(i) return { to = number(i), language = "en", name = "MyApp" } end

-- Drives c until nothing is pending; fails instead of hanging.
local function finish(c)
  c:wait(10)
  assert.equals(0, c:pending())
end

-- Drives c until its one call has had an answer and is backing off before
-- the next attempt: no socket to watch and a timeout of `at_least` seconds
-- or more (its backoff). Fails after 5 s instead of hanging.
local function until_backing_off(c, at_least)
  local deadline = socket.gettime() + 5
  repeat
    c:poll(0.01)
    local r, w, t = c:fds()
    if #r == 0 and #w == 0 and t and t >= at_least then return end
  until socket.gettime() > deadline
  error("the call did not start backing off within 5 s")
end

-- Distinct values of field k among the logged API requests to `path`.
local function distinct(log, path, k)
  local set, n = {}, 0
  for _, r in ipairs(log) do
    if r.path == path and not set[r[k]] then set[r[k]] = true; n = n + 1 end
  end
  return set, n
end

-- socket.select takes objects with getfd(): wrap libcurl's raw fds.
local function wrap(fds)
  local out = {}
  for i, fd in ipairs(fds) do out[i] = { getfd = function() return fd end } end
  return out
end

describe("async calls", function()
  before_each(function() sandbox.reset() end)
  after_each(function() sandbox.clear_faults() end)

  it("completes 200 concurrent otp.new calls with distinct otp_ids", function()
    local c = client()
    local ids, count, calls = {}, 0, {}
    for i = 1, 200 do
      calls[i] = 0
      assert.is_true(c.otp.new(params(i), function(res, err)
        calls[i] = calls[i] + 1
        assert(res, tostring(err))
        ids[i] = res.otp_id
      end))
    end
    assert.equals(200, c:pending())
    finish(c)
    local seen = {}
    for i = 1, 200 do
      assert.equals(1, calls[i])
      assert.is_string(ids[i])
      assert.is_nil(seen[ids[i]])
      seen[ids[i]] = true
      count = count + 1
      local rec = sandbox.otp(ids[i])
      assert.equals(number(i), rec.to)
    end
    assert.equals(200, count)
    assert.equals(200, #sandbox.outbox())
    c:close()
  end)

  it("delivers each result or error exactly once when some requests fail", function()
    local c = client()
    sandbox.fault{ path = "/otp/new", action = "status", status = 500, times = 3 }
    sandbox.fault{ path = "/otp/new", action = "drop" }
    sandbox.fault{ path = "/otp/new", action = "malformed" }
    local calls, out = {}, {}
    for i = 1, 10 do
      calls[i] = 0
      c.otp.new(params(i), function(res, err)
        calls[i] = calls[i] + 1
        out[i] = res and "ok" or (err.kind .. (err.status and (" " .. err.status) or ""))
        if res then assert.is_string(res.otp_id) end
        if err then assert.equals("otp.new", err.op) end
      end)
    end
    finish(c)
    local tally = {}
    for i = 1, 10 do
      assert.equals(1, calls[i])
      tally[out[i]] = (tally[out[i]] or 0) + 1
    end
    assert.same({ ok = 5, ["api 500"] = 3, network = 1, ["decode 200"] = 1 }, tally)
    assert.equals(5, #sandbox.outbox())
    c:close()
  end)

  it("reports an unreachable server through the callback", function()
    local c = contiguity.new(TOKEN, { base_url = "http://127.0.0.1:1" })
    local got
    c.otp.verify({ otp_id = "otp_1", otp = "123456" }, function(res, err) got = { res, err } end)
    finish(c)
    assert.is_nil(got[1])
    assert.equals("network", got[2].kind)
    assert.is_true(got[2].retryable)
    c:close()
  end)

  it("propagates an error raised by a callback and runs the others on the next poll", function()
    local c = client()
    local calls, raised = {}, false
    for i = 1, 5 do
      calls[i] = 0
      c.otp.new(params(i), function(res)
        calls[i] = calls[i] + 1
        assert(res)
        if not raised then raised = true; error("boom from callback") end
      end)
    end
    local ok, err = pcall(c.wait, c, 10)
    assert.is_false(ok)
    assert.matches("boom from callback", tostring(err))
    assert.equals(4, c:pending())
    local total = 0
    for _ = 1, 100 do
      if c:pending() == 0 then break end
      total = total + c:poll(1)
    end
    assert.equals(4, total)
    for i = 1, 5 do assert.equals(1, calls[i]) end
    c:close()
  end)

  it("propagates an error out of poll, and libcurl keeps going", function()
    local c = client()
    local ran = 0
    c.otp.new(params(1), function() ran = ran + 1; error("poll boom") end)
    c.otp.new(params(2), function() ran = ran + 1 end)
    local caught
    for _ = 1, 200 do
      local ok, err = pcall(c.poll, c, 1)
      if not ok then caught = err end
      if c:pending() == 0 then break end
    end
    assert.matches("poll boom", tostring(caught))
    assert.equals(2, ran)
    -- the client still works, async and blocking
    local res
    c.otp.new(params(3), function(r) res = r end)
    finish(c)
    assert.is_string(res.otp_id)
    assert.is_string(c.otp.new(params(4)).otp_id)
    c:close()
  end)

  it("cancels calls in flight on close: each callback once, kind network, message cancelled", function()
    sandbox.fault{ path = "/otp/new", action = "none", delay = 0.3, times = -1 }
    local c = client()
    local calls, errs = {}, {}
    for i = 1, 6 do
      calls[i] = 0
      c.otp.new(params(i), function(res, err)
        calls[i] = calls[i] + 1
        assert.is_nil(res)
        errs[i] = err
      end)
    end
    c:poll(0)
    c:poll(0)
    c:close()
    assert.equals(0, c:pending())
    for i = 1, 6 do
      assert.equals(1, calls[i])
      assert.equals("network", errs[i].kind)
      assert.equals("cancelled", errs[i].message)
      assert.equals("otp.new", errs[i].op)
    end
    -- nothing runs twice afterwards, and the closed client says so
    assert.equals(0, c:poll(0))
    assert.equals(0, c:wait(0.1))
    c:close()
    for i = 1, 6 do assert.equals(1, calls[i]) end
    local ok, err = c.otp.new(params(9), function() error("must not run") end)
    assert.is_nil(ok)
    assert.equals("invalid", err.kind)
  end)

  it("runs every cancelled callback on close even when one raises, then raises", function()
    sandbox.fault{ path = "/otp/new", action = "none", delay = 0.3, times = -1 }
    local c = client()
    local ran = 0
    for i = 1, 4 do
      c.otp.new(params(i), function()
        ran = ran + 1
        if ran == 2 then error("close boom") end
      end)
    end
    c:poll(0)
    local ok, err = pcall(c.close, c)
    assert.is_false(ok)
    assert.matches("close boom", tostring(err))
    assert.equals(4, ran)
    assert.equals(0, c:pending())
    assert.equals(0, c:poll(0))
  end)

  it("can close from inside a callback", function()
    local c = client()
    local first, cancelled = 0, 0
    sandbox.fault{ path = "/otp/new", action = "none", delay = 0.3, times = 3 }
    c.otp.verify({ otp_id = "otp_x", otp = "123456" }, function() first = first + 1; c:close() end)
    for i = 1, 3 do
      c.otp.new(params(i), function(_, err)
        assert.equals("cancelled", err.message)
        cancelled = cancelled + 1
      end)
    end
    c:wait(10)
    assert.equals(1, first)
    assert.equals(3, cancelled)
    assert.equals(0, c:pending())
  end)

  it("poll(0) never blocks while responses are delayed", function()
    sandbox.fault{ path = "/otp/new", action = "none", delay = 0.3, times = -1 }
    local c = client()
    local done = 0
    for i = 1, 10 do c.otp.new(params(i), function() done = done + 1 end) end
    local ran = 0
    local t0 = socket.gettime()
    for _ = 1, 100 do ran = ran + c:poll(0) end
    local elapsed = socket.gettime() - t0
    assert.equals(0, ran)
    assert.equals(10, c:pending())
    assert.is_true(elapsed < 0.15, ("100 x poll(0) took %.3f s"):format(elapsed))
    -- poll(t) returns within about t when nothing is ready
    t0 = socket.gettime()
    assert.equals(0, c:poll(0.05))
    elapsed = socket.gettime() - t0
    assert.is_true(elapsed < 0.25, ("poll(0.05) took %.3f s"):format(elapsed))
    finish(c)
    assert.equals(10, done)
    c:close()
  end)

  it("poll(t) keeps waiting until a callback ran, not just until a socket event", function()
    sandbox.fault{ path = "/otp/new", action = "none", delay = 0.2, times = -1 }
    local c = client()
    local done = 0
    c.otp.new(params(1), function() done = done + 1 end)
    assert.equals(1, c:poll(5))
    assert.equals(1, done)
    c:close()
  end)

  it("wait(timeout) returns when the timeout passes", function()
    sandbox.fault{ path = "/otp/new", action = "none", delay = 0.5, times = -1 }
    local c = client()
    local done = 0
    c.otp.new(params(1), function() done = done + 1 end)
    local t0 = socket.gettime()
    assert.equals(0, c:wait(0.1))
    assert.is_true(socket.gettime() - t0 < 0.4)
    assert.equals(1, c:pending())
    assert.equals(1, c:wait())
    assert.equals(1, done)
    c:close()
  end)

  it("reuses connections and keeps to max_connections", function()
    local c = client{ max_connections = 4 }
    local id = assert(c.otp.new(params(1))).otp_id
    local ok = 0
    local function verify()
      c.otp.verify({ otp_id = id, otp = "000000" }, function(res) if res then ok = ok + 1 end end)
    end
    for _ = 1, 50 do verify() end
    finish(c)
    assert.equals(50, ok)
    local log = sandbox.requests()
    local first, n = distinct(log, "/otp/verify", "connection")
    assert.is_true(n <= 4, n .. " connections for max_connections = 4")
    -- a second batch goes over the same pooled connections
    for _ = 1, 20 do verify() end
    finish(c)
    assert.equals(70, ok)
    log = sandbox.requests()
    assert.equals(71, #log)
    for _, r in ipairs(log) do
      if r.path == "/otp/verify" then assert.is_true(first[r.connection], "new connection " .. r.connection) end
    end
    c:close()
  end)

  it("reuses a finished call's libcurl handle with the next call's own method, body and connection", function()
    -- max_connections = 1: the client keeps one finished handle, so every
    -- call below runs on the handle of the call before it
    local c = client{ max_connections = 1 }
    local s = assert(c.otp.reverse.initiate{ number = NUMBER, factor = "4321" })
    local sent = assert(c.otp.new(params(1)))
    local before = #sandbox.requests()
    local function one(call, check)
      local res, err
      assert.is_true(call(function(r, e) res, err = r, e end))
      finish(c)
      assert(res, tostring(err))
      check(res)
    end
    for _ = 1, 2 do
      one(function(cb) return c.otp.verify({ otp_id = sent.otp_id, otp = "000000" }, cb) end,
        function(r) assert.is_false(r.verified) end)
      one(function(cb) return c.otp.reverse.verify(s.otp_id, cb) end,
        function(r) assert.equals("pending", r.status) end)
      one(function(cb) return c.otp.resend({ otp_id = sent.otp_id }, cb) end,
        function(r) assert.is_true(r.resent) end)
      one(function(cb) return c.otp.verify({ otp_id = sent.otp_id, otp = "000000" }, cb) end,
        function(r) assert.is_false(r.verified) end)
    end
    local log = sandbox.requests()
    local expect = { "POST /otp/verify", "GET /otp/reverse/verify/" .. sandbox.escape(s.otp_id),
                     "POST /otp/resend", "POST /otp/verify" }
    assert.equals(before + 8, #log)
    -- every call, NEVER_RESEND or not, goes over the one kept-alive connection
    for i = 1, 8 do
      local r = log[before + i]
      assert.equals(expect[(i - 1) % 4 + 1], r.method .. " " .. r.path)
      assert.equals(200, r.status)
      assert.equals(log[before + 1].connection, r.connection)
    end
    c:close()
  end)

  it("refuses invalid params with nil, err and never calls back", function()
    local c = client()
    local ran = false
    local ok, err = c.otp.new({ to = "12345", language = "en", name = "A" }, function() ran = true end)
    assert.is_nil(ok)
    assert.equals("invalid", err.kind)
    assert.equals("to", err.field)
    ok, err = c.otp.verify({ otp_id = "otp_1", otp = 123456 }, function() ran = true end)
    assert.is_nil(ok)
    assert.equals("invalid", err.kind)
    assert.equals(0, c:pending())
    assert.equals(0, c:wait(0.1))
    assert.is_false(ran)
    assert.equals(0, #sandbox.requests())
    c:close()
  end)

  it("runs reverse.verify(id, cb) and the other calls with a callback", function()
    local c = client()
    local s = assert(c.otp.reverse.initiate{ number = NUMBER, factor = "4321" })
    local st, sent, resent
    assert.is_true(c.otp.reverse.verify(s.otp_id, function(res, err) st = assert(res, tostring(err)) end))
    assert.is_true(c.otp.send(params(1), function(res, err) sent = assert(res, tostring(err)) end))
    finish(c)
    assert.equals("pending", st.status)
    assert.is_true(c.otp:resend({ otp_id = sent.otp_id }, function(res, err) resent = assert(res, tostring(err)) end))
    finish(c)
    assert.is_true(resent.resent)
    assert.same({ GET = true }, (distinct(sandbox.requests(), "/otp/reverse/verify/" .. sandbox.escape(s.otp_id), "method")))
    c:close()
  end)

  it("fds() returns the sockets and a timeout while calls are in flight", function()
    local c = client()
    local r, w, t = c:fds()
    assert.same({}, r)
    assert.same({}, w)
    assert.is_nil(t)
    sandbox.fault{ path = "/otp/new", action = "none", delay = 0.2, times = -1 }
    local done = 0
    for i = 1, 3 do c.otp.new(params(i), function(res) assert(res); done = done + 1 end) end
    r, w, t = c:fds()
    assert.is_table(r)
    assert.is_table(w)
    assert.is_number(t)
    c:poll(0)
    local polls, saw_fd = 0, false
    while c:pending() > 0 and polls < 1000 do
      r, w, t = c:fds()
      if #r + #w > 0 then saw_fd = true end
      for _, fd in ipairs(r) do assert.is_number(fd) end
      socket.select(wrap(r), wrap(w), t or 1)
      c:poll(0)
      polls = polls + 1
    end
    assert.is_true(saw_fd)
    assert.equals(3, done)
    -- select woke up for events, not a busy loop: far fewer than one per ms
    assert.is_true(polls < 100, polls .. " polls")
    c:close()
    r, w, t = c:fds()
    assert.same({}, r)
    assert.same({}, w)
    assert.is_nil(t)
  end)

  it("fds() reports descriptors numbered 1024 and above", function()
    -- a game server with many player sockets: libcurl's sockets get high numbers
    local files = {}
    for i = 1, 1100 do files[i] = assert(io.open("/dev/null")) end
    local c = client()
    sandbox.fault{ path = "/otp/verify", action = "none", delay = 0.2 }
    local got
    c.otp.verify({ otp_id = "otp_x", otp = "1" }, function(res, err) got = res or err end)
    local high = false
    while c:pending() > 0 do
      local r, w = c:fds()
      for _, fd in ipairs(r) do high = high or fd >= 1024 end
      for _, fd in ipairs(w) do high = high or fd >= 1024 end
      c:poll(0.05)
    end
    for _, f in ipairs(files) do f:close() end
    assert.is_true(high)
    assert.equals(404, got.status)
  end)

  it("keeps working for blocking calls between and inside async ones", function()
    local c = client()
    local async = {}
    for i = 1, 5 do c.otp.new(params(i), function(res) async[#async + 1] = res.otp_id end) end
    local res = assert(c.otp.new(params(6)))
    assert.is_string(res.otp_id)
    local inner
    c.otp.new(params(7), function(r)
      inner = assert(c.otp.verify{ otp_id = r.otp_id, otp = "000000" })
    end)
    finish(c)
    assert.equals(5, #async)
    assert.is_false(inner.verified)
    assert.is_string(assert(c.otp.new(params(8))).otp_id)
    c:close()
  end)

  it("lets callbacks start new async calls", function()
    local c = client()
    local verified = {}
    for i = 1, 10 do
      c.otp.new(params(i), function(res, err)
        assert(res, tostring(err))
        local code = sandbox.last_code(number(i))
        assert.is_true(c.otp.verify({ otp_id = res.otp_id, otp = code }, function(v, e)
          verified[i] = assert(v, tostring(e)).verified
        end))
      end)
    end
    local ran = c:wait(10)
    assert.equals(20, ran)
    assert.equals(0, c:pending())
    for i = 1, 10 do assert.is_true(verified[i]) end
    c:close()
  end)

  it("writes debug lines for async calls", function()
    local lines = {}
    local c = client{ debug = function(line) lines[#lines + 1] = line end }
    sandbox.fault{ path = "/otp/verify", action = "status", status = 500 }
    c.otp.new(params(1), function() end)
    c.otp.verify({ otp_id = "otp_1", otp = "123456" }, function() end)
    finish(c)
    assert.equals(2, #lines)
    table.sort(lines)
    assert.matches("^contiguity: otp%.new POST /otp/new %-> ok %(request [%w_%-]+%) [%d.]+ ms$", lines[1])
    assert.matches("^contiguity: otp%.verify POST /otp/verify %-> api 500 ", lines[2])
    for _, l in ipairs(lines) do assert.not_matches(TOKEN, l, 1, true) end
    c:close()
  end)

  it("poll, wait, pending and fds are harmless on a client that never went async", function()
    local c = client()
    assert.equals(0, c:pending())
    assert.equals(0, c:poll(0))
    assert.equals(0, c:poll(0.01))
    assert.equals(0, c:wait(0.01))
    assert.equals(0, c:wait())
    c:close()
  end)

  it("frees in-flight transfers when an unclosed client is collected", function()
    sandbox.fault{ path = "/otp/new", action = "none", delay = 0.3, times = -1 }
    local ran = false
    local weak = setmetatable({}, { __mode = "v" })
    do
      local c = client()
      for i = 1, 3 do c.otp.new(params(i), function() ran = true end) end
      c:poll(0)
      assert.equals(3, c:pending())
      weak.client = c
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak.client, "a client with calls in flight was not collected")
    assert.is_false(ran)
  end)
  describe("retries", function()
    it("retries 503 on reverse.verify after a backoff, without blocking poll(0)", function()
      local c = client()
      local s = c.otp.reverse.initiate{ number = NUMBER }
      local path = "/otp/reverse/verify/" .. s.otp_id
      sandbox.fault{ path = path, action = "status", status = 503, headers = { ["Retry-After"] = "1" } }
      local got, calls = nil, 0
      assert.is_true(c.otp.reverse.verify(s.otp_id, function(st, err)
        calls = calls + 1
        got = st or err
      end))
      -- the first attempt fails fast; then a one-second backoff: poll(0) must not sit in it
      local t0, polls = socket.gettime(), 0
      until_backing_off(c, 0.5)
      local p0 = socket.gettime()
      for _ = 1, 100 do c:poll(0); polls = polls + 1 end
      assert.is_true(socket.gettime() - p0 < 0.3, "100 x poll(0) took " .. (socket.gettime() - p0))
      finish(c)
      assert.equals(1, calls)
      assert.equals("pending", got.status)
      assert.is_true(socket.gettime() - t0 >= 0.9)
      local n = 0
      for _, r in ipairs(sandbox.requests()) do if r.path == path then n = n + 1 end end
      assert.equals(2, n)
    end)

    it("fds() is a pure query: once a backoff has ended it says poll now, however often it is asked", function()
      local c = client()
      local s = c.otp.reverse.initiate{ number = NUMBER }
      local path = "/otp/reverse/verify/" .. s.otp_id
      sandbox.fault{ path = path, action = "status", status = 503, headers = { ["Retry-After"] = "1" } }
      local got
      assert.is_true(c.otp.reverse.verify(s.otp_id, function(st, err) got = st or err end))
      until_backing_off(c, 0.5)
      local _, _, t = c:fds()
      -- a reactor sleeps for what fds() says, with nothing else to wake it
      socket.sleep(t)
      for _ = 1, 3 do
        local r, w, t2 = c:fds()
        assert.equals(0, #r + #w)
        assert.is_number(t2)
        assert.is_true(t2 <= 0.002, "fds() said wait " .. t2 .. " s after the backoff ended")
      end
      assert.equals(1, c:pending())
      assert.equals(1, #sandbox.requests() - 1) -- initiate aside, only the first attempt
      finish(c)
      assert.equals("pending", got.status)
      c:close()
    end)

    it("fds() says poll now while a finished call waits for its callback", function()
      local c = client()
      for i = 1, 2 do
        assert.is_true(c.otp.reverse.verify("r_raise_" .. i, function() error("callback " .. i) end))
      end
      -- drive until both requests are out: two sockets waiting to read, none to write
      local deadline = socket.gettime() + 5
      repeat
        c:poll(0)
        local r, w = c:fds()
        assert(socket.gettime() < deadline, "the two requests did not go out within 5 s")
      until #r == 2 and #w == 0
      -- a blocking call meanwhile: the one-worker sandbox answers in the order the
      -- requests came, so when it returns both answers are waiting
      assert.equals(404, select(2, c.otp.reverse.verify("r_block")).status)
      assert.is_false(pcall(c.poll, c, 0)) -- both finish; the first callback raises
      assert.equals(1, c:pending())
      local r, w, t = c:fds()
      assert.equals(0, #r + #w)
      assert.equals(0, t)
      assert.is_false(pcall(c.poll, c, 0)) -- and poll(0) runs the other
      assert.equals(0, c:pending())
      c:close()
    end)

    it("reports the attempts of a call that kept failing, and never retries otp.new once sent", function()
      local c = client{ base_url = "http://127.0.0.1:1", max_retries = 1 }
      local e1
      c.otp.verify({ otp_id = "x", otp = "1" }, function(_, err) e1 = err end)
      finish(c)
      assert.equals("network", e1.kind)
      assert.equals(2, e1.attempts)
      local c2 = client()
      sandbox.fault{ path = "/otp/new", action = "drop", times = 3 }
      local e2
      c2.otp.new(params(1), function(_, err) e2 = err end)
      finish(c2)
      assert.equals(1, e2.attempts)
      assert.is_false(e2.retryable)
      assert.matches("outcome unknown", e2.message)
      assert.equals(1, #sandbox.requests())
    end)

    it("close cancels a call that is backing off", function()
      local c = client()
      sandbox.fault{ path = "/otp/verify", action = "status", status = 429, headers = { ["Retry-After"] = "5" } }
      local e, calls = nil, 0
      c.otp.verify({ otp_id = "x", otp = "1" }, function(_, err) calls = calls + 1; e = err end)
      until_backing_off(c, 2)
      assert.equals(1, c:pending())
      assert.equals(0, calls)
      c:close()
      assert.equals(1, calls)
      assert.equals("cancelled", e.message)
      assert.equals(0, c:pending())
    end)
  end)
end)
