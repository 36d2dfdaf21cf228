#!/bin/sh
# run-demo.sh: what `make demo` runs: a sandbox, the OTP flow example against it, the sandbox stopped.
set -u
cd "$(dirname "$0")/.."
PORT=${PORT:-8931}
LUA_BIN=${LUA_BIN:-lua5.4}
BUILD=${BUILD:-build/5.4}
sandbox/stop "$PORT" >/dev/null 2>&1
url=$(sandbox/start "$PORT") || exit 1
trap 'sandbox/stop "$PORT" >/dev/null 2>&1' EXIT INT TERM
echo "sandbox: $url"
CONTIGUITY_BASE_URL=$url LUA_CPATH="$BUILD/?.so;;" LUA_PATH="src/?.lua;;" \
  "$LUA_BIN" examples/otp_flow.lua
