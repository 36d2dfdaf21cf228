-- Small helpers shared by the sandbox modules: JSON output, random ids,
-- time formatting and the field validators used by the API handlers.
local cjson = require("cjson.safe")

local M = {}

M.API_VERSION = "v2026.7.29"
M.SANDBOX_NUMBER = "+16465550123" -- the sandbox-owned number reverse OTPs are texted to
M.OTP_TTL_MS = 15 * 60 * 1000

local floor, random, char, format = math.floor, math.random, string.char, string.format
local unpack = unpack or table.unpack

-- 62 alphanumeric byte values for ids.
local ALNUM = {}
do
  local s = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
  for i = 1, #s do ALNUM[i] = s:byte(i) end
end

function M.alnum(n)
  local b = {}
  for i = 1, n do b[i] = ALNUM[random(1, 62)] end
  return char(unpack(b))
end

function M.digits(n)
  return format("%0" .. n .. "d", random(0, 10 ^ n - 1))
end

-- JSON with integers printed as integers (%.14g covers ms timestamps).
function M.encode(v)
  return (cjson.encode(v))
end

function M.decode(s)
  return cjson.decode(s)
end

M.null = cjson.null

-- Encode a list; upstream lua-cjson would print an empty table as {}.
function M.encode_list(items)
  local parts = {}
  for i = 1, #items do parts[i] = cjson.encode(items[i]) end
  return "[" .. table.concat(parts, ",") .. "]"
end

-- ms since epoch -> 2025-02-01T12:00:00.000Z
function M.iso(ms)
  local s = floor(ms / 1000)
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. format(".%03dZ", ms - s * 1000)
end

function M.int(n)
  return format("%d", n)
end

-- E.164: '+', 2 to 15 digits, first digit not 0.
function M.is_e164(s)
  return type(s) == "string" and s:match("^%+[1-9]%d%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?$") ~= nil
end

function M.utf8_len(s)
  local _, n = s:gsub("[^\128-\191]", "")
  return n
end

-- Percent-encode everything except RFC 3986 unreserved characters.
function M.pct(s)
  return (s:gsub("[^%w%-%._~]", function(c) return format("%%%02X", c:byte()) end))
end

-- +1 NANP numbers as +1 (AAA) BBB-CCCC, others unchanged.
function M.pretty_number(n)
  local a, b, c = n:match("^%+1(%d%d%d)(%d%d%d)(%d%d%d%d)$")
  if a then return format("+1 (%s) %s-%s", a, b, c) end
  return n
end

function M.trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

return M
