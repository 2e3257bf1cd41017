#!/usr/bin/env bash
# Build memcached (a multi-threaded server, Debian's sources) twice with
# hotload's flags: at -O2 (the build that runs) and at -O1 (a rebuild in which
# nearly every function differs). The second real program of the tests, beside
# Lua. Both builds are cached outside git (HOTLOAD_CACHE, default
# ~/.cache/hotload) and reused when present. Prints the two build directories
# (-O2, then -O1), each holding its objects and `memcached`.
# Needs libevent-dev and deb-src lines (scripts/setup-system.sh).
set -euo pipefail
cache=${HOTLOAD_CACHE:-$HOME/.cache/hotload}
base="-g -fpatchable-function-entry=16,14 -ffunction-sections -fdata-sections"
recipe="v1 $base" # bump when the layout changes

built() { [ -x "$1/memcached" ] && [ "$(cat "$1/build.stamp" 2>/dev/null)" = "$recipe $2" ]; }

src_tree() {
  if ! ls -d "$cache"/src/memcached-*/ >/dev/null 2>&1; then
    mkdir -p "$cache/src"
    ( cd "$cache/src" && apt-get source -qq memcached >&2 ) || {
      echo "build-memcached: apt-get source memcached failed; run scripts/setup-system.sh (adds deb-src) first" >&2; exit 1; }
  fi
  ls -d "$cache"/src/memcached-*/ | head -n1
}

build() { # <out dir> <optimisation>
  local out=$1 opt=$2
  built "$out" "$opt" && return 0
  local src
  src=$(src_tree)
  rm -rf "$out.tmp" && cp -a "$src" "$out.tmp" # -a: keep the stamps, or make wants automake
  ( cd "$out.tmp" && ./configure -q --disable-docs CFLAGS="$opt $base" >/dev/null && make -s -j2 memcached >/dev/null 2>&1 ) || {
    echo "build-memcached: building $out failed (is libevent-dev installed? scripts/setup-system.sh)" >&2; exit 1; }
  echo "$recipe $opt" > "$out.tmp/build.stamp"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build "$cache/memcached-O2" -O2
build "$cache/memcached-O1" -O1
echo "$cache/memcached-O2"
echo "$cache/memcached-O1"
