-- The project's documents, for the specs that read them (docs_spec, docs_links_spec).
local M = {}

function M.read(name)
  local f = assert(io.open(name, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- The markdown files: README.md and doc/*.md.
function M.documents()
  local list = { "README.md" }
  local p = assert(io.popen("ls doc/*.md 2>/dev/null"))
  for name in p:lines() do list[#list + 1] = name end
  p:close()
  return list
end

return M
