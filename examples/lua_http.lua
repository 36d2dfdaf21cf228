-- examples/lua_http.lua: the transport option with lua-http on cqueues: several OTP calls in
-- flight in one OS thread, each in its own cqueues coroutine (doc/transports.md).
--
--   sandbox/start 8931
--   CONTIGUITY_BASE_URL=http://127.0.0.1:8931 LUA_CPATH='build/5.1/?.so;;' lua5.1 examples/lua_http.lua
--
-- Debian's lua-http loads on Lua 5.1, 5.2 and LuaJIT (its 5.3 files miss lpeg_patterns, and
-- there are none for 5.4).
local contiguity = require "contiguity"
local cqueues = require "cqueues"
local http_request = require "http.request"

-- The transport: req (method, url, headers, body, timeout) in, status, body, headers out,
-- or nil and a message ("... timed out" becomes err.kind "timeout"). Inside a cqueues
-- coroutine, waiting on the socket yields to the controller.
local function transport(req)
  local r = http_request.new_from_uri(req.url)
  r.headers:upsert(":method", req.method)
  for name, value in pairs(req.headers) do r.headers:upsert(name:lower(), value) end
  if req.body then r:set_body(req.body) end
  local deadline = cqueues.monotime() + req.timeout
  local headers, stream = r:go(req.timeout)
  if not headers then return nil, tostring(stream) end
  local body, err = stream:get_body_as_string(math.max(0, deadline - cqueues.monotime()))
  stream:shutdown()
  if not body then return nil, tostring(err) end
  local out = {}
  for name, value in headers:each() do
    if name:sub(1, 1) ~= ":" then out[name] = value end
  end
  return tonumber(headers:get(":status")), body, out
end

local client = contiguity.new(os.getenv("CONTIGUITY_API_KEY") or "contiguity_sk_sandbox", {
  transport = transport,
  timeout = 5,
})

-- Four logins at once: send a code to each number, then check a wrong code.
local numbers = { "+15550000001", "+15550000002", "+15550000003", "+15550000004" }
local cq = cqueues.new()
local failed = 0
for i, number in ipairs(numbers) do
  cq:wrap(function()
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
  end)
end
assert(cq:loop())
io.stdout:flush()
os.exit(failed == 0 and 0 or 1)
