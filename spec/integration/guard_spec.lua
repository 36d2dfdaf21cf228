-- guard_spec.lua: the `guard` option (contiguity.guard) against the sandbox:
-- per-number, per-otp, per-caller and total limits, the allow-list, resend,
-- async and transport clients, one decision over all limits, the window
-- edge, the store-failure policy, the check/record ticket, bounded memory.
-- Time is an injected clock: no sleeps. (Redis: guard_redis_spec.lua;
-- nginx: guard_resty_spec.lua; the windows alone: guard_window_spec.lua.)
local contiguity = require "contiguity"
local guard = require "contiguity.guard"
local sandbox = require "spec.helpers.sandbox"
local http = require "spec.helpers.http"

local NUMBER = "+15551234567"
local OTHER = "+15557654321"

-- A clock the spec moves by hand; starts at the beginning of a window.
local function fake_clock()
  local t = { now = 6000000 }
  t.fn = function() return t.now end
  return t
end

local function client(g, opts)
  opts = opts or {}
  opts.guard = g
  return sandbox.client(opts)
end

local function send(c, to)
  return c.otp.new{ to = to or NUMBER, language = "en", name = "MyApp" }
end

local function assert_limited(err, limit, op)
  assert.is_table(err)
  assert.equals("limited", err.kind)
  assert.equals(limit, err.limit)
  assert.equals(op, err.op)
  assert.is_number(err.retry_after)
  assert.is_true(err.retry_after >= 1)
  assert.equals("contiguity.Error", getmetatable(err).__name)
  -- never the number, not even its digits
  assert.is_nil(tostring(err):find("5551234567", 1, true))
  assert.is_nil(tostring(err):find("5557654321", 1, true))
end

-- A transport that does the I/O with LuaSocket (see transport_spec.lua).
local function socket_transport(req)
  return http.request(req.method, req.url, { headers = req.headers, body = req.body })
end

describe("guard", function()
  before_each(function() sandbox.reset() end)

  it("contiguity.hmac is HMAC-SHA256 in hex", function()
    -- RFC 4231-style vector, the one openssl dgst -hmac gives
    assert.equals("f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
      contiguity.hmac("key", "The quick brown fox jumps over the lazy dog"))
    assert.equals(32, #contiguity.random_bytes(32))
    assert.not_equals(contiguity.random_bytes(16), contiguity.random_bytes(16))
  end)

  it("refuses the n+1-th send to one number, makes no request for it, lets another number through", function()
    local clock = fake_clock()
    local c = client{ sends_per_number = { 3, 600 }, clock = clock.fn }
    for _ = 1, 3 do assert(send(c)) end
    local before = #sandbox.requests()
    local res, err = send(c)
    assert.is_nil(res)
    assert_limited(err, "sends_per_number", "otp.new")
    assert.equals(600, err.retry_after)
    err = select(2, c.otp.send{ to = NUMBER, language = "en", name = "MyApp" })
    assert_limited(err, "sends_per_number", "otp.new")
    assert.equals(before, #sandbox.requests())
    assert.equals(3, #sandbox.outbox(NUMBER))
    assert(send(c, OTHER))
    assert.equals(1, #sandbox.outbox(OTHER))
    clock.now = clock.now + 599
    err = select(2, send(c))
    assert.equals(1, err.retry_after)
    clock.now = clock.now + 1 -- the next window
    assert(send(c))
    assert.equals(4, #sandbox.outbox(NUMBER))
    c:close()
  end)

  it("does not count calls that fail validation", function()
    local c = client{ sends_per_number = { 2, 600 }, clock = fake_clock().fn }
    for _ = 1, 5 do
      local _, err = c.otp.new{ to = NUMBER, language = "en" } -- name missing
      assert.equals("invalid", err.kind)
      assert.equals("name", err.field)
    end
    assert(send(c))
    assert(send(c))
    assert.equals("limited", select(2, send(c)).kind)
  end)

  it("refuses verify attempts beyond the limit even with the right code", function()
    local c = client{ verifies_per_otp = { 3, 900 }, clock = fake_clock().fn }
    local sent = assert(send(c))
    local code = sandbox.last_code(NUMBER)
    for _ = 1, 3 do
      local res = assert(c.otp.verify{ otp_id = sent.otp_id, otp = code == "000000" and "111111" or "000000" })
      assert.is_false(res.verified)
    end
    local res, err = c.otp.verify{ otp_id = sent.otp_id, otp = code }
    assert.is_nil(res)
    assert_limited(err, "verifies_per_otp", "otp.verify")
    -- another otp_id has its own allowance
    local other = assert(send(c, OTHER))
    assert.is_true(assert(c.otp.verify{ otp_id = other.otp_id, otp = sandbox.last_code(OTHER) }).verified)
  end)

  it("refuses numbers outside allow_prefixes with kind invalid and no request", function()
    local c = client{ allow_prefixes = { "+1", "+44" }, sends_per_number = { 1, 600 } }
    local res, err = send(c, "+33612345678")
    assert.is_nil(res)
    assert.equals("invalid", err.kind)
    assert.equals("to", err.field)
    assert.equals("otp.new", err.op)
    assert.is_nil(tostring(err):find("33612345678", 1, true))
    err = select(2, c.otp.reverse.initiate{ number = "+33612345678" })
    assert.equals("invalid", err.kind)
    assert.equals("number", err.field)
    assert.equals(0, #sandbox.requests())
    assert(send(c, "+447700900123"))
  end)

  it("counts resend against the number of its otp_id", function()
    local c = client{ sends_per_number = { 3, 600 }, clock = fake_clock().fn }
    local sent = assert(send(c))
    assert.is_true(assert(c.otp.resend{ otp_id = sent.otp_id }).resent)
    assert.is_true(assert(c.otp.resend{ otp_id = sent.otp_id }).resent)
    local _, err = c.otp.resend{ otp_id = sent.otp_id }
    assert_limited(err, "sends_per_number", "otp.resend")
    _, err = send(c) -- the number's allowance is used up by the resends
    assert_limited(err, "sends_per_number", "otp.new")
    assert.equals(3, #sandbox.outbox(NUMBER))
  end)

  it("counts a resend of an otp_id it never saw per otp_id", function()
    local other = client{ sends_per_number = { 5, 600 } }
    local sent = assert(send(other)) -- made by another client: this one never saw it
    local c = client{ sends_per_number = { 1, 600 }, clock = fake_clock().fn }
    assert(c.otp.resend{ otp_id = sent.otp_id })
    local _, err = c.otp.resend{ otp_id = sent.otp_id }
    assert_limited(err, "sends_per_number", "otp.resend")
    assert(send(c)) -- the number itself was not counted
  end)

  it("counts reverse.initiate per number under sends_per_number", function()
    local c = client{ sends_per_number = { 2, 600 }, clock = fake_clock().fn }
    assert(c.otp.reverse.initiate{ number = NUMBER })
    assert(send(c))
    local _, err = c.otp.reverse.initiate{ number = NUMBER }
    assert_limited(err, "sends_per_number", "otp.reverse.initiate")
  end)

  it("caps all sends with sends_total", function()
    local clock = fake_clock()
    local c = client{ sends_total = { 3, 60 }, sends_per_number = { 10, 600 }, clock = clock.fn }
    assert(send(c, "+15550000001"))
    assert(send(c, "+15550000002"))
    assert(c.otp.reverse.initiate{ number = "+15550000003" })
    local _, err = send(c, "+15550000004")
    assert_limited(err, "sends_total", "otp.new")
    assert.equals(60, err.retry_after)
    assert.equals(2, #sandbox.outbox())
    clock.now = clock.now + 60
    assert(send(c, "+15550000004"))
  end)

  it("guards async calls the same way, and learns resend's number from their results", function()
    local c = client{ sends_per_number = { 2, 600 }, clock = fake_clock().fn }
    local results = {}
    for i = 1, 2 do
      assert.is_true(c.otp.new({ to = NUMBER, language = "en", name = "A" }, function(res, err)
        results[i] = res or err
      end))
    end
    local ran = false
    local ok, err = c.otp.new({ to = NUMBER, language = "en", name = "A" }, function() ran = true end)
    assert.is_nil(ok)
    assert_limited(err, "sends_per_number", "otp.new")
    c:wait(10)
    assert.is_false(ran)
    assert.is_string(results[1].otp_id)
    assert.equals(2, #sandbox.outbox(NUMBER))
    -- the async otp.new results were recorded: resend of OTHER's otp counts against OTHER
    local r
    assert.is_true(c.otp.new({ to = OTHER, language = "en", name = "A" }, function(res) r = res end))
    c:wait(10)
    assert(c.otp.resend{ otp_id = r.otp_id })
    local _, err2 = c.otp.resend({ otp_id = r.otp_id }, function() ran = true end)
    assert_limited(err2, "sends_per_number", "otp.resend")
    c:wait(1)
    assert.is_false(ran)
    c:close()
  end)

  it("guards transport clients from the Lua glue, with a store that yields", function()
    local inner = guard.local_store(1000)
    local yields = 0
    local store = {
      hit = function(_, now, limits) coroutine.yield(); yields = yields + 1; return inner:hit(now, limits) end,
      put = function(_, k, v, ttl, now) coroutine.yield(); return inner:put(k, v, ttl, now) end,
    }
    local c = client({ sends_per_number = { 2, 600 }, store = store, key = "spec key" },
      { transport = socket_transport })
    local function run(f)
      local co = coroutine.create(f)
      local out
      repeat
        out = { coroutine.resume(co) }
        assert(out[1], out[2])
      until coroutine.status(co) == "dead"
      return out[2], out[3]
    end
    local sent = assert(run(function() return send(c) end))
    assert(run(function() return c.otp.resend{ otp_id = sent.otp_id } end))
    local res, err = run(function() return send(c) end)
    assert.is_nil(res)
    assert_limited(err, "sends_per_number", "otp.new")
    assert.equals(2, #sandbox.outbox(NUMBER))
    assert.is_true(yields >= 3)
  end)

  it("fails closed when the store fails: refused with limit store and nothing sent", function()
    local c = client{ sends_per_number = { 2, 600 }, key = "k",
      store = { hit = function() return nil, "connection refused" end } }
    local _, err = send(c)
    assert_limited(err, "store", "otp.new")
    assert.equals(1, err.retry_after)
    assert.matches("connection refused", err.message, 1, true)
    -- a store that raises is a failing store too: otp.new never raises
    c = client{ sends_per_number = { 2, 600 }, key = "k", store = { hit = function() error("boom") end } }
    _, err = send(c)
    assert_limited(err, "store", "otp.new")
    assert.matches("boom", err.message, 1, true)
    assert.equals(0, #sandbox.requests())
  end)

  it("lets calls go uncounted when the store fails and on_store_error is open", function()
    local c = client{ sends_per_number = { 1, 600 }, key = "k", on_store_error = "open",
      store = { hit = function() return nil, "connection refused" end } }
    assert(send(c))
    assert(send(c))
    assert.equals(2, #sandbox.outbox(NUMBER))
  end)

  it("says through the debug hook that a failing store let a call through", function()
    local lines = {}
    local lib = { hmac = contiguity.hmac, random_bytes = contiguity.random_bytes,
                  debug = function(line) lines[#lines + 1] = line end }
    local g = guard.new({ sends_per_number = { 1, 600 }, key = "k", on_store_error = "open",
      store = { hit = function() return nil, "connection refused" end } }, lib)
    assert.is_nil((g:check("otp.new", { to = NUMBER })))
    assert.equals(1, #lines)
    assert.matches("otp.new: the guard's store failed (connection refused); on_store_error = \"open\"",
      lines[1], 1, true)
    assert.is_nil(lines[1]:find("5551234567", 1, true))
    -- closed: no line, a refusal
    g = guard.new({ sends_per_number = { 1, 600 }, key = "k",
      store = { hit = function() return nil, "connection refused" end } }, lib)
    assert.equals("store", g:check("otp.new", { to = NUMBER }).limit)
    assert.equals(1, #lines)
  end)

  it("decides over all the limits of a call at once: a refused call counts against none", function()
    local clock = fake_clock()
    local c = client{ sends_per_number = { 2, 600 }, sends_total = { 1, 60 }, clock = clock.fn }
    assert(send(c))
    clock.now = clock.now + 1
    local _, err = send(c)
    assert_limited(err, "sends_total", "otp.new")
    clock.now = clock.now + 59 -- the total has room again; the number has had one send
    assert(send(c))
    assert.equals(2, #sandbox.outbox(NUMBER))
  end)

  it("has no double limit at a window edge: never more than the limit in any window-long span", function()
    local clock = fake_clock() -- at the start of a fixed window [now, now + 600)
    local c = client{ sends_per_number = { 3, 600 }, clock = clock.fn }
    clock.now = clock.now + 599 -- the end of that fixed window
    for _ = 1, 3 do assert(send(c)) end
    clock.now = clock.now + 1 -- a fixed window would start counting afresh here
    local _, err = send(c)
    assert_limited(err, "sends_per_number", "otp.new")
    assert.equals(599, err.retry_after)
    clock.now = clock.now + 598
    assert_limited(select(2, send(c)), "sends_per_number", "otp.new")
    clock.now = clock.now + 1 -- 600 s after the three
    assert(send(c))
    assert.equals(4, #sandbox.outbox(NUMBER))
  end)

  it("limits sends and verifies per caller, and the caller never reaches the API", function()
    local clock = fake_clock()
    local who -- set just before each call: check reads it inside the call
    local seen = {}
    local function transport(req)
      seen[#seen + 1] = req.url .. " " .. (req.body or "")
      for k, v in pairs(req.headers) do seen[#seen + 1] = k .. ": " .. v end
      return socket_transport(req)
    end
    local c = client({ sends_per_caller = { 2, 60 }, verifies_per_caller = { 1, 60 }, clock = clock.fn,
      caller = function(op, arg)
        assert.is_string(op)
        assert.is_table(arg)
        return who
      end }, { transport = transport })
    who = "203.0.113.7"
    local sent = assert(send(c, "+15550000001"))
    assert(c.otp.reverse.initiate{ number = "+15550000002" })
    local _, err = send(c, "+15550000003")
    assert_limited(err, "sends_per_caller", "otp.new")
    assert.is_nil(tostring(err):find("203.0.113.7", 1, true))
    _, err = c.otp.resend{ otp_id = sent.otp_id }
    assert_limited(err, "sends_per_caller", "otp.resend")
    assert(c.otp.verify{ otp_id = sent.otp_id, otp = "000000" })
    _, err = c.otp.verify{ otp_id = sent.otp_id, otp = "000000" }
    assert_limited(err, "verifies_per_caller", "otp.verify")
    who = "198.51.100.2" -- another caller has its own allowance
    assert(send(c, "+15550000003"))
    assert(c.otp.verify{ otp_id = sent.otp_id, otp = "000000" })
    who = nil -- no identity: no per-caller limit for that call
    for i = 4, 6 do assert(send(c, "+1555000000" .. i)) end
    clock.now = clock.now + 60
    who = "203.0.113.7"
    assert(send(c, "+15550000007"))
    assert.equals(6, #sandbox.outbox()) -- (reverse.initiate sends no message)
    for _, line in ipairs(seen) do
      assert.is_nil(line:find("203.0.113.7", 1, true), line)
      assert.is_nil(line:find("198.51.100.2", 1, true), line)
    end
  end)

  it("treats a caller function that raises like a failing store", function()
    local function boom() error("no request here") end
    local c = client{ sends_per_caller = { 5, 60 }, caller = boom }
    local _, err = send(c)
    assert_limited(err, "caller", "otp.new")
    assert.matches("no request here", err.message, 1, true)
    assert.equals(0, #sandbox.requests())
    c = client{ sends_per_caller = { 5, 60 }, caller = boom, on_store_error = "open" }
    assert(send(c))
  end)

  it("check hands record a ticket fixed at check time: reusing the params table charges the right number", function()
    local g = guard.new({ sends_per_number = { 2, 600 }, clock = fake_clock().fn }, contiguity)
    local p = { to = NUMBER }
    local err, ticket = g:check("otp.new", p)
    assert.is_nil(err)
    assert.is_string(ticket)
    assert.is_nil(ticket:find("5551234567", 1, true))
    p.to = OTHER -- the same table, reused for the next call before the answer
    g:record("otp.new", ticket, { otp_id = "otp_a" })
    -- a resend of otp_a counts against NUMBER, which has one send and room for one more
    assert.is_nil((g:check("otp.resend", { otp_id = "otp_a" })))
    assert.equals("sends_per_number", g:check("otp.resend", { otp_id = "otp_a" }).limit)
    assert.equals("sends_per_number", g:check("otp.new", { to = NUMBER }).limit)
    assert.is_nil((g:check("otp.new", { to = OTHER })))
    -- nothing to record: no ticket; record never raises
    assert.is_nil(select(2, g:check("otp.verify", { otp_id = "otp_a", otp = "1" })))
    g:record("otp.new", nil, { otp_id = "otp_b" })
    g:record("otp.new", ticket, "not a table")
    g.store = { hit = function() return true end, put = function() error("down") end }
    g:record("otp.new", ticket, { otp_id = "otp_c" })
  end)

  it("raises for bad guard options", function()
    local function new(g) return function() client(g) end end
    assert.has_error(new(5), "contiguity.new: option 'guard' must be a table")
    assert.error_matches(new{ sends_per_number = 3 }, "sends_per_number")
    assert.error_matches(new{ sends_per_number = { 0, 60 } }, "sends_per_number")
    assert.error_matches(new{ verifies_per_otp = { 3, 0 } }, "verifies_per_otp")
    assert.error_matches(new{ sends_total = { 3, 0 / 0 } }, "sends_total")
    assert.error_matches(new{ allow_prefixes = { "1" } }, "allow_prefixes")
    assert.error_matches(new{ shared = "nope" }, "lua_shared_dict")
    assert.error_matches(new{ store = {} }, "hit")
    assert.error_matches(new{ store = { hit = function() end } }, "guard.key", 1, true)
    assert.error_matches(new{ redis = { port = 6379 } }, "guard.key", 1, true)
    assert.error_matches(new{ redis = { port = "x" }, key = "k" }, "redis option 'port'")
    assert.error_matches(new{ redis = { timeout = 0 }, key = "k" }, "redis option 'timeout'")
    assert.error_matches(new{ redis = { hostname = "x" }, key = "k" }, "unknown redis option 'hostname'")
    assert.error_matches(new{ redis = { client = {} }, key = "k" }, "eval and evalsha")
    assert.error_matches(new{ redis = {}, shared = "x", key = "k" }, "exclusive")
    assert.error_matches(new{ max_keys = 1 }, "max_keys")
    assert.error_matches(new{ max_keys = 10, store = guard.local_store(), key = "k" }, "max_keys")
    assert.error_matches(new{ sends_per_caller = { 1, 60 } }, "guard.caller", 1, true)
    assert.error_matches(new{ verifies_per_caller = { 1, 60 }, caller = "ip" }, "caller")
    assert.error_matches(new{ on_store_error = "ajar" }, "on_store_error")
    assert.error_matches(new{ sends_per_numbr = { 1, 1 } }, "unknown guard option 'sends_per_numbr'")
    -- an in-process store needs no key
    client{ store = guard.local_store(10) }:close()
  end)

  it("holds at most max_keys keys in the local store, in bounded memory", function()
    local clock = fake_clock()
    local g = guard.new({ sends_per_number = { 3, 600 }, sends_total = { 1e9, 60 }, clock = clock.fn },
      contiguity)
    collectgarbage("collect")
    collectgarbage("collect")
    local before = collectgarbage("count")
    local worst = 0
    local max_keys = require("contiguity.guard.local").DEFAULT_MAX_KEYS
    for i = 1, 100000 do
      local to = string.format("+1555%07d", i)
      assert.is_nil((g:check("otp.new", { to = to })))
      if i % 20000 == 0 or i == 99999 then
        collectgarbage("collect")
        worst = math.max(worst, collectgarbage("count") - before)
        assert.is_true(g.store:count() <= max_keys)
      end
    end
    -- doc/guard.md: at most 16 MiB at the default max_keys on every Lua
    -- (here with a sends_total log of 100,000 times too)
    assert.is_true(worst < 16 * 1024, ("%.1f MiB"):format(worst / 1024))
    -- a recent number is still counted: its 4th send in the window is refused
    assert.is_nil((g:check("otp.new", { to = "+15550099999" })))
    assert.is_nil((g:check("otp.new", { to = "+15550099999" })))
    assert.equals("sends_per_number", g:check("otp.new", { to = "+15550099999" }).limit)
    -- once every window has passed, a generation is dropped whole
    clock.now = clock.now + 1200
    assert.is_nil((g:check("otp.new", { to = NUMBER })))
    assert.is_true(g.store:count() <= 3)
  end)

  it("evicts the least recently used generation at max_keys", function()
    local s = guard.local_store(10)
    local function hit(k) return s:hit(100, { { key = k, count = 3, window = 60 } }) end
    for i = 1, 6 do assert.is_true(hit("k" .. i)) end -- k6 starts a new generation
    assert.is_true(hit("k1")) -- used again: moves forward
    for i = 7, 10 do assert.is_true(hit("k" .. i)) end -- k10 starts another: k2..k5 go
    assert.is_true(s:count() <= 10)
    assert.is_true(hit("k1")) -- its third
    assert.is_false(hit("k1")) -- k1 kept its count
    assert.is_true(hit("k2"))
    assert.is_true(hit("k2"))
    assert.is_true(hit("k2")) -- k2 was dropped: three more
  end)
end)
