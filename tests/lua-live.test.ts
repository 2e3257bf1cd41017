// The real program, live: Lua 5.4 (built from Debian's sources with the pad
// flags, not posted) runs a workload; a patch replaces the C function behind
// math.abs while it runs. The new behaviour shows and the script's state
// (its tick counter and running total) carries on.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ROOT, Target, hotload, tmpdir } from './helpers';

const CACHE = process.env.HOTLOAD_CACHE ?? path.join(os.homedir(), '.cache/hotload');
const LUA = path.join(CACHE, 'lua5.4/lua');
const LUA_SRC = path.join(CACHE, 'lua5.4/src');

test('patch math_abs of a running Lua interpreter', async () => {
  const dir = tmpdir();
  fs.writeFileSync(
    path.join(dir, 'abs.c'),
    `#include <hotload.h>
#include "lua.h"
#include "lauxlib.h"
/* lmathlib.c's static math_abs, replaced: integers come back with 1000 added. */
static int math_abs_v2(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  lua_pushinteger(L, (n < 0 ? -n : n) + 1000);
  return 1;
}
HOTLOAD_REPLACE(math_abs, math_abs_v2);
`,
  );
  const patch = path.join(dir, 'abs.so');
  const mk = await hotload(['mkpatch', path.join(dir, 'abs.c'), '--target', LUA, '-o', patch, `--cflags=-I${LUA_SRC}`]);
  expect(mk.stderr).toBe('');
  expect(mk.code).toBe(0);
  const t = Target.start(LUA, [path.join(ROOT, 'tests/lua/workload.lua')]);
  try {
    const before = await t.waitFor(/^tick (\d+) abs 5 total (\d+)$/);
    await new Promise((r) => setTimeout(r, 200));
    const r = await hotload(['attach', String(t.pid), patch, '--json']);
    expect(r.code).toBe(0);
    expect(r.one.functions[0].name).toBe('math_abs');
    // The first patched tick, wherever it is: under load the workload prints
    // ticks while hotload finishes its output, before this line is reached.
    const after = await t.waitFor(/^tick (\d+) abs 1005 total (\d+)$/, 10000, t.lines.indexOf(before));
    const [, t0, s0] = /tick (\d+) abs 5 total (\d+)/.exec(before)!.map(Number);
    const [, t1, s1] = /tick (\d+) abs 1005 total (\d+)/.exec(after)!.map(Number);
    expect(t1).toBeGreaterThan(t0); // the tick counter carried on
    expect(s1).toBeGreaterThan(s0 + 1005); // and the total kept its old part
    expect(s1).toBeLessThan(t1 * 5 + 2 * 1005 + 1); // at most two patched additions so far
    t.expectHealthy();
    expect((await hotload(['revert', String(t.pid), patch])).code).toBe(0);
    await t.next(/^tick \d+ abs 5 /);
    t.expectHealthy();
  } finally {
    await t.stop();
  }
});
