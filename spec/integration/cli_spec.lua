-- cli_spec.lua: bin/contiguity-otp run for real against the sandbox; interactive runs through tmux;
-- and its code, contiguity.cli, called in-process (main(argv, sys)) with files for stdin/stdout/stderr.
local cjson = require "cjson"
local _ -- the discarded values of multiple assignments
local sandbox = require "spec.helpers.sandbox"
local shell = require "spec.helpers.shell"

local LUA = os.getenv("CONTIGUITY_SPEC_LUA") or "lua5.4"
local NUMBER = "+15551234567"

local q = shell.quote

local function read_file(name)
  local f = io.open(name, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local write_file = shell.write_file

-- The environment the command runs with: the sandbox and its test token
-- (LUA_CPATH/LUA_PATH come from spec/run), then `extra` VAR=value words,
-- without the variables named in `unset`.
local function env(extra, unset)
  local words, skip = { "env" }, {}
  for _, name in ipairs(unset or {}) do
    words[#words + 1] = "-u " .. name
    skip[name] = true
  end
  if not skip.CONTIGUITY_BASE_URL then words[#words + 1] = "CONTIGUITY_BASE_URL=" .. q(sandbox.url()) end
  if not skip.CONTIGUITY_API_KEY then words[#words + 1] = "CONTIGUITY_API_KEY=" .. q(sandbox.TOKEN) end
  words[#words + 1] = extra or ""
  return table.concat(words, " ") .. " "
end

local function command(args)
  local parts = {}
  for i, a in ipairs(args) do parts[i] = q(a) end
  return LUA .. " bin/contiguity-otp " .. table.concat(parts, " ")
end

-- Runs the command to its end: exit status, stdout, stderr.
-- opts.stdin: a string fed on stdin; opts.env: extra VAR=value words;
-- opts.unset: variables removed from the environment.
local function cli(args, opts)
  opts = opts or {}
  local out, err, input = os.tmpname(), os.tmpname(), os.tmpname()
  write_file(input, opts.stdin or "")
  local p = assert(io.popen(env(opts.env, opts.unset) .. command(args) .. " <" .. input .. " >" .. out
    .. " 2>" .. err .. "; echo $?"))
  local status = tonumber(p:read("*a"):match("(%d+)"))
  p:close()
  local o, e = read_file(out), read_file(err)
  os.remove(out)
  os.remove(err)
  os.remove(input)
  return status, o, e
end

local function json(s)
  local line = assert(s:match("^([^\n]+)\n$"), "expected one JSON line, got: " .. s)
  return cjson.decode(line)
end

-- Bounded polling: calls f every 50 ms until it returns a true value.
local function eventually(what, f, seconds)
  for _ = 1, (seconds or 10) * 20 do
    local v = f()
    if v then return v end
    os.execute("sleep 0.05")
  end
  error("timed out waiting for " .. what, 2)
end

local function sent_code(to)
  return eventually("a code sent to " .. to, function() return (sandbox.last_code(to)) end)
end

-- A command in a pseudo-terminal: a private tmux server, one 120x40 pane.
-- The pane stays after the command ends and shows "EXIT=<status>".
local function terminal(args)
  local t = { socket = os.tmpname() } -- a socket of our own, removed by close
  os.remove(t.socket)
  local function tmux(rest)
    return "tmux -S " .. q(t.socket) .. " " .. rest
  end
  local script = env() .. command(args) .. '; echo "EXIT=$?"; sleep 600'
  local started = os.execute(tmux("new-session -d -x 120 -y 40 -s cli " .. q(script)))
  assert(started == true or started == 0, "tmux did not start")
  function t.screen()
    local p = assert(io.popen(tmux("capture-pane -p -J -S -200 -t cli 2>/dev/null")))
    local s = p:read("*a")
    p:close()
    return s
  end
  function t.wait(text, seconds)
    return eventually("'" .. text .. "' on the terminal", function()
      local s = t.screen()
      return s:find(text, 1, true) and s
    end, seconds)
  end
  function t.keys(...)
    local parts = {}
    for i, k in ipairs({ ... }) do parts[i] = q(k) end
    os.execute(tmux("send-keys -t cli " .. table.concat(parts, " ")))
  end
  function t.close()
    os.execute(tmux("kill-server 2>/dev/null"))
    os.remove(t.socket)
  end
  return t
end

describe("contiguity-otp", function()
  before_each(function() sandbox.reset() end)

  describe("usage", function()
    it("prints an overview and each command's help, exit 0", function()
      local status, out = cli({ "--help" })
      assert.are.equal(0, status)
      for _, word in ipairs { "send NUMBER", "verify OTP_ID CODE", "resend OTP_ID", "reverse start",
                              "reverse status", "reverse cancel", "webhook verify", "--json" } do
        assert.truthy(out:find(word, 1, true), word)
      end
      for _, cmd in ipairs { { "send" }, { "verify" }, { "resend" }, { "reverse", "start" },
                             { "reverse", "status" }, { "reverse", "cancel" }, { "webhook", "verify" },
                             { "+15551234567" } } do
        local args = { (unpack or table.unpack)(cmd) }
        args[#args + 1] = "--help"
        status, out = cli(args)
        assert.are.equal(0, status)
        assert.truthy(out:find("^usage: contiguity%-otp "), table.concat(cmd, " "))
      end
    end)

    it("exits 2 on a usage error, saying why on stderr", function()
      local status, out, err = cli({})
      assert.are.equal(2, status)
      assert.are.equal("", out)
      assert.truthy(err:find("no command", 1, true))
      status, _, err = cli({ "frobnicate" })
      assert.are.equal(2, status)
      assert.truthy(err:find("unknown command 'frobnicate'", 1, true))
      status, _, err = cli({ "send" })
      assert.are.equal(2, status)
      assert.truthy(err:find("expected 1 argument", 1, true))
      status, _, err = cli({ "send", NUMBER, "--colour", "red" })
      assert.are.equal(2, status)
      assert.truthy(err:find("unknown option --colour", 1, true))
      status, _, err = cli({ "reverse", "start", NUMBER, "--interval", "soon" })
      assert.are.equal(2, status)
      assert.truthy(err:find("--interval must be a number", 1, true))
    end)

    it("treats a command group like the bare command: 2 alone, 0 with --help, 2 for an unknown member", function()
      local status, out, err = cli({ "reverse" })
      assert.are.equal(2, status)
      assert.are.equal("", out)
      assert.truthy(err:find("reverse needs a command", 1, true))
      assert.truthy(err:find("reverse status OTP_ID", 1, true))
      status, out = cli({ "reverse", "--help" })
      assert.are.equal(0, status)
      assert.truthy(out:find("reverse start NUMBER", 1, true))
      for _, group in ipairs { "reverse", "webhook" } do
        status, out, err = cli({ group, "bogus" })
        assert.are.equal(2, status)
        assert.are.equal("", out)
        assert.truthy(err:find("unknown " .. group .. " command 'bogus'", 1, true), err)
      end
    end)

    it("prints its version and the module's with --version, exit 0", function()
      local status, out = cli({ "--version" })
      assert.are.equal(0, status)
      assert.matches("^contiguity%-otp %d+%.%d+%.%d+\nmodule contiguity %d+%.%d+%.%d+ %(libcurl [%d.]+, ", out)
    end)

    it("with --json, every error is {error = {kind, message}} on stdout, exit 2", function()
      local cases = {
        { args = {}, kind = "usage", message = "no command" },
        { args = { "frobnicate" }, kind = "usage", message = "unknown command 'frobnicate'" },
        { args = { "reverse" }, kind = "usage", message = "reverse needs a command" },
        { args = { "reverse", "bogus" }, kind = "usage", message = "unknown reverse command 'bogus'" },
        { args = { "send" }, kind = "usage", message = "send: expected 1 argument, got 0" },
        { args = { "send", NUMBER, "--colour", "red" }, kind = "usage", message = "send: unknown option --colour" },
        { args = { "send", NUMBER }, unset = { "CONTIGUITY_API_KEY", "CONTIGUITY_TOKEN" }, kind = "config",
          message = "no token: set CONTIGUITY_API_KEY (or CONTIGUITY_TOKEN) to your contiguity_sk_... key" },
        { args = { "send", NUMBER }, env = "CONTIGUITY_API_KEY=sk_wrong", kind = "config",
          message = "token must start with contiguity_sk_ and contain no spaces or control characters" },
        { args = { "webhook", "verify", "--header", "t=1,v1=00" }, unset = { "CONTIGUITY_WEBHOOK_SECRET" },
          kind = "config", message = "webhook verify: give the secret with --secret or CONTIGUITY_WEBHOOK_SECRET" },
        { args = { "send", "12345" }, kind = "invalid" },
        { args = { "verify", "otp_unknown", "123456" }, kind = "api" },
      }
      for _, case in ipairs(cases) do
        local args = { (unpack or table.unpack)(case.args) }
        args[#args + 1] = "--json"
        local status, out, err = cli(args, { unset = case.unset, env = case.env })
        local what = table.concat(args, " ")
        assert.are.equal(2, status, what)
        local e = json(out).error
        assert.are.equal(case.kind, e.kind, what)
        assert.are.equal("string", type(e.message), what)
        if case.message then assert.are.equal(case.message, e.message, what) end
        assert.is_nil(e.message:find("contiguity.new", 1, true), what)
        assert.truthy(#err > 0, what) -- the message still goes to stderr
      end
    end)

    it("exits 2 without a token", function()
      local status, _, err = cli({ "send", NUMBER }, { unset = { "CONTIGUITY_API_KEY", "CONTIGUITY_TOKEN" } })
      assert.are.equal(2, status)
      assert.truthy(err:find("no token", 1, true))
    end)
  end)

  describe("send, verify, resend", function()
    it("sends a code and prints its otp_id", function()
      local status, out, err = cli({ "send", NUMBER, "--name", "Acme", "--language", "en" })
      assert.are.equal(0, status, err)
      local code, id = sandbox.last_code(NUMBER)
      assert.are.equal("sent a code to " .. NUMBER .. ": otp_id " .. id .. "\n", out)
      assert.truthy(sandbox.outbox(NUMBER)[1].text:find("Acme", 1, true))
      assert.truthy(code)
    end)

    it("sends with --json: the result table", function()
      local status, out = cli({ "send", NUMBER, "--json" })
      assert.are.equal(0, status)
      local res = json(out)
      local _, id = sandbox.last_code(NUMBER)
      assert.are.equal(id, res.otp_id)
      assert.are.equal("string", type(res.metadata.id))
    end)

    it("verifies: 1 for a wrong code, 0 for the right one", function()
      assert.are.equal(0, (cli({ "send", NUMBER })))
      local code, id = sandbox.last_code(NUMBER)
      local wrong = code == "000000" and "111111" or "000000"
      local status, out = cli({ "verify", id, wrong })
      assert.are.equal(1, status)
      assert.are.equal("not verified\n", out)
      status, out = cli({ "verify", id, wrong, "--json" })
      assert.are.equal(1, status)
      assert.is_false(json(out).verified)
      status, out = cli({ "--json", "verify", id, code })
      assert.are.equal(0, status)
      assert.is_true(json(out).verified)
      status, out = cli({ "verify", id, code })
      assert.are.equal(1, status) -- a code verifies once
      assert.are.equal("not verified\n", out)
    end)

    it("resends: 0 while the code is pending, 1 once it was used", function()
      assert.are.equal(0, (cli({ "send", NUMBER })))
      local code, id = sandbox.last_code(NUMBER)
      local status, out = cli({ "resend", id })
      assert.are.equal(0, status)
      assert.are.equal("resent\n", out)
      assert.are.equal(2, #sandbox.outbox(NUMBER))
      assert.are.equal(0, (cli({ "verify", id, code })))
      status, out = cli({ "resend", id, "--json" })
      assert.are.equal(1, status)
      assert.is_false(json(out).resent)
    end)

    it("exits 2 on an error, with the error's message on stderr (and as JSON with --json)", function()
      local status, out, err = cli({ "send", "12345" })
      assert.are.equal(2, status)
      assert.are.equal("", out)
      assert.truthy(err:find("^contiguity: otp.new: to must be a phone number"))
      status, out, err = cli({ "verify", "otp_unknown", "123456", "--json" })
      assert.are.equal(2, status)
      assert.truthy(err:find("404", 1, true))
      local e = json(out).error
      assert.are.equal("api", e.kind)
      assert.are.equal(404, e.status)
      assert.are.equal("otp.verify", e.op)
      -- nothing listening: a network error
      status, _, err = cli({ "resend", "otp_x" }, { env = "CONTIGUITY_BASE_URL=http://127.0.0.1:1" })
      assert.are.equal(2, status)
      assert.truthy(err:find("otp.resend", 1, true))
    end)
  end)

  describe("interactive NUMBER", function()
    it("retries a wrong code, resends on r, then verifies the right code", function()
      local t = terminal({ NUMBER, "--name", "Acme" })
      finally(t.close)
      t.wait("enter the code")
      local code, id = sent_code(NUMBER), select(2, sandbox.last_code(NUMBER))
      assert.truthy(t.screen():find("otp_id " .. id, 1, true))
      t.keys(code == "000000" and "111111" or "000000", "Enter")
      t.wait("wrong code, try again")
      t.keys("r", "Enter")
      t.wait("sent the code again")
      assert.are.equal(2, #sandbox.outbox(NUMBER))
      t.keys(code, "Enter")
      local screen = t.wait("EXIT=")
      assert.truthy(screen:find("\nverified\n", 1, true))
      assert.truthy(screen:find("EXIT=0", 1, true))
      assert.is_true(sandbox.otp(id).verified)
    end)

    it("gives up on q with exit 1", function()
      local t = terminal({ NUMBER })
      finally(t.close)
      t.wait("enter the code")
      t.keys("q", "Enter")
      local screen = t.wait("EXIT=")
      assert.truthy(screen:find("not verified", 1, true))
      assert.truthy(screen:find("EXIT=1", 1, true))
    end)

    it("reads the codes from stdin with --json: prompts on stderr, the result on stdout", function()
      -- the code is unknown before the send, so a wrong one, then end of input
      local status, out, err = cli({ NUMBER, "--json" }, { stdin = "000001\n000002\n" })
      assert.are.equal(1, status)
      local res = json(out)
      assert.is_false(res.verified)
      assert.are.equal(2, res.attempts)
      assert.truthy(err:find("wrong code, try again", 1, true))
    end)

    it("ends each prompt line itself when the input is piped (q: not verified on a line of its own)", function()
      local status, out = cli({ NUMBER }, { stdin = "000001\nq\n" })
      assert.are.equal(1, status)
      local lines = {}
      for line in out:gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
      assert.truthy(lines[1]:find("^sent a code to "), out)
      assert.are.equal("enter the code (r: resend, q: quit): ", lines[2])
      assert.are.equal("wrong code, try again", lines[3])
      assert.are.equal("enter the code (r: resend, q: quit): ", lines[4])
      assert.are.equal("not verified", lines[5])
      assert.are.equal(5, #lines)
    end)
  end)

  describe("reverse", function()
    -- The session the terminal shows, and the sandbox playing the user's phone.
    local function session_on(screen)
      local id = assert(screen:match("reverse OTP session (r_otp_[%w_]+)"))
      return id, sandbox.reverse(id)
    end

    it("start shows the instructions and a QR code, polls, and exits 0 once the user texted", function()
      local t = terminal({ "reverse", "start", NUMBER, "--interval", "0.2", "--factor", "4321" })
      finally(t.close)
      local screen = t.wait("Ctrl-C cancels")
      local id, s = session_on(screen)
      assert.are.equal("4321", s.factor)
      assert.truthy(screen:find("Text 4321 to", 1, true))
      assert.truthy(screen:find("sms:" .. s.to .. "?body=4321", 1, true))
      assert.truthy(screen:find(string.rep("\226\150\136", 20), 1, true)) -- the QR code's quiet zone
      t.wait("checks,") -- the progress line counts its polls
      assert.is_true(sandbox.inbound(NUMBER, s.to, "4321").matched)
      screen = t.wait("EXIT=")
      assert.truthy(screen:find("session " .. id .. " is verified", 1, true))
      assert.truthy(screen:find("EXIT=0", 1, true))
    end)

    it("start exits 1 when the session expires", function()
      local t = terminal({ "reverse", "start", NUMBER, "--interval", "0.2" })
      finally(t.close)
      local id = session_on(t.wait("Ctrl-C cancels"))
      sandbox.advance(16 * 60)
      local screen = t.wait("EXIT=")
      assert.truthy(screen:find("session " .. id .. " is expired", 1, true))
      assert.truthy(screen:find("EXIT=1", 1, true))
    end)

    it("Ctrl-C cancels the session and exits 1", function()
      local t = terminal({ "reverse", "start", NUMBER, "--interval", "0.2" })
      finally(t.close)
      local id = session_on(t.wait("Ctrl-C cancels"))
      t.wait("checks,")
      t.keys("C-c")
      local screen = t.wait("EXIT=")
      assert.truthy(screen:find("cancelled: session " .. id .. " is cancelled", 1, true))
      assert.truthy(screen:find("EXIT=1", 1, true))
      assert.are.equal("cancelled", sandbox.reverse(id).status)
    end)

    it("start --json prints the session, then its final status, as JSON lines", function()
      local out, done = os.tmpname(), os.tmpname()
      os.remove(done)
      os.execute("(" .. env() .. command({ "reverse", "start", NUMBER, "--json", "--interval", "0.2" })
        .. " >" .. out .. " 2>/dev/null </dev/null; echo $? >" .. done .. ".tmp; mv " .. done .. ".tmp "
        .. done .. ") &")
      local first = eventually("the session line", function()
        return (read_file(out) or ""):match("^([^\n]+)\n")
      end)
      local s = cjson.decode(first)
      assert.truthy(s.otp_id:find("^r_otp_"))
      assert.are.equal("string", type(s.ui.qr_code))
      assert.is_true(sandbox.inbound(NUMBER, s.to, s.factor).matched)
      local status = tonumber(eventually("the command's end", function() return read_file(done) end))
      local text = read_file(out)
      os.remove(out)
      os.remove(done)
      assert.are.equal(0, status)
      local last = cjson.decode(text:match("\n([^\n]+)\n$"))
      assert.are.equal(s.otp_id, last.otp_id)
      assert.are.equal("verified", last.status)
      assert.falsy(text:find("\226\150", 1, true)) -- no QR art in JSON mode
    end)

    -- A session started straight through the API.
    local function initiate()
      local status, body = sandbox.api("POST", "/otp/reverse/initiate", { number = NUMBER })
      assert.are.equal(200, status)
      return body.data
    end

    it("status: 0 when verified, 1 when pending, cancelled or expired", function()
      local s = initiate()
      local status, out = cli({ "reverse", "status", s.otp_id })
      assert.are.equal(1, status)
      assert.are.equal("session " .. s.otp_id .. " is pending\n", out)
      assert.is_true(sandbox.inbound(NUMBER, s.to, s.factor).matched)
      status, out = cli({ "reverse", "status", s.otp_id, "--json" })
      assert.are.equal(0, status)
      assert.are.equal("verified", json(out).status)
      local s2 = initiate()
      sandbox.advance(16 * 60)
      status, out = cli({ "reverse", "status", s2.otp_id })
      assert.are.equal(1, status)
      assert.are.equal("session " .. s2.otp_id .. " is expired\n", out)
      status, out = cli({ "reverse", "status", "r_otp_unknown", "--json" })
      assert.are.equal(2, status)
      assert.are.equal(404, json(out).error.status)
    end)

    it("cancel: 0 once cancelled, 2 when the session is already over", function()
      local s = initiate()
      local status, out = cli({ "reverse", "cancel", s.otp_id })
      assert.are.equal(0, status)
      assert.are.equal("session " .. s.otp_id .. " is cancelled\n", out)
      assert.are.equal("cancelled", sandbox.reverse(s.otp_id).status)
      status, out = cli({ "reverse", "status", s.otp_id })
      assert.are.equal(1, status)
      assert.are.equal("session " .. s.otp_id .. " is cancelled\n", out)
      local err
      status, out, err = cli({ "reverse", "cancel", s.otp_id, "--json" })
      assert.are.equal(2, status)
      assert.are.equal("api", json(out).error.kind)
      assert.truthy(err:find("otp.reverse.cancel", 1, true))
      local s2 = initiate()
      status, out = cli({ "reverse", "cancel", s2.otp_id, "--json" })
      assert.are.equal(0, status)
      assert.are.equal("cancelled", json(out).status)
    end)
  end)

  describe("webhook verify", function()
    local SECRET = "whsec_cli_spec"
    local BODY = '{"id":"evt_dgUIkRo18","type":"otp.reverse.verified","timestamp":1726502400,'
      .. '"api_version":"v2025.12.10","data":{"otp_id":"r_otp_123456","number":"+15551234567",'
      .. '"status":"verified"}}'

    -- The Contiguity-Signature header, signed by openssl rather than by the module.
    local function header(t, body, secret)
      local name = os.tmpname()
      write_file(name, t .. "." .. body)
      local p = assert(io.popen("openssl dgst -sha256 -hmac " .. q(secret) .. " < " .. name))
      local hex = p:read("*a"):match("(%x+)%s*$")
      p:close()
      os.remove(name)
      assert(hex and #hex == 64, "openssl gave no HMAC")
      return "t=" .. t .. ",v1=" .. hex
    end

    it("exits 0 for a genuine delivery and shows the event", function()
      local h = header(os.time(), BODY, SECRET)
      local status, out, err = cli({ "webhook", "verify", "--secret", SECRET, "--header", h }, { stdin = BODY })
      assert.are.equal(0, status, err)
      assert.are.equal("valid signature: otp.reverse.verified evt_dgUIkRo18\n", out)
      status, out = cli({ "webhook", "verify", "--header", h, "--json" },
        { stdin = BODY, env = "CONTIGUITY_WEBHOOK_SECRET=" .. SECRET })
      assert.are.equal(0, status)
      local res = json(out)
      assert.is_true(res.valid)
      assert.are.equal("r_otp_123456", res.event.data.otp_id)
    end)

    it("exits 1 for a wrong secret, altered body, stale or missing header", function()
      local h = header(os.time(), BODY, SECRET)
      local status, out = cli({ "webhook", "verify", "--secret", "other", "--header", h }, { stdin = BODY })
      assert.are.equal(1, status)
      assert.are.equal("invalid signature: mismatch\n", out)
      status, out = cli({ "webhook", "verify", "--secret", SECRET, "--header", h, "--json" },
        { stdin = BODY .. " " })
      assert.are.equal(1, status)
      assert.are.same({ valid = false, reason = "mismatch" }, json(out))
      local old = header(os.time() - 3600, BODY, SECRET)
      status, out = cli({ "webhook", "verify", "--secret", SECRET, "--header", old }, { stdin = BODY })
      assert.are.equal(1, status)
      assert.are.equal("invalid signature: expired\n", out)
      status = cli({ "webhook", "verify", "--secret", SECRET, "--header", old, "--tolerance", "7200" },
        { stdin = BODY })
      assert.are.equal(0, status)
      status, out = cli({ "webhook", "verify", "--secret", SECRET }, { stdin = BODY })
      assert.are.equal(1, status)
      assert.are.equal("invalid signature: missing\n", out)
    end)

    it("exits 2 without a secret", function()
      local status, _, err = cli({ "webhook", "verify", "--header", "t=1,v1=00" }, {
        stdin = BODY, unset = { "CONTIGUITY_WEBHOOK_SECRET" } })
      assert.are.equal(2, status)
      assert.truthy(err:find("secret", 1, true))
    end)
  end)
  describe("in-process (contiguity.cli.main)", function()
    local cli_module = require "contiguity.cli"

    -- main(argv, sys) with temporary files for the three streams and an environment
    -- of its own (the sandbox and its token unless opts.env says otherwise; false unsets).
    local function run(argv, opts)
      opts = opts or {}
      local out, err, input = io.tmpfile(), io.tmpfile(), io.tmpfile()
      input:write(opts.stdin or "")
      input:seek("set")
      local vars = { CONTIGUITY_BASE_URL = sandbox.url(), CONTIGUITY_API_KEY = sandbox.TOKEN }
      for k, v in pairs(opts.env or {}) do vars[k] = v or nil end
      local status = cli_module.main(argv, {
        stdout = out, stderr = err, stdin = input,
        getenv = function(name) return vars[name] end,
        isatty = function() return false end,
        sleep = function() return true end,
      })
      out:seek("set")
      err:seek("set")
      local o, e = out:read("*a"), err:read("*a")
      out:close(); err:close(); input:close()
      return status, o, e
    end

    it("has the C module's version", function()
      assert.are.equal(require("contiguity")._VERSION, cli_module.VERSION)
      local status, out = run({ "--version", "--json" })
      assert.are.equal(0, status)
      assert.are.equal(cli_module.VERSION, json(out).version)
      assert.are.equal(cli_module.VERSION, json(out).module.version)
    end)

    it("sends, verifies and resends against the sandbox", function()
      local status, out = run({ "send", NUMBER, "--json" })
      assert.are.equal(0, status)
      local id = json(out).otp_id
      local code = sandbox.last_code(NUMBER)
      status, out = run({ "verify", id, code })
      assert.are.equal(0, status)
      assert.are.equal("verified\n", out)
      status, out = run({ "resend", id })
      assert.are.equal(1, status)
      assert.are.equal("not resent (the code was used or has expired)\n", out)
    end)

    it("gives usage, config and API errors their kinds, on stdout with --json", function()
      local status, out, err = run({ "reverse", "--json" })
      assert.are.equal(2, status)
      assert.are.same({ error = { kind = "usage", message = "reverse needs a command" } }, json(out))
      assert.truthy(err:find("reverse cancel OTP_ID", 1, true))
      status, out = run({ "send", NUMBER, "--json" }, { env = { CONTIGUITY_API_KEY = false } })
      assert.are.equal(2, status)
      assert.are.equal("config", json(out).error.kind)
      status, out = run({ "resend", "otp_x", "--json" }, { env = { CONTIGUITY_BASE_URL = "http://127.0.0.1:1" } })
      assert.are.equal(2, status)
      assert.are.equal("network", json(out).error.kind)
      assert.are.equal("otp.resend", json(out).error.op)
      status, out = run({ "send", NUMBER }, { env = { CONTIGUITY_BASE_URL = "http://example.com" } })
      assert.are.equal(2, status)
      assert.are.equal("", out)
    end)

    it("runs the interactive flow from piped input", function()
      local status, out = run({ NUMBER }, { stdin = "r\nq\n" })
      assert.are.equal(1, status)
      assert.truthy(out:find("\nsent the code again\n", 1, true), out)
      assert.truthy(out:find(": \nnot verified\n$"), out)
      assert.are.equal(2, #sandbox.outbox(NUMBER))
    end)

    it("verifies a webhook delivery from stdin", function()
      local contiguity = require "contiguity"
      local body = '{"id":"evt_1","type":"otp.reverse.verified","timestamp":1,"api_version":"v1","data":{}}'
      local t = tostring(os.time())
      local h = "t=" .. t .. ",v1=" .. contiguity.hmac("whsec_x", t .. "." .. body)
      local status, out = run({ "webhook", "verify", "--header", h, "--json" },
        { stdin = body, env = { CONTIGUITY_WEBHOOK_SECRET = "whsec_x" } })
      assert.are.equal(0, status)
      assert.are.equal("evt_1", json(out).event.id)
    end)
  end)
end)
