#!/usr/bin/env bash
# Build the Lua 5.4 interpreter from Debian's sources with hotload's flags: the
# real open-source program the tests index, post and patch. The build is cached
# outside git (HOTLOAD_CACHE, default ~/.cache/hotload) and reused when present.
# Prints the path of the interpreter on its last line.
set -euo pipefail
cache=${HOTLOAD_CACHE:-$HOME/.cache/hotload}
out=$cache/lua5.4
flags="-O2 -g -fpatchable-function-entry=16,14"
stamp="$out/build.stamp"
recipe="v2 $flags" # bump when the layout of $out changes
if [ -x "$out/lua" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$recipe" ]; then
  echo "$out/lua"; exit 0
fi
mkdir -p "$cache"
if ! ls -d "$cache"/src/lua5.4-*/src >/dev/null 2>&1; then
  mkdir -p "$cache/src"
  ( cd "$cache/src" && apt-get source -qq lua5.4 >&2 ) || {
    echo "build-lua: apt-get source lua5.4 failed; run scripts/setup-system.sh (adds deb-src) first" >&2; exit 1; }
fi
src=$(ls -d "$cache"/src/lua5.4-*/src | head -n1)
rm -rf "$out.tmp" && mkdir -p "$out.tmp/obj"
# Debian's luaconf.h includes a header its rules generate; give it the same define.
echo '#define DEB_HOST_MULTIARCH "x86_64-linux-gnu"' > "$out.tmp/obj/lua5.4-deb-multiarch.h"
for c in "$src"/*.c; do
  case "$(basename "$c")" in luac.c) continue ;; esac
  gcc $flags -DLUA_COMPAT_5_3 -DLUA_USE_LINUX -I"$out.tmp/obj" -c "$c" -o "$out.tmp/obj/$(basename "${c%.c}").o" &
  while [ "$(jobs -r | wc -l)" -ge 4 ]; do wait -n; done
done
wait
gcc -o "$out.tmp/lua" "$out.tmp"/obj/*.o -Wl,-E -ldl -lm
echo "$recipe" > "$out.tmp/build.stamp"
# The headers, for patches that use Lua's API (mkpatch --cflags=-I$out/src).
cp -r "$src" "$out.tmp/src"
cp "$out.tmp/obj/lua5.4-deb-multiarch.h" "$out.tmp/src/"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out/lua"
