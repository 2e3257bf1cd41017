#!/usr/bin/env bash
# Build iperf 2 (a C++ network server: a listener thread, a thread and a
# Server object per connection; Debian's sources) with hotload's flags, through
# `hotload c++` so that g++ 12 links its C++ (issue: inline functions and
# templates in several files). The C++ real program of the tests. Cached
# outside git (HOTLOAD_CACHE, default ~/.cache/hotload) and reused when present.
# Prints the build directory, which holds src/*.o and src/iperf.
# The tests copy it to make their edits; they pass CXX to make again, since the
# checkout that built the cache may be gone.
# Needs autoconf, automake and deb-src lines (scripts/setup-system.sh), and the
# TypeScript build (`make build`) for `hotload c++`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${HOTLOAD_CACHE:-$HOME/.cache/hotload}
flags="-O2 -g -fpatchable-function-entry=16,14 -ffunction-sections -fdata-sections"
recipe="v1 $flags" # bump when the layout changes
out=$cache/iperf

if [ -x "$out/src/iperf" ] && [ "$(cat "$out/build.stamp" 2>/dev/null)" = "$recipe" ]; then
  echo "$out"; exit 0
fi
if ! ls -d "$cache"/src/iperf-*/ >/dev/null 2>&1; then
  mkdir -p "$cache/src"
  ( cd "$cache/src" && apt-get source -qq iperf >&2 ) || {
    echo "build-iperf: apt-get source iperf failed; run scripts/setup-system.sh (adds deb-src) first" >&2; exit 1; }
fi
src=$(ls -d "$cache"/src/iperf-*/ | head -n1)
rm -rf "$out.tmp" && cp -a "$src" "$out.tmp"
# Debian's patches (applied by apt-get source) change configure.ac and
# Makefile.am; like Debian's build (dh_autoreconf), regenerate before configure.
( cd "$out.tmp" && autoreconf -fi >/dev/null 2>&1 \
  && ./configure -q CC=gcc CXX="node $root/packages/cli/bin/hotload.js c++" CFLAGS="$flags" CXXFLAGS="$flags" >/dev/null \
  && make -s -j2 >/dev/null 2>&1 ) || {
  echo "build-iperf: building $out failed (autoconf, automake? scripts/setup-system.sh; the CLI built? make build)" >&2; exit 1; }
echo "$recipe" > "$out.tmp/build.stamp"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out"
