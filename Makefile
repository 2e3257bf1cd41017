# hotload: build everything, run the demo, the tests and the benchmarks.
#   make demo    start a demo program, patch it live, show the change, revert
#   make test    install, build and run every test
#   make bench   print the benchmark figures
# Each target does its own set-up: npm packages, Debian packages (clang, deb-src
# for Lua's sources), the native shim, the DWARF reader's WebAssembly, the
# fixtures and the TypeScript build.

SHIM     := native-shim/build/libhotload-shim.so
DEBUGLIB := native-shim/build/libhotload-debug.so
DWARFSCAN := packages/elf/wasm/build/dwarf-scan.wasm
CC       ?= gcc
NPM      := npm --loglevel=error --no-fund --no-audit
STAMP    := node_modules/.hotload-installed

all: build

# npm packages, exactly as locked.
$(STAMP): package.json package-lock.json packages/*/package.json
	$(NPM) ci
	touch $@

# Debian packages the tests need (once; idempotent).
system:
	@bash scripts/setup-system.sh

$(SHIM): native-shim/shim.c
	mkdir -p $(dir $@)
	$(CC) -O2 -g -fPIC -shared -Wall -Wextra -Werror -o $@ $<

# The GDB JIT descriptor hotload loads into a patched process (no C library needed).
$(DEBUGLIB): native-shim/debug-descriptor.c
	mkdir -p $(dir $@)
	$(CC) -O2 -g -fPIC -shared -nostdlib -Wl,--build-id -Wall -Wextra -Werror -o $@ $<

# The DWARF reader's loop (packages/elf/src/dwarf.ts), as WebAssembly: no C
# library, bounds-checked reads, the stack below the data (an overflow traps).
$(DWARFSCAN): packages/elf/wasm/dwarf-scan.c
	mkdir -p $(dir $@)
	clang --target=wasm32 -O2 -nostdlib -fno-builtin -Wall -Wextra -Werror -Wl,--no-entry -Wl,--stack-first -o $@ $<

shim: $(SHIM) $(DEBUGLIB) $(DWARFSCAN)

ts: $(STAMP)
	npx tsc -b

# The fixtures need clang and g++ (system) besides gcc.
build: system ts shim
	$(MAKE) -C fixtures

# The real program: Lua 5.4 from Debian's sources, built with the pad flags (cached).
lua: system
	bash scripts/build-lua.sh >/dev/null

# The second real program: memcached (multi-threaded server), at -O2 and -O1 (cached).
memcached: system
	bash scripts/build-memcached.sh >/dev/null

# The C++ real program: iperf 2 (a server; a thread and a Server object per
# connection), built by g++ through `hotload c++` (cached).
iperf: system build
	bash scripts/build-iperf.sh >/dev/null

demo: build
	node scripts/demo.js

# The package a user installs (build/npm/hotload-hotload-<version>.tgz).
pack: build
	node scripts/pack.js build/npm

# Type-check the tests and every package with isolatedModules, as ts-jest compiles them.
typecheck: $(STAMP)
	npx tsc -p tsconfig.test.json --noEmit

test: system build lua memcached iperf typecheck
	npx jest --runInBand

bench: system build lua memcached
	node bench/index-speed.js
	node bench/attach-pause.js
	node bench/rollout.js
	node bench/watch-latency.js
	node bench/memcached-swap.js
	node bench/type-check.js

clean:
	rm -rf packages/*/dist packages/*/tsconfig.tsbuildinfo native-shim/build packages/elf/wasm/build build/npm
	$(MAKE) -C fixtures clean

.PHONY: all system shim ts build lua memcached iperf demo pack typecheck test bench clean
