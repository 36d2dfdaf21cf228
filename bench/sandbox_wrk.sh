#!/usr/bin/env bash
# Sandbox throughput benchmark: starts a sandbox on a free port, creates an
# OTP, hammers POST /otp/verify with wrk (bench/verify.lua), prints req/s,
# stops the sandbox. Env: WRK_THREADS (2), WRK_CONNECTIONS (64),
# WRK_DURATION (10s), SANDBOX_WORKERS (1), BENCH_PORT (first free of 20900-20999).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
threads="${WRK_THREADS:-2}" conns="${WRK_CONNECTIONS:-64}" duration="${WRK_DURATION:-10s}"

. "$here/lib.sh"
bench_sandbox 20900 20999
bench_otp "$url"

echo "nproc: $(nproc); cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1); $(nginx -v 2>&1); workers: ${SANDBOX_WORKERS:-1}"
echo "wrk -t$threads -c$conns -d$duration -s bench/verify.lua $url/otp/verify"
out="$(wrk -t"$threads" -c"$conns" -d"$duration" -s "$here/verify.lua" "$url/otp/verify")"
printf '%s\n' "$out"
rps="$(printf '%s\n' "$out" | sed -n 's/^Requests\/sec:[[:space:]]*//p')"
echo "sandbox POST /otp/verify: $rps req/s"
