#!/bin/sh
# .ci/deps.sh: install the Debian packages the build, the sandbox and the specs need
# (only those missing, and only when run as root; otherwise say what is missing).
set -u
PKGS="gcc make libc6-dev libcurl4-openssl-dev libssl-dev
 lua5.1 lua5.2 lua5.3 lua5.4 liblua5.1-0-dev liblua5.2-dev liblua5.3-dev liblua5.4-dev
 luajit2 libluajit2-5.1-dev lua-cjson lua-busted lua-socket lua-sec luarocks
 nginx libnginx-mod-http-lua wrk valgrind curl openssl clang libclang-rt-dev
 libqrencode-dev zbar-tools librsvg2-bin tmux lua-luv tarantool lua-copas lua-http
 redis-server lua-redis lua-nginx-redis strace lua-check"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "deps: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq $missing >/dev/null || {
    echo "deps: apt-get install failed for:$missing" >&2; exit 1; }
  # Debian enables nginx's default site on install; the sandbox never needs it.
else
  echo "deps: missing Debian packages (run 'make test' as root to install them):$missing" >&2
  exit 1
fi
