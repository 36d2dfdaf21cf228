-- guard_resty_spec.lua: the guard inside real nginx. One nginx with two
-- workers and a lua_shared_dict: concurrent requests served by both workers
-- never send more than the per-number limit; the window cases on the real
-- dict; a full dict is never evicted from for the hashing key (safe_add).
-- Two separate nginx instances (two masters, two workers each, no shared
-- dict) and one redis-server: 100 concurrent sends spread over both, exactly
-- the limit reaches the sandbox; connections go back to the cosocket pool;
-- Redis stopped and restarted mid-run; the window cases through resty.redis.
-- The spec only speaks HTTP to those nginx, so it runs under every Lua;
-- nginx loads build/jit/contiguity.so (and Debian's lua-nginx-redis).
local cjson = require("cjson")
local sandbox = require("spec.helpers.sandbox")
local nginx = require("spec.helpers.nginx")
local shell = require("spec.helpers.shell")
local rh = require("spec.helpers.redis")
local http = require("spec.helpers.http")

local NUMBER = "+15551234567"
local LIMIT = 3
local KEY = "spec guard key"
local SANDBOX_PORT = tonumber(sandbox.url():match(":(%d+)$"))
local PORT = tonumber(os.getenv("CONTIGUITY_GUARD_RESTY_PORT") or "") or SANDBOX_PORT + 102
local BASE = "http://127.0.0.1:" .. PORT

local redis = rh.server()

-- Fills the common parts of an http block.
local function conf(text, instance)
  return (text:gsub("LOCATION", function() return nginx.api_location("/_contiguity", "127.0.0.1:SANDBOX") end)
    :gsub("SANDBOX", tostring(SANDBOX_PORT)):gsub("TOKEN", sandbox.TOKEN):gsub("LIMIT", tostring(LIMIT))
    :gsub("REDIS", tostring(redis.port)):gsub("INSTANCE", instance or "-"):gsub("KEY", KEY))
end

-- The window cases of spec/helpers/guard_windows.lua, which the nginx
-- helper does not copy: put next to what it did copy, before first use.
local function add_windows(server)
  assert(shell.run("cp " .. shell.quote(shell.REPO .. "/spec/helpers/guard_windows.lua") .. " "
    .. shell.quote(server.prefix .. "/lua/spec/helpers/")))
end

-- Two workers sharing one lua_shared_dict. Each worker makes its client on
-- first use; the handler waits at a barrier until the whole batch has
-- arrived, so that the calls overlap in both workers. reuseport makes the
-- kernel spread connections over the workers.
local shared = nginx.new{ name = "guard-spec", port = PORT, workers = 2, http = conf([[
    lua_shared_dict contiguity_guard 1m;
    lua_shared_dict spec_barrier 100k;
    lua_shared_dict spec_windows 1m;
    lua_shared_dict spec_tiny 64k;

    server {
        listen 127.0.0.1:PORT reuseport;

LOCATION
        location = /send {
            content_by_lua_block {
                local cjson = require("cjson")
                local c = package.loaded.guard_spec_client
                if not c then
                    c = require("contiguity.resty").new("TOKEN", { guard = {
                        sends_per_number = { LIMIT, 600 }, shared = "contiguity_guard" } })
                    package.loaded.guard_spec_client = c
                end
                -- a barrier: no call goes out before all n requests of the
                -- batch have arrived, so they overlap in both workers
                local barrier, key = ngx.shared.spec_barrier, "arrived:" .. ngx.var.arg_to
                local n = tonumber(ngx.var.arg_n)
                barrier:incr(key, 1, 0)
                local deadline = ngx.now() + 5
                while barrier:get(key) < n and ngx.now() < deadline do ngx.sleep(0.001); ngx.update_time() end
                local res, err = c.otp.new{ to = ngx.unescape_uri(ngx.var.arg_to), language = "en", name = "MyApp" }
                ngx.say(cjson.encode{ worker = ngx.worker.id(), sent = res ~= nil,
                                      kind = err and err.kind, limit = err and err.limit })
            }
        }

        # the window cases on the real dict, each case under its own prefix
        location = /windows {
            content_by_lua_block {
                local windows = require("spec.helpers.guard_windows")
                local guard = require("contiguity.guard")
                local n = 0
                local failures = windows.run_all(function()
                    n = n + 1
                    return guard.shared_store(ngx.shared.spec_windows, { prefix = "w" .. n .. ":" })
                end)
                ngx.say(require("cjson").encode{ cases = n, failures = failures })
            }
        }

        # a dict with no room left: the guard must not evict a key for its own
        location = /full {
            content_by_lua_block {
                local dict = ngx.shared.spec_tiny
                dict:flush_all()
                local n = 0
                -- every slab size class full, down to the smallest value
                for _, size in ipairs{ 1000, 100, 32, 8, 1 } do
                    while dict:safe_set("filler" .. n, string.rep("x", size)) do n = n + 1 end
                end
                local ok, err = pcall(require("contiguity.resty").new, "TOKEN",
                    { guard = { sends_per_number = { 1, 60 }, shared = "spec_tiny" } })
                local present = 0
                for i = 0, n - 1 do if dict:get("filler" .. i) then present = present + 1 end end
                ngx.say(require("cjson").encode{ filled = n, present = present, made = ok,
                                                 err = not ok and tostring(err) or nil })
            }
        }

        # the blocking libcurl client cannot yield to a cosocket store: a
        # refusal that says so, never a raised error
        location = /blocking_redis {
            content_by_lua_block {
                local c = require("contiguity").new("TOKEN", { base_url = "http://127.0.0.1:SANDBOX",
                    guard = { sends_per_number = { 5, 60 }, redis = { port = REDIS }, key = "KEY" } })
                local ok, res, err = pcall(c.otp.new, { to = "+15550000001", language = "en", name = "A" })
                c:close()
                ngx.say(require("cjson").encode{ raised = not ok and tostring(res) or nil, sent = ok and res ~= nil,
                    kind = err and err.kind, limit = err and err.limit, message = err and err.message })
            }
        }
    }
]]) }

-- One of two separate nginx instances sharing one Redis and nothing else.
-- The barrier is in Redis too, so that the calls of both overlap.
local function redis_instance(name)
  local port = rh.free_port()
  return nginx.new{ name = "guard-redis-" .. name, port = port, workers = 2, http = conf([[
    server {
        listen 127.0.0.1:PORT reuseport;

LOCATION
        location = /send {
            content_by_lua_block {
                local cjson = require("cjson")
                local c = package.loaded.guard_spec_client
                if not c then
                    c = require("contiguity.resty").new("TOKEN", { guard = { key = "KEY",
                        sends_per_number = { LIMIT, 600 }, redis = { port = REDIS, timeout = 1 } } })
                    package.loaded.guard_spec_client = c
                end
                local redis = require("nginx.redis")
                local r = redis:new()
                r:set_timeout(5000)
                assert(r:connect("127.0.0.1", REDIS))
                local key = "spec:arrived:" .. ngx.var.arg_round
                r:incr(key)
                local n = tonumber(ngx.var.arg_n)
                local deadline = ngx.now() + 5
                while tonumber(r:get(key)) < n and ngx.now() < deadline do ngx.sleep(0.001); ngx.update_time() end
                r:set_keepalive(10000, 16)
                local res, err = c.otp.new{ to = ngx.unescape_uri(ngx.var.arg_to), language = "en", name = "MyApp" }
                ngx.say(cjson.encode{ instance = "INSTANCE", worker = ngx.worker.id(), sent = res ~= nil,
                                      kind = err and err.kind, limit = err and err.limit })
            }
        }

        # one send per request, with the store-failure policy the request names
        location = /policy {
            content_by_lua_block {
                local policy = ngx.var.arg_policy
                local clients = package.loaded.guard_spec_policy or {}
                package.loaded.guard_spec_policy = clients
                clients[policy] = clients[policy] or require("contiguity.resty").new("TOKEN", { guard = {
                    key = "KEY", sends_per_number = { 2, 600 }, on_store_error = policy,
                    redis = { port = REDIS, timeout = 0.2, connect_timeout = 0.2 } } })
                local res, err = clients[policy].otp.new{ to = ngx.unescape_uri(ngx.var.arg_to),
                    language = "en", name = "MyApp" }
                ngx.say(require("cjson").encode{ sent = res ~= nil, kind = err and err.kind,
                    limit = err and err.limit, retry_after = err and err.retry_after, message = err and err.message })
            }
        }

        # the window cases through resty.redis (fake clock: the script's now)
        location = /windows {
            content_by_lua_block {
                local windows = require("spec.helpers.guard_windows")
                local guard = require("contiguity.guard")
                local n = 0
                local failures = windows.run_all(function()
                    n = n + 1
                    return guard.redis_store{ port = REDIS, prefix = "{w" .. n .. "}:" }
                end)
                ngx.say(require("cjson").encode{ cases = n, failures = failures })
            }
        }
    }
]], name) }
end

local function get_json(url)
  local status, body = http.json("GET", url)
  assert.equals(200, status, tostring(body))
  return body
end

-- GET every URL at once (curl --parallel, one connection each): the decoded answers.
local function concurrent(urls)
  local answers = {}
  -- (curl's --parallel progress meter comes on stderr even with -s)
  for line in nginx.parallel(urls):gmatch("{[^\n]*}") do answers[#answers + 1] = cjson.decode(line) end
  assert.equals(#urls, #answers)
  return answers
end

describe("guard in nginx with two workers and a lua_shared_dict", function()
  setup(function()
    shared.start()
    add_windows(shared)
  end)
  teardown(shared.stop)
  before_each(function() sandbox.reset() end)

  it("never sends more than the per-number limit, whichever worker serves", function()
    local workers, sent, limited = {}, 0, 0
    -- two rounds on two numbers: each number's count is shared by both workers
    for round, number in ipairs{ NUMBER, "+15557654321" } do
      local urls = {}
      for i = 1, 24 do urls[i] = ("%s/send?to=%s&n=24&i=%d"):format(BASE, sandbox.escape(number), i) end
      local round_sent = 0
      for _, a in ipairs(concurrent(urls)) do
        workers[a.worker] = (workers[a.worker] or 0) + 1
        if a.sent then
          round_sent = round_sent + 1
        else
          assert.equals("limited", a.kind)
          assert.equals("sends_per_number", a.limit)
          limited = limited + 1
        end
      end
      assert.equals(LIMIT, round_sent, "round " .. round)
      assert.equals(LIMIT, #sandbox.outbox(number))
      sent = sent + round_sent
    end
    assert.is_number(workers[0], "worker 0 served nothing")
    assert.is_number(workers[1], "worker 1 served nothing")
    assert.equals(2 * LIMIT, sent)
    assert.equals(48 - 2 * LIMIT, limited)
    assert.equals(2 * LIMIT, #sandbox.outbox())
  end)

  it("passes the sliding-window cases on a real lua_shared_dict", function()
    local r = get_json(BASE .. "/windows")
    assert.is_true(r.cases >= 7)
    assert.same({}, r.failures)
  end)

  it("never evicts another key of a full dict for its hashing key: contiguity.new says so", function()
    local r = get_json(BASE .. "/full")
    assert.is_true(r.filled > 10)
    assert.equals(r.filled, r.present)
    assert.is_false(r.made)
    assert.matches("cannot keep the guard's hashing key in the lua_shared_dict", r.err, 1, true)
  end)

  it("refuses, and says why, a cosocket Redis store under the blocking libcurl client", function()
    local r = get_json(BASE .. "/blocking_redis")
    assert.is_nil(r.raised)
    assert.is_false(r.sent)
    assert.equals("limited", r.kind)
    assert.equals("store", r.limit)
    assert.matches("contiguity.resty", r.message, 1, true)
    assert.equals(0, #sandbox.requests())
  end)
end)

describe("guard in two nginx instances sharing one Redis", function()
  local a, b = redis_instance("a"), redis_instance("b")
  setup(function()
    redis.start()
    a.start()
    b.start()
    add_windows(a)
  end)
  teardown(function()
    a.stop()
    b.stop()
    redis.remove()
  end)
  before_each(function()
    sandbox.reset()
    redis.cli("FLUSHALL")
  end)

  it("lets exactly the limit through of 100 concurrent sends spread over both", function()
    for round, number in ipairs{ NUMBER, "+15557654321" } do
      local urls = {}
      for i = 1, 100 do
        urls[i] = ("%s/send?to=%s&n=100&round=%d&i=%d"):format(i % 2 == 0 and a.base or b.base,
          sandbox.escape(number), round, i)
      end
      local sent, by = 0, {}
      for _, r in ipairs(concurrent(urls)) do
        by[r.instance .. ("%d"):format(r.worker)] = true
        if r.sent then
          sent = sent + 1
        else
          assert.equals("limited", r.kind)
          assert.equals("sends_per_number", r.limit)
        end
      end
      assert.equals(LIMIT, sent, "round " .. round)
      assert.equals(LIMIT, #sandbox.outbox(number))
      assert.is_true(by.a0 or by.a1, "instance a served nothing")
      assert.is_true(by.b0 or by.b1, "instance b served nothing")
    end
    assert.equals(2 * LIMIT, #sandbox.outbox())
  end)

  it("returns its Redis connections to the cosocket pool (set_keepalive)", function()
    local function connections()
      return tonumber(redis.cli("INFO", "stats"):match("total_connections_received:(%d+)"))
    end
    local function send(server, i)
      return get_json(("%s/policy?policy=closed&to=%s"):format(server.base, sandbox.escape("+1555001" .. 1000 + i)))
    end
    for i = 1, 8 do assert.is_true(send(i % 2 == 0 and a or b, i).sent) end -- every worker has one now
    local before = connections()
    for i = 9, 48 do assert.is_true(send(i % 2 == 0 and a or b, i).sent) end
    -- 40 checks and records, one after another: no new connection (a
    -- worker that served none of the first 8 may open its first)
    assert.is_true(connections() - before <= 4, (connections() - before) .. " new connections")
  end)

  it("passes the sliding-window cases through resty.redis", function()
    local r = get_json(a.base .. "/windows")
    assert.is_true(r.cases >= 7)
    assert.same({}, r.failures)
  end)

  it("with Redis stopped: closed refuses and sends nothing, open lets calls through; back up, it counts again",
    function()
      local function send(server, policy, to)
        return get_json(("%s/policy?policy=%s&to=%s"):format(server.base, policy, sandbox.escape(to)))
      end
      local OTHER = "+15557654321"
      assert.is_true(send(a, "closed", NUMBER).sent)
      assert.is_true(send(b, "open", OTHER).sent)
      redis.stop()
      local before = #sandbox.requests()
      for _, server in ipairs{ a, b, a, b } do
        local r = send(server, "closed", NUMBER)
        assert.is_false(r.sent)
        assert.equals("limited", r.kind)
        assert.equals("store", r.limit)
        assert.equals(1, r.retry_after)
        assert.matches("redis", r.message)
      end
      assert.equals(before, #sandbox.requests())
      for _, server in ipairs{ a, b, a, b } do assert.is_true(send(server, "open", OTHER).sent) end
      assert.equals(5, #sandbox.outbox(OTHER))
      redis.start() -- empty (no persistence), on the same port: no nginx restart
      assert.is_true(send(a, "closed", NUMBER).sent)
      assert.is_true(send(b, "closed", NUMBER).sent)
      local r = send(a, "closed", NUMBER)
      assert.is_false(r.sent)
      assert.equals("sends_per_number", r.limit)
    end)
end)
