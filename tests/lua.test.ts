// The real program: Lua 5.4 built from Debian's sources with the pad flags
// (scripts/build-lua.sh, run by `make test`). Index it, post it, and check the
// posted interpreter behaves exactly as before.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { hotload, tmpdir, ROOT } from './helpers';

export const LUA = path.join(process.env.HOTLOAD_CACHE ?? path.join(os.homedir(), '.cache/hotload'), 'lua5.4/lua');

beforeAll(() => {
  if (!fs.existsSync(LUA)) {
    const r = spawnSync('bash', [path.join(ROOT, 'scripts/build-lua.sh')], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`building Lua failed:\n${r.stderr}`);
  }
});

test('every pad of the interpreter is indexed and every function can be patched', async () => {
  const r = await hotload(['index', LUA, '--json']);
  expect(r.code).toBe(0);
  const sec = spawnSync('readelf', ['-SW', LUA], { encoding: 'utf8' }).stdout;
  const size = parseInt(/__patchable_function_entries\s+PROGBITS\s+[0-9a-f]+ [0-9a-f]+ ([0-9a-f]+)/.exec(sec)![1], 16);
  expect(r.json.padEntries).toBe(size / 8);
  expect(r.json.padEntries).toBeGreaterThan(600);
  expect(r.json.functions.filter((f: { pad?: number }) => f.pad !== undefined)).toHaveLength(size / 8);
  for (const n of ['luaV_execute', 'math_abs', 'luaL_checkinteger', 'str_upper']) {
    expect(r.json.functions.find((f: { name: string }) => f.name === n).status).toBe('patchable');
  }
  expect((await hotload(['check', LUA])).code).toBe(0);
});

test('the posted interpreter passes the exercise script with identical output', async () => {
  const copy = path.join(tmpdir(), 'lua');
  fs.copyFileSync(LUA, copy);
  const script = path.join(ROOT, 'tests/lua/exercise.lua');
  const before = spawnSync(LUA, [script], { encoding: 'utf8' });
  expect(before.status).toBe(0);
  expect(before.stdout).toMatch(/^calls\t17711$/m);
  const p = await hotload(['post', copy]);
  expect(p.code).toBe(0);
  expect(p.stdout).toMatch(/posted, \d+ entries rewritten/);
  const after = spawnSync(copy, [script], { encoding: 'utf8' });
  expect(after.status).toBe(0);
  expect(after.stdout).toBe(before.stdout);
  expect(after.stdout.split('\n').filter(Boolean)).toHaveLength(10);
});
