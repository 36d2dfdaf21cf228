# Makefile: build the module for each Lua, run the sandbox, the specs, the demo.
# `make` builds for Lua 5.4; `make LUA=5.1|5.2|5.3|5.4|jit` for one Lua;
# `make test` builds for every Lua and runs every spec on each.

LUA        ?= 5.4
LUAS       ?= 5.1 5.2 5.3 5.4 jit
PORT       ?= 8931
CC         ?= cc
CFLAGS     ?= -O2 -g
WARN       := -Wall -Wextra -Werror -pedantic -Wno-overlength-strings
CURL_CFLAGS := $(shell curl-config --cflags 2>/dev/null)
CURL_LIBS  := $(shell curl-config --libs 2>/dev/null || echo -lcurl)
PREFIX     ?= /usr/local

ifeq ($(LUA),jit)
LUA_INC    ?= /usr/include/luajit-2.1
LUA_BIN    ?= luajit
LUA_ABI    := 5.1
else
LUA_INC    ?= /usr/include/lua$(LUA)
LUA_BIN    ?= lua$(LUA)
LUA_ABI    := $(LUA)
endif

BUILD      := build/$(LUA)
SRCS       := src/contiguity.c src/ops.c src/response.c src/curl_transport.c \
              src/webhook.c src/qr.c src/contiguity.h src/compat.h
MODULE     := $(BUILD)/contiguity.so

.PHONY: all build test valgrind demo sandbox clean deps install

all: build
build: $(MODULE)

# One translation unit: contiguity.c includes the other .c files. The module
# never links liblua: the host process provides the Lua API.
$(MODULE): $(SRCS)
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared -I$(LUA_INC) $(CURL_CFLAGS) \
	  -o $@ src/contiguity.c $(CURL_LIBS) -lcrypto -lqrencode -lpthread

# Debian packages the build and the specs need; installed only when root.
deps:
	@sh .ci/deps.sh

test: deps
	@for v in $(LUAS); do $(MAKE) --no-print-directory build LUA=$$v || exit 1; done
	@LUAS="$(LUAS)" PORT=$(PORT) sh spec/run

# The spec suite on Lua 5.4 under valgrind: no definite leak, no invalid access.
VALGRIND := valgrind -q --leak-check=full --errors-for-leak-kinds=definite \
            --error-exitcode=1 --suppressions=valgrind.supp
valgrind: deps
	@$(MAKE) --no-print-directory build LUA=5.4
	@LUAS=5.4 PORT=$(PORT) CONTIGUITY_UNDER_VALGRIND=1 LUA_WRAPPER="$(VALGRIND)" sh spec/run

demo: deps build
	@PORT=$(PORT) LUA_BIN=$(LUA_BIN) BUILD=$(BUILD) sh examples/run-demo.sh

sandbox:
	@sandbox/start --foreground $(PORT)

# `make bench`: otp.verify side by side (bench/run.sh; figures and commands in
# bench/README.md): the module vs. a bare libcurl floor, LuaSocket/LuaSec, the
# JS SDK, async vs. wrk, contiguity.resty vs. proxy_pass, memory, callgrind.
# Uses ports BENCH_PORT..BENCH_PORT+4 (8900); bounded to 10 minutes.
.PHONY: bench
bench:
	@timeout -k 30 600 bench/run.sh

install: build
	install -d $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_ABI) $(DESTDIR)$(PREFIX)/share/lua/$(LUA_ABI)/contiguity
	install -m 755 $(MODULE) $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_ABI)/contiguity.so
	install -m 644 src/contiguity/*.lua $(DESTDIR)$(PREFIX)/share/lua/$(LUA_ABI)/contiguity/
	@# the command runs with the Lua this module was built for, not whatever `lua` is
	install -d $(DESTDIR)$(PREFIX)/bin
	sed '1s|.*|#!/usr/bin/env $(LUA_BIN)|' bin/contiguity-otp > $(DESTDIR)$(PREFIX)/bin/contiguity-otp
	chmod 755 $(DESTDIR)$(PREFIX)/bin/contiguity-otp

clean:
	rm -rf build
