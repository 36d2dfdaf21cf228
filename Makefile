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
SRCS       := $(wildcard src/*.c src/*.h)
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

# `make check-units`: every src/*.c compiles alone (C99, all warnings as
# errors): it includes the headers of what it uses. Two warnings are off
# because the module is one translation unit (contiguity.c includes the
# .c files): a static function a header declares is defined in another
# file, and a file need not use all it defines.
UNIT_CC    ?= clang
.PHONY: check-units
check-units:
	@for f in src/*.c; do \
	  $(UNIT_CC) -fsyntax-only -std=c99 $(WARN) -Wno-undefined-internal -Wno-unused-function \
	    -I$(LUA_INC) $(CURL_CFLAGS) $$f || { echo "check-units: $$f does not compile alone" >&2; exit 1; }; \
	done; echo "check-units: every src/*.c compiles alone"

# `make lint`: luacheck over every Lua file of the project (.luacheckrc), zero warnings.
.PHONY: lint
lint:
	@luacheck -q . >/dev/null || { luacheck -q . ; exit 1; }; echo "lint: luacheck found nothing"

# Debian packages the build and the specs need; installed only when root.
deps:
	@sh .ci/deps.sh

test: deps check-units lint
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
	@# every Lua file under src/contiguity (resty, guard and its stores, cli), as laid out there
	cd src && find contiguity -name '*.lua' | while read f; do \
	  install -D -m 644 "$$f" "$(DESTDIR)$(PREFIX)/share/lua/$(LUA_ABI)/$$f" || exit 1; done
	@# the /_contiguity location for nginx.conf's `include` (doc/openresty.md), where luarocks puts it too
	install -d $(DESTDIR)$(PREFIX)/share/lua/$(LUA_ABI)/contiguity/nginx
	install -m 644 nginx/location.conf nginx/location-sandbox.conf $(DESTDIR)$(PREFIX)/share/lua/$(LUA_ABI)/contiguity/nginx/
	@# the command runs with the Lua this module was built for, not whatever `lua` is
	install -d $(DESTDIR)$(PREFIX)/bin
	sed '1s|.*|#!/usr/bin/env $(LUA_BIN)|' bin/contiguity-otp > $(DESTDIR)$(PREFIX)/bin/contiguity-otp
	chmod 755 $(DESTDIR)$(PREFIX)/bin/contiguity-otp

clean:
	rm -rf build

# ---- sanitizers, embedding, threads, fuzzing (README, "Tests") -------------
# `make sanitize`: the module built with ASan+UBSan (build/asan/5.4), the whole
# spec suite on Lua 5.4 run by test/lua_host.c (a lua5.4 stand-in built with the
# sanitizers, so their runtimes come first without LD_PRELOAD leaking into the
# children the specs start), then the embedding test under ASan, then
# test/oom.c: every Lua allocation of a call path failing in turn. Leaks that
# are not the module's are listed, with reasons, in lsan.supp. The spec run
# leaves leak detection to `make valgrind` (the same suite, leak-check=full):
# LeakSanitizer's exit-time scan (it stops every thread with ptrace) aborted
# once in a clean-clone CI run of this suite ("LeakSanitizer has encountered
# a fatal error", not reproducible on demand) after every spec had passed. The
# embedding test, which is about lua_close freeing everything, keeps it on.
SAN_CC      ?= gcc
SAN_FLAGS   := -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -g -O1
SAN_BUILD   := build/asan
SAN_OPTS     = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
               LSAN_OPTIONS=suppressions=$(CURDIR)/lsan.supp:print_suppressions=0 \
               UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
EMBED_CFLAGS := -g -O1 -Wall -Wextra -Werror -I/usr/include/lua5.4
EMBED_LIBS   := -llua5.4 -lpthread
EMBED_PORT  ?= $(PORT)

.PHONY: sanitize embed-test tsan fuzz

# (the specs that run nginx's Lua load the normal build/jit module)
sanitize: deps
	@$(MAKE) --no-print-directory build LUA=jit
	@$(MAKE) --no-print-directory build LUA=5.4 BUILD=$(SAN_BUILD)/5.4 CC=$(SAN_CC) CFLAGS="$(SAN_FLAGS)"
	@mkdir -p $(SAN_BUILD)/bin
	$(SAN_CC) $(SAN_FLAGS) $(EMBED_CFLAGS) test/lua_host.c -o $(SAN_BUILD)/bin/lua5.4 $(EMBED_LIBS)
	$(SAN_CC) $(SAN_FLAGS) $(EMBED_CFLAGS) test/embed.c -o $(SAN_BUILD)/bin/embed $(EMBED_LIBS)
	@LUAS=5.4 PORT=$(PORT) BUILD_ROOT=$(SAN_BUILD) SPEC_LUA_BIN=$(CURDIR)/$(SAN_BUILD)/bin/lua5.4 \
	  LUA_WRAPPER="env $(SAN_OPTS) ASAN_OPTIONS=detect_leaks=0:abort_on_error=1" sh spec/run
	@PORT=$(EMBED_PORT) EMBED_WRAPPER="env $(SAN_OPTS)" test/run-embed $(SAN_BUILD)/bin/embed "$(SAN_BUILD)/5.4/?.so"
	$(SAN_CC) $(SAN_FLAGS) $(EMBED_CFLAGS) test/oom.c -o $(SAN_BUILD)/bin/oom $(EMBED_LIBS)
	@PORT=$(EMBED_PORT) OOM_CJSON_SO="$$(lua5.4 -e 'print(package.searchpath("cjson", package.cpath))')" \
	  EMBED_WRAPPER="env $(SAN_OPTS)" test/run-embed $(SAN_BUILD)/bin/oom "$(SAN_BUILD)/5.4/?.so"

# The embedding test (test/embed.c) with the normal Lua 5.4 build.
embed-test: deps
	@$(MAKE) --no-print-directory build LUA=5.4
	@mkdir -p build/test
	$(CC) $(EMBED_CFLAGS) test/embed.c -o build/test/embed $(EMBED_LIBS)
	@PORT=$(EMBED_PORT) test/run-embed build/test/embed "build/5.4/?.so"

# `make tsan`: the embedding test's 8 threads (and its 1000 state cycles) with
# the module and the host built with ThreadSanitizer (clang): a data race in
# the module's process-wide state (libcurl's global init, ...) fails it.
TSAN_CC    ?= clang
TSAN_FLAGS := -fsanitize=thread -g -O1
TSAN_BUILD := build/tsan
tsan: deps
	@$(MAKE) --no-print-directory build LUA=5.4 BUILD=$(TSAN_BUILD)/5.4 CC=$(TSAN_CC) CFLAGS="$(TSAN_FLAGS)"
	@mkdir -p $(TSAN_BUILD)/bin
	$(TSAN_CC) $(TSAN_FLAGS) $(EMBED_CFLAGS) test/embed.c -o $(TSAN_BUILD)/bin/embed $(EMBED_LIBS)
	@PORT=$(EMBED_PORT) EMBED_WRAPPER="env TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1" \
	  test/run-embed $(TSAN_BUILD)/bin/embed "$(TSAN_BUILD)/5.4/?.so"

# `make fuzz`: every fuzz/*_fuzz.c built with libFuzzer + ASan + UBSan against
# the module's translation unit, each run FUZZ_TIME seconds on its seed corpus
# fuzz/corpus/<name> (new inputs go to build/fuzz/corpus/<name>, not the repo).
FUZZ_CC    ?= clang
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
              -fno-omit-frame-pointer -Wall -Wextra -I/usr/include/lua5.4 $(CURL_CFLAGS)
FUZZ_LIBS   = -llua5.4 $(CURL_LIBS) -lcrypto $(shell pkg-config --libs libqrencode 2>/dev/null) -lpthread -lm
FUZZ_TIME  ?= 60
FUZZERS    := $(patsubst fuzz/%.c,build/fuzz/%,$(wildcard fuzz/*_fuzz.c))

build/fuzz/%: fuzz/%.c $(SRCS)
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_LIBS)

fuzz: deps $(FUZZERS)
	@for f in $(FUZZERS); do \
	  n=$${f##*/}; n=$${n%_fuzz}; mkdir -p fuzz/corpus/$$n build/fuzz/corpus/$$n; \
	  echo "== $$f ($(FUZZ_TIME) s)"; \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    $$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 -artifact_prefix=build/fuzz/$$n- \
	    build/fuzz/corpus/$$n fuzz/corpus/$$n || exit 1; \
	done
