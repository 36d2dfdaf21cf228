-- Handlers run inside the nginx that spec/integration/resty_spec.lua starts: each makes
-- one OTP call with contiguity.resty (or the blocking libcurl client) and
-- answers JSON {res = ..., err = {...}}. Not used outside that nginx.
local cjson = require("cjson")
local contiguity = require("contiguity")
local resty = require("contiguity.resty")

local M = {}

local clients = {} -- one per location (and one blocking), per worker

local function client(kind)
  local c = clients[kind]
  if c then return c end
  local token = ngx.var.contiguity_token
  if kind == "blocking" then
    c = contiguity.new(token, { base_url = ngx.var.contiguity_sandbox })
  else
    -- base_url is only what the request table and debug lines show: the
    -- bytes go where the location's proxy_pass points
    c = resty.new(token, { location = kind, base_url = ngx.var.contiguity_sandbox })
  end
  clients[kind] = c
  return c
end

local CALLS = {
  new = function(c, a) return c.otp.new(a) end,
  send = function(c, a) return c.otp.send(a) end,
  verify = function(c, a) return c.otp.verify(a) end,
  resend = function(c, a) return c.otp.resend(a) end,
  initiate = function(c, a) return c.otp.reverse.initiate(a) end,
  reverse_verify = function(c, a) return c.otp.reverse.verify(a) end,
  cancel = function(c, a) return c.otp.reverse.cancel(a) end,
}

local function error_table(err)
  if type(err) ~= "table" then return { raised = tostring(err) } end
  local t = {}
  for _, k in ipairs{ "kind", "message", "status", "request_id", "field", "retryable", "op" } do
    t[k] = err[k]
  end
  t.text = tostring(err)
  return t
end

-- POST /t/<call>?client=<location|blocking> with the call's argument as the
-- JSON body (a string for reverse_verify/cancel).
function M.handle()
  local call = CALLS[ngx.var.uri:match("^/t/([%w_]+)$") or ""]
  if not call then return ngx.exit(404) end
  ngx.req.read_body()
  local arg = cjson.decode(ngx.req.get_body_data() or "{}")
  local ok, res, err = pcall(call, client(ngx.var.arg_client or "/_contiguity"), arg)
  ngx.header["Content-Type"] = "application/json"
  if not ok then
    ngx.say(cjson.encode{ err = { raised = tostring(res) } })
  elseif res then
    ngx.say(cjson.encode{ res = res })
  else
    ngx.say(cjson.encode{ err = error_table(err) })
  end
end

-- From set_by_lua (a phase that cannot capture): the error a call raises.
function M.phase_error()
  local ok, err = pcall(client("/_contiguity").otp.verify, { otp_id = "otp_1", otp = "123456" })
  return ok and "no error" or tostring(err)
end

-- The fake API behind /_contiguity_echo: answers every call with the
-- request line and headers it received, in an API envelope.
function M.echo()
  ngx.req.read_body()
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode{
    id = "req_echo", timestamp = 1785380854155, api_version = "v1", object = "response",
    data = { method = ngx.req.get_method(), uri = ngx.var.request_uri,
             headers = ngx.req.get_headers(), body = ngx.req.get_body_data() or "" },
  })
end

return M
