-- bench/resty_handler.lua: the nginx handler bench/run.sh drives with wrk: decode the request body, otp.verify through contiguity.resty, answer the result as JSON.
local cjson = require("cjson")
local resty = require("contiguity.resty")

local M = {}
local client, noio_client -- one each per worker

-- The handler: decode the request, call, answer the result as JSON.
local function handle(c)
  ngx.req.read_body()
  local params = cjson.decode(ngx.req.get_body_data() or "{}")
  local res, err = c.otp.verify{ otp_id = params.otp_id, otp = params.otp }
  ngx.header["Content-Type"] = "application/json"
  if not res then
    ngx.status = 502
    ngx.say(cjson.encode{ error = tostring(err) })
    return
  end
  ngx.say(cjson.encode(res))
end

function M.verify()
  client = client or resty.new(ngx.var.bench_token, { base_url = ngx.var.bench_base_url })
  handle(client)
end

-- Diagnostic: the same handler on a client whose transport answers the
-- envelope (ngx.var.bench_envelope) at once, no subrequest: the module's
-- build, glue and decode on top of the handler's own work.
function M.noio()
  if not noio_client then
    local envelope = ngx.var.bench_envelope
    noio_client = require("contiguity").new(ngx.var.bench_token, { base_url = ngx.var.bench_base_url,
      transport = function() return 200, envelope, {} end })
  end
  handle(noio_client)
end

-- Diagnostic: the handler's own work without any call: decode the request
-- body, answer a result of the same shape as JSON.
function M.handler_only()
  ngx.req.read_body()
  local params = cjson.decode(ngx.req.get_body_data() or "{}")
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode{ verified = false, metadata = { id = params.otp_id, timestamp = 0,
    api_version = "-", object = "response" } })
end

-- Diagnostic: the subrequest contiguity.resty makes, without the module:
-- the request body straight to the proxy_pass location, its body back.
function M.capture()
  ngx.req.read_body()
  local res = ngx.location.capture("/proxy/otp/verify", { method = ngx.HTTP_POST, body = ngx.req.get_body_data() })
  ngx.header["Content-Type"] = "application/json"
  ngx.status = res.status
  ngx.print(res.body)
end

return M
