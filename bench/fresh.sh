#!/usr/bin/env bash
# bench/fresh.sh: what never letting libcurl re-send a POST costs, per otp.verify, for the
# two mechanisms of DESIGN.md: the body through a read callback that refuses to rewind on
# a reused keep-alive connection (the module's choice) and a fresh connection per call
# (TLS with session resumption), next to the plain reused connection (POSTFIELDS), over
# HTTP and HTTPS against the sandbox. Prints microseconds per call for each.
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
run() { # url fresh read [cainfo]
  local out
  out="$(FLOOR_FRESH="$2" FLOOR_READ="$3" "$tmp/floor" "$1/otp/verify" "$body" "$ua" "$auth" "$calls" 50 ${4:+"$4"})"
  awk '{ printf "%.1f", $1 / $2 * 1e6 }' <<<"$out"
}
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
printf '%-6s %16s %22s %22s\n' "" "reused (µs)" "read callback (µs)" "fresh conn (µs)"
for scheme in http https; do
  if [ "$scheme" = http ]; then url=$http cai=""; else url=$https cai=$ca; fi
  a=(); b=(); f=()
  for round in 1 2 3; do  # interleaved rounds; the median of each
    a+=("$(run "$url" 0 0 "$cai")"); b+=("$(run "$url" 0 1 "$cai")"); f+=("$(run "$url" 1 0 "$cai")")
  done
  ra="$(median "${a[@]}")" rb="$(median "${b[@]}")" rf="$(median "${f[@]}")"
  printf '%-6s %16s %14s (%+.1f) %14s (%+.1f)\n' "$scheme" "$ra" "$rb" \
    "$(awk -v a="$ra" -v b="$rb" 'BEGIN { print b - a }')" "$rf" \
    "$(awk -v a="$ra" -v b="$rf" 'BEGIN { print b - a }')"
done
