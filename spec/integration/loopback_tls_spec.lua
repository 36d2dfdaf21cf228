-- loopback_tls_spec.lua: plain http goes only to hosts that are loopback
-- addresses as written, reached without a name lookup, and TLS below 1.2
-- is refused even where the system's OpenSSL would allow it (issue 20; the
-- rules are in doc/tls-and-loopback.md).
local socket = require("socket")
local contiguity = require("contiguity")
local sandbox = require("spec.helpers.sandbox")
local shell = require("spec.helpers.shell")

local q = shell.quote
local TOKEN = sandbox.TOKEN
local LUA = os.getenv("CONTIGUITY_SPEC_LUA") or "lua5.4"
local PORT = tostring(tonumber(sandbox.url():match(":(%d+)$")))
local REFUSED = "plain http:// is allowed only for loopback hosts"
local NOT_URL = "base_url must be an http(s) URL"

local function port(url) return (url:gsub("PORT", PORT)) end

local ACCEPTED = {
  "http://127.0.0.1:PORT", "http://127.0.0.1", "http://127.0.0.1:PORT/", "http://127.0.0.1:PORT/v1?a=b#c",
  "http://127.0.0.2:PORT", "http://127.255.255.254:PORT", "http://127.10.200.0:65535",
  "http://[::1]:PORT", "http://[::1]", "http://[::1]/v1",
  "http://localhost:PORT", "http://localhost", "http://LOCALHOST:PORT", "http://LocalHost/v1",
}

local REFUSED_HOSTS = {
  -- not IPv4 addresses: libcurl would look these up in DNS
  "http://127.999.1.1", "http://127.0.0.1.1.2.3", "http://127.0.0.256", "http://127.0.0.1000",
  -- short, octal, hex and single-number forms of 127.0.0.1
  "http://127.1", "http://127.0.1", "http://127", "http://127.", "http://2130706433",
  "http://0177.0.0.1", "http://127.0.0.01", "http://127.000.000.001", "http://0x7f.0.0.1",
  "http://0X7F.0.0.1", "http://127.0.0.0x1",
  -- a trailing dot, other names
  "http://127.0.0.1.", "http://127.0.0.1.:PORT", "http://localhost.", "http://localhost.:PORT",
  "http://a.localhost", "http://localhost.localdomain", "http://localhost6", "http://localhostx",
  -- other spellings of ::1, an IPv4-mapped address, a zone
  "http://[::ffff:127.0.0.1]", "http://[::ffff:7f00:1]", "http://[0:0:0:0:0:0:0:1]", "http://[::01]",
  "http://[::1%25lo]", "http://[::1]x", "http://[::1",
  -- outside 127.0.0.0/8
  "http://128.0.0.1", "http://126.255.255.255", "http://10.0.0.1", "http://0.0.0.0", "http://example.com",
  -- userinfo, ports, odd characters
  "http://user@127.0.0.1", "http://127.0.0.1@example.com", "http://127.0.0.1:0", "http://127.0.0.1:65536",
  "http://127.0.0.1:99999", "http://127.0.0.1:8a", "http://127.0.0.1:", "http://127.0.0.1:+80",
  "http://127.0.0.1%2e", "http://127.0.0.1\\@example.com", "http://127.0.0.1;.example.com",
  "http://127.0.0.1,example.com",
}

describe("plain http base_url", function()
  it("is accepted for 127.x.y.x written as four decimal octets, [::1] and localhost in any case", function()
    for _, u in ipairs(ACCEPTED) do
      local ok, c = pcall(contiguity.new, TOKEN, { base_url = port(u) })
      assert(ok, port(u) .. ": " .. tostring(c))
      c:close()
    end
  end)

  it("is refused for every other spelling, however it would resolve", function()
    for _, u in ipairs(REFUSED_HOSTS) do
      local ok, err = pcall(contiguity.new, TOKEN, { base_url = port(u) })
      assert(not ok, port(u) .. " was accepted")
      err = tostring(err)
      assert(err:find(REFUSED, 1, true) or err:find(NOT_URL, 1, true), port(u) .. ": " .. err)
    end
  end)

  it("reaches the sandbox through localhost in any case", function()
    for _, u in ipairs{ "http://localhost:PORT", "http://LOCALHOST:PORT" } do
      local c = contiguity.new(TOKEN, { base_url = port(u) })
      local res, err = c.otp.new{ to = "+15550002020", language = "en", name = "MyApp" }
      c:close()
      assert(res, port(u) .. ": " .. tostring(err))
    end
  end)
end)

local function mktemp_dir()
  local ok, out = shell.run("mktemp -d")
  assert(ok, out)
  return (out:gsub("%s+$", ""))
end

-- A port the system hands out (nothing listens on it once returned).
local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, p = s:getsockname()
  s:close()
  return tonumber(p)
end

-- Every accepted URL is called once in a child process traced by strace:
-- each connect and send fails there by injection (so nothing, a DNS query
-- least of all, leaves the machine), and the trace shows what the child
-- tried: a name lookup reads /etc/hosts or /etc/resolv.conf, asks nscd or
-- systemd-resolved, or connects to port 53. The last URL is a lookup on
-- purpose (https, any host allowed): the trace must show it, or the
-- detector is blind on this machine.
describe("an accepted loopback URL", function()
  local CASES = {
    { url = "http://127.0.0.1:PORT", to = 'inet_addr("127.0.0.1")' },
    { url = "http://127.255.255.254:PORT", to = 'inet_addr("127.255.255.254")' },
    { url = "http://[::1]:PORT", to = '"::1"' },
    { url = "http://localhost:PORT", to = 'inet_addr("127.0.0.1")' },
    { url = "http://LOCALHOST:PORT", to = 'inet_addr("127.0.0.1")' },
  }
  local PROBE = "https://contiguity-dns-probe.invalid:PORT"
  local LOOKUP = { "htons(53)", '"/etc/hosts"', '"/etc/resolv.conf"', '"/etc/host.conf"', "nscd",
                   "/run/systemd/resolve" }
  local MARK = "/nonexistent_contiguity_dns_mark/"

  local function lookups(lines)
    local found = {}
    for _, line in ipairs(lines) do
      for _, m in ipairs(LOOKUP) do
        if line:find(m, 1, true) then found[#found + 1] = line; break end
      end
    end
    return found
  end

  it("is reached at the address it names, without a name lookup", function()
    local dir = mktemp_dir()
    finally(function() shell.run("rm -rf " .. q(dir)) end)
    shell.write_file(dir .. "/child.lua", ([[
local contiguity = require("contiguity")
for i = 1, #arg do
  io.open("@MARK@" .. i) -- a line in the trace between two calls
  local c = contiguity.new("@TOKEN@", { base_url = arg[i], timeout = 5, max_retries = 0 })
  local _, err = c.otp.reverse.verify("otp_1")
  io.write(i, " ", err and err.kind or "ok", "\n")
  c:close()
end
io.open("@MARK@" .. "end")
]]):gsub("@MARK@", MARK):gsub("@TOKEN@", TOKEN))
    local args = {}
    for i, case in ipairs(CASES) do args[i] = q(port(case.url)) end
    args[#args + 1] = q(port(PROBE))
    local ok, out = shell.run(("strace -f -qq -o %s -e trace=connect,sendto,sendmsg,sendmmsg,openat "
      .. "-e inject=connect,sendto,sendmsg,sendmmsg:error=ENETUNREACH %s %s %s")
      :format(q(dir .. "/trace"), q(LUA), q(dir .. "/child.lua"), table.concat(args, " ")))
    assert(ok, out)
    -- the trace, cut at the marks: segment i holds call i
    local segments, current = {}, nil
    local f = assert(io.open(dir .. "/trace"))
    for line in f:lines() do
      local i = line:match(MARK .. "(%w+)")
      if i then
        current = {}
        segments[tonumber(i) or "end"] = current
      elseif current then
        current[#current + 1] = line
      end
    end
    f:close()
    for i, case in ipairs(CASES) do
      local seg = assert(segments[i], "no trace of call " .. i)
      assert.are.same({}, lookups(seg), port(case.url) .. " looked a name up")
      local connects = {}
      for _, line in ipairs(seg) do
        if line:find("connect(", 1, true) then connects[#connects + 1] = line end
      end
      assert(#connects > 0, port(case.url) .. ": no connect")
      for _, line in ipairs(connects) do
        assert(line:find(case.to, 1, true) and line:find("htons(" .. PORT .. ")", 1, true),
          port(case.url) .. " connected elsewhere than " .. case.to .. ": " .. line)
      end
    end
    -- the probe: its segment and whatever its resolver thread logged after
    local probe = {}
    for _, seg in ipairs{ segments[#CASES + 1] or {}, segments["end"] or {} } do
      for _, line in ipairs(seg) do probe[#probe + 1] = line end
    end
    assert(#lookups(probe) > 0, "the trace shows no lookup for " .. port(PROBE) .. ":\n" .. table.concat(probe, "\n"))
  end)
end)

-- A TLS server limited to one protocol version (openssl s_server, started
-- here on a free port, stopped by pid) and a client in a child process
-- whose OpenSSL configuration allows TLS 1.0 at security level 0: what
-- refuses TLS 1.1 there is the module's own floor, not the system's.
describe("TLS", function()
  local dir
  local LOW = [[
openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1
CipherString = DEFAULT@SECLEVEL=0
]]

  lazy_setup(function()
    dir = mktemp_dir()
    shell.write_file(dir .. "/low.cnf", LOW)
    shell.write_file(dir .. "/server.ext", "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\n"
      .. "extendedKeyUsage=serverAuth\n")
    local d = q(dir)
    local ok, out = shell.run(("(cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj '/CN=spec CA' "
      .. "-keyout ca.key -out ca.pem -addext 'basicConstraints=critical,CA:TRUE' "
      .. "-addext 'keyUsage=critical,keyCertSign' && "
      .. "openssl req -new -newkey rsa:2048 -nodes -subj '/CN=spec' -keyout server.key -out server.csr && "
      .. "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
      .. "-extfile server.ext -out server.pem)"):format(d))
    assert(ok, out)
  end)

  lazy_teardown(function()
    if dir then shell.run("rm -rf " .. q(dir)) end
  end)

  -- openssl s_server speaking only `version` (-tls1_1, -tls1_2) on a free
  -- port, answering any GET with its HTML status page. Returns port, pid.
  local function s_server(version)
    local p = free_port()
    local ok, out = shell.run(("cd %s && OPENSSL_CONF=low.cnf openssl s_server -accept 127.0.0.1:%d %s "
      .. "-cipher DEFAULT@SECLEVEL=0 -cert server.pem -key server.key -www -quiet >server.log 2>&1 & echo $!")
      :format(q(dir), p, version))
    assert(ok, out)
    local pid = assert(tonumber(out:match("(%d+)")), out)
    for _ = 1, 100 do
      local c = socket.tcp()
      c:settimeout(0.1)
      local up = c:connect("127.0.0.1", p)
      c:close()
      if up then return p, pid end
      socket.sleep(0.05)
    end
    shell.run("kill " .. pid)
    error("openssl s_server did not listen on " .. p)
  end

  -- One call from a child process with the lowered OpenSSL configuration:
  -- the error's kind ("ok" for a result) and message.
  local function child_call(p)
    shell.write_file(dir .. "/child.lua", ([[
local c = require("contiguity").new("@TOKEN@", { base_url = "https://127.0.0.1:@PORT@", cainfo = "@CA@",
                                                 timeout = 5, max_retries = 0 })
local _, err = c.otp.reverse.verify("otp_1")
io.write(err and err.kind or "ok", "\n", err and err.message or "", "\n")
]]):gsub("@TOKEN@", TOKEN):gsub("@CA@", ((dir .. "/ca.pem"):gsub("%%", "%%%%"))):gsub("@PORT@", tostring(p)))
    local ok, out = shell.run(("OPENSSL_CONF=%s %s %s"):format(q(dir .. "/low.cnf"), q(LUA), q(dir .. "/child.lua")))
    assert(ok, out)
    return out:match("^(%S+)\n(.*)$")
  end

  it("reaches a TLS 1.2 server from the same child (the certificates and the setup work)", function()
    local p, pid = s_server("-tls1_2")
    finally(function() shell.run("kill " .. pid) end)
    local kind, message = child_call(p)
    assert.are_not.equal("tls", kind, message)
    assert.are_not.equal("network", kind, message)
  end)

  it("refuses a server limited to TLS 1.1 with kind tls, where the child's OpenSSL alone would accept it", function()
    local p, pid = s_server("-tls1_1")
    finally(function() shell.run("kill " .. pid) end)
    -- curl, with the same configuration and no floor of its own, gets the status page
    local ok, out = shell.run(("OPENSSL_CONF=%s curl -sS --cacert %s https://127.0.0.1:%d/ -o /dev/null "
      .. "-w '%%{http_code}'"):format(q(dir .. "/low.cnf"), q(dir .. "/ca.pem"), p))
    assert(ok and out:match("200"), "the TLS 1.1 server is not reachable with the lowered configuration: " .. out)
    local kind, message = child_call(p)
    assert.equal("tls", kind, message)
  end)
end)
