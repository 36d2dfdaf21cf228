-- guard_spec.lua: the `guard` option (contiguity.guard) against the sandbox:
-- per-number, per-otp and total limits, the allow-list, resend, async and
-- transport clients, bounded memory. Time is an injected clock: no sleeps.
local contiguity = require "contiguity"
local guard = require "contiguity.guard"
local sandbox = require "spec.helpers.sandbox"
local http = require "spec.helpers.http"

local TOKEN = sandbox.TOKEN
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
    res, err = c.otp.send{ to = NUMBER, language = "en", name = "MyApp" }
    assert_limited(err, "sends_per_number", "otp.new")
    assert.equals(before, #sandbox.requests())
    assert.equals(3, #sandbox.outbox(NUMBER))
    assert(send(c, OTHER))
    assert.equals(1, #sandbox.outbox(OTHER))
    clock.now = clock.now + 599
    res, err = send(c)
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
    res, err = c.otp.reverse.initiate{ number = "+33612345678" }
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
    _, err = c.otp.resend({ otp_id = r.otp_id }, function() ran = true end)
    assert_limited(err, "sends_per_number", "otp.resend")
    c:close()
  end)

  it("guards transport clients from the Lua glue, with a store that yields", function()
    local inner = guard.local_store(1000)
    local yields = 0
    local store = {
      incr = function(_, k, by, ttl) coroutine.yield(); yields = yields + 1; return inner:incr(k, by, ttl) end,
      get = function(_, k) coroutine.yield(); return inner:get(k) end,
      set = function(_, k, v, ttl) coroutine.yield(); return inner:set(k, v, ttl) end,
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

  it("fails closed when the store fails", function()
    local c = client{ sends_per_number = { 2, 600 }, key = "k",
      store = { incr = function() return nil, "connection refused" end } }
    local _, err = send(c)
    assert.equals("limited", err.kind)
    assert.equals("store", err.limit)
    assert.equals(0, #sandbox.requests())
  end)

  it("raises for bad guard options", function()
    local function new(g) return function() client(g) end end
    assert.has_error(new(5), "contiguity.new: option 'guard' must be a table")
    assert.error_matches(new{ sends_per_number = 3 }, "sends_per_number")
    assert.error_matches(new{ sends_per_number = { 0, 60 } }, "sends_per_number")
    assert.error_matches(new{ verifies_per_otp = { 3, 0 } }, "verifies_per_otp")
    assert.error_matches(new{ allow_prefixes = { "1" } }, "allow_prefixes")
    assert.error_matches(new{ shared = "nope" }, "lua_shared_dict")
    assert.error_matches(new{ store = {} }, "incr")
    assert.error_matches(new{ store = { incr = function() end } }, "guard.key")
    assert.error_matches(new{ max_keys = 1 }, "max_keys")
    assert.error_matches(new{ sends_per_numbr = { 1, 1 } }, "unknown guard option 'sends_per_numbr'")
  end)

  it("holds at most max_keys keys in the local store, in bounded memory", function()
    local clock = fake_clock()
    local g = guard.new({ sends_per_number = { 3, 600 }, sends_total = { 1e9, 60 }, clock = clock.fn },
      contiguity)
    collectgarbage("collect")
    collectgarbage("collect")
    local before = collectgarbage("count")
    local worst = 0
    for i = 1, 100000 do
      local to = string.format("+1555%07d", i)
      assert.is_nil(g:check("otp.new", { to = to }))
      if i % 20000 == 0 or i == 99999 then
        collectgarbage("collect")
        worst = math.max(worst, collectgarbage("count") - before)
        assert.is_true(g.store:count() <= guard.DEFAULT_MAX_KEYS)
      end
    end
    -- doc/guard.md: at most 24 MiB at the default max_keys on every Lua
    assert.is_true(worst < 24 * 1024, ("%.1f MiB"):format(worst / 1024))
    -- a recent number is still counted: its 4th send in the window is refused
    assert.is_nil(g:check("otp.new", { to = "+15550099999" }))
    assert.is_nil(g:check("otp.new", { to = "+15550099999" }))
    assert.equals("sends_per_number", g:check("otp.new", { to = "+15550099999" }).limit)
    -- once every window has passed, a generation is dropped whole
    clock.now = clock.now + 1200
    assert.is_nil(g:check("otp.new", { to = NUMBER }))
    assert.is_true(g.store:count() <= 2)
  end)

  it("evicts the least recently used generation at max_keys", function()
    local s = guard.local_store(10, function() return 100 end)
    for i = 1, 6 do s:incr("k" .. i, 1, 60) end -- k6 starts a new generation
    s:incr("k1", 1, 60) -- used again: moves forward
    for i = 7, 10 do s:incr("k" .. i, 1, 60) end -- k10 starts another: k2..k5 go
    assert.is_true(s:count() <= 10)
    assert.equals(3, s:incr("k1", 1, 60))
    assert.equals(1, s:incr("k2", 1, 60)) -- k2 was dropped
  end)
end)
