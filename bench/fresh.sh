#!/usr/bin/env bash
# bench/fresh.sh: what a fresh connection per SMS-sending call (otp.new, otp.resend) costs:
# the same POST on a reused keep-alive connection vs. on a new one each time, over HTTP
# and HTTPS, against the sandbox. Prints microseconds per call for each.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${BENCH_PORT:-8920}" calls="${BENCH_CALLS:-2000}"
tmp="$(mktemp -d)"
trap 'sandbox/stop "$port" >/dev/null 2>&1; rm -rf "$tmp"' EXIT INT TERM
cc -O2 -o "$tmp/floor" bench/floor.c -lcurl
sandbox/stop "$port" >/dev/null 2>&1 || true
http="$(SANDBOX_TLS_PORT=$((port + 1)) sandbox/start "$port")"
prefix="${TMPDIR:-/tmp}/contiguity-sandbox.$port"
https="$(cat "$prefix/tls_url")" ca="$prefix/ca.pem"
ua="contiguity-lua/bench" auth="Token contiguity_sk_bench"
. "$(dirname "$0")/lib.sh"
bench_otp "$http"
body='{"otp_id":"'"$OTP_ID"'","otp":"000000"}'  # a wrong code: the same answer every time
run() { # url fresh [cainfo]
  local out
  out="$(FLOOR_FRESH="$2" "$tmp/floor" "$1/otp/verify" "$body" "$ua" "$auth" "$calls" 50 ${3:+"$3"})"
  awk '{ printf "%.1f", $1 / $2 * 1e6 }' <<<"$out"
}
printf '%-6s %14s %14s %12s\n' "" "reused (µs)" "fresh (µs)" "cost (µs)"
for scheme in http https; do
  if [ "$scheme" = http ]; then url=$http cai=""; else url=$https cai=$ca; fi
  a=(); b=()
  for round in 1 2 3; do  # interleaved rounds; the median of each
    a+=("$(run "$url" 0 "$cai")"); b+=("$(run "$url" 1 "$cai")")
  done
  ra="$(printf '%s\n' "${a[@]}" | sort -n | sed -n 2p)" rb="$(printf '%s\n' "${b[@]}" | sort -n | sed -n 2p)"
  printf '%-6s %14s %14s %12s\n' "$scheme" "$ra" "$rb" "$(awk -v a="$ra" -v b="$rb" 'BEGIN { printf "%.1f", b - a }')"
done
