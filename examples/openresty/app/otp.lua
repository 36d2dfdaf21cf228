-- app/otp.lua: an HTTP API that sends and checks one-time codes from OpenResty / nginx
-- with contiguity.resty (doc/openresty.md). Copy it to /etc/nginx/lua/app/otp.lua for
-- examples/openresty/nginx.conf.
--
--   POST /otp/start {"phone": "+15551234567"}            -> 200 {"otp_id": "..."}
--   POST /otp/check {"otp_id": "...", "code": "123456"}  -> 200 {"verified": true|false}
--
-- Failures answer {"error": {"kind", "message", "field"?}} with the status an HTTP API
-- should give: a malformed body or invalid input 400, an unknown otp_id 404, too many
-- codes 429 (with Retry-After), the API failing 502, unreachable 503, too slow 504.
local cjson = require "cjson.safe"
local resty = require "contiguity.resty"

local M = {}

local client -- one per worker; it holds no connection itself (nginx's upstream keeps them)

local function otp()
  client = client or resty.new(os.getenv("CONTIGUITY_API_KEY"), {
    -- location = "/_contiguity",          -- the default: nginx/location.conf
    -- at most 3 codes per number in 10 minutes, shared by every worker (doc/guard.md)
    guard = { shared = "contiguity_guard", sends_per_number = { 3, 600 } },
  })
  return client.otp
end

local function reply(status, body, headers)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  for k, v in pairs(headers or {}) do ngx.header[k] = v end
  ngx.say(cjson.encode(body))
  return ngx.exit(status)
end

-- The HTTP status for a contiguity error.
local function status_of(err)
  if err.kind == "invalid" then return 400 end
  if err.kind == "limited" then return 429 end
  if err.kind == "timeout" then return 504 end
  if err.kind == "network" then return 503 end
  if err.kind == "api" then
    if err.status == 404 then return 404 end -- no such otp_id (or session)
    if err.status == 429 then return 429 end -- the API's own rate limit
    if err.status == 400 or err.status == 422 then return 400 end
  end
  return 502 -- the API failed (5xx), refused our token (401/403), or sent something odd
end

-- The module's parameter names, as this API calls them.
local FIELDS = { to = "phone", otp = "code", otp_id = "otp_id" }

local function fail(err)
  local status = status_of(err)
  -- the whole error in the log (never the token); the client gets what it can act on
  ngx.log(status >= 500 and ngx.ERR or ngx.INFO, tostring(err))
  local headers
  if status == 429 or status == 503 then
    headers = { ["Retry-After"] = tostring(math.ceil(err.retry_after or 1)) }
  end
  local message = err.message
  if status >= 500 then message = "the OTP service is unavailable, try again later" end
  return reply(status, { error = { kind = err.kind, message = message, field = FIELDS[err.field] } }, headers)
end

-- The request body as a JSON object, or a 400 answer.
local function body()
  ngx.req.read_body()
  local raw = ngx.req.get_body_data()
  if raw == nil and ngx.req.get_body_file() then
    return reply(413, { error = { kind = "invalid", message = "the body is too large" } })
  end
  local t = raw and cjson.decode(raw)
  if type(t) ~= "table" or t[1] ~= nil then
    return reply(400, { error = { kind = "invalid", message = "the body must be a JSON object" } })
  end
  return t
end

-- A string field of the body, else nil (the module then says it is missing or wrong).
local function str(v)
  return type(v) == "string" and v or nil
end

-- POST /otp/start {"phone": "+15551234567"}
function M.start()
  local b = body()
  local res, err = otp().new{ to = str(b.phone), language = "en", name = "MyApp" }
  if not res then return fail(err) end
  return reply(200, { otp_id = res.otp_id })
end

-- POST /otp/check {"otp_id": "...", "code": "123456"}
function M.check()
  local b = body()
  local res, err = otp().verify{ otp_id = str(b.otp_id), otp = str(b.code) }
  if not res then return fail(err) end
  return reply(200, { verified = res.verified })
end

return M
