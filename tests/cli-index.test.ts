// The CLI's ELF commands, run as a user would: index, check, post, flags, --help.
import * as fs from 'fs';
import * as path from 'path';
import { FIX, hotload, tmpdir } from './helpers';

test('index prints a table and a summary; --json gives the same index', async () => {
  const r = await hotload(['index', path.join(FIX, 'pads-O2')]);
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^FUNCTION\s+ADDRESS\s+SIZE\s+STATUS/m);
  expect(r.stdout).toMatch(/^nopad_twice\s+0x[0-9a-f]+\s+\d+\s+no-pad/m);
  expect(r.stdout).toMatch(/^scale\.constprop\.0\s+.*clone\s+of scale/m);
  expect(r.stdout).toMatch(/21 functions, 12 pads: 9 patchable, 3 clone, 1 no-pad, 1 part, 7 startup/);
  expect(r.stdout).not.toMatch(/\x1b\[/); // no colour when not a terminal
  const j = await hotload(['index', path.join(FIX, 'pads-O2'), '--json']);
  expect(j.code).toBe(0);
  expect(j.json.padEntries).toBe(12);
  expect(j.json.functions.find((f: { name: string }) => f.name === 'pads_value').aliases).toEqual(['pads_value_alias']);
});

test('check lists every unpatchable function with reason and hint, and exits 4', async () => {
  const r = await hotload(['check', path.join(FIX, 'pads-O2')]);
  expect(r.code).toBe(4);
  expect(r.stderr).toMatch(/error UNPATCHABLE: .*1 function cannot be patched/);
  expect(r.stderr).toMatch(/- nopad_twice: no patchable entry: built without -fpatchable-function-entry=16,14 \(Rebuild/);
  expect(r.stderr).toMatch(/^hint: /m);
  expect(r.stdout).toMatch(/note: scale\.constprop\.0: gcc clone of scale/);
  const j = await hotload(['check', path.join(FIX, 'pads-O2'), '--json']);
  expect(j.code).toBe(4);
  expect(j.json.error.code).toBe('UNPATCHABLE');
  expect(j.json.error.details).toHaveLength(1);
});

test('check passes on a build where every function has a pad, fails on one without any', async () => {
  expect((await hotload(['check', path.join(FIX, 'demo')])).code).toBe(0);
  const none = await hotload(['check', path.join(FIX, 'target-nopads')]);
  expect(none.code).toBe(4);
  expect(none.stderr).toMatch(/ELF_NO_PADS/);
});

test('bad files: clear error, exit 3', async () => {
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, 'x.txt'), 'hello');
  const r = await hotload(['index', path.join(dir, 'x.txt')]);
  expect(r.code).toBe(3);
  expect(r.stderr).toMatch(/error ELF_NOT_ELF: .*x\.txt: not an ELF file/);
  const m = await hotload(['index', path.join(dir, 'missing')]);
  expect(m.code).toBe(3);
  expect(m.stderr).toMatch(/FILE_NOT_FOUND/);
});

test('post rewrites in place, is idempotent, and index then reads the recorded index', async () => {
  const dir = tmpdir();
  const f = path.join(dir, 'pads');
  fs.copyFileSync(path.join(FIX, 'pads-O2'), f);
  const a = await hotload(['post', f]);
  expect(a.code).toBe(0);
  expect(a.stdout).toMatch(/posted, 12 entries rewritten to 66 90/);
  const b = await hotload(['post', f]);
  expect(b.stdout).toMatch(/already posted, unchanged/);
  expect((await hotload(['index', f])).stdout).toMatch(/\(recorded by hotload post\)/);
});

test('flags prints the CFLAGS for a build', async () => {
  const r = await hotload(['flags', '--cflags']);
  expect(r.stdout.trim()).toBe('-fpatchable-function-entry=16,14');
});

test.each(['attach', 'revert', 'status', 'ps', 'rollout', 'mkpatch', 'diff', 'index', 'check', 'post', 'flags'])('%s --help documents the command', async (cmd) => {
  const r = await hotload([cmd, '--help']);
  expect(r.code).toBe(0);
  expect(r.stdout).toContain(`hotload ${cmd}`);
  expect(r.stdout).toMatch(/--json/);
});

test('usage errors exit 2 with a hint', async () => {
  const r = await hotload(['frobnicate']);
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(/hint:/);
});
