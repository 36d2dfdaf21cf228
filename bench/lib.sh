# bench/lib.sh: sourced by the bench scripts (bash): a sandbox on a free port
# and an OTP to verify against it.

# bench_sandbox FIRST LAST: starts a sandbox on the first free port of
# FIRST..LAST (or $BENCH_PORT), sets $port and $url, stops it on exit.
bench_sandbox() {
  local root p
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  port=""
  for p in ${BENCH_PORT:-$(seq "$1" "$2")}; do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && url="$("$root/sandbox/start" "$p")"; then
      port="$p"; break
    fi
  done
  [ -n "$port" ] || { echo "no free port for the sandbox" >&2; exit 1; }
  trap '"'"$root"'/sandbox/stop" "$port" >/dev/null' EXIT
}

# bench_otp URL: sends one code through the sandbox at URL and exports
# OTP_ID and OTP_CODE (what bench/verify.lua posts).
bench_otp() {
  local new
  new="$(curl -sS -X POST "$1/otp/new" -H 'Authorization: Token contiguity_sk_bench_token' \
    -H 'Content-Type: application/json' -d '{"to":"+15551234567","language":"en","name":"Bench"}')"
  OTP_ID="$(printf '%s' "$new" | sed -n 's/.*"otp_id":"\([^"]*\)".*/\1/p')"
  [ -n "$OTP_ID" ] || { echo "could not create an otp: $new" >&2; exit 1; }
  OTP_CODE="$(curl -sS "$1/_sandbox/otp/$OTP_ID" | sed -n 's/.*"code":"\([0-9]*\)".*/\1/p')"
  export OTP_ID OTP_CODE
}
