-- contiguity.resty: the OTP client for OpenResty/nginx handlers, moving bytes
-- through an nginx subrequest (ngx.location.capture) to an internal
-- proxy_pass location, so the nginx worker never blocks. See the README, "OpenResty / nginx".
local contiguity = require("contiguity")

local M = {}

M.DEFAULT_LOCATION = "/_contiguity"

-- ngx.location.capture needs a live request that can still be suspended:
-- these phases only (never init*, set_by_lua*, header/body filters, log,
-- timers, balancer or ssl_* handlers).
local PHASES = { rewrite = true, access = true, content = true }

-- Runs one API request as a subrequest. The path and headers go in the
-- subrequest's own nginx variables (the capture's `vars` option; the
-- internal location declares them with `set $v $v;`), so no header of the
-- client's own request can reach the API, no Lua runs in that location,
-- and the capture URI is always the bare location (the percent-encoded
-- path never goes through nginx's URI decoding).
local function capture(location, req)
  local ngx = ngx
  local phase = ngx.get_phase()
  if not PHASES[phase] then
    error("contiguity.resty: calls need ngx.location.capture, which works only in "
      .. "rewrite_by_lua*, access_by_lua* and content_by_lua* (called from " .. phase .. ")", 0)
  end
  local method = req.method == "GET" and ngx.HTTP_GET or ngx.HTTP_POST
  local h = req.headers
  local res = ngx.location.capture(location, {
    method = method,
    -- POST always gets its own body ("" for none): capture would otherwise
    -- forward the client's request body
    body = method == ngx.HTTP_POST and (req.body or "") or nil,
    vars = {
      contiguity_path = req.path,
      contiguity_authorization = h.Authorization,
      contiguity_user_agent = h["User-Agent"],
    },
  })
  -- nginx's own failures: ngx_lua marks a subrequest `truncated` when it
  -- ended in an error nginx produced (no upstream answer, a timeout) or
  -- when the upstream response stopped early. A complete API response is
  -- never truncated, so the API's own 502/504 still decode as kind "api".
  if res.truncated then
    if res.status == 504 and (res.body or "") == "" then
      return nil, "timed out: nginx gave up waiting for the API (proxy_read_timeout, "
        .. "proxy_connect_timeout or proxy_send_timeout of " .. location .. ")"
    end
    if res.status >= 500 and (res.body or "") == "" then
      return nil, "nginx could not get a response from the API (" .. res.status .. ": connection "
        .. "refused, reset or closed, DNS or TLS failure; see the nginx error log)"
    end
    return nil, "the API closed the connection before the end of the response"
  end
  return res.status, res.body, res.header
end

-- resty.new(token?, opts?): a contiguity client whose calls go through the
-- nginx location opts.location (default "/_contiguity"). Other options are
-- contiguity.new's, except `transport`.
function M.new(token, opts)
  if type(token) == "table" and opts == nil then
    token, opts = nil, token
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("contiguity.resty.new: options must be a table", 2)
  end
  if type(ngx) ~= "table" or type(ngx.location) ~= "table" then
    error("contiguity.resty.new: needs nginx with the Lua module (OpenResty); "
      .. "elsewhere use contiguity.new", 2)
  end
  local location = M.DEFAULT_LOCATION
  local copy = {}
  for k, v in pairs(opts or {}) do
    if k == "location" then
      if type(v) ~= "string" or not v:match("^/[%w%-%._~/]*$") then
        error("contiguity.resty.new: option 'location' must be a location path such as "
          .. "\"/_contiguity\"", 2)
      end
      location = v
    elseif k == "transport" then
      error("contiguity.resty.new: option 'transport' is set by contiguity.resty; "
        .. "use contiguity.new for your own transport", 2)
    else
      copy[k] = v
    end
  end
  copy.transport = function(req) return capture(location, req) end
  return contiguity.new(token, copy)
end

return M
