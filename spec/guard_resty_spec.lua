-- guard_resty_spec.lua: contiguity.resty with `guard = { shared = ... }` in a
-- real nginx with two workers and one lua_shared_dict: concurrent requests
-- served by both workers never send more than the per-number limit in
-- total. The spec only speaks HTTP to that nginx, so it runs under every
-- Lua; nginx loads build/jit/contiguity.so.
local cjson = require("cjson")
local sandbox = require("spec.helpers.sandbox")
local nginx = require("spec.helpers.nginx")

local NUMBER = "+15551234567"
local LIMIT = 3
local SANDBOX_PORT = tonumber(sandbox.url():match(":(%d+)$"))
local PORT = tonumber(os.getenv("CONTIGUITY_GUARD_RESTY_PORT") or "") or SANDBOX_PORT + 102
local BASE = "http://127.0.0.1:" .. PORT

-- Two workers sharing one lua_shared_dict. Each worker makes its client on
-- first use; the handler waits at a barrier until the whole batch has
-- arrived, so that the calls overlap in both workers. reuseport makes the
-- kernel spread connections over the workers.
local server = nginx.new{ name = "guard-spec", port = PORT, workers = 2, http = ([[
    lua_shared_dict contiguity_guard 1m;
    lua_shared_dict spec_barrier 100k;

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
    }
]]):gsub("LOCATION", function() return nginx.api_location("/_contiguity", "127.0.0.1:SANDBOX") end)
  :gsub("SANDBOX", tostring(SANDBOX_PORT)):gsub("TOKEN", sandbox.TOKEN):gsub("LIMIT", tostring(LIMIT)) }

-- n concurrent GET /send?to=number (curl --parallel, one connection each):
-- the decoded answers.
local function concurrent(n, number)
  local urls = {}
  for i = 1, n do urls[i] = ("%s/send?to=%s&n=%d&i=%d"):format(BASE, sandbox.escape(number), n, i) end
  local answers = {}
  -- (curl's --parallel progress meter comes on stderr even with -s)
  for line in nginx.parallel(urls):gmatch("{[^\n]*}") do answers[#answers + 1] = cjson.decode(line) end
  assert.equals(n, #answers)
  return answers
end

describe("guard in nginx with two workers and a lua_shared_dict", function()
  setup(server.start)
  teardown(server.stop)
  before_each(function() sandbox.reset() end)

  it("never sends more than the per-number limit, whichever worker serves", function()
    local workers, sent, limited = {}, 0, 0
    -- two rounds on two numbers: each number's count is shared by both workers
    for round, number in ipairs{ NUMBER, "+15557654321" } do
      local answers = concurrent(24, number)
      local round_sent = 0
      for _, a in ipairs(answers) do
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
end)
