-- contiguity-scm-1.rockspec: build and install the module with luarocks.
rockspec_format = "3.0"
package = "contiguity"
version = "scm-1"
source = {
  url = "git+file:///contiguity",
}
description = {
  summary = "Contiguity one-time-password API for Lua: a C module over libcurl",
  detailed = [[
Send a one-time code by SMS, verify it, resend it, and run the reverse OTP
flow, from plain Lua 5.1-5.4, LuaJIT and OpenResty. Lua tables in, JSON on
the wire, Lua tables out; blocking, many-in-flight and host transports.
]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
  "lua-cjson",
}
-- Only the library is looked up: Debian keeps curl/curl.h under the
-- multiarch include directory, which luarocks' header search misses, while
-- the compiler finds it by itself.
external_dependencies = {
  CURL = { library = "curl" },
  OPENSSL = { library = "crypto" }, -- libcrypto: HMAC-SHA256 for contiguity.webhook
  QRENCODE = { library = "qrencode" }, -- libqrencode: contiguity.qr
}
build = {
  type = "builtin",
  modules = {
    -- one translation unit: contiguity.c includes the other .c files
    contiguity = {
      sources = { "src/contiguity.c" },
      libraries = { "curl", "crypto", "qrencode", "pthread" },
      incdirs = { "$(CURL_INCDIR)", "$(OPENSSL_INCDIR)", "$(QRENCODE_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)", "$(OPENSSL_LIBDIR)", "$(QRENCODE_LIBDIR)" },
    },
    -- pure Lua: the abuse limits that contiguity.new's `guard` option loads
    ["contiguity.guard"] = "src/contiguity/guard.lua",
    -- its stores: this process, an nginx lua_shared_dict, Redis
    ["contiguity.guard.local"] = "src/contiguity/guard/local.lua",
    ["contiguity.guard.shared"] = "src/contiguity/guard/shared.lua",
    ["contiguity.guard.redis"] = "src/contiguity/guard/redis.lua",
    -- pure Lua: the non-blocking client for OpenResty, on the transport option
    ["contiguity.resty"] = "src/contiguity/resty.lua",
    -- pure Lua: the code of the contiguity-otp command (bin/contiguity-otp calls it)
    ["contiguity.cli"] = "src/contiguity/cli.lua",
  },
  -- luarocks wraps it so that it runs with the Lua this rock was built for
  install = {
    bin = { ["contiguity-otp"] = "bin/contiguity-otp" },
    -- not Lua: the nginx location contiguity.resty needs, put next to the module's
    -- Lua files so that nginx.conf can `include TREE/share/lua/5.1/contiguity/nginx/location.conf;`
    lua = {
      ["contiguity.nginx.location"] = "nginx/location.conf",
      ["contiguity.nginx.location-sandbox"] = "nginx/location-sandbox.conf",
    },
  },
}
-- `luarocks test` runs busted with the repository's .busted: the specs that need no
-- server (the full suite needs the sandbox: `make test`).
test = {
  type = "busted",
}
