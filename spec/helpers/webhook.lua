-- Webhook signatures computed independently of the module, for the webhook specs.
local shell = require "spec.helpers.shell"

local M = {}

-- Lowercase hex HMAC-SHA256 of msg under key, by `openssl dgst`, never by
-- the module under test. The message goes through a file (any bytes).
function M.openssl_hmac(key, msg)
  local name = os.tmpname()
  shell.write_file(name, msg)
  assert(not key:find("'", 1, true), "test keys never hold a quote")
  local p = assert(io.popen("openssl dgst -sha256 -hmac '" .. key .. "' '" .. name .. "' 2>&1"))
  local out = p:read("*a")
  p:close()
  os.remove(name)
  local hex = out:match("= ?(%x+)%s*$")
  assert(hex and #hex == 64, "openssl dgst said: " .. out)
  return hex:lower()
end

-- A Contiguity-Signature header for body at time t under key.
function M.header(t, key, body)
  return "t=" .. t .. ",v1=" .. M.openssl_hmac(key, t .. "." .. body)
end

function M.is_integer_valued(v)
  if math.type then return math.type(v) == "integer" end
  return type(v) == "number" and v == math.floor(v)
end

return M
