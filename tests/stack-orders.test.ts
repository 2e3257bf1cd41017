// Stacks of patches on one function, in every order: three patches applied in
// each of the 6 orders and reverted in each of the 6 orders (36 rounds on one
// process), with every patch already in the stack offered again on the way.
// A model (a list, newest first) says what each step must do; the process says
// what it runs (its own output) and `status` what it holds. The API is called
// in this process: the 216 steps take seconds, not minutes.
import * as path from 'path';
import { attach, isHotloadError, revert, status } from '@hotload/api';
import { FIX, Target, computePatch, hotload, mkpatch } from './helpers';

const TARGET = path.join(FIX, 'target');

function permutations<T>(xs: T[]): T[][] {
  if (xs.length <= 1) return [xs];
  return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((rest) => [x, ...rest]));
}

function codeOf(f: () => unknown): string {
  try {
    f();
    return 'ok';
  } catch (e) {
    if (isHotloadError(e)) return e.code;
    throw e;
  }
}

let t: Target | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
});

test('a patch already in the stack is refused wherever it sits; every apply and revert order of three patches gets back to the original', async () => {
  const ks = [1, 2, 3];
  const files = await Promise.all(ks.map((k) => mkpatch(computePatch(k), TARGET, `order${k}`)));
  t = Target.start(TARGET, ['loop']);
  await t.waitFor(/^compute 6 /);
  const pid = t.pid;
  const value = (stack: number[]) => (stack.length ? 1005 + stack[0] : 6); // computePatch(k) returns x + 1000 + k; compute(5)
  const stackNow = () => {
    const fn = status(pid).functions.find((f) => f.name === 'compute');
    return (fn?.stack ?? []).map((e) => ks[files.findIndex((f) => f === e.source)]);
  };
  const runs = async (stack: number[], what: string) => {
    expect([what, stackNow()]).toEqual([what, stack]);
    // A line computed during the step may still arrive after it: wait for the
    // expected value, then the line after it must show it too (it stays).
    await t!.next(new RegExp(`^compute ${value(stack)} `), 5000);
    const line = await t!.next(/^compute \d+ /);
    expect([what, line.split(' ')[1]]).toEqual([what, String(value(stack))]);
  };

  for (const applyOrder of permutations(ks)) {
    for (const revertOrder of permutations(ks)) {
      const model: number[] = [];
      for (const k of applyOrder) {
        // Every patch already in the stack is refused, top or not, and nothing changes.
        for (const again of model) {
          expect([`again ${again} over [${model}]`, codeOf(() => attach(pid, files[again - 1]))]).toEqual([`again ${again} over [${model}]`, 'PATCH_ALREADY_APPLIED']);
        }
        expect(codeOf(() => attach(pid, files[k - 1]))).toBe('ok');
        model.unshift(k);
        await runs(model, `apply ${applyOrder} / revert ${revertOrder}: after applying ${k}`);
      }
      for (const k of revertOrder) {
        expect(codeOf(() => revert(pid, files[k - 1]))).toBe('ok');
        model.splice(model.indexOf(k), 1);
        await runs(model, `apply ${applyOrder} / revert ${revertOrder}: after reverting ${k}`);
        expect(codeOf(() => revert(pid, files[k - 1]))).toBe('PATCH_NOT_APPLIED');
      }
    }
  }
  t.expectHealthy();
});

test('the CLI on the reported sequence: a, b, a is refused with exit 10 naming where a sits; reverting a then b runs the original', async () => {
  const [a, b] = await Promise.all([1, 2].map((k) => mkpatch(computePatch(k), TARGET, `aba${k}`)));
  t = Target.start(TARGET, ['loop']);
  await t.waitFor(/^compute 6 /);
  const pid = String(t.pid);
  expect((await hotload(['attach', pid, a])).code).toBe(0);
  expect((await hotload(['attach', pid, b])).code).toBe(0);
  const again = await hotload(['attach', pid, a]);
  expect(again.code).toBe(10);
  expect(again.stderr).toMatch(/PATCH_ALREADY_APPLIED/);
  expect(again.stderr).toMatch(/compute: under aba2\.so/);
  const st = await hotload(['status', pid]);
  expect(st.stdout.split('\n').length).toBeLessThan(20);
  expect((await hotload(['revert', pid, a])).code).toBe(0);
  expect((await hotload(['revert', pid, b])).code).toBe(0);
  await t.next(/^compute 6 /);
  expect((await hotload(['status', pid])).stdout).toMatch(/no patch applied/);
  t.expectHealthy();
});
