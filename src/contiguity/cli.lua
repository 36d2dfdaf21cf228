-- contiguity.cli: the code of the contiguity-otp command (bin/contiguity-otp is a few lines
-- that find this module and call main). Kept in a module so that specs can run it in-process
-- and so that --help and --version work even when the C module cannot be loaded.
--
-- Exit status: 0 success, 1 a negative result (not verified, not resent, cancelled, expired,
-- a bad signature), 2 an error (its message on stderr; with --json also
-- {"error":{"kind":...,"message":...}} on stdout).

local M = {}

local OK, NEGATIVE, ERROR = 0, 1, 2
local PROG = "contiguity-otp"
local DEFAULT_NAME = "contiguity-otp"
local DEFAULT_INTERVAL = 20 -- seconds between reverse-OTP polls: the provider asks for >= 20

-- The version of this command; the same as the C module's _VERSION (a spec checks it).
M.VERSION = "0.1.0"

local function lua_name()
  return jit and jit.version or _VERSION
end

-- The system the command talks to. main's second argument may replace any of these
-- (the specs pass files and a fake environment to run the command in-process).
local function default_sys()
  local sys = { stdout = io.stdout, stderr = io.stderr, stdin = io.stdin, getenv = os.getenv }
  -- os.execute's success: true on 5.2+, 0 on 5.1/LuaJIT.
  function sys.isatty(fd)
    local a = os.execute("test -t " .. fd)
    return a == true or a == 0
  end
  -- Sleeps in a child process so that Ctrl-C is seen without a signal library:
  -- the terminal sends SIGINT to the whole foreground group, system() ignores
  -- it in this process while it waits, and the shell running `sleep` dies of
  -- it (or exits 130). Returns true after a full sleep, false on Ctrl-C.
  function sys.sleep(seconds)
    local a, how, code = os.execute(string.format("exec sleep %.3f", seconds))
    if a == true or a == 0 then return true end
    if type(a) == "number" then -- 5.1 and LuaJIT: the raw wait status
      how = a % 256 ~= 0 and "signal" or "exit"
      code = how == "signal" and a % 128 or math.floor(a / 256)
    end
    if (how == "signal" and code == 2) or (how == "exit" and code == 130) then return false end
    error("sleep failed (" .. tostring(how) .. " " .. tostring(code) .. ")", 0)
  end
  return sys
end

-- The standalone interpreter turns a Ctrl-C that lands while Lua runs
-- (e.g. during an HTTP request) into this error.
local function is_interrupt(e)
  return type(e) == "string" and e:find("interrupted!", 1, true) ~= nil
end

-- A failure of the command itself (not of an API call): kind is "usage" (the command
-- line), "config" (the environment: token, base URL, secret, the C module) or
-- "internal" (a bug). Raised as a table so that it crosses pcall intact.
local function failure(kind, message)
  error({ cli_error = true, kind = kind, message = message }, 0)
end

-- The C module, loaded on first use: --help and --version need neither it nor lua-cjson.
local function load_module()
  local ok, mod = pcall(require, "contiguity")
  if ok then return mod end
  failure("config", "cannot load the contiguity module (contiguity.so) for " .. lua_name() .. ": "
    .. tostring(mod):gsub("\n.*", "") .. " (build it with `make LUA=...` or install it: README, Install)")
end

-- Output ---------------------------------------------------------------------

-- One context per run: the --json flag, the output channels, the client.
local function new_context(sys, json)
  local c = { json = json, sys = sys }
  local client, cjson

  local function encode(t)
    cjson = cjson or require("cjson").new()
    return cjson.encode(t)
  end
  c.encode = encode

  -- Human text: stdout, or stderr when stdout carries JSON.
  function c.say(s)
    local f = json and sys.stderr or sys.stdout
    f:write(s, "\n")
    f:flush()
  end

  -- Help text: always stdout, --json or not.
  function c.print(s)
    sys.stdout:write(s, "\n")
    sys.stdout:flush()
  end

  -- A result: the table as JSON, or the human line.
  function c.result(data, human)
    if json then sys.stdout:write(encode(data), "\n") else sys.stdout:write(human, "\n") end
    sys.stdout:flush()
  end

  -- An error (a contiguity error table or a failure()): its message on stderr,
  -- plus {"error": {...}} on stdout with --json. Returns ERROR.
  function c.fail(err, extra)
    local e = {}
    if type(err) == "table" and err.cli_error then
      e.kind, e.message = err.kind, err.message
      sys.stderr:write(PROG .. ": " .. err.message, "\n", extra or "")
    elseif type(err) == "table" then
      for k, v in pairs(err) do e[k] = v end
      sys.stderr:write(tostring(err), "\n")
    else -- a Lua error nobody expected: say so plainly
      e.kind, e.message = "internal", tostring(err)
      sys.stderr:write(PROG .. ": internal error: " .. tostring(err), "\n")
    end
    sys.stderr:flush()
    if json then
      local ok, line = pcall(encode, { error = e })
      if not ok then -- no lua-cjson: still one JSON object, written by hand
        line = '{"error":{"kind":"config","message":"lua-cjson is missing: '
          .. tostring(line):gsub('[%c"\\]', " ") .. '"}}'
      end
      sys.stdout:write(line, "\n")
      sys.stdout:flush()
    end
    return ERROR
  end

  function c.module()
    c.mod = c.mod or load_module()
    return c.mod
  end

  -- The client, made on first use: token and base URL from the environment.
  function c.client()
    if client then return client end
    local contiguity = c.module()
    local token = sys.getenv("CONTIGUITY_API_KEY")
    if token == nil or token == "" then token = sys.getenv("CONTIGUITY_TOKEN") end
    if token == nil or token == "" then
      failure("config", "no token: set CONTIGUITY_API_KEY (or CONTIGUITY_TOKEN) to your contiguity_sk_... key")
    end
    local base_url = sys.getenv("CONTIGUITY_BASE_URL")
    if base_url == "" then base_url = nil end
    local ok, cl = pcall(contiguity.new, token, { base_url = base_url, user_agent = PROG })
    if not ok then
      -- contiguity.new raises for a malformed token or base URL: a configuration problem
      failure("config", (tostring(cl):gsub("^[^:\n]*:%d+: ", ""):gsub("^contiguity%.new: ", "")))
    end
    client = cl
    return client
  end

  c.tty = not json and sys.isatty(1)
  return c
end

-- Argument parsing -------------------------------------------------------------

local GLOBAL_OPTIONS = { json = "flag", help = "flag", version = "flag" }

-- Splits argv into positional arguments and options. spec maps an option
-- name to "string", "number" or "flag". Returns args, opts or nil, message.
local function parse(argv, spec)
  local args, opts, i = {}, {}, 1
  while i <= #argv do
    local a = argv[i]
    local name, value = a:match("^%-%-([%w-]+)=(.*)$")
    if not name then name = a:match("^%-%-([%w-]+)$") end
    if a == "-h" then name = "help" end
    if a == "--" then
      for j = i + 1, #argv do args[#args + 1] = argv[j] end
      break
    elseif name then
      local kind = spec[name] or GLOBAL_OPTIONS[name]
      if not kind then return nil, "unknown option --" .. name end
      if kind == "flag" then
        if value then return nil, "--" .. name .. " takes no value" end
        opts[name] = true
      else
        if not value then
          i = i + 1
          value = argv[i]
        end
        if value == nil then return nil, "--" .. name .. " needs a value" end
        if kind == "number" then
          local n = tonumber(value)
          if not n or n <= 0 then return nil, "--" .. name .. " must be a number > 0" end
          value = n
        end
        opts[name] = value
      end
    elseif a:match("^%-%a") then
      return nil, "unknown option " .. a
    else
      args[#args + 1] = a
    end
    i = i + 1
  end
  return args, opts
end

-- Reverse OTP: waiting for the user's text --------------------------------------

local function clock(seconds)
  seconds = math.floor(seconds)
  return string.format("%d:%02d", math.floor(seconds / 60), seconds % 60)
end

-- Polls the session every `interval` seconds with a countdown until it is
-- no longer pending. Returns the final status table, or nil, err, or
-- false when Ctrl-C was pressed.
local function wait_for_text(c, s, interval)
  local client = c.client()
  local out = c.sys.stdout
  local started, polls, note = os.time(), 0, ""
  local function progress(left)
    if not c.tty then return end
    out:write(string.format("\r\27[Kwaiting %s, %d checks, next in %s%s (Ctrl-C cancels)",
      clock(os.time() - started), polls, left >= 60 and clock(left) or string.format("%d s", left), note))
    out:flush()
  end
  while true do
    local left = interval
    while left > 0 do
      progress(math.ceil(left))
      local step = left < 1 and left or 1
      if not c.sys.sleep(step) then return false end
      left = left - step
    end
    local st, err = client.otp.reverse.verify(s.otp_id)
    polls = polls + 1
    if st then
      note = ""
      if st.status ~= "pending" then return st end
      if not c.tty and not c.json then c.say("check " .. polls .. ": " .. st.status) end
    elseif err.retryable then
      -- a hiccup of the network or the API: keep waiting, politely
      note = " - last check failed: " .. err.message
      if not c.tty then c.say("check " .. polls .. " failed, retrying: " .. tostring(err)) end
    else
      return nil, err
    end
  end
end

-- Ctrl-C: cancel the session. It may have been verified meanwhile, which
-- the API then reports as an error; say what the session became.
local function cancel_session(c, s)
  local client = c.client()
  local res, err = client.otp.reverse.cancel(s.otp_id)
  if res then
    c.result(res, "cancelled: session " .. s.otp_id .. " is " .. tostring(res.status))
    return NEGATIVE
  end
  local st = client.otp.reverse.verify(s.otp_id)
  if st and st.status ~= "pending" then
    c.result(st, "session " .. s.otp_id .. " is " .. st.status)
    return st.status == "verified" and OK or NEGATIVE
  end
  return c.fail(err)
end

-- The commands -----------------------------------------------------------------

local function status_line(st)
  return "session " .. tostring(st.otp_id) .. " is " .. tostring(st.status)
end

-- One row per command: name (words), usage, help text, options, number of
-- positional arguments, run(c, args, opts) -> exit status.
local COMMANDS = {
  {
    name = "send",
    usage = "send NUMBER [--name N] [--language L]",
    help = "Send a one-time code by SMS to NUMBER (E.164, e.g. +15551234567) and print its\n"
      .. "otp_id. --name is the app name in the message (default " .. DEFAULT_NAME .. "),\n"
      .. "--language its language (default en).",
    options = { name = "string", language = "string" },
    nargs = 1,
    run = function(c, a, o)
      local res, err = c.client().otp.new{ to = a[1], name = o.name or DEFAULT_NAME,
                                           language = o.language or "en" }
      if not res then return c.fail(err) end
      c.result(res, "sent a code to " .. a[1] .. ": otp_id " .. res.otp_id)
      return OK
    end,
  },
  {
    name = "verify",
    usage = "verify OTP_ID CODE",
    help = "Check CODE against the code sent as OTP_ID. Exit status 0 when it is right,\n"
      .. "1 when it is wrong or expired.",
    options = {},
    nargs = 2,
    run = function(c, a)
      local res, err = c.client().otp.verify{ otp_id = a[1], otp = a[2] }
      if not res then return c.fail(err) end
      c.result(res, res.verified and "verified" or "not verified")
      return res.verified and OK or NEGATIVE
    end,
  },
  {
    name = "resend",
    usage = "resend OTP_ID",
    help = "Send the code of OTP_ID again (same code, same expiry). Exit status 1 when the\n"
      .. "API did not resend it (already verified or expired).",
    options = {},
    nargs = 1,
    run = function(c, a)
      local res, err = c.client().otp.resend{ otp_id = a[1] }
      if not res then return c.fail(err) end
      c.result(res, res.resent and "resent" or "not resent (the code was used or has expired)")
      return res.resent and OK or NEGATIVE
    end,
  },
  {
    name = "NUMBER",
    usage = "NUMBER [--name N] [--language L]",
    help = "Interactive: send a code to NUMBER, then ask for it until it is right. At the\n"
      .. "prompt, r resends the code and q (or end of input) gives up. With --json the\n"
      .. "prompts go to stderr and the result is one JSON object on stdout.",
    options = { name = "string", language = "string" },
    nargs = 0,
    run = function(c, a, o)
      local number = a[0]
      local client = c.client()
      local sent, err = client.otp.new{ to = number, name = o.name or DEFAULT_NAME,
                                        language = o.language or "en" }
      if not sent then return c.fail(err) end
      c.say("sent a code to " .. number .. " (otp_id " .. sent.otp_id .. ")")
      -- piped input is not echoed: end each prompt line ourselves
      local echoed = c.sys.isatty(0)
      local attempts, resends = 0, 0
      while true do
        local f = c.json and c.sys.stderr or c.sys.stdout
        f:write("enter the code (r: resend, q: quit): ")
        f:flush()
        local line = c.sys.stdin:read("*l")
        if line == nil or not echoed then
          f:write("\n")
          f:flush()
        end
        if line == nil or line:match("^%s*q%s*$") then
          c.result({ otp_id = sent.otp_id, verified = false, attempts = attempts, resends = resends },
            "not verified")
          return NEGATIVE
        end
        local code = line:match("^%s*(.-)%s*$")
        if code == "r" then
          local r, rerr = client.otp.resend{ otp_id = sent.otp_id }
          if not r then return c.fail(rerr) end
          resends = resends + 1
          c.say(r.resent and "sent the code again" or "the code could not be resent (used or expired)")
        elseif code ~= "" then
          attempts = attempts + 1
          local v, verr = client.otp.verify{ otp_id = sent.otp_id, otp = code }
          if not v then return c.fail(verr) end
          if v.verified then
            c.result({ otp_id = sent.otp_id, verified = true, attempts = attempts, resends = resends },
              "verified")
            return OK
          end
          c.say("wrong code, try again")
        end
      end
    end,
  },
  {
    name = "reverse start",
    usage = "reverse start NUMBER [--service sms|imessage] [--factor F] [--language L]\n"
      .. "                     [--interval S] [--invert]",
    help = "Start a reverse OTP session: the user of NUMBER texts a code to you. Prints the\n"
      .. "instructions and a QR code that opens the message on the phone (--invert for a\n"
      .. "light terminal), then checks the session every --interval seconds (default "
      .. DEFAULT_INTERVAL .. ")\n"
      .. "until it is verified (exit 0), cancelled or expired (exit 1). Ctrl-C cancels the\n"
      .. "session. With --json: the session, then its final status, as two JSON lines.",
    options = { service = "string", factor = "string", language = "string", interval = "number",
                invert = "flag" },
    nargs = 1,
    run = function(c, a, o)
      local s, err = c.client().otp.reverse.initiate{ number = a[1], service = o.service,
                                                      factor = o.factor, language = o.language }
      if not s then return c.fail(err) end
      if c.json then
        c.result(s)
      else
        c.say("reverse OTP session " .. s.otp_id .. " for " .. a[1])
        c.say(s.ui.text)
        local qr, qerr = c.module().qr(s.ui.qr_code, { format = "terminal", invert = o.invert })
        if qr then
          c.say("or scan this with the phone (" .. s.ui.qr_code .. "):\n")
          c.sys.stdout:write(qr)
        else
          c.say("(no QR code: " .. tostring(qerr) .. ")")
        end
        c.say("\nexpires at " .. tostring(s.expires_at))
      end
      local ok, st, werr = pcall(wait_for_text, c, s, o.interval or DEFAULT_INTERVAL)
      if c.tty then c.sys.stdout:write("\r\27[K") end
      if not ok then
        if not is_interrupt(st) then error(st, 0) end
        st = false
      end
      if st == false then return cancel_session(c, s) end
      if not st then return c.fail(werr) end
      c.result(st, status_line(st))
      return st.status == "verified" and OK or NEGATIVE
    end,
  },
  {
    name = "reverse status",
    usage = "reverse status OTP_ID",
    help = "Print the status of a reverse OTP session: pending, verified, cancelled or\n"
      .. "expired. Exit status 0 only when it is verified.",
    options = {},
    nargs = 1,
    run = function(c, a)
      local st, err = c.client().otp.reverse.verify(a[1])
      if not st then return c.fail(err) end
      c.result(st, status_line(st))
      return st.status == "verified" and OK or NEGATIVE
    end,
  },
  {
    name = "reverse cancel",
    usage = "reverse cancel OTP_ID",
    help = "Cancel a pending reverse OTP session.",
    options = {},
    nargs = 1,
    run = function(c, a)
      local res, err = c.client().otp.reverse.cancel(a[1])
      if not res then return c.fail(err) end
      c.result(res, status_line(res))
      return OK
    end,
  },
  {
    name = "webhook verify",
    usage = "webhook verify --secret S --header H [--tolerance SECONDS] < BODY",
    help = "Check a webhook delivery: the raw body on stdin, H the Contiguity-Signature\n"
      .. "header. The secret may come from env CONTIGUITY_WEBHOOK_SECRET instead of\n"
      .. "--secret (then it stays out of the process list). Exit status 0 when the\n"
      .. "signature is genuine and fresh (--tolerance, default 300 s), 1 otherwise.",
    options = { secret = "string", header = "string", tolerance = "number" },
    nargs = 0,
    run = function(c, _, o)
      local webhook = c.module().webhook
      if type(webhook) ~= "table" or type(webhook.verify) ~= "function" then
        failure("config", "this build of the contiguity module has no contiguity.webhook.verify; "
          .. "rebuild it from a newer source")
      end
      local secret = o.secret or c.sys.getenv("CONTIGUITY_WEBHOOK_SECRET")
      if not secret or secret == "" then
        failure("config", "webhook verify: give the secret with --secret or CONTIGUITY_WEBHOOK_SECRET")
      end
      local body = c.sys.stdin:read("*a") or ""
      local valid, reason = webhook.verify(body, o.header, secret, { tolerance = o.tolerance })
      if not valid then
        c.result({ valid = false, reason = reason }, "invalid signature: " .. tostring(reason))
        return NEGATIVE
      end
      local event = webhook.parse and webhook.parse(body) or nil
      c.result({ valid = true, event = event }, "valid signature"
        .. (event and (": " .. tostring(event.type) .. " " .. tostring(event.id)) or ""))
      return OK
    end,
  },
}

local function usage_of(cmd)
  return "usage: " .. PROG .. " " .. cmd.usage .. " [--json]"
end

local function overview()
  local lines = { "usage: " .. PROG .. " COMMAND [ARGS] [--json] [--help] [--version]", "", "commands:" }
  for _, cmd in ipairs(COMMANDS) do lines[#lines + 1] = "  " .. cmd.usage end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "Token from CONTIGUITY_API_KEY (or CONTIGUITY_TOKEN), API from CONTIGUITY_BASE_URL."
  lines[#lines + 1] = "--json prints machine-readable results. Exit status: 0 success, 1 negative"
  lines[#lines + 1] = "result (not verified, cancelled, expired), 2 error. COMMAND --help for more."
  return table.concat(lines, "\n")
end

-- The commands whose first word is `word` ("reverse", "webhook"), as usage lines.
local function group_of(word)
  local group = {}
  for _, cmd in ipairs(COMMANDS) do
    if cmd.name:match("^(%S+) ") == word then group[#group + 1] = "  " .. cmd.usage end
  end
  return #group > 0 and table.concat(group, "\n") or nil
end

local function find_command(words)
  local two = words[1] and words[2] and (words[1] .. " " .. words[2])
  for _, cmd in ipairs(COMMANDS) do
    if cmd.name == two then return cmd, 2 end
  end
  for _, cmd in ipairs(COMMANDS) do
    if cmd.name == words[1] and cmd.name ~= "NUMBER" then return cmd, 1 end
  end
  if words[1] and words[1]:match("^%+") then
    for _, cmd in ipairs(COMMANDS) do
      if cmd.name == "NUMBER" then return cmd, 1 end
    end
  end
  return nil
end

-- The version lines: this command's, and the C module's when it loads.
local function version(c)
  local ok, mod = pcall(c.module)
  local m
  if ok and type(mod.version) == "function" then
    local v, curl, luav = mod.version()
    m = { version = v, libcurl = curl, lua = luav }
  end
  if c.json then
    c.result({ version = M.VERSION, module = m or false })
  elseif m then
    c.result(nil, PROG .. " " .. M.VERSION .. "\nmodule contiguity " .. m.version .. " (libcurl "
      .. m.libcurl .. ", " .. m.lua .. ")")
  else
    c.result(nil, PROG .. " " .. M.VERSION .. "\nmodule contiguity: not loaded ("
      .. (type(mod) == "table" and mod.message or tostring(mod)) .. ")")
  end
  return OK
end

-- Runs the command: argv is the list of arguments (arg without arg[0]); sys
-- optionally replaces stdout, stderr, stdin (file handles), getenv, isatty(fd)
-- and sleep(seconds) -> false on Ctrl-C. Returns the exit status.
function M.main(argv, sys)
  local s = default_sys()
  for k, v in pairs(sys or {}) do s[k] = v end
  local words = {}
  for i = 1, #argv do words[i] = argv[i] end
  -- --json anywhere before a lone "--" makes every answer, errors included, JSON
  local json = false
  for _, a in ipairs(words) do
    if a == "--" then break end
    if a == "--json" then json = true end
  end
  local c = new_context(s, json)

  local function usage_error(message, usage)
    return c.fail({ cli_error = true, kind = "usage", message = message }, "\n" .. usage .. "\n")
  end

  -- Global flags before the command ("--json send ...") join the rest.
  local lead = {}
  while words[1] and words[1]:match("^%-") do lead[#lead + 1] = table.remove(words, 1) end
  local cmd, nwords = find_command(words)
  if not cmd then
    local _, gopts = parse(lead, {})
    local rest_help = words[2] == "--help" or words[2] == "-h"
    if gopts and gopts.version and #words == 0 then return version(c) end
    if #words == 0 then
      if gopts and gopts.help then
        c.print(overview())
        return OK
      end
      return usage_error(gopts and "no command" or select(2, parse(lead, {})), overview())
    end
    local group = group_of(words[1])
    if group then
      if (gopts and gopts.help) or rest_help then
        c.print(words[1] .. " commands:\n" .. group)
        return OK
      end
      if words[2] == nil or words[2]:match("^%-") then
        return usage_error(words[1] .. " needs a command", words[1] .. " commands:\n" .. group)
      end
      return usage_error("unknown " .. words[1] .. " command '" .. words[2] .. "'",
        words[1] .. " commands:\n" .. group)
    end
    local hint = words[1]:match("^%d+$") and " (a NUMBER starts with +, e.g. +" .. words[1] .. ")" or ""
    return usage_error("unknown command '" .. words[1] .. "'" .. hint, overview())
  end
  local rest = lead
  for i = nwords + 1, #words do rest[#rest + 1] = words[i] end
  local args, opts = parse(rest, cmd.options)
  if not args then return usage_error(cmd.name .. ": " .. opts, usage_of(cmd)) end
  if opts.help then
    c.print(usage_of(cmd) .. "\n\n" .. cmd.help)
    return OK
  end
  if opts.version then return version(c) end
  if cmd.name == "NUMBER" then args[0] = words[1] end
  if #args ~= cmd.nargs then
    return usage_error(cmd.name .. ": expected " .. cmd.nargs .. " argument"
      .. (cmd.nargs == 1 and "" or "s") .. ", got " .. #args, usage_of(cmd))
  end
  local ok, status = pcall(cmd.run, c, args, opts)
  if ok then return status end
  if is_interrupt(status) then
    s.stderr:write("\n" .. PROG .. ": interrupted\n")
    return NEGATIVE
  end
  return c.fail(status)
end

return M
