#!/usr/bin/env bash
# bench/run.sh (`make bench`): otp.verify side by side - the module vs. a bare
# libcurl floor, LuaSocket/LuaSec + cjson, the official JS SDK (HTTP and
# HTTPS, interleaved rounds), async vs. wrk -c64, contiguity.resty vs. plain
# proxy_pass under nginx, memory over 200,000 calls, callgrind instructions
# per call. Prints one table (bench/report.lua). See bench/README.md.
#
# Servers (ports BENCH_PORT .. BENCH_PORT+5, default 8900-8905):
#   +0/+1  the sandbox (HTTP/HTTPS), used once to capture a real verify envelope
#   +2/+3  a static nginx stand-in that answers POST /otp/verify with that
#          envelope (HTTP, and HTTPS with the sandbox's certificate and CA)
#   +4     nginx + Lua module running contiguity.resty and a proxy_pass location
#   +5     the same nginx, one process under callgrind (instructions per request)
# Every server is stopped on exit, failure or interrupt; every client run is
# under `timeout`.
#
# Env: BENCH_PORT (8900), BENCH_ROUNDS (5), BENCH_CALLS (5000 per round per
# contender), BENCH_WARMUP (100), BENCH_ASYNC_CALLS (20000), BENCH_INFLIGHT (64),
# BENCH_LUASEC_CALLS (100: LuaSec's rounds, ~44 ms a call), WRK_SECONDS (2), BENCH_MEMORY_CALLS (200000), BENCH_SKIP (space-separated:
# js resty memory callgrind fresh guard), BENCH_OUT (a file to keep the raw results in),
# BENCH_KEEP (1: keep the temporary folder), BENCH_PIN (1; 0: no CPU pinning).
#
# CPU placement (taskset; see bench/README.md): the sequential rounds run the
# client and the stand-in's worker on the same CPU (0), so that they measure
# CPU cost and not the wake-up latency of an idle vCPU; the floor and the
# module also run with the server on the other CPU ("split"). Throughput
# rounds give the client (wrk, async) CPU 0 and the server CPU 1; in the
# nginx rounds the nginx under test has CPU 1, wrk and the stand-in CPU 0.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"

base="${BENCH_PORT:-8900}"
sandbox_port=$base sandbox_tls=$((base + 1)) stub_port=$((base + 2)) stub_tls=$((base + 3))
resty_port=$((base + 4)) vg_port=$((base + 5)) vg_pid=""
rounds="${BENCH_ROUNDS:-5}" calls="${BENCH_CALLS:-5000}" warm="${BENCH_WARMUP:-100}"
async_calls="${BENCH_ASYNC_CALLS:-20000}" inflight="${BENCH_INFLIGHT:-64}"
luasec_calls="${BENCH_LUASEC_CALLS:-100}" wrk_seconds="${WRK_SECONDS:-2}" memory_calls="${BENCH_MEMORY_CALLS:-200000}"
skip=" ${BENCH_SKIP:-} " pin="${BENCH_PIN:-1}"
token="contiguity_sk_bench_token"
lua=lua5.4
tmp="$(mktemp -d "${TMPDIR:-/tmp}/contiguity-bench.XXXXXX")"
res="$tmp/results"
: > "$res"

log() { printf '%s\n' "$*" >&2; }

# Stops an nginx by its pid file: graceful, then KILL after 5 s.
stop_nginx() {
  local pidfile="$1" pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  [ -n "$pid" ] || return 0
  kill -QUIT "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  stop_nginx "$tmp/resty/logs/nginx.pid"
  if [ -n "$vg_pid" ]; then kill -KILL "$vg_pid" 2>/dev/null || true; fi
  stop_nginx "$tmp/stub/logs/nginx.pid"
  "$root/sandbox/stop" "$sandbox_port" >/dev/null 2>&1 || true
  if [ -n "${BENCH_OUT:-}" ]; then cp "$res" "$BENCH_OUT" 2>/dev/null || true; fi
  if [ -n "${BENCH_KEEP:-}" ]; then log "kept $tmp"; else rm -rf "$tmp"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  log "nothing listens on port $1"; return 1
}

# on CPU n: the client command (prefix) / an nginx's workers (by pid file).
on_cpu() { if [ "$pin" = 1 ]; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
pin_workers() {
  [ "$pin" = 1 ] || return 0
  local w
  for w in $(pgrep -P "$(cat "$1")"); do taskset -pc "$2" "$w" >/dev/null; done
}

# What the harness needs; a missing optional tool only drops its rows.
for t in nginx curl cc openssl $lua luajit; do
  command -v "$t" >/dev/null || { log "bench needs $t"; exit 1; }
done
for t in wrk valgrind node npm taskset; do
  command -v "$t" >/dev/null || log "note: $t is not installed; its rows are skipped or unpinned"
done
command -v taskset >/dev/null || pin=0
timer=(); [ -x /usr/bin/time ] && timer=(/usr/bin/time -f 'hwm %M')

for p in $sandbox_port $sandbox_tls $stub_port $stub_tls $resty_port $vg_port; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    log "port $p is in use; set BENCH_PORT to a base with 6 free ports"; exit 1
  fi
done

# ---- the machine -------------------------------------------------------------
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: nproc $(nproc); $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1); $(. /etc/os-release && echo "$PRETTY_NAME"); kernel $(uname -r)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "versions: $(nginx -v 2>&1 | sed 's/^nginx version: //'); $($lua -v 2>&1 | head -n1 | cut -d' ' -f1-2);" \
       "LuaJIT $(luajit -v 2>&1 | cut -d' ' -f2); libcurl $(curl-config --version | cut -d' ' -f2);" \
       "lua-socket $(dpkg-query -W -f '${Version}' lua-socket 2>/dev/null); lua-sec $(dpkg-query -W -f '${Version}' lua-sec 2>/dev/null);" \
       "lua-cjson $(dpkg-query -W -f '${Version}' lua-cjson 2>/dev/null); node $(node -v 2>/dev/null); wrk $(dpkg-query -W -f '${Version}' wrk 2>/dev/null)"
} > "$tmp/machine"

# ---- builds: the module (5.4 and the LuaJIT ABI for nginx), the floor ---------
make --no-print-directory build LUA=5.4 >&2
make --no-print-directory build LUA=jit >&2
floor="$tmp/floor"
cc -O2 -Wall -Wextra -Werror $(curl-config --cflags) -o "$floor" bench/floor.c $(curl-config --libs)
export LUA_CPATH="$root/build/5.4/?.so;;" LUA_PATH="$root/src/?.lua;;"

# ---- the JS SDK, installed into the temporary folder -------------------------
js=""
if [[ "$skip" != *" js "* ]]; then
  if timeout 180 npm install --silent --no-audit --no-fund --prefix "$tmp/js" contiguity >"$tmp/npm.log" 2>&1; then
    js="$tmp/js"
    echo "js sdk: contiguity $(node -p "require('$tmp/js/node_modules/contiguity/package.json').version")" >> "$tmp/machine"
  else
    log "npm install contiguity failed; JS rows skipped:"; tail -n 5 "$tmp/npm.log" >&2
  fi
fi

# ---- the sandbox: a real envelope ---------------------------------------------
sandbox_url="$(SANDBOX_TLS_PORT=$sandbox_tls "$root/sandbox/start" "$sandbox_port")"
sprefix="${TMPDIR:-/tmp}/contiguity-sandbox.$sandbox_port"
ca="$sprefix/ca.pem"
api() { curl -sS --max-time 5 -X POST "$sandbox_url$1" -H "Authorization: Token $token" \
          -H 'Content-Type: application/json' -d "$2"; }
new="$(api /otp/new '{"to":"+15551234567","language":"en","name":"Bench"}')"
OTP_ID="$(printf '%s' "$new" | sed -n 's/.*"otp_id":"\([^"]*\)".*/\1/p')"
[ -n "$OTP_ID" ] || { log "could not create an otp: $new"; exit 1; }
OTP_CODE="$(curl -sS --max-time 5 "$sandbox_url/_sandbox/otp/$OTP_ID" | sed -n 's/.*"code":"\([0-9]*\)".*/\1/p')"
export OTP_ID OTP_CODE BENCH_TOKEN="$token" BENCH_INFLIGHT="$inflight"
api /otp/verify "{\"otp_id\":\"$OTP_ID\",\"otp\":\"$OTP_CODE\"}" >/dev/null # uses the code up
envelope="$(api /otp/verify "{\"otp_id\":\"$OTP_ID\",\"otp\":\"$OTP_CODE\"}")"
case "$envelope" in
  *'"verified":false'*) ;;
  *) log "unexpected verify answer from the sandbox: $envelope"; exit 1 ;;
esac
case "$envelope" in *"'"*|*'$'*|*'\'*) log "envelope needs quoting: $envelope"; exit 1 ;; esac
echo "envelope: $envelope" >> "$tmp/machine"

# ---- the static stand-in: nginx answering that envelope ------------------------
user_line=""; [ "$(id -u)" = 0 ] && user_line="user nobody nogroup;"
# nginx_head DIR: the start of every bench nginx's configuration, up to
# inside "http {", with its logs, pid and temporary files under DIR.
nginx_head() {
  cat <<HEAD
$user_line
daemon on;
worker_processes 1;
error_log $1/logs/error.log warn;
pid $1/logs/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    server_tokens off;
    client_body_temp_path $1/tmp/client_body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
HEAD
}
mkdir -p "$tmp/stub/conf" "$tmp/stub/logs" "$tmp/stub/tmp"
cat > "$tmp/stub/conf/nginx.conf" <<CONF
$(nginx_head "$tmp/stub")
    server {
        listen 127.0.0.1:$stub_port;
        listen 127.0.0.1:$stub_tls ssl;
        ssl_certificate $sprefix/tls/server.pem;
        ssl_certificate_key $sprefix/tls/server.key;
        location = /otp/verify {
            default_type application/json;
            return 200 '$envelope';
        }
        location / { return 404; }
    }
}
CONF
nginx -p "$tmp/stub" -c "$tmp/stub/conf/nginx.conf" -e "$tmp/stub/logs/error.log"
wait_port "$stub_port"; wait_port "$stub_tls"
http_url="http://127.0.0.1:$stub_port" https_url="https://127.0.0.1:$stub_tls"

# The request the module sends, read through its transport option: the floor
# sends exactly these bytes.
read_request() {
  $lua -e '
    local c = require("contiguity").new(os.getenv("BENCH_TOKEN"), { base_url = "http://127.0.0.1:1",
      transport = function(r) print(r.body); print(r.headers["User-Agent"]); print(r.headers.Authorization)
        return nil, "captured" end })
    c.otp.verify{ otp_id = os.getenv("OTP_ID"), otp = os.getenv("OTP_CODE") }'
}
{ read -r req_body; read -r req_ua; read -r req_auth; } < <(read_request)
echo "request: POST /otp/verify, body $req_body, User-Agent $req_ua" >> "$tmp/machine"

# One timed run; appends "group contender round seconds calls errors hwm_kib".
record() {
  local group="$1" name="$2" round="$3"; shift 3
  local out wrap=(timeout 180)
  [ "$(type -t "$1")" = function ] && wrap=() # wrk_run bounds itself
  if out="$("${wrap[@]}" "$@" 2>"$tmp/err")" && [ -n "$out" ]; then
    echo "$group $name $round $out" >> "$res"
  else
    log "$group $name round $round failed: $(tail -n 3 "$tmp/err")"
    echo "$group $name $round fail" >> "$res"
  fi
}

# wrk run: converts wrk's report to the same fields (peak RSS by /usr/bin/time).
wrk_run() {
  local url="$1" cpu="${2:-0-1}" out n secs errs hwm
  out="$(on_cpu "$cpu" timeout 60 "${timer[@]}" wrk -t1 -c"$inflight" -d"${wrk_seconds}s" \
           -s "$here/verify.lua" "$url" 2>&1)" || return 1
  n="$(printf '%s\n' "$out" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')"
  secs="$(printf '%s\n' "$out" | awk -v n="$n" '/^Requests\/sec:/ { printf "%.6f", n / $2 }')"
  errs="$(printf '%s\n' "$out" | awk '/Non-2xx/ { e += $NF } /Socket errors/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 } END { print e + 0 }')"
  hwm="$(printf '%s\n' "$out" | sed -n 's/^hwm //p')"
  [ -n "$n" ] && [ -n "$secs" ] || { printf '%s\n' "$out" >&2; return 1; }
  echo "$secs $n $errs ${hwm:--1}"
}

# ---- 1-4: sequential, interleaved rounds, HTTP then HTTPS ---------------------
for proto in http https; do
  if [ "$proto" = http ]; then url="$http_url"; cafile=(); else url="$https_url"; cafile=("$ca"); fi
  log "sequential over $proto: $rounds rounds of $calls calls each"
  pin_workers "$tmp/stub/logs/nginx.pid" 0
  for r in $(seq "$rounds"); do
    record "$proto" floor "$r" on_cpu 0 "$floor" "$url/otp/verify" "$req_body" "$req_ua" "$req_auth" "$calls" "$warm" "${cafile[@]}"
    record "$proto" module "$r" on_cpu 0 $lua bench/seq.lua module "$url" "$calls" "$warm" "${cafile[@]}"
    if [ "$proto" = https ]; then # ~44 ms a call: see bench/README.md
      record "$proto" luasocket "$r" on_cpu 0 $lua bench/seq.lua luasocket "$url" "$luasec_calls" 5 "${cafile[@]}"
    else
      record "$proto" luasocket "$r" on_cpu 0 $lua bench/seq.lua luasocket "$url" "$calls" "$warm" "${cafile[@]}"
    fi
    if [ -n "$js" ]; then
      if [ "$proto" = https ]; then
        record "$proto" js "$r" on_cpu 0 env NODE_EXTRA_CA_CERTS="$ca" node bench/seq_js.mjs "$js" "$url" "$calls" "$warm"
      else
        record "$proto" js "$r" on_cpu 0 node bench/seq_js.mjs "$js" "$url" "$calls" "$warm"
      fi
    fi
  done
  if [ "$pin" = 1 ]; then
    log "sequential over $proto, server on the other CPU: $rounds rounds"
    pin_workers "$tmp/stub/logs/nginx.pid" 1
    for r in $(seq "$rounds"); do
      record "$proto-split" floor "$r" on_cpu 0 "$floor" "$url/otp/verify" "$req_body" "$req_ua" "$req_auth" "$calls" "$warm" "${cafile[@]}"
      record "$proto-split" module "$r" on_cpu 0 $lua bench/seq.lua module "$url" "$calls" "$warm" "${cafile[@]}"
    done
  fi
done

# lua-cjson alone, no I/O: the decode and encode every Lua client pays
log "lua-cjson alone: $rounds rounds of $calls decode + encode"
for r in $(seq "$rounds"); do
  record cjson alone "$r" on_cpu 0 env BENCH_ENVELOPE="$envelope" $lua bench/seq.lua cjson - "$calls" "$warm"
done

# the abuse guard's cost per guarded call: bench/guard.sh (ports BENCH_PORT+6, +7)
if [[ "$skip" != *" guard "* ]]; then
  pin_workers "$tmp/stub/logs/nginx.pid" 0
  BENCH_PORT=$base BENCH_PIN=$pin BENCH_TOKEN=$token timeout 900 bench/guard.sh "$http_url" "$tmp" "$rounds" \
    "$calls" "$warm" >> "$res" || log "the guard bench failed"
fi

# ---- 5: async, 64 in flight, vs. wrk -c64 --------------------------------------
log "async ($inflight in flight, $async_calls calls) vs wrk -t1 -c$inflight -d${wrk_seconds}s: $rounds rounds"
pin_workers "$tmp/stub/logs/nginx.pid" 1
for r in $(seq "$rounds"); do
  record conc wrk "$r" wrk_run "$http_url/otp/verify" 0
  record conc floor_multi "$r" on_cpu 0 env FLOOR_INFLIGHT="$inflight" "$floor" "$http_url/otp/verify" "$req_body" "$req_ua" "$req_auth" "$async_calls" "$warm"
  record conc async "$r" on_cpu 0 $lua bench/seq.lua async "$http_url" "$async_calls" "$warm"
done
# the same pair against the sandbox itself (its Lua handler is then the bottleneck)
log "the same against the sandbox: $rounds rounds"
pin_workers "$sprefix/logs/nginx.pid" 1
for r in $(seq "$rounds"); do
  record sandbox wrk "$r" wrk_run "$sandbox_url/otp/verify" 0
  record sandbox async "$r" on_cpu 0 $lua bench/seq.lua async "$sandbox_url" "$async_calls" "$warm"
done

# ---- 6: nginx: contiguity.resty vs. plain proxy_pass, wrk -c64 ----------------
if [[ "$skip" != *" resty "* ]]; then
  modules="${NGINX_MODULES_DIR:-/usr/lib/nginx/modules}"
  mkdir -p "$tmp/resty/conf" "$tmp/resty/logs" "$tmp/resty/tmp"
  cat > "$tmp/resty/conf/nginx.conf" <<CONF
load_module $modules/ndk_http_module.so;
load_module $modules/ngx_http_lua_module.so;
$(nginx_head "$tmp/resty")
    lua_package_path "$root/src/?.lua;$root/bench/?.lua;/usr/share/lua/5.1/?.lua;;";
    lua_package_cpath "$root/build/jit/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";
    init_by_lua_block { require("cjson"); require("contiguity.resty") }

    upstream contiguity_api {
        server 127.0.0.1:$stub_port;
        keepalive $inflight;
    }
    server {
        listen 127.0.0.1:$resty_port;
        set \$bench_token "$token";
        set \$bench_base_url "$http_url";
        set \$bench_envelope '$envelope';

        # the shipped internal location (doc/openresty.md), plain http to the stand-in
        include $root/nginx/location-sandbox.conf;
        # a handler: decode the request, otp.verify through contiguity.resty,
        # answer the result as JSON
        location = /resty/verify { content_by_lua_block { require("resty_handler").verify() } }
        # diagnostic: the same subrequest with no module (the ceiling of any
        # ngx.location.capture design): body in, the stand-in's answer out
        location = /capture/verify { content_by_lua_block { require("resty_handler").capture() } }
        # diagnostics: the handler with the module and no I/O; the handler alone
        location = /noio/verify { content_by_lua_block { require("resty_handler").noio() } }
        location = /handler/verify { content_by_lua_block { require("resty_handler").handler_only() } }
        # the same request relayed as it is
        location = /proxy/otp/verify {
            proxy_pass http://contiguity_api/otp/verify;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
  nginx -p "$tmp/resty" -c "$tmp/resty/conf/nginx.conf" -e "$tmp/resty/logs/error.log"
  wait_port "$resty_port"
  # the nginx under test gets CPU 1 to itself; wrk and the stand-in share CPU 0
  pin_workers "$tmp/resty/logs/nginx.pid" 1
  pin_workers "$tmp/stub/logs/nginx.pid" 0
  check="$(curl -sS --max-time 5 -X POST "http://127.0.0.1:$resty_port/resty/verify" \
             -H "Authorization: Token $token" -d "{\"otp_id\":\"$OTP_ID\",\"otp\":\"$OTP_CODE\"}")"
  case "$check" in *'"verified":false'*) ;; *) log "resty handler answered: $check"; exit 1 ;; esac
  log "nginx: contiguity.resty vs proxy_pass vs bare capture, wrk -t1 -c$inflight -d${wrk_seconds}s: $rounds rounds"
  # Each round also records the worker's CPU time (utime + stime from
  # /proc) per request: steadier than req/s when the VM's CPUs vary.
  wpid="$(pgrep -P "$(cat "$tmp/resty/logs/nginx.pid")" | head -n1)"
  ticks() { awk '{ print $14 + $15 }' "/proc/$wpid/stat"; }
  nginx_round() {
    local name="$1" path="$2" r="$3" before after n
    before="$(ticks)"
    record nginx "$name" "$r" wrk_run "http://127.0.0.1:$resty_port$path" 0
    after="$(ticks)"
    n="$(tail -n 1 "$res" | awk -v k="nginx $name $r" 'index($0, k) == 1 && NF == 7 { print $5 }')"
    [ -n "$n" ] && echo "nginx.$name $r $(awk -v a="$before" -v b="$after" -v n="$n" -v hz="$(getconf CLK_TCK)" \
      'BEGIN { printf "%.2f", (b - a) / hz * 1e6 / n }')" >> "$tmp/cpu"
  }
  for r in $(seq "$rounds"); do
    nginx_round proxy_pass /proxy/otp/verify "$r"
    nginx_round resty /resty/verify "$r"
    nginx_round capture /capture/verify "$r"
    nginx_round noio /noio/verify "$r"
    nginx_round handler /handler/verify "$r"
  done
  # the worker's peak RSS replaces wrk's for these rows
  echo "nginx_worker_hwm_kib $(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$wpid/status")" >> "$tmp/machine"
  stop_nginx "$tmp/resty/logs/nginx.pid"
fi

# ---- memory ------------------------------------------------------------------
if [[ "$skip" != *" memory "* ]]; then
  log "memory: $memory_calls calls on one client"
  timeout 300 $lua bench/memory.lua "$http_url" "$memory_calls" 100 > "$tmp/memory" 2>&1 || log "memory run failed: $(tail -n 3 "$tmp/memory")"
fi

# ---- callgrind: instructions per otp.verify -------------------------------------
if [[ "$skip" != *" callgrind "* ]] && command -v valgrind >/dev/null; then
  log "callgrind: 500 and 1500 calls"
  for n in 500 1500; do
    timeout 300 valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$n" \
      $lua bench/seq.lua module "$http_url" "$n" 20 >/dev/null 2>"$tmp/cg.$n.log" || log "callgrind $n failed"
    callgrind_annotate --inclusive=no --threshold=100 "$tmp/cg.$n" > "$tmp/cg.$n.self" 2>/dev/null || true
    callgrind_annotate --inclusive=yes --threshold=100 "$tmp/cg.$n" > "$tmp/cg.$n.incl" 2>/dev/null || true
    timeout 300 valgrind --tool=callgrind --callgrind-out-file="$tmp/cgf.$n" \
      "$floor" "$http_url/otp/verify" "$req_body" "$req_ua" "$req_auth" "$n" 20 >/dev/null 2>"$tmp/cgf.$n.log" || log "callgrind floor $n failed"
    callgrind_annotate --inclusive=no --threshold=100 "$tmp/cgf.$n" > "$tmp/cgf.$n.self" 2>/dev/null || true
    BENCH_ENVELOPE="$envelope" timeout 300 valgrind --tool=callgrind --callgrind-out-file="$tmp/cgj.$n" \
      $lua bench/seq.lua cjson - "$n" 20 >/dev/null 2>"$tmp/cgj.$n.log" || log "callgrind cjson $n failed"
    callgrind_annotate --inclusive=no --threshold=100 "$tmp/cgj.$n" > "$tmp/cgj.$n.self" 2>/dev/null || true
  done
  # The nginx worker's user-space instructions per request on each location:
  # the same config in one process (master_process off) under callgrind,
  # counters zeroed before and dumped after 3 s of wrk -c2 on a location.
  if [[ "$skip" != *" resty "* ]] && command -v callgrind_control >/dev/null; then
    log "callgrind: the nginx worker, instructions per request by location"
    mkdir -p "$tmp/vg/conf" "$tmp/vg/logs" "$tmp/vg/tmp"
    sed -e 's/^daemon on;$/daemon off; master_process off;/' -e "s|$tmp/resty/|$tmp/vg/|g" \
        -e "s|listen 127.0.0.1:$resty_port;|listen 127.0.0.1:$vg_port;|" \
        "$tmp/resty/conf/nginx.conf" > "$tmp/vg/conf/nginx.conf"
    valgrind --tool=callgrind --callgrind-out-file="$tmp/vg/cg" \
      nginx -p "$tmp/vg" -c "$tmp/vg/conf/nginx.conf" -e "$tmp/vg/logs/error.log" >"$tmp/vg/valgrind.log" 2>&1 &
    vg_pid=$!
    for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$vg_port") 2>/dev/null && break; sleep 0.1; done
    for loc in proxy_pass:/proxy/otp/verify capture:/capture/verify resty:/resty/verify \
               noio:/noio/verify handler:/handler/verify; do
      callgrind_control -z "$vg_pid" >/dev/null 2>&1 || break
      n="$(timeout 60 wrk -t1 -c2 -d3s -s "$here/verify.lua" "http://127.0.0.1:$vg_port${loc#*:}" 2>&1 |
             sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')"
      callgrind_control -d "$vg_pid" >/dev/null 2>&1 || break
      sleep 1
      dump="$(ls -t "$tmp/vg/cg".* 2>/dev/null | head -n 1)"
      total="$(callgrind_annotate "$dump" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)"
      [ -n "$n" ] && [ "$n" -gt 0 ] && [ -n "$total" ] && echo "${loc%%:*} $((total / n)) $n" >> "$tmp/vg.txt"
    done
    kill -QUIT "$vg_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$vg_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$vg_pid" 2>/dev/null || true
    wait "$vg_pid" 2>/dev/null || true
    vg_pid=""
  fi
  # async, 64 in flight: the module and the bare libcurl multi loop
  log "callgrind: async, 1000 and 3000 calls"
  for n in 1000 3000; do
    timeout 300 valgrind --tool=callgrind --callgrind-out-file="$tmp/cga.$n" \
      $lua bench/seq.lua async "$http_url" "$n" 100 >/dev/null 2>"$tmp/cga.$n.log" || log "callgrind async $n failed"
    callgrind_annotate --inclusive=no --threshold=100 "$tmp/cga.$n" > "$tmp/cga.$n.self" 2>/dev/null || true
    FLOOR_INFLIGHT="$inflight" timeout 300 valgrind --tool=callgrind --callgrind-out-file="$tmp/cgm.$n" \
      "$floor" "$http_url/otp/verify" "$req_body" "$req_ua" "$req_auth" "$n" 100 \
      >/dev/null 2>"$tmp/cgm.$n.log" || log "callgrind floor multi $n failed"
    callgrind_annotate --inclusive=no --threshold=100 "$tmp/cgm.$n" > "$tmp/cgm.$n.self" 2>/dev/null || true
  done
fi

$lua bench/report.lua "$tmp" "$rounds"

# The price of never letting libcurl re-send a POST (issue 14; README's
# reliability doc): otp.verify on a reused connection with POSTFIELDS, with
# the module's refusing read callback, and on a fresh connection per call.
case " ${BENCH_SKIP:-} " in *" fresh "*) ;; *)
  echo
  echo "never re-send, per otp.verify (bench/fresh.sh; median of 3 interleaved runs of ${BENCH_FRESH_CALLS:-2000} calls)"
  BENCH_PORT=$((base + 10)) BENCH_CALLS="${BENCH_FRESH_CALLS:-2000}" timeout 300 bench/fresh.sh ;;
esac
