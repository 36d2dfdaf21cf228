-- docs_links_spec.lua: every relative link in README.md and doc/*.md names a file that
-- exists (and, with a #fragment, a heading of that file). Needs no server.
local shell = require "spec.helpers.shell"
local doc_files = require "spec.helpers.docs"
local read, documents = doc_files.read, doc_files.documents

local function exists(name)
  local f = io.open(name, "rb")
  if f then f:close() end
  return f ~= nil
end

-- Text outside fenced code blocks (links in code are code, not links), without
-- inline code too unless keep_code.
local function prose(text, keep_code)
  local out, fenced = {}, false
  for line in (text .. "\n"):gmatch("(.-)\n") do
    if line:match("^%s*```") or line:match("^%s*~~~") then
      fenced = not fenced
    elseif not fenced then
      out[#out + 1] = keep_code and line or (line:gsub("`[^`]*`", ""))
    end
  end
  return table.concat(out, "\n")
end

-- GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes.
local function anchor(heading)
  return (heading:lower():gsub("[^%w%- _]", ""):gsub(" ", "-"))
end

local function anchors(text)
  local set = {}
  for line in prose(text, true):gmatch("[^\n]+") do
    local h = line:match("^#+%s+(.-)%s*$")
    if h then set[anchor((h:gsub("`", "")))] = true end
  end
  return set
end

local function dirname(name)
  return name:match("^(.*)/[^/]*$") or "."
end

-- Resolves a relative target against the document's directory.
local function resolve(doc, target)
  local parts = {}
  for part in (dirname(doc) .. "/" .. target):gmatch("[^/]+") do
    if part == ".." then table.remove(parts) elseif part ~= "." then parts[#parts + 1] = part end
  end
  return table.concat(parts, "/")
end

-- Every link target of the text: [text](target) and [ref]: target lines.
local function links(text)
  local list = {}
  local body = prose(text)
  for target in body:gmatch("%]%(([^)%s]+)[^)]*%)") do list[#list + 1] = target end
  for target in body:gmatch("\n%s*%[[^%]]+%]:%s*(%S+)") do list[#list + 1] = target end
  return list
end

describe("documentation links", function()
  it("README.md and doc/ exist, with a document per topic", function()
    for _, name in ipairs { "README.md", "doc/client.md", "doc/reliability.md", "doc/async.md",
                            "doc/openresty.md", "doc/transports.md", "doc/webhooks.md", "doc/qr.md",
                            "doc/cli.md", "doc/guard.md", "doc/sandbox.md", "doc/performance.md",
                            "doc/testing.md" } do
      assert.is_true(exists(name), name .. " is missing")
    end
  end)

  it("every relative link names an existing file (and an existing heading)", function()
    local broken, checked = {}, 0
    for _, doc in ipairs(documents()) do
      for _, target in ipairs(links(read(doc))) do
        if not target:match("^%a[%w+.-]*:") then -- not http:, https:, mailto: ...
          checked = checked + 1
          local file, frag = target:match("^([^#]*)#?(.*)$")
          local path = file == "" and doc or resolve(doc, file)
          if not exists(path) then
            broken[#broken + 1] = doc .. ": " .. target .. " (no file " .. path .. ")"
          elseif frag ~= "" and path:match("%.md$") and not anchors(read(path))[frag] then
            broken[#broken + 1] = doc .. ": " .. target .. " (no heading #" .. frag .. " in " .. path .. ")"
          end
        end
      end
    end
    assert.is_true(checked > 10, "only " .. checked .. " relative links found")
    assert.are.same({}, broken)
  end)

  it("finds a broken link (the check itself works)", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(shell.run("mkdir -p " .. dir .. "/doc"))
    local f = assert(io.open(dir .. "/doc/a.md", "w"))
    f:write("# A\n\nSee [b](b.md), [c](../c.md#x) and `[d](d.md)`.\n\n```\n[e](e.md)\n```\n")
    f:close()
    local found = links(read(dir .. "/doc/a.md"))
    shell.run("rm -rf " .. dir)
    assert.are.same({ "b.md", "../c.md#x" }, found)
    assert.are.equal("doc/b.md", resolve("doc/a.md", "b.md"))
    assert.are.equal("c.md", resolve("doc/a.md", "../c.md"))
    assert.are.equal("qr-codes-contiguityqr", anchor("QR codes: contiguity.qr"))
    assert.is_true(anchors("# A\n\n## Tarantool: `http.client` in fibers\n```\n# not a heading\n```\n")
      ["tarantool-httpclient-in-fibers"])
  end)
end)
