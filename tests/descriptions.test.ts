// What a patch is, in words: HOTLOAD_DESCRIPTION in its source or
// `mkpatch --description`, kept in the patch and shown by attach, status and
// ps (text and --json), for hand-written patches and patches from a rebuild.
import * as fs from 'fs';
import * as path from 'path';
import { FIX, Target, computePatch, hotload, tmpdir } from './helpers';

const TARGET = path.join(FIX, 'target');
let t: Target | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
});

test('from the header macro and from --description (both kept); attach, status and ps say it', async () => {
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, 'fix.c'), `${computePatch(3)}HOTLOAD_DESCRIPTION("off-by-one in compute (BUG-12)");\n`);
  const out = path.join(dir, 'fix.so');
  const m = await hotload(['mkpatch', path.join(dir, 'fix.c'), '--target', TARGET, '-o', out, '--description', '-v2, from "review"']);
  expect(m.stderr).toBe('');
  expect(m.code).toBe(0);
  t = Target.start(TARGET, ['loop']);
  await t.waitFor(/^compute 6 /);
  const a = await hotload(['attach', String(t.pid), out, '--json']);
  const said = a.one.description.split('; ').sort();
  expect(said).toEqual(['-v2, from "review"', 'off-by-one in compute (BUG-12)']);
  const st = await hotload(['status', String(t.pid), '--json']);
  expect(st.one.patches[0].description).toBe(a.one.description);
  expect((await hotload(['status', String(t.pid)])).stdout).toContain(`    ${a.one.description}\n`);
  const ps = await hotload(['ps', '--json']);
  expect(ps.json.find((p: { pid: number }) => p.pid === t!.pid).descriptions).toEqual([a.one.description]);
  expect((await hotload(['revert', String(t.pid), out])).code).toBe(0);
  const after = await hotload(['ps', '--json']);
  expect(after.json.find((p: { pid: number }) => p.pid === t!.pid).descriptions).toEqual([]); // only patches in force
});

test('a patch from a rebuild carries --description; one without says nothing (no description member)', async () => {
  const D = path.join(FIX, 'diff');
  const dir = tmpdir();
  const withText = path.join(dir, 'c.so');
  const m = await hotload(['mkpatch', '--from', path.join(D, 'base'), '--to', path.join(D, 'CONST'), '--target', path.join(D, 'base/diff'), '-o', withText, '--description', 'the constant raised']);
  expect(m.code).toBe(0);
  const plain = path.join(dir, 'p.so');
  expect((await hotload(['mkpatch', '--from', path.join(D, 'base'), '--to', path.join(D, 'CONST'), '--target', path.join(D, 'base/diff'), '-o', plain])).code).toBe(0);
  t = Target.start(path.join(D, 'base/diff'), ['loop']);
  await t.waitFor(/^constant=/);
  const a = await hotload(['attach', String(t.pid), withText, '--json']);
  expect(a.one.description).toBe('the constant raised');
  expect((await hotload(['revert', String(t.pid), withText])).code).toBe(0);
  const b = await hotload(['attach', String(t.pid), plain, '--json']);
  expect(b.one).not.toHaveProperty('description');
});
