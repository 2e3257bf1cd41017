// `attach v2.so --replace v1.so`: one stop takes v1 out and puts v2 in; at
// no moment does the process run neither (the original code). On top of the
// stack, below another patch, and with a function only v1 replaces.
import * as path from 'path';
import { FIX, Target, computePatch, hotload, mkpatch } from './helpers';

const TARGET = path.join(FIX, 'target');
let t: Target | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
});

/** The patches (by file name) in each function's stack, newest first. */
async function stacks(pid: number): Promise<Record<string, string[]>> {
  const st = await hotload(['status', String(pid), '--json']);
  return Object.fromEntries(st.one.functions.map((f: { name: string; stack: { source: string }[] }) => [f.name, f.stack.map((e) => path.basename(e.source))]));
}

test('on top: v2 takes v1\'s place in one stop; the loop never printed the original value in between; v1 is out of the stack', async () => {
  const [v1, v2] = await Promise.all([1, 2].map((k) => mkpatch(computePatch(k), TARGET, `rep${k}`)));
  t = Target.start(TARGET, ['loop']);
  await t.waitFor(/^compute 6 /);
  const pid = String(t.pid);
  expect((await hotload(['attach', pid, v1])).code).toBe(0);
  await t.next(/^compute 1006 /);
  const from = t.lines.length;
  const r = await hotload(['attach', pid, v2, '--replace', v1, '--json']);
  expect(r.code).toBe(0);
  expect(r.one.replaced).toEqual({ patch: v1, functions: [expect.objectContaining({ name: 'compute', now: 'the new patch' })] });
  expect(r.one.functions).toEqual([expect.objectContaining({ name: 'compute', previous: 'original' })]);
  await t.next(/^compute 1007 /);
  expect(t.lines.slice(from).filter((l) => l.startsWith('compute 6 '))).toEqual([]); // never the original in between
  expect(await stacks(t.pid)).toEqual({ compute: ['rep2.so'] });
  // Reverting v2 goes back to the original, not to v1.
  expect((await hotload(['revert', pid, v2])).code).toBe(0);
  await t.next(/^compute 6 /);
  t.expectHealthy();
});

test('below another patch: v1 is linked out from under v3, v2 goes on top; revert v2 then v3 gets back to the original', async () => {
  const [v1, v2, v3] = await Promise.all([1, 2, 3].map((k) => mkpatch(computePatch(k), TARGET, `mid${k}`)));
  t = Target.start(TARGET, ['loop']);
  await t.waitFor(/^compute 6 /);
  const pid = String(t.pid);
  for (const p of [v1, v3]) expect((await hotload(['attach', pid, p])).code).toBe(0);
  await t.next(/^compute 1008 /);
  expect((await hotload(['attach', pid, v2, '--replace', v1])).code).toBe(0);
  await t.next(/^compute 1007 /);
  expect(await stacks(t.pid)).toEqual({ compute: ['mid2.so', 'mid3.so'] });
  expect((await hotload(['revert', pid, v2])).code).toBe(0);
  await t.next(/^compute 1008 /);
  expect((await hotload(['revert', pid, v3])).code).toBe(0);
  await t.next(/^compute 6 /); // v1 is gone from every stack
  t.expectHealthy();
});

test('a function only v1 replaces goes back to what it ran before, in the same stop; refusals: a patch not applied, nothing changed', async () => {
  const both = `${computePatch(1)}
static void on_signal_v1(int sig) { (void)sig; }
HOTLOAD_REPLACE(on_signal, on_signal_v1);
`;
  const v1 = await mkpatch(both, TARGET, 'two1');
  const v2 = await mkpatch(computePatch(2), TARGET, 'two2');
  t = Target.start(TARGET, ['loop']);
  await t.waitFor(/^compute 6 /);
  const pid = String(t.pid);
  expect((await hotload(['attach', pid, v1])).code).toBe(0);
  expect(await stacks(t.pid)).toEqual({ compute: ['two1.so'], on_signal: ['two1.so'] });
  const r = await hotload(['attach', pid, v2, '--replace', v1, '--json']);
  expect(r.code).toBe(0);
  expect(r.one.replaced.functions).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'on_signal', now: 'original' }), expect.objectContaining({ name: 'compute', now: 'the new patch' })]));
  await t.next(/^compute 1007 /);
  expect(await stacks(t.pid)).toEqual({ compute: ['two2.so'] });
  const again = await hotload(['attach', pid, v1, '--replace', path.join(path.dirname(v2), 'nope.so')]);
  expect(again.code).not.toBe(0);
  const notApplied = await hotload(['attach', pid, v1, '--replace', v1, '--json']);
  expect(notApplied.one.error.code).toBe('PATCH_NOT_APPLIED');
  expect(await stacks(t.pid)).toEqual({ compute: ['two2.so'] }); // nothing changed
  t.expectHealthy();
});
