-- Tiny HTTP client for the specs (LuaSocket + ltn12; Lua 5.1-5.4, LuaJIT).
--   http.request(method, url, {headers=, body=}) -> status, body, headers
--     (nil, err on transport failure)
--   http.json(method, url, {headers=, body=}) -> status, decoded body, raw body, headers
local socket_http = require("socket.http")
local ltn12 = require("ltn12")
local cjson = require("cjson")

local M = {}

function M.request(method, url, opts)
  opts = opts or {}
  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[k:lower()] = v end
  local source
  if opts.body then
    headers["content-length"] = tostring(#opts.body)
    source = ltn12.source.string(opts.body)
  end
  local chunks = {}
  local ok, status, resp_headers = socket_http.request({
    url = url,
    method = method,
    headers = headers,
    source = source,
    sink = ltn12.sink.table(chunks),
  })
  if not ok then return nil, status end
  return status, table.concat(chunks), resp_headers
end

function M.json(method, url, opts)
  local status, body, headers = M.request(method, url, opts)
  if not status then return nil, body end
  local ok, decoded = pcall(cjson.decode, body)
  return status, ok and decoded or nil, body, headers
end

return M
