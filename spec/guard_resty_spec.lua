-- guard_resty_spec.lua: contiguity.resty with `guard = { shared = ... }` in a
-- real nginx with two workers and one lua_shared_dict: concurrent requests
-- served by both workers never send more than the per-number limit in
-- total. The spec only speaks HTTP to that nginx, so it runs under every
-- Lua; nginx loads build/jit/contiguity.so.
local cjson = require("cjson")
local sandbox = require("spec.helpers.sandbox")
local shell = require("spec.helpers.shell")
local nginx = require("spec.helpers.nginx")

local NUMBER = "+15551234567"
local LIMIT = 3
local SANDBOX_PORT = tonumber(sandbox.url():match(":(%d+)$"))
local PORT = tonumber(os.getenv("CONTIGUITY_GUARD_RESTY_PORT") or "") or SANDBOX_PORT + 102
local BASE = "http://127.0.0.1:" .. PORT
local sh = shell.run

-- Two workers sharing one lua_shared_dict. Each worker makes its client on
-- first use; the handler sleeps a little before the call so that requests
-- overlap in both workers. reuseport makes the kernel spread connections
-- over the workers.
local server = nginx.new{ name = "guard-spec", port = PORT, workers = 2, http = ([[
    lua_shared_dict contiguity_guard 1m;

    server {
        listen 127.0.0.1:PORT reuseport;

        location = /_contiguity {
            internal;
            set $contiguity_path $contiguity_path;
            set $contiguity_authorization $contiguity_authorization;
            set $contiguity_user_agent $contiguity_user_agent;
            proxy_pass http://127.0.0.1:SANDBOX$contiguity_path;
            proxy_http_version 1.1;
            proxy_pass_request_headers off;
            proxy_set_header Authorization $contiguity_authorization;
            proxy_set_header Content-Type application/json;
            proxy_set_header Accept application/json;
        }

        location = /send {
            content_by_lua_block {
                local cjson = require("cjson")
                local c = package.loaded.guard_spec_client
                if not c then
                    c = require("contiguity.resty").new("TOKEN", { guard = {
                        sends_per_number = { LIMIT, 600 }, shared = "contiguity_guard" } })
                    package.loaded.guard_spec_client = c
                end
                ngx.sleep(0.05)
                local res, err = c.otp.new{ to = ngx.unescape_uri(ngx.var.arg_to), language = "en", name = "MyApp" }
                ngx.say(cjson.encode{ worker = ngx.worker.id(), sent = res ~= nil,
                                      kind = err and err.kind, limit = err and err.limit })
            }
        }
    }
]]):gsub("SANDBOX", tostring(SANDBOX_PORT)):gsub("TOKEN", sandbox.TOKEN):gsub("LIMIT", tostring(LIMIT)) }

-- n concurrent GET /send?to=number (curl --parallel, one connection each):
-- the decoded answers.
local function concurrent(n, number)
  local list = os.tmpname()
  local f = assert(io.open(list, "w"))
  for i = 1, n do
    f:write(('url = "%s/send?to=%s&i=%d"\n'):format(BASE, sandbox.escape(number), i))
  end
  f:close()
  local ok, out = sh("curl -sS --parallel --parallel-immediate --parallel-max " .. n .. " -K " .. list)
  os.remove(list)
  assert(ok, out)
  local answers = {}
  -- (curl's --parallel progress meter comes on stderr even with -s)
  for line in out:gmatch("{[^\n]*}") do answers[#answers + 1] = cjson.decode(line) end
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
