#!/bin/sh
# run-demo.sh: what `make demo` runs: a sandbox, the OTP flow example against it, the sandbox stopped.
set -u
cd "$(dirname "$0")/.."
PORT=${PORT:-8931}
LUA_BIN=${LUA_BIN:-lua5.4}
BUILD=${BUILD:-build/5.4}
if [ ! -f "$BUILD/contiguity.so" ]; then
  echo "run-demo: $BUILD/contiguity.so is missing (make build LUA=...)" >&2; exit 1
fi
sandbox/stop "$PORT" >/dev/null 2>&1
url=$(sandbox/start "$PORT") || exit 1
trap 'sandbox/stop "$PORT" >/dev/null 2>&1' EXIT INT TERM
echo "sandbox: $url"
# The example finds the module in $BUILD first, then its Lua's own built-in
# directories (';;' in LUA_PATH/LUA_CPATH stands for those): the caller's
# LUA_PATH/LUA_CPATH are replaced, and the versioned ones that Lua 5.2-5.4
# would read instead are removed. $BUILD/contiguity.so exists, so a wrong
# build there is an error naming that file, never a silent substitute.
unset LUA_PATH_5_2 LUA_PATH_5_3 LUA_PATH_5_4 LUA_CPATH_5_2 LUA_CPATH_5_3 LUA_CPATH_5_4
CONTIGUITY_BASE_URL=$url LUA_CPATH="$BUILD/?.so;;" LUA_PATH="src/?.lua;;" \
  "$LUA_BIN" examples/otp_flow.lua
