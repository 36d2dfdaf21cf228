-- examples/copas.lua: the transport option under copas: several OTP calls in flight in one
-- OS thread, each in its own copas coroutine, over LuaSocket's HTTP client on sockets that
-- yield to copas instead of blocking (doc/transports.md).
--
--   sandbox/start 8931
--   CONTIGUITY_BASE_URL=http://127.0.0.1:8931 LUA_CPATH='build/5.1/?.so;;' lua5.1 examples/copas.lua
--
-- Debian's lua-copas is copas 1.1.7 (Lua 5.1, 5.2 and LuaJIT): it has no copas.http and no
-- timeouts, so the yielding socket below is the few lines copas.http adds in later copas
-- versions, and req.timeout is not enforced (a stalled API stalls that coroutine only).
local contiguity = require "contiguity"
local copas = require "copas"
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"

-- A TCP socket for socket.http whose connect, send and receive yield to copas.
local function copas_tcp()
  local sock, err = socket.tcp()
  if not sock then return nil, err end
  local s = {}
  function s:settimeout() return 1 end -- copas 1.x has no timeouts
  function s:setoption(...) return sock:setoption(...) end
  function s:connect(host, port) return copas.connect(sock, host, port) end
  function s:send(data, i, j) return copas.send(sock, data, i, j) end
  function s:receive(pattern, prefix) return copas.receive(sock, pattern, prefix) end
  function s:close() return sock:close() end
  function s:getfd() return sock:getfd() end
  function s:dirty() return sock:dirty() end
  return s
end

-- The transport: req (method, url, headers, body, timeout) in, status, body, headers out,
-- or nil and a message. It yields inside copas coroutines, blocking nothing else.
local function transport(req)
  local headers = {}
  for k, v in pairs(req.headers) do headers[k] = v end
  if req.body then headers["Content-Length"] = tostring(#req.body) end
  local chunks = {}
  local ok, status, resp_headers = http.request{
    url = req.url,
    method = req.method,
    headers = headers,
    source = req.body and ltn12.source.string(req.body) or nil,
    sink = ltn12.sink.table(chunks),
    create = copas_tcp,
  }
  if not ok then return nil, tostring(status) end -- "connection refused", "closed", ...
  return status, table.concat(chunks), resp_headers
end

local client = contiguity.new(os.getenv("CONTIGUITY_API_KEY") or "contiguity_sk_sandbox", {
  transport = transport,
})

-- Four logins at once: send a code to each number, then check a wrong code.
local numbers = { "+15550000001", "+15550000002", "+15550000003", "+15550000004" }
local finished, failed = 0, 0
for i, number in ipairs(numbers) do
  copas.addthread(function()
    print("start " .. i)
    local sent, err = client.otp.new{ to = number, language = "en", name = "MyApp" }
    local v
    if sent then v, err = client.otp.verify{ otp_id = sent.otp_id, otp = "000000" } end
    if v then
      print("done " .. i .. " " .. sent.otp_id .. " verified=" .. tostring(v.verified))
    else
      failed = failed + 1
      print("failed " .. i .. ": " .. tostring(err))
    end
    finished = finished + 1
  end)
end
-- copas 1.x's copas.loop() never returns: step until every login has finished
while finished < #numbers do copas.step(1) end
io.stdout:flush()
os.exit(failed == 0 and 0 or 1)
