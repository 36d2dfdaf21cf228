#!/usr/bin/env bash
# Async throughput benchmark: starts a sandbox on a free port (20800-20899),
# creates an OTP, runs wrk -c64 against POST /otp/verify, then bench/async.lua
# (64 async calls in flight, then sequential blocking calls) against the same
# endpoint, prints one table, stops the sandbox.
# Env: LUA_BIN (lua5.4), BUILD (build/5.4), BENCH_SECONDS (5), BENCH_INFLIGHT (64),
# WRK_THREADS (1), SANDBOX_WORKERS (1), BENCH_PORT.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
lua_bin="${LUA_BIN:-lua5.4}" build="${BUILD:-build/5.4}"
seconds="${BENCH_SECONDS:-5}" inflight="${BENCH_INFLIGHT:-64}" threads="${WRK_THREADS:-1}"

[ -f "$root/$build/contiguity.so" ] || make -C "$root" --no-print-directory build >/dev/null

. "$here/lib.sh"
bench_sandbox 20800 20899
bench_otp "$url"

echo "nproc: $(nproc); cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
echo "$(nginx -v 2>&1); workers: ${SANDBOX_WORKERS:-1}; $("$lua_bin" -v 2>&1 | head -n1); $(curl-config --version)"
echo "wrk -t$threads -c$inflight -d${seconds}s -s bench/verify.lua $url/otp/verify"
out="$(wrk -t"$threads" -c"$inflight" -d"${seconds}s" -s "$here/verify.lua" "$url/otp/verify")"
WRK_RPS="$(printf '%s\n' "$out" | sed -n 's/^Requests\/sec:[[:space:]]*//p')"
printf '%s\n' "$out" | grep -E 'Non-2xx|Socket errors' || true
curl -sS -X DELETE "$url/_sandbox/requests" >/dev/null || true
echo
cd "$root"
BENCH_URL="$url" WRK_RPS="$WRK_RPS" BENCH_SECONDS="$seconds" BENCH_INFLIGHT="$inflight" \
  LUA_CPATH="$build/?.so;;" LUA_PATH="src/?.lua;;" "$lua_bin" bench/async.lua
