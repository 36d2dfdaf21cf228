-- fault_spec.lua: the fault matrix: each fault a network or server can produce, what the
-- client returns (kind, retryable, attempts), how many requests the server got, and
-- that no debug line or error carries the token, a code or a phone number.
local contiguity = require "contiguity"
local sandbox = require "spec.helpers.sandbox"
local socket = require "socket"

local SECRET = "contiguity_sk_FAULTMATRIX_secret_42"
local NUMBER = "+15557654321"
local lines, texts, codes = {}, {}, {}

-- Remembers the code the sandbox sent, for the secrecy check at the end.
local function remember_code()
  codes[#codes + 1] = sandbox.last_code(NUMBER)
end

local sh = require("spec.helpers.shell").run

local function client(opts)
  opts = opts or {}
  opts.debug = function(line) lines[#lines + 1] = line end
  return sandbox.client(opts, SECRET)
end

-- Remembers every error's text for the secrecy check at the end.
local function keep(res, err)
  if err then texts[#texts + 1] = tostring(err) end
  return res, err
end

local function count(method, path)
  local n = 0
  for _, r in ipairs(sandbox.requests()) do
    if r.method == method and r.path == path then n = n + 1 end
  end
  return n
end

local function new_params() return { to = NUMBER, language = "en", name = "Fault" } end

local function timed(f)
  local t0 = socket.gettime()
  local a, b = f()
  return a, b, socket.gettime() - t0
end

describe("fault matrix", function()
  before_each(function() sandbox.reset() end)

  it("connection refused: network, retryable, retried, nothing received", function()
    local c = client{ base_url = "http://127.0.0.1:1", max_retries = 2 }
    local res, err = keep(c.otp.new(new_params()))
    assert.is_nil(res)
    assert.equals("network", err.kind)
    assert.is_true(err.retryable)
    assert.equals(3, err.attempts)
  end)

  it("a POST to /otp/new read then dropped on a kept-alive connection is sent exactly once", function()
    local c = client()
    local sent = keep(c.otp.new(new_params()))
    remember_code()
    keep(c.otp.verify{ otp_id = sent.otp_id, otp = "000000" }) -- the connection is now warm
    sandbox.reset()
    sandbox.fault{ path = "/otp/new", action = "drop" }
    local res, err = keep(c.otp.new(new_params()))
    assert.is_nil(res)
    assert.equals("network", err.kind)
    assert.is_false(err.retryable)
    assert.equals(1, err.attempts)
    assert.matches("outcome unknown", err.message)
    assert.equals(1, count("POST", "/otp/new"))
  end)

  it("resend dropped: sent exactly once, outcome unknown", function()
    local c = client()
    local sent = keep(c.otp.new(new_params()))
    sandbox.fault{ path = "/otp/resend", action = "drop" }
    local res, err = keep(c.otp.resend{ otp_id = sent.otp_id })
    assert.is_nil(res)
    assert.is_false(err.retryable)
    assert.equals(1, err.attempts)
    assert.equals(1, count("POST", "/otp/resend"))
  end)

  it("read timeout on /otp/new: timeout, not retried, one request, bounded by timeout", function()
    local c = client{ timeout = 0.3 }
    sandbox.fault{ path = "/otp/new", action = "none", delay = 2 }
    local res, err, elapsed = timed(function() return keep(c.otp.new(new_params())) end)
    assert.is_nil(res)
    assert.equals("timeout", err.kind)
    assert.is_false(err.retryable)
    assert.equals(1, err.attempts)
    assert.equals(1, count("POST", "/otp/new"))
    assert.is_true(elapsed >= 0.25 and elapsed < 1.5, "elapsed " .. elapsed)
  end)

  it("503 then 200 on reverse.verify: retried, success, two requests", function()
    local c = client()
    local s = keep(c.otp.reverse.initiate{ number = NUMBER })
    local path = "/otp/reverse/verify/" .. s.otp_id
    sandbox.fault{ path = path, action = "status", status = 503 }
    local st, err = keep(c.otp.reverse.verify(s.otp_id))
    assert.is_nil(err)
    assert.equals("pending", st.status)
    assert.equals(2, count("GET", path))
  end)

  it("504 on reverse.cancel is retried (idempotent); 504 on otp.verify is not", function()
    local c = client()
    local s = keep(c.otp.reverse.initiate{ number = NUMBER })
    sandbox.fault{ path = "/otp/reverse/cancel/" .. s.otp_id, action = "status", status = 504 }
    assert.equals("cancelled", keep(c.otp.reverse.cancel(s.otp_id)).status)
    sandbox.fault{ path = "/otp/verify", action = "status", status = 504 }
    local res, err = keep(c.otp.verify{ otp_id = "otp_x", otp = "123456" })
    assert.is_nil(res)
    assert.equals(504, err.status)
    assert.is_false(err.retryable)
    assert.equals(1, err.attempts)
  end)

  it("503 on otp.new: api error, not retried, one request", function()
    local c = client()
    sandbox.fault{ path = "/otp/new", action = "status", status = 503, times = 3 }
    local res, err = keep(c.otp.new(new_params()))
    assert.is_nil(res)
    assert.equals("api", err.kind)
    assert.equals(503, err.status)
    assert.is_false(err.retryable)
    assert.equals(1, err.attempts)
    assert.equals(1, count("POST", "/otp/new"))
  end)

  it("429 with Retry-After: 1 then 200: waits about a second and succeeds", function()
    local c = client()
    sandbox.fault{ path = "/otp/new", action = "status", status = 429, headers = { ["Retry-After"] = "1" } }
    local res, err, elapsed = timed(function() return keep(c.otp.new(new_params())) end)
    assert.is_nil(err)
    assert.matches("^otp_", res.otp_id)
    remember_code()
    assert.equals(2, count("POST", "/otp/new"))
    assert.is_true(elapsed >= 0.9, "elapsed " .. elapsed)
  end)

  it("429 beyond max_retries: the last error, with its attempts and retry_after", function()
    local c = client{ max_retries = 1 }
    sandbox.fault{ path = "/otp/verify", action = "status", status = 429, times = 5,
                   headers = { ["Retry-After"] = "0" } }
    local res, err = keep(c.otp.verify{ otp_id = "otp_x", otp = "123456" })
    assert.is_nil(res)
    assert.equals(429, err.status)
    assert.equals(2, err.attempts)
    assert.equals(0, err.retry_after)
    assert.is_true(err.retryable)
    assert.equals(2, count("POST", "/otp/verify"))
  end)

  it("max_retries = 0 disables retries", function()
    local c = client{ base_url = "http://127.0.0.1:1", max_retries = 0 }
    local _, err = keep(c.otp.verify{ otp_id = "otp_x", otp = "1" })
    assert.equals(1, err.attempts)
  end)

  it("never waits past the call's deadline", function()
    local c = client{ deadline = 0.5 }
    sandbox.fault{ path = "/otp/verify", action = "status", status = 429, times = 5,
                   headers = { ["Retry-After"] = "3" } }
    local res, err, elapsed = timed(function() return keep(c.otp.verify{ otp_id = "x", otp = "1" }) end)
    assert.is_nil(res)
    assert.equals(1, err.attempts)
    assert.is_true(elapsed < 1, "elapsed " .. elapsed)
  end)

  it("truncated body: network error, not retried for a non-idempotent call", function()
    local c = client()
    sandbox.fault{ path = "/otp/verify", action = "truncate" }
    local res, err = keep(c.otp.verify{ otp_id = "otp_x", otp = "123456" })
    assert.is_nil(res)
    assert.equals("network", err.kind)
    assert.is_false(err.retryable)
    assert.equals(1, count("POST", "/otp/verify"))
  end)

  it("malformed JSON, an HTML 502 page and an empty body", function()
    local c = client()
    sandbox.fault{ path = "/otp/verify", action = "malformed" }
    local _, err = keep(c.otp.verify{ otp_id = "otp_x", otp = "1" })
    assert.equals("decode", err.kind)
    sandbox.fault{ path = "/otp/verify", action = "status", status = 502,
                   body = "<html><body><h1>502 Bad Gateway</h1></body></html>",
                   headers = { ["Content-Type"] = "text/html" } }
    _, err = keep(c.otp.verify{ otp_id = "otp_x", otp = "1" })
    assert.equals("api", err.kind)
    assert.equals(502, err.status)
    assert.equals("Bad Gateway", err.message)
    sandbox.fault{ path = "/otp/verify", action = "status", status = 200, body = "" }
    _, err = keep(c.otp.verify{ otp_id = "otp_x", otp = "1" })
    assert.equals("decode", err.kind)
  end)

  it("a redirect is not followed: api error with the Location, the target receives nothing", function()
    local port = tonumber(sandbox.url():match(":(%d+)$")) + 2
    local other = "http://127.0.0.1:" .. port
    sh("sandbox/stop " .. port .. " >/dev/null 2>&1")
    assert.is_true(sh("sandbox/start " .. port .. " >/dev/null"))
    local ok, failure = pcall(function()
      local c = client()
      sandbox.fault{ path = "/otp/new", action = "status", status = 302,
                     headers = { Location = other .. "/otp/new" }, body = "" }
      local res, err = keep(c.otp.new(new_params()))
      assert.is_nil(res)
      assert.equals("api", err.kind)
      assert.equals(302, err.status)
      assert.equals(other .. "/otp/new", err.location)
      local http = require "spec.helpers.http"
      local status, log = http.json("GET", other .. "/_sandbox/requests")
      assert.equals(200, status)
      assert.equals(0, #log.requests)
    end)
    sh("sandbox/stop " .. port .. " >/dev/null 2>&1")
    assert(ok, failure)
  end)

  it("a 100 MB body: an error, and memory stays bounded", function()
    local function rss_kb()
      local f = io.open("/proc/self/status")
      local kb = f:read("*a"):match("VmRSS:%s*(%d+)")
      f:close()
      return tonumber(kb)
    end
    local c = client()
    local before = rss_kb()
    sandbox.fault{ path = "/otp/verify", action = "large", size = 100 * 1024 * 1024 }
    local res, err = keep(c.otp.verify{ otp_id = "otp_x", otp = "1" })
    assert.is_nil(res)
    assert.equals("decode", err.kind)
    assert.matches("max_response_bytes", err.message)
    assert.is_false(err.retryable)
    assert.is_true(rss_kb() - before < 16 * 1024, "RSS grew by " .. (rss_kb() - before) .. " kB")
  end)

  describe("TLS", function()
    it("fails against a self-signed certificate without cainfo, and does not retry", function()
      local c = client{ base_url = sandbox.tls_url() }
      local res, err = keep(c.otp.verify{ otp_id = "otp_x", otp = "1" })
      assert.is_nil(res)
      assert.equals("tls", err.kind)
      assert.is_false(err.retryable)
      assert.equals(1, err.attempts)
      assert.equals(0, #sandbox.requests())
    end)

    it("succeeds with the sandbox CA as cainfo, on one kept-alive connection", function()
      local c = client{ base_url = sandbox.tls_url(), cainfo = sandbox.ca_file() }
      local sent = keep(c.otp.new(new_params()))
      assert.matches("^otp_", sent.otp_id)
      remember_code()
      assert.is_false(keep(c.otp.verify{ otp_id = sent.otp_id, otp = "x" }).verified)
      assert.is_false(keep(c.otp.verify{ otp_id = sent.otp_id, otp = "y" }).verified)
      local log = sandbox.requests()
      assert.equals(3, #log)
      assert.equals(log[1].connection, log[3].connection)
    end)

    it("fails when the certificate does not name the host", function()
      local url = sandbox.tls_url():gsub("127%.0%.0%.1", "localhost")
      local c = client{ base_url = url, cainfo = sandbox.ca_file() }
      local res, err = keep(c.otp.verify{ otp_id = "otp_x", otp = "1" })
      assert.is_nil(res)
      assert.equals("tls", err.kind)
      assert.equals(0, #sandbox.requests())
    end)
  end)

  it("refuses plain http to a non-loopback host", function()
    assert.error_matches(function() contiguity.new(SECRET, { base_url = "http://10.0.0.1" }) end, "plain http:// is allowed only for loopback", 1, true)
  end)

  it("refuses CR, LF or NUL in the token and the user agent", function()
    assert.error_matches(function() contiguity.new("contiguity_sk_a\r\nb", { base_url = sandbox.url() }) end, "token must start with contiguity_sk_ and contain no spaces or control characters", 1, true)
    assert.error_matches(function() contiguity.new("contiguity_sk_a\0b", { base_url = sandbox.url() }) end, "token must start with contiguity_sk_ and contain no spaces or control characters", 1, true)
    assert.error_matches(function() client{ user_agent = "x\0y" } end, "option 'user_agent' must not contain CR, LF or NUL", 1, true)
  end)

  it("kept no secret in any debug line or error above", function()
    assert.is_true(#lines > 15)
    assert.is_true(#texts > 10)
    assert.equals(3, #codes)
    for _, list in ipairs{ lines, texts } do
      for _, s in ipairs(list) do
        assert.not_matches("FAULTMATRIX", s, 1, true)
        assert.not_matches(NUMBER, s, 1, true)
        for _, code in ipairs(codes) do assert.not_matches(code, s, 1, true) end
      end
    end
  end)
end)
