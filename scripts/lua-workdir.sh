#!/usr/bin/env bash
# A Lua 5.4 source tree for the edit-save-live loop: a copy of the Debian
# sources (fetched by build-lua.sh), with a GNUmakefile that builds the
# interpreter with hotload's flags for patches made from rebuilds
# (`hotload flags --diff`) and keeps the object files next to the sources.
# Usage: scripts/lua-workdir.sh <dir> [opt]   (builds <dir>/lua; prints its path)
#   opt: the optimisation flag, default -O2 (tests rebuild the same sources at -O1)
set -euo pipefail
dir=${1:?usage: lua-workdir.sh <dir> [opt]}
opt=${2:--O2}
here=$(cd "$(dirname "$0")" && pwd)
lua=$("$here/build-lua.sh" | tail -n1)
src=$(dirname "$lua")/src
mkdir -p "$dir"
cp "$src"/*.c "$src"/*.h "$dir"/
rm -f "$dir/luac.c"
cat > "$dir/GNUmakefile" <<MK
# Lua 5.4 with hotload's flags: pads, and one section per function and datum
# so hotload watch (or mkpatch --from) can take single functions from a rebuild.
CC ?= gcc
CFLAGS = $opt -g -fpatchable-function-entry=16,14 -ffunction-sections -fdata-sections -DLUA_COMPAT_5_3 -DLUA_USE_LINUX -I.
OBJS := \$(patsubst %.c,%.o,\$(wildcard *.c))
lua: \$(OBJS)
	\$(CC) -o \$@ \$(OBJS) -Wl,-E -ldl -lm
%.o: %.c \$(wildcard *.h)
	\$(CC) \$(CFLAGS) -c \$< -o \$@
MK
make -s -C "$dir" -j"$(nproc)" lua >&2
echo "$dir/lua"
