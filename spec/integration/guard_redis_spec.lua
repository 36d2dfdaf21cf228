-- guard_redis_spec.lua: the guard with its counts in a real redis-server
-- (started here on a free port, no persistence, stopped by pid): the
-- sliding windows with a fake clock, one round trip per check (EVALSHA,
-- EVAL only after NOSCRIPT), Redis TIME, hashed keys in one hash slot, two
-- plain-Lua OS processes sharing one limit, Redis stopped, restarted and
-- hung mid-run. Clients: lua-redis (where `require "redis"` loads: Debian
-- ships it for 5.1-5.3, which LuaJIT reads too) and any object with
-- eval/evalsha (spec/helpers/redis.lua's, on every Lua).
local guard = require("contiguity.guard")
local socket = require("socket")
local sandbox = require("spec.helpers.sandbox")
local shell = require("spec.helpers.shell")
local rh = require("spec.helpers.redis")
local windows = require("spec.helpers.guard_windows")

local NUMBER = "+15551234567"
local KEY = "spec guard key"
local HAS_LUA_REDIS = pcall(require, "redis")

local server = rh.server()

local function fake_clock()
  local t = { now = 6000000 }
  t.fn = function() return t.now end
  return t
end

-- The ways a store reaches Redis: name -> function returning redis options.
local kinds = {}
if HAS_LUA_REDIS then
  kinds[#kinds + 1] = { name = "lua-redis", opts = function(o)
    o = o or {}
    o.port = server.port
    return o
  end }
end
kinds[#kinds + 1] = { name = "a connect function returning an eval/evalsha client", opts = function(o)
  o = o or {}
  local timeout = o.timeout or 0.05
  o.timeout = nil
  o.connect = function() return rh.connect(server.port, timeout) end
  return o
end }

local function client(g, opts)
  opts = opts or {}
  g.key = g.key or KEY
  opts.guard = g
  return sandbox.client(opts)
end

local function send(c, to)
  return c.otp.new{ to = to or NUMBER, language = "en", name = "MyApp" }
end

local function assert_limited(err, limit)
  assert.is_table(err)
  assert.equals("limited", err.kind, tostring(err))
  assert.equals(limit, err.limit, tostring(err))
  assert.is_true(err.retry_after >= 1)
end

describe("guard with Redis", function()
  setup(server.start)
  teardown(server.remove)
  before_each(function()
    sandbox.reset()
    server.cli("FLUSHALL")
  end)

  it("ships the SHA-1 of its script (EVALSHA finds it once loaded)", function()
    local redis_store = require("contiguity.guard.redis")
    assert.equals(redis_store.SHA, server.cli("SCRIPT", "LOAD", redis_store.SCRIPT))
  end)

  it("checks with exactly one round trip: EVALSHA, and EVAL only after NOSCRIPT", function()
    local conn = assert(rh.connect(server.port))
    local c = client{ verifies_per_otp = { 1000, 900 }, redis = { client = conn } }
    server.cli("SCRIPT", "FLUSH")
    server.cli("CONFIG", "RESETSTAT")
    for i = 1, 21 do -- (unknown otp_ids: the API answers 404 after the check)
      local _, err = c.otp.verify{ otp_id = "otp_" .. i, otp = "123456" }
      assert.equals("api", err.kind)
    end
    -- the first check found no script (NOSCRIPT) and sent it; then 20 EVALSHA
    local calls = rh.command_calls(server)
    assert.equals(21, calls.evalsha)
    assert.equals(1, calls.eval)
    assert.equals(22, conn.calls)
    -- no limit of this guard applies to otp.new: no round trip
    conn.calls = 0
    assert(send(c))
    assert.equals(0, conn.calls)
    -- with sends_per_number, otp.new also remembers its otp_id for resend
    -- after the answer: one more
    c = client{ sends_per_number = { 5, 600 }, redis = { client = conn } }
    conn.calls = 0
    assert(send(c))
    assert.equals(2, conn.calls)
    conn:close()
  end)

  it("takes the time from Redis (TIME), not from the app server", function()
    local conn = assert(rh.connect(server.port))
    local c = client{ sends_total = { 10, 60 }, redis = { client = conn } }
    assert(send(c))
    local t = server.cli("TIME")
    local redis_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local stamped = tonumber(server.cli("LINDEX", "{cg}:t", 0))
    assert.is_true(stamped <= redis_ms and stamped > redis_ms - 5000, stamped .. " vs " .. redis_ms)
    conn:close()
  end)

  for _, kind in ipairs(kinds) do
    describe("through " .. kind.name, function()
      for n, c in ipairs(windows.cases) do
        it("window: " .. c.name, function()
          c.run(guard.redis_store(kind.opts()), "case" .. n)
        end)
      end

      it("refuses the n+1-th send without a request; keys are hashes in one hash slot", function()
        local c = client{ sends_per_number = { 3, 600 }, sends_total = { 100, 60 }, redis = kind.opts() }
        for _ = 1, 3 do assert(send(c)) end
        local before = #sandbox.requests()
        local _, err = send(c)
        assert_limited(err, "sends_per_number")
        assert.equals(600, err.retry_after)
        assert.equals(before, #sandbox.requests())
        assert.equals(3, #sandbox.outbox(NUMBER))
        local keys = server.cli("KEYS", "*")
        assert.is_true(#keys >= 2)
        for _, k in ipairs(keys) do
          assert.matches("^{cg}:", k)
          assert.is_nil(k:find("5551234567", 1, true))
        end
        c:close()
      end)

      it("decides over all limits atomically with the store's counts (a refused call counts none)", function()
        local clock = fake_clock()
        local c = client{ sends_per_number = { 2, 600 }, sends_total = { 1, 60 }, clock = clock.fn,
          redis = kind.opts() }
        assert(send(c))
        local number_key
        for _, k in ipairs(server.cli("KEYS", "{cg}:n:*")) do number_key = k end
        clock.now = clock.now + 1
        assert_limited(select(2, send(c)), "sends_total")
        assert.equals(1, server.cli("LLEN", number_key))
        clock.now = clock.now + 59
        assert(send(c))
        assert.equals(2, server.cli("LLEN", number_key))
        assert_limited(select(2, send(c)), "sends_per_number")
      end)

      it("has no double limit at a window edge (fake clock, real Redis)", function()
        local clock = fake_clock()
        local c = client{ sends_per_number = { 3, 600 }, clock = clock.fn, redis = kind.opts() }
        clock.now = clock.now + 599
        for _ = 1, 3 do assert(send(c)) end
        clock.now = clock.now + 1
        local _, err = send(c)
        assert_limited(err, "sends_per_number")
        assert.equals(599, err.retry_after)
        clock.now = clock.now + 599
        assert(send(c))
        assert.equals(4, #sandbox.outbox(NUMBER))
      end)

      it("counts a resend made by another process against the number it was sent to", function()
        local a = client{ sends_per_number = { 3, 600 }, redis = kind.opts() }
        local b = client{ sends_per_number = { 3, 600 }, redis = kind.opts() }
        local sent = assert(send(a))
        assert(b.otp.resend{ otp_id = sent.otp_id })
        assert(b.otp.resend{ otp_id = sent.otp_id })
        assert_limited(select(2, b.otp.resend{ otp_id = sent.otp_id }), "sends_per_number")
        assert_limited(select(2, send(a)), "sends_per_number")
      end)

      it("with Redis stopped: closed refuses and sends nothing, open lets calls through; "
        .. "back up, it counts again without a restart", function()
        local closed = client{ sends_per_number = { 2, 600 }, redis = kind.opts() }
        local open = client{ sends_per_number = { 2, 600 }, on_store_error = "open", redis = kind.opts() }
        assert(send(closed))
        assert(send(open, "+15557654321"))
        server.stop()
        local before = #sandbox.requests()
        for _ = 1, 3 do
          local _, err = send(closed)
          assert_limited(err, "store")
          assert.equals(1, err.retry_after)
          assert.matches("redis", err.message)
        end
        assert.equals(before, #sandbox.requests())
        for _ = 1, 3 do assert(send(open, "+15557654321")) end
        assert.equals(4, #sandbox.outbox("+15557654321"))
        server.start()
        -- the same clients (no persistence: the restarted Redis starts empty)
        assert(send(closed))
        assert(send(closed))
        assert_limited(select(2, send(closed)), "sends_per_number")
        assert(send(open, "+15557654321"))
        assert(send(open, "+15557654321"))
        assert_limited(select(2, send(open, "+15557654321")), "sends_per_number")
      end)

      it("never waits on a hung Redis longer than its timeouts", function()
        local c = client{ sends_per_number = { 5, 600 }, redis = kind.opts{ timeout = 0.1, connect_timeout = 0.1 } }
        assert(send(c))
        server.pause()
        local ok, err = pcall(function()
          for _ = 1, 2 do -- on the kept connection, then on a new one
            local t0 = socket.gettime()
            local _, e = send(c)
            local took = socket.gettime() - t0
            assert_limited(e, "store")
            -- 0.1 s each for connect and command; generous for a loaded machine
            assert.is_true(took < 1.5, ("waited %.2f s"):format(took))
          end
        end)
        server.resume()
        assert(ok, err)
        assert(send(c))
      end)
    end)
  end

  if HAS_LUA_REDIS then
    it("logs in with password and db, and keeps its keys under its prefix (lua-redis)", function()
      server.cli("CONFIG", "SET", "requirepass", "s3cret")
      local ok, err = pcall(function()
        local c = client{ sends_per_number = { 1, 600 },
          redis = { port = server.port, password = "s3cret", db = 3, prefix = "{app}:" } }
        assert(send(c))
        assert_limited(select(2, send(c)), "sends_per_number")
        -- without the password: a store failure, refused (closed)
        local stranger = client{ sends_per_number = { 1, 600 }, redis = { port = server.port } }
        local _, e = send(stranger, "+15557654321")
        assert_limited(e, "store")
        -- (Redis 7 answers a long unauthenticated command with a protocol error)
        assert.is_truthy(e.message:find("NOAUTH", 1, true) or e.message:find("unauthenticated", 1, true), e.message)
      end)
      local admin = assert(rh.connect(server.port))
      assert(admin:call("AUTH", "s3cret"))
      local keys = admin:call("SELECT", "3") and admin:call("KEYS", "*")
      assert(admin:call("CONFIG", "SET", "requirepass", ""))
      admin:close()
      assert(ok, err)
      assert.is_true(#keys >= 1)
      for _, k in ipairs(keys) do assert.matches("^{app}:", k) end
      assert.same({}, server.cli("KEYS", "*")) -- nothing in db 0
    end)

    it("holds one limit across two plain-Lua OS processes using lua-redis", function()
      local LIMIT, EACH = 4, 50
      local script = os.tmpname()
      shell.write_file(script, ([[
        local contiguity = require("contiguity")
        local rh = require("spec.helpers.redis")
        local port = %d
        local c = contiguity.new(%q, { base_url = %q, guard = { key = %q,
          sends_per_number = { %d, 600 }, redis = { port = port, timeout = 2 } } })
        local barrier = assert(rh.connect(port, 20))
        barrier:call("BLPOP", "spec:go", 20)
        local sent, limited, other = 0, 0, 0
        for _ = 1, %d do
          local res, err = c.otp.new{ to = %q, language = "en", name = "MyApp" }
          if res then sent = sent + 1
          elseif err.kind == "limited" and err.limit == "sends_per_number" then limited = limited + 1
          else other = other + 1; io.stderr:write(tostring(err), "\n") end
        end
        print(sent .. " " .. limited .. " " .. other)
      ]]):format(server.port, sandbox.TOKEN, sandbox.url(), KEY, LIMIT, EACH, NUMBER))
      local lua = os.getenv("CONTIGUITY_SPEC_LUA") or "lua5.1"
      local run = lua .. " " .. shell.quote(script)
      local p = assert(io.popen("(" .. run .. " & " .. run .. " & wait) 2>&1"))
      -- both processes wait at the barrier (blocked in BLPOP), then go at once
      local deadline = socket.gettime() + 20
      while tonumber(server.cli("INFO", "clients"):match("blocked_clients:(%d+)")) < 2 do
        if socket.gettime() > deadline then
          server.cli("RPUSH", "spec:go", 1, 1)
          error("the two processes did not reach the barrier: " .. p:read("*a"))
        end
        socket.sleep(0.01)
      end
      server.cli("RPUSH", "spec:go", 1, 1)
      local out = p:read("*a")
      p:close()
      os.remove(script)
      local sent, limited = 0, 0
      for s, l, o in out:gmatch("(%d+) (%d+) (%d+)") do
        sent, limited = sent + tonumber(s), limited + tonumber(l)
        assert.equals("0", o, out)
      end
      assert.equals(LIMIT, sent, out)
      assert.equals(2 * EACH - LIMIT, limited, out)
      assert.equals(LIMIT, #sandbox.outbox(NUMBER))
    end)
  else
    pending("two plain-Lua OS processes using lua-redis: lua-redis does not load on " .. _VERSION)
  end
end)
