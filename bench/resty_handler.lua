-- bench/resty_handler.lua: the nginx handler bench/run.sh drives with wrk: decode the request body, otp.verify through contiguity.resty, answer the result as JSON.
local cjson = require("cjson")
local resty = require("contiguity.resty")

local M = {}
local client -- one per worker

function M.verify()
  client = client or resty.new(ngx.var.bench_token, { base_url = ngx.var.bench_base_url })
  ngx.req.read_body()
  local params = cjson.decode(ngx.req.get_body_data() or "{}")
  local res, err = client.otp.verify{ otp_id = params.otp_id, otp = params.otp }
  ngx.header["Content-Type"] = "application/json"
  if not res then
    ngx.status = 502
    ngx.say(cjson.encode{ error = tostring(err) })
    return
  end
  ngx.say(cjson.encode(res))
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
