-- docs_spec.lua: the examples of README.md and doc/*.md run. Every fenced block whose
-- info string starts with lua, nginx or `sh run` is one of:
--   ```lua               run as a script under the spec's Lua, against the sandbox
--   ```lua busted        run as a busted spec file, against the sandbox
--   ```sh run            run by sh -e, with contiguity-otp on PATH, against the sandbox
--   ```lua file=PATH     (or nginx) a part of PATH, verbatim; a spec of its own runs PATH
--   ```nginx             a part of a server {} block: checked by `nginx -t` inside a
--                        server that includes nginx/location-sandbox.conf
--   ```lua norun         (or nginx norun) not run here, with the reason in the text
--                        (Skynet, lua-resty-http, the real API's TLS); Lua is compiled
-- "Against the sandbox": CONTIGUITY_BASE_URL and CONTIGUITY_API_KEY point at the spec's
-- sandbox, and https://api.contiguity.com (the real API) and http://127.0.0.1:8931 (the
-- sandbox's default port) in the text become its URL; nothing else of the example changes. Each doc/*.md starts with an example that runs.
local sandbox = require "spec.helpers.sandbox"
local shell = require "spec.helpers.shell"
local doc_files = require "spec.helpers.docs"
local read, documents = doc_files.read, doc_files.documents

local q = shell.quote
local LUA = os.getenv("CONTIGUITY_SPEC_LUA") or "lua5.4"
local MODULES = os.getenv("NGINX_MODULES_DIR") or "/usr/lib/nginx/modules"

-- The fenced blocks of a markdown text: { info =, lang =, flags = {word=true}, file =, text =, line = }.
local function blocks(text)
  local list, cur, n = {}, nil, 0
  for line in (text .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if cur then
      if line:match("^%s*```%s*$") then
        cur.text = table.concat(cur.lines, "\n") .. "\n"
        list[#list + 1] = cur
        cur = nil
      else
        cur.lines[#cur.lines + 1] = line
      end
    else
      local info = line:match("^%s*```(.*)$")
      if info then
        cur = { info = info, lines = {}, line = n, flags = {} }
        local words = {}
        for w in info:gmatch("%S+") do words[#words + 1] = w end
        cur.lang = words[1] or ""
        for i = 2, #words do
          local k, v = words[i]:match("^(%w+)=(.+)$")
          if k == "file" then cur.file = v else cur.flags[words[i]] = true end
        end
      end
    end
  end
  assert(not cur, "a fence opened at line " .. tostring(cur and cur.line) .. " is never closed")
  return list
end

-- The examples this spec handles (the rest: shell sessions, JSON, output).
local function examples()
  local list = {}
  for _, doc in ipairs(documents()) do
    for _, b in ipairs(blocks(read(doc))) do
      if b.lang == "lua" or b.lang == "nginx" or (b.lang == "sh" and b.flags.run) then
        b.doc = doc
        b.where = doc .. ":" .. b.line
        list[#list + 1] = b
      end
    end
  end
  return list
end

local function kind(b)
  if b.file then return "file" end
  if b.flags.norun then return "norun" end
  if b.lang == "lua" then return b.flags.busted and "busted" or "run" end
  if b.lang == "sh" then return "sh" end
  return "nginx"
end

-- The text as it runs here: the real API's URL, and the default sandbox's, are the
-- spec's sandbox.
local function for_sandbox(text)
  return (text:gsub("https://api%.contiguity%.com", function() return sandbox.url() end)
    :gsub("http://127%.0%.0%.1:8931", function() return sandbox.url() end))
end

local function env()
  return "CONTIGUITY_BASE_URL=" .. q(sandbox.url()) .. " CONTIGUITY_API_KEY=" .. q(sandbox.TOKEN) .. " "
end

local tmpdir = (function()
  local d = os.tmpname()
  os.remove(d)
  assert(shell.run("mkdir -p " .. d))
  return d
end)()

-- contiguity-otp on PATH for `sh run` examples: the clone's command under the spec's Lua.
local bindir = tmpdir .. "/bin"
shell.run("mkdir -p " .. bindir)
shell.write_file(bindir .. "/contiguity-otp", "#!/bin/sh\nexec " .. LUA .. " " .. q(shell.REPO .. "/bin/contiguity-otp")
  .. ' "$@"\n')
shell.run("chmod +x " .. bindir .. "/contiguity-otp")

local function run_lua(b)
  local file = tmpdir .. "/example.lua"
  shell.write_file(file, for_sandbox(b.text))
  return shell.run("env " .. env() .. "timeout 60 " .. LUA .. " " .. file)
end

local function run_busted(b)
  local file = tmpdir .. "/example_spec.lua"
  shell.write_file(file, for_sandbox(b.text))
  return shell.run("env " .. env() .. "timeout 120 " .. LUA .. " /usr/bin/busted -o TAP " .. file)
end

local function run_sh(b)
  local file = tmpdir .. "/example.sh"
  shell.write_file(file, for_sandbox(b.text))
  return shell.run("env " .. env() .. "PATH=" .. q(bindir) .. ":\"$PATH\" timeout 60 sh -e " .. file)
end

-- nginx -t of the block inside a server {} with the sandbox location.
local function test_nginx(b)
  local dir = tmpdir .. "/nginx"
  shell.run("rm -rf " .. dir .. " && mkdir -p " .. dir .. "/logs")
  local port = sandbox.url():match(":(%d+)$")
  shell.write_file(dir .. "/nginx.conf", ([[
load_module MODULES/ndk_http_module.so;
load_module MODULES/ngx_http_lua_module.so;
error_log DIR/logs/error.log;
pid DIR/logs/nginx.pid;
events {}
http {
    lua_package_path "REPO/src/?.lua;;";
    lua_package_cpath "REPO/build/jit/?.so;;";
    client_body_temp_path DIR/logs;
    proxy_temp_path DIR/logs;
    fastcgi_temp_path DIR/logs;
    uwsgi_temp_path DIR/logs;
    scgi_temp_path DIR/logs;
    upstream contiguity_api { server 127.0.0.1:SANDBOX; }
    server {
        listen 127.0.0.1:1;
        include REPO/nginx/location-sandbox.conf;
BLOCK
    }
}
]]):gsub("MODULES", MODULES):gsub("DIR", dir):gsub("REPO", shell.REPO):gsub("SANDBOX", port)
    :gsub("BLOCK", function() return for_sandbox(b.text) end))
  return shell.run("nginx -t -q -p " .. dir .. " -c " .. dir .. "/nginx.conf -e " .. dir .. "/logs/error.log")
end

-- Runs one example: ok, output.
local function check(b)
  local k = kind(b)
  if k == "file" then
    local f = io.open(b.file, "rb")
    if not f then return false, "no file " .. b.file end
    local text = f:read("*a")
    f:close()
    if not text:find(b.text, 1, true) then return false, "the block is not a verbatim part of " .. b.file end
    return true
  elseif k == "norun" then
    if b.lang ~= "lua" then return true end
    local ok, err = (loadstring or load)(b.text, "=" .. b.where)
    return ok ~= nil, err
  elseif k == "run" then
    return run_lua(b)
  elseif k == "busted" then
    return run_busted(b)
  elseif k == "sh" then
    return run_sh(b)
  else
    return test_nginx(b)
  end
end

describe("documentation examples", function()
  local all = examples()
  teardown(function() shell.run("rm -rf " .. q(tmpdir)) end)

  it("are found, and most of them run", function()
    local counts = {}
    for _, b in ipairs(all) do counts[kind(b)] = (counts[kind(b)] or 0) + 1 end
    assert.is_true(#all > 20, #all .. " examples")
    assert.is_true((counts.run or 0) > 10, "only " .. tostring(counts.run) .. " Lua examples run")
  end)

  it("each doc/*.md starts with an example that runs", function()
    local docs = {}
    for _, b in ipairs(all) do
      if b.doc ~= "README.md" and not docs[b.doc] then docs[b.doc] = b end
    end
    for _, doc in ipairs(documents()) do
      if doc ~= "README.md" then
        local first = docs[doc]
        assert(first, doc .. " has no example")
        local k = kind(first)
        assert(k == "run" or k == "file" or k == "busted" or k == "sh",
          doc .. ": its first example (line " .. first.line .. ") does not run")
      end
    end
  end)

  for _, b in ipairs(all) do
    it(kind(b) .. " " .. b.where, function()
      sandbox.reset()
      local ok, out = check(b)
      assert(ok, b.where .. " (" .. b.info .. "):\n" .. tostring(out))
    end)
  end
end)
