#!/usr/bin/env bash
# bench/guard.sh: the abuse guard's cost per guarded call (make bench runs it
# from bench/run.sh; it also runs alone). Sequential otp.verify calls against
# a static stand-in of the API, interleaved rounds of:
#   guard.{none,local,redis}        the blocking client in Lua 5.4 (bench/guard.lua):
#                                   no guard, the in-process store, Redis via lua-redis
#   guard_nginx.{none,shared,redis} contiguity.resty in one nginx worker, the calls
#                                   in one handler (bench/guard_handler.lua): no
#                                   guard, a lua_shared_dict, Redis via resty.redis
# and how many Redis round trips each guarded call made (INFO commandstats).
#
# Usage: bench/guard.sh [STUB_URL OUTDIR ROUNDS CALLS WARMUP]
#   STUB_URL answers POST /otp/verify with an envelope (bench/run.sh's stand-in);
#   without arguments a stand-in of its own is started and a table printed.
# Prints "group contender round seconds calls errors hwm_kib" lines (bench/run.sh's
# results format) and writes OUTDIR/guard_rt ("plain|nginx calls round_trips");
# bench/guard_report.lua turns both into the guard's table (bench/report.lua calls it).
# Ports: BENCH_PORT+6 (redis-server), +7 (nginx), +8 (its own stand-in); BENCH_PORT
# defaults to 8900. Like bench/run.sh's sequential rounds, the client, Redis, the
# nginx and the stand-in's worker share CPU 0, so that a round trip costs its CPU
# work and not the wake-up latency of an idle vCPU (bench/README.md); BENCH_PIN=0:
# no pinning.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"

base="${BENCH_PORT:-8900}"
redis_port=$((base + 6)) nginx_port=$((base + 7)) stub_port=$((base + 8))
pin="${BENCH_PIN:-1}"
command -v taskset >/dev/null || pin=0
token="${BENCH_TOKEN:-contiguity_sk_bench_token}"
alone=0
if [ $# -eq 0 ]; then
  alone=1
  out="$(mktemp -d "${TMPDIR:-/tmp}/contiguity-guard-bench.XXXXXX")"
  url="http://127.0.0.1:$stub_port" rounds="${BENCH_ROUNDS:-5}" calls="${BENCH_CALLS:-5000}" warm="${BENCH_WARMUP:-100}"
else
  url="$1" out="$2" rounds="$3" calls="$4" warm="$5"
fi
tmp="$out/guard"
mkdir -p "$tmp/redis" "$tmp/nginx/conf" "$tmp/nginx/logs" "$tmp/nginx/tmp" "$tmp/stub/conf" "$tmp/stub/logs" "$tmp/stub/tmp"
: > "$out/guard_rt"
log() { printf '%s\n' "$*" >&2; }
on_cpu() { if [ "$pin" = 1 ]; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
pin_workers() {
  [ "$pin" = 1 ] || return 0
  local w
  for w in $(pgrep -P "$(cat "$1")"); do taskset -pc "$2" "$w" >/dev/null; done
}

stop_nginx() {
  local pid
  [ -f "$1" ] || return 0
  pid="$(cat "$1" 2>/dev/null || true)"
  [ -n "$pid" ] || return 0
  kill -QUIT "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  stop_nginx "$tmp/nginx/logs/nginx.pid"
  stop_nginx "$tmp/stub/logs/nginx.pid"
  if [ -f "$tmp/redis/redis.pid" ]; then
    local pid
    pid="$(cat "$tmp/redis/redis.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  if [ "$alone" = 1 ]; then rm -rf "$out"; fi
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
for p in $redis_port $nginx_port; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then log "port $p is in use; set BENCH_PORT"; exit 1; fi
done
for t in redis-server redis-cli nginx lua5.4; do
  command -v "$t" >/dev/null || { log "bench/guard.sh needs $t"; exit 1; }
done

user_line=""; [ "$(id -u)" = 0 ] && user_line="user root root;"
head() {
  cat <<HEAD
$user_line
daemon on;
worker_processes 1;
error_log $1/logs/error.log warn;
pid $1/logs/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $1/tmp/client_body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
    keepalive_requests 10000000;
HEAD
}

# ---- a stand-in of its own, when run alone --------------------------------------
if [ "$alone" = 1 ]; then
  envelope='{"id":"req_bench","timestamp":1785380854155,"api_version":"v1","object":"response","data":{"verified":false}}'
  cat > "$tmp/stub/conf/nginx.conf" <<CONF
$(head "$tmp/stub")
    server {
        listen 127.0.0.1:$stub_port;
        location = /otp/verify { default_type application/json; return 200 '$envelope'; }
    }
}
CONF
  nginx -p "$tmp/stub" -c "$tmp/stub/conf/nginx.conf" -e "$tmp/stub/logs/error.log"
  wait_port "$stub_port"
fi
[ "$alone" = 1 ] && pin_workers "$tmp/stub/logs/nginx.pid" 0

# ---- Redis: no persistence --------------------------------------------------------
on_cpu 0 redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$tmp/redis" --save '' --appendonly no \
  --daemonize yes --pidfile "$tmp/redis/redis.pid" --logfile "$tmp/redis/redis.log" >/dev/null
wait_port "$redis_port"
rcli() { redis-cli -p "$redis_port" "$@"; }
# EVALSHA + EVAL calls so far (the round trips the guard's store made)
scripts() { rcli INFO commandstats | tr -d '\r' | awk -F'[=:,]' '/^cmdstat_eval(sha)?:/ { n += $3 } END { print n + 0 }'; }

# ---- nginx with contiguity.resty and the three guard set-ups ----------------------
modules="${NGINX_MODULES_DIR:-/usr/lib/nginx/modules}"
cat > "$tmp/nginx/conf/nginx.conf" <<CONF
load_module $modules/ndk_http_module.so;
load_module $modules/ngx_http_lua_module.so;
$(head "$tmp/nginx")
    lua_package_path "$root/src/?.lua;$root/bench/?.lua;/usr/share/lua/5.1/?.lua;;";
    lua_package_cpath "$root/build/jit/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";
    init_by_lua_block { require("cjson"); require("contiguity.resty"); require("guard_handler") }
    lua_shared_dict contiguity_guard 64m;
    upstream contiguity_api {
        server ${url#http://};
        keepalive 16;
    }
    server {
        listen 127.0.0.1:$nginx_port;
        set \$bench_token "$token";
        set \$bench_base_url "$url";
        set \$bench_redis_port "$redis_port";
        include $root/nginx/location-sandbox.conf;
        location = /guard { content_by_lua_block { require("guard_handler").run() } }
    }
}
CONF
nginx -p "$tmp/nginx" -c "$tmp/nginx/conf/nginx.conf" -e "$tmp/nginx/logs/error.log"
wait_port "$nginx_port"
pin_workers "$tmp/nginx/logs/nginx.pid" 0

# ---- the rounds --------------------------------------------------------------------
# lua-redis is pure Lua: Debian installs it for 5.1-5.3 only; the same file runs on 5.4
export LUA_CPATH="$root/build/5.4/?.so;;" LUA_PATH="$root/src/?.lua;/usr/share/lua/5.3/?.lua;;" BENCH_TOKEN="$token"
make --no-print-directory -s build LUA=5.4 >&2
make --no-print-directory -s build LUA=jit >&2
# one run: its results line on stdout (bench/run.sh appends it to its results), or
# alone into OUTDIR/results (bench/guard_report.lua reads either)
one() { # group contender round command...
  local o line
  if o="$(timeout 300 "${@:4}" 2>"$tmp/err")" && [ -n "$o" ]; then line="$1 $2 $3 $o"
  else log "$1 $2 round $3 failed: $(tail -n 3 "$tmp/err")"; line="$1 $2 $3 fail"; fi
  if [ "$alone" = 1 ]; then echo "$line" >> "$out/results"; else echo "$line"; fi
}
plain_rt=0 nginx_rt=0
cpu0=(); [ "$pin" = 1 ] && cpu0=(taskset -c 0)
log "guard: $rounds rounds of $calls otp.verify calls, blocking client (lua5.4) and contiguity.resty"
for r in $(seq "$rounds"); do
  for m in none local redis; do
    before="$(scripts)"
    one guard "$m" "$r" "${cpu0[@]}" lua5.4 bench/guard.lua "$m" "$url" "$calls" "$warm" "$r" "$redis_port"
    [ "$m" = redis ] && plain_rt=$((plain_rt + $(scripts) - before))
  done
  for m in none shared redis; do
    before="$(scripts)"
    one guard_nginx "$m" "$r" curl -sS --max-time 280 \
      "http://127.0.0.1:$nginx_port/guard?mode=$m&calls=$calls&warm=$warm&round=$r"
    [ "$m" = redis ] && nginx_rt=$((nginx_rt + $(scripts) - before))
  done
done
echo "plain $((rounds * (calls + warm))) $plain_rt" >> "$out/guard_rt"
echo "nginx $((rounds * (calls + warm))) $nginx_rt" >> "$out/guard_rt"

if [ "$alone" = 1 ]; then lua5.4 bench/guard_report.lua "$out"; fi
