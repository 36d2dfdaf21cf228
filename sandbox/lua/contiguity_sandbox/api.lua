-- The public OTP API as the sandbox serves it (paths under /otp). Each
-- handler returns status, data (a table on success, an error message on
-- failure); the entry module wraps that in the response/error envelope.
local util = require("contiguity_sandbox.util")
local store = require("contiguity_sandbox.store")

local null = util.null
local is_e164 = util.is_e164
local type, tostring = type, tostring

local M = {}

local OTP_TEXT = {
  en = "Your %s code is %s",
  es = "Tu código de %s es %s",
  fr = "Votre code %s est %s",
  de = "Ihr %s-Code lautet %s",
}

local REVERSE_TEXT = {
  en = "Text %s to %s to verify your phone number.",
  es = "Envía %s al %s para verificar tu número de teléfono.",
  fr = "Envoyez %s au %s pour vérifier votre numéro de téléphone.",
  de = "Senden Sie %s an %s, um Ihre Telefonnummer zu bestätigen.",
}

local function lang_of(language)
  return (language:lower():match("^(%a%a)")) or "en"
end

-- Auth: "Token contiguity_sk_..." (Contiguity docs) or "Bearer contiguity_sk_..." (OpenAPI).
function M.authorized()
  local h = ngx.var.http_authorization
  if not h then return false end
  local scheme = h:match("^(%a+) +contiguity_sk_%S+%s*$")
  if not scheme then return false end
  scheme = scheme:lower()
  return scheme == "token" or scheme == "bearer"
end

-- Reads and validates a JSON object body. Returns body or nil, message.
local function json_body()
  local ct = ngx.var.content_type
  local media = ct and ct:lower():match("^%s*([^;%s]+)")
  if media ~= "application/json" then
    return nil, "Content-Type must be application/json"
  end
  ngx.req.read_body()
  local raw = ngx.req.get_body_data()
  if not raw then return nil, "Invalid JSON body" end
  local body = util.decode(raw)
  if body == nil then return nil, "Invalid JSON body" end
  if type(body) ~= "table" or body[1] ~= nil then
    return nil, "Request body must be a JSON object"
  end
  return body
end

-- Field checks; each returns an error message or nil.
local function str(body, name, required)
  local v = body[name]
  if v == nil or v == null then
    if required then return name .. " is required" end
    body[name] = nil
    return nil
  end
  if type(v) ~= "string" then return name .. " must be a string" end
  if v == "" then return name .. " must not be empty" end
  return nil
end

local function phone(body, name, required)
  local err = str(body, name, required)
  if err then return err end
  if body[name] ~= nil and not is_e164(body[name]) then
    return name .. " must be a phone number in E.164 format"
  end
  return nil
end

local function otp_not_found()
  -- 404 rather than 400: the id is well-formed input naming a resource that
  -- does not exist, and it lets clients tell a typo'd id from a bad request.
  return 404, "OTP not found"
end

function M.new()
  local body, err = json_body()
  if not body then return 400, err end
  err = phone(body, "to", true) or str(body, "language", true) or str(body, "name", true)
  if err then return 400, err end
  local now = store.now()
  local rec = {
    otp_id = "otp_" .. util.alnum(20),
    to = body.to,
    code = util.digits(6),
    name = body.name,
    language = body.language,
    created_at = now,
    expires_at = now + util.OTP_TTL_MS,
  }
  store.put_otp(rec)
  local text = (OTP_TEXT[lang_of(rec.language)] or OTP_TEXT.en):format(rec.name, rec.code)
  store.send(rec.to, text, rec.otp_id, "otp")
  store.count_send(rec.otp_id)
  return 200, { otp_id = rec.otp_id }
end

function M.verify()
  local body, err = json_body()
  if not body then return 400, err end
  err = str(body, "otp_id", true) or str(body, "otp", true)
  if err then return 400, err end
  local rec = store.get_otp(body.otp_id)
  if not rec then return otp_not_found() end
  local ok = body.otp == rec.code and store.now() < rec.expires_at and store.consume_otp(rec.otp_id)
  return 200, { verified = ok and true or false }
end

function M.resend()
  local body, err = json_body()
  if not body then return 400, err end
  err = str(body, "otp_id", true)
  if err then return 400, err end
  local rec = store.get_otp(body.otp_id)
  if not rec then return otp_not_found() end
  if store.otp_used(rec.otp_id) or store.now() >= rec.expires_at then
    return 200, { resent = false }
  end
  local text = (OTP_TEXT[lang_of(rec.language)] or OTP_TEXT.en):format(rec.name, rec.code)
  store.send(rec.to, text, rec.otp_id, "resend")
  store.count_send(rec.otp_id)
  return 200, { resent = true }
end

function M.session_view(rec)
  return {
    otp_id = rec.otp_id,
    number = rec.number,
    factor = rec.factor,
    to = rec.to,
    service = rec.service,
    expires_at = util.iso(rec.expires_at_ms),
    ui = rec.ui,
    success_url = rec.success_url or null,
  }
end

function M.initiate()
  local body, err = json_body()
  if not body then return 400, err end
  err = phone(body, "number", true) or str(body, "factor") or phone(body, "to")
    or str(body, "service") or str(body, "language") or str(body, "success_url")
  if err then return 400, err end
  if body.factor and util.utf8_len(body.factor) > 16 then
    return 400, "factor must be at most 16 characters"
  end
  if body.service and body.service ~= "sms" and body.service ~= "imessage" then
    return 400, "service must be one of sms, imessage"
  end
  if body.success_url and not body.success_url:match("^[hH][tT][tT][pP][sS]?://[^%s/?#]+[^%s]*$") then
    return 400, "success_url must be an http(s) URL"
  end
  local now = store.now()
  local rec = {
    otp_id = "r_otp_" .. util.alnum(20),
    number = body.number,
    factor = body.factor or util.digits(4),
    to = body.to or util.SANDBOX_NUMBER,
    service = body.service or "sms",
    language = body.language or "en",
    success_url = body.success_url,
    created_at = now,
    expires_at_ms = now + util.OTP_TTL_MS,
  }
  rec.ui = {
    text = (REVERSE_TEXT[lang_of(rec.language)] or REVERSE_TEXT.en):format(rec.factor, util.pretty_number(rec.to)),
    qr_code = "sms:" .. rec.to .. "?body=" .. util.pct(rec.factor),
  }
  store.put_session(rec)
  return 200, M.session_view(rec)
end

function M.reverse_verify(id)
  local rec = store.get_session(id)
  if not rec then return 404, "Reverse OTP session not found: " .. id end
  return 200, { otp_id = rec.otp_id, status = store.session_status(rec), expires_at = util.iso(rec.expires_at_ms) }
end

function M.reverse_cancel(id)
  local rec = store.get_session(id)
  if not rec then return 404, "Reverse OTP session not found: " .. id end
  local ok, status = store.finish_session(rec, "cancelled")
  if not ok then return 400, "session is " .. tostring(status) end
  return 200, { otp_id = rec.otp_id, status = "cancelled" }
end

-- Routing table: static paths, then one-segment id routes.
M.static = {
  ["/otp/new"] = { POST = M.new },
  ["/otp/verify"] = { POST = M.verify },
  ["/otp/resend"] = { POST = M.resend },
  ["/otp/reverse/initiate"] = { POST = M.initiate },
}

M.prefixed = {
  { prefix = "/otp/reverse/verify/", methods = { GET = M.reverse_verify } },
  { prefix = "/otp/reverse/cancel/", methods = { POST = M.reverse_cancel } },
}

-- Returns status, data|message, allow (for 405). path is raw (undecoded).
function M.route(method, path)
  local methods, arg = M.static[path], nil
  if not methods then
    for _, r in ipairs(M.prefixed) do
      if path:sub(1, #r.prefix) == r.prefix then
        local seg = path:sub(#r.prefix + 1)
        if seg ~= "" and not seg:find("/", 1, true) then
          methods, arg = r.methods, ngx.unescape_uri(seg)
        end
        break
      end
    end
  end
  if not methods then return 404, "Not Found" end
  local h = methods[method]
  if not h then
    local allow = {}
    for m in pairs(methods) do allow[#allow + 1] = m end
    return 405, "Method Not Allowed", table.concat(allow, ", ")
  end
  if not M.authorized() then return 401, "Unauthorized" end
  return h(arg)
end

return M
