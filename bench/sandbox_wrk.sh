#!/usr/bin/env bash
# Sandbox throughput benchmark: starts a sandbox on a free port, creates an
# OTP, hammers POST /otp/verify with wrk (bench/verify.lua), prints req/s,
# stops the sandbox. Env: WRK_THREADS (2), WRK_CONNECTIONS (64),
# WRK_DURATION (10s), SANDBOX_WORKERS (1), BENCH_PORT (first free of 20900-20999).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
threads="${WRK_THREADS:-2}" conns="${WRK_CONNECTIONS:-64}" duration="${WRK_DURATION:-10s}"

port=""
for p in ${BENCH_PORT:-$(seq 20900 20999)}; do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && url="$("$root/sandbox/start" "$p")"; then
    port="$p"; break
  fi
done
[ -n "$port" ] || { echo "no free port for the sandbox" >&2; exit 1; }
trap '"$root/sandbox/stop" "$port"' EXIT

new="$(curl -sS -X POST "$url/otp/new" -H 'Authorization: Token contiguity_sk_bench_token' \
  -H 'Content-Type: application/json' -d '{"to":"+15551234567","language":"en","name":"Bench"}')"
OTP_ID="$(printf '%s' "$new" | sed -n 's/.*"otp_id":"\([^"]*\)".*/\1/p')"
[ -n "$OTP_ID" ] || { echo "could not create an otp: $new" >&2; exit 1; }
OTP_CODE="$(curl -sS "$url/_sandbox/otp/$OTP_ID" | sed -n 's/.*"code":"\([0-9]*\)".*/\1/p')"
export OTP_ID OTP_CODE

echo "nproc: $(nproc); cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1); $(nginx -v 2>&1); workers: ${SANDBOX_WORKERS:-1}"
echo "wrk -t$threads -c$conns -d$duration -s bench/verify.lua $url/otp/verify"
out="$(wrk -t"$threads" -c"$conns" -d"$duration" -s "$here/verify.lua" "$url/otp/verify")"
printf '%s\n' "$out"
rps="$(printf '%s\n' "$out" | sed -n 's/^Requests\/sec:[[:space:]]*//p')"
echo "sandbox POST /otp/verify: $rps req/s"
