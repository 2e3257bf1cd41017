#!/usr/bin/env bash
# Install what hotload's tests need from Debian, once: clang (the pad index must
# handle clang output too; it also compiles the DWARF reader's WebAssembly, which
# lld's wasm-ld links), g++ (a C++ fixture), libevent-dev (memcached),
# autoconf and automake (iperf's Debian patches edit configure.ac and
# Makefile.am, so its build starts with autoreconf as Debian's does) and deb-src
# entries so `apt-get source` can fetch the real programs the tests build
# (Lua 5.4, memcached, iperf). Idempotent; does nothing when all is there.
set -euo pipefail

need_apt_update=0
sources=/etc/apt/sources.list.d/debian.sources
has_deb_src() {
  grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}

if ! has_deb_src; then
  if [ -w "$sources" ] || [ "$(id -u)" = 0 ]; then
    echo "setup: adding deb-src to $sources"
    sed -i 's/^Types: deb$/Types: deb deb-src/' "$sources"
    need_apt_update=1
  else
    echo "setup: no deb-src lines and not root; add them by hand to fetch Lua's sources" >&2
    exit 1
  fi
fi

missing=()
command -v clang >/dev/null || missing+=(clang)
command -v wasm-ld >/dev/null || missing+=(lld) # links the DWARF reader's WebAssembly (packages/elf/wasm)
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
command -v dpkg-source >/dev/null || missing+=(dpkg-dev)
command -v gdb >/dev/null || missing+=(gdb)
command -v perf >/dev/null || missing+=(linux-perf) # tests/debuggers.test.ts: perf reads patches from a rebuild
command -v readelf >/dev/null || missing+=(binutils)
[ -f /usr/include/event2/event.h ] || missing+=(libevent-dev) # memcached, the second real program
command -v autoreconf >/dev/null || missing+=(autoconf) # iperf, the C++ real program
command -v automake >/dev/null || missing+=(automake)
command -v cmake >/dev/null || missing+=(cmake) # tests/readme-build.test.ts: the README's CMake line, built as written

# apt-get source needs a fresh list after deb-src was added; install needs any list.
if [ "$need_apt_update" = 1 ] || { [ ${#missing[@]} -gt 0 ] && [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ]; }; then
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
