// What the commands say, and in what shape: a rollout plan's targets checked
// like the rest of the plan and a failed health check under its own code; ps
// counting the patches in force; the stop figures, each said by one
// definition; every process's error whole (details, hint) when a command
// works on several; and diff --json keeping its document on a refusal.
// Every process is started here and named by pid (or by a program name only
// these tests use).
import * as fs from 'fs';
import * as path from 'path';
import { FIX, ROOT, Target, buildIdOf, computePatch, hotload, mkpatch, rawPatch, tmpdir } from './helpers';

const TARGET = path.join(FIX, 'target');
const targets: Target[] = [];
function start(bin = TARGET, args: string[] = ['loop']): Target {
  const t = Target.start(bin, args);
  targets.push(t);
  return t;
}
afterEach(async () => {
  for (const t of targets.splice(0)) await t.stop();
});

function writePlan(plan: object): string {
  const f = path.join(tmpdir(), 'plan.json');
  fs.writeFileSync(f, JSON.stringify(plan));
  return f;
}

describe('rollout', () => {
  test('an unknown key inside "targets" is refused like an unknown field of the plan, naming it; nothing is touched', async () => {
    const t = start();
    await t.waitFor(/^compute 6 /);
    const p = await mkpatch(computePatch(31), TARGET, 'plan-keys');
    const plan = writePlan({ targets: { pids: [t.pid], nmae: 'server' }, steps: [{ apply: p }] });
    const r = await hotload(['rollout', plan, '--json']);
    expect(r.code).toBe(2);
    expect(r.json.error.code).toBe('PLAN_INVALID');
    expect(r.json.error.details).toEqual(['unknown field "targets.nmae" (known in "targets": pids, name, exe, buildId)']);
    const text = await hotload(['rollout', plan]);
    expect(text.stderr).toMatch(/^ {2}- unknown field "targets\.nmae"/m);
    await t.next(/^compute 6 /); // still the original code
    expect((await hotload(['status', String(t.pid)])).stdout).toMatch(/no patch applied/);
  });

  test('a failed health check is HEALTH_CHECK_FAILED (not a hook\'s HOOK_FAILED), in the one error table with its exit status, documented', async () => {
    const t = start();
    await t.waitFor(/^compute 6 /);
    const p = await mkpatch(computePatch(32), TARGET, 'plan-check');
    const plan = writePlan({ targets: { pids: [t.pid] }, steps: [{ apply: p }], healthCheck: 'echo sick; exit 4' });
    const r = await hotload(['rollout', plan, '--json']);
    expect(r.json.processes).toEqual([expect.objectContaining({ pid: t.pid, status: 'failed', code: 'HEALTH_CHECK_FAILED', reverted: [p] })]);
    expect(r.json.processes[0].reason).toMatch(/^health check failed: `echo sick; exit 4` exited 4: sick/);
    // The rollout as a whole failed: its exit status is the code's.
    const { ERRORS } = await import('@hotload/errors');
    expect(ERRORS.HEALTH_CHECK_FAILED.exit).toBe(12);
    expect(r.code).toBe(ERRORS.HEALTH_CHECK_FAILED.exit);
    await t.next(/^compute 6 /);
    // The exit statuses as the README's table and `hotload --help` say them.
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    expect(readme).toMatch(/^\| 12 \| rollout failed .*`HEALTH_CHECK_FAILED`/m);
    expect(readme).not.toMatch(/^\| 6 \|.*health check/m);
    const help = (await hotload(['--help'])).stdout.replace(/\s+/g, ' ');
    expect(help).toMatch(/12 rollout failed \(a process whose health check failed: HEALTH_CHECK_FAILED\)/);
  });
});

test('ps counts the patches in force, as status reads them, and the reverted copies still mapped apart', async () => {
  const t = start();
  await t.waitFor(/^compute 6 /);
  const [p1, p2] = [await mkpatch(computePatch(41), TARGET, 'ps-one'), await mkpatch(computePatch(42), TARGET, 'ps-two')];
  // The whole output is what a failure shows.
  const mine = async (counts: object) => expect((await hotload(['ps', '--json'])).json).toEqual(expect.arrayContaining([expect.objectContaining({ pid: t.pid, ...counts })]));
  const row = async (cell: string) => expect((await hotload(['ps'])).stdout).toMatch(new RegExp(`^${t.pid}\\s+${cell}\\s+target\\s`, 'm'));
  expect((await hotload(['attach', String(t.pid), p1])).code).toBe(0);
  expect((await hotload(['revert', String(t.pid), p1])).code).toBe(0);
  await t.next(/^compute 6 /);
  expect((await hotload(['status', String(t.pid)])).stdout).toMatch(/no patch applied \(1 reverted patch still mapped\)/);
  await mine({ patches: 0, reverted: 1 });
  await row('0 \\(\\+1 reverted, mapped\\)');
  expect((await hotload(['attach', String(t.pid), p2])).code).toBe(0);
  await t.next(/^compute 1047 /);
  await mine({ patches: 1, reverted: 1 });
  await row('1 \\(\\+1 reverted, mapped\\)');
});

describe('stop figures', () => {
  const num = '(\\d+\\.\\d{3})';
  // One definition per figure (README, "Stop figures"), each named by it.
  const ATTACH = new RegExp(`^ {2}stops: longest of one thread ${num} ms, ${num} ms added over every stop of (\\d+) threads?; all-threads stop ${num} ms from first interrupt to last resume; loaded in \\d+\\.\\d{2} ms on thread \\d+ \\(away from its own code \\d+\\.\\d{2} ms\\); total \\d+\\.\\d ms$`, 'm');
  const REVERT = new RegExp(`^ {2}stops: longest of one thread ${num} ms, ${num} ms added over every stop of every thread; all-threads stop ${num} ms from first interrupt to last resume; total \\d+\\.\\d ms$`, 'm');

  test('attach and revert say each figure by its definition, never "each thread at most" beside a larger sum over one thread', async () => {
    const t = start(TARGET, ['threads', '4']);
    await t.waitFor(/^compute 6 /);
    const p = await mkpatch(computePatch(51), TARGET, 'stops');
    const a = await hotload(['attach', String(t.pid), p]);
    expect(a.code).toBe(0);
    const m = ATTACH.exec(a.stdout);
    expect(m).not.toBeNull();
    const [longest, added, threads] = [Number(m![1]), Number(m![2]), Number(m![3])];
    expect(threads).toBe(5);
    expect(longest).toBeLessThanOrEqual(added);
    expect(a.stdout).not.toMatch(/at most|added over \d+ threads?;/);
    const r = await hotload(['revert', String(t.pid), p]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(REVERT);
    // The README shows the same line and defines every figure --json gives.
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    expect(readme).toMatch(ATTACH);
    const j = await hotload(['attach', String(t.pid), p, '--json']);
    for (const k of Object.keys(j.one.timings)) expect(readme).toMatch(new RegExp(`\`${k}\`[^\\n]*:`));
  });
});

describe('errors in text', () => {
  /** A patch of functions the target does not have (mkpatch would refuse it; attach refuses it too). */
  const missing = (...names: string[]) =>
    rawPatch(`#include <hotload.h>\n${names.map((n) => `int ${n}_v2(int x) { return x; }\nHOTLOAD_REPLACE(${n}, ${n}_v2);`).join('\n')}\n`, TARGET, buildIdOf(TARGET), names.join('-'));
  const HINT = /hint: Name a function the target has/;

  test('attach on several processes says each one\'s error whole: details and hint', async () => {
    const [a, b] = [start(), start()];
    await a.waitFor(/^compute 6 /);
    await b.waitFor(/^compute 6 /);
    const r = await hotload(['attach', `${a.pid},${b.pid}`, missing('no_such_a', 'no_such_b')]);
    expect(r.code).toBe(4);
    for (const t of [a, b]) {
      const block = r.stdout.slice(r.stdout.indexOf(`failed process ${t.pid}: `)).split('\n').slice(0, 4);
      expect(block[0]).toMatch(new RegExp(`^failed process ${t.pid}: UNPATCHABLE: no_such_[ab], no_such_[ab]: 2 problems against `));
      expect(block.slice(1, 3).sort()).toEqual([expect.stringMatching(/^ {4}- no_such_a: no such function in /), expect.stringMatching(/^ {4}- no_such_b: no such function in /)]);
      expect(block[3]).toMatch(/^ {2}hint: Name a function the target has/);
    }
    await a.next(/^compute 6 /);
  });

  test('an error whose one detail is its message says it once, for one process or several', async () => {
    const t = start();
    await t.waitFor(/^compute 6 /);
    const p = missing('no_such_c');
    const one = await hotload(['attach', String(t.pid), p]);
    expect(one.code).toBe(4);
    expect(one.stderr.match(/no_such_c: no such function/g)).toHaveLength(1);
    expect(one.stderr).toMatch(/^error UNPATCHABLE: no_such_c: no such function in /m);
    expect(one.stderr).toContain(`no such function in ${TARGET} `); // the path as the process names it, not /proc/PID/root/...
    expect(one.stderr).toMatch(HINT);
    const both = await hotload(['attach', `${t.pid},${t.pid}`, p]);
    expect(both.stdout.match(/no_such_c: no such function/g)).toHaveLength(2); // once per process
    expect(both.stdout.match(/hint: Name a function/g)).toHaveLength(2);
    // --json keeps every detail.
    const j = await hotload(['attach', String(t.pid), p, '--json']);
    expect(j.one.error.details).toEqual([j.one.error.message]);
  });

  test('mkpatch of a source that replaces nothing, or compiles to nothing, names the source, not a deleted temporary file', async () => {
    const dir = tmpdir();
    for (const [name, text] of [['replaces-nothing.c', 'int unused_helper(int x) { return x + 1; }\n'], ['empty.c', '']]) {
      const src = path.join(dir, name);
      fs.writeFileSync(src, text);
      const r = await hotload(['mkpatch', src, '--target', TARGET, '-o', path.join(dir, 'out.so')]);
      expect(r.code).toBe(6);
      expect(r.stderr).toContain(`error PATCH_BAD: ${src}: `);
      expect(r.stderr).not.toMatch(/hotload-mkpatch-/);
      expect(r.stderr).toMatch(/^ {2}- declares no replacement \(HOTLOAD_REPLACE\)$/m);
      expect(r.stderr).toMatch(/^hint: .*HOTLOAD_REPLACE\(old, new\)/m);
    }
  });
});

test('diff --json on a refusal keeps its document (the lists of changes) and adds the error; exit status 4 as before; --help and the README say so', async () => {
  const D = path.join(FIX, 'diff');
  const [ok, refused] = await Promise.all(['NEWSTATIC', 'BIGGER'].map((v) => hotload(['diff', path.join(D, 'base', 'diff.o'), path.join(D, v, 'diff.o'), '--json'])));
  expect(ok.code).toBe(0);
  expect(ok.json.error).toBeUndefined();
  expect(refused.code).toBe(4);
  // The same members as a diff that passes, plus error.
  expect(Object.keys(refused.json).sort()).toEqual([...Object.keys(ok.json), 'error'].sort());
  expect(refused.json.data.changed).toEqual(['conf@diff.c']);
  expect(refused.json.refused.map((r: { symbol: string }) => r.symbol)).toEqual(['conf@diff.c', 'struct cfg']);
  expect(refused.json.error).toMatchObject({ code: 'UNPATCHABLE', details: refused.json.refused.map((r: { symbol: string; reason: string }) => `${r.symbol}: ${r.reason}`) });
  // Text: the lists on stdout, the error on stderr, as before.
  const text = await hotload(['diff', path.join(D, 'base', 'diff.o'), path.join(D, 'BIGGER', 'diff.o')]);
  expect(text.code).toBe(4);
  expect(text.stdout).toMatch(/^changed data: conf@diff\.c$/m);
  expect(text.stderr).toMatch(/^error UNPATCHABLE: 2 changes cannot be patched/m);
  expect((await hotload(['diff', '--help'])).stdout.replace(/\s+/g, ' ')).toMatch(/the same document with an `error` member/);
  expect(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8').replace(/\s+/g, ' ')).toMatch(/the same document with an `error` member/);
});

test('a one-process error whose only detail repeats its message prints it once (mkpatch of a function the target lacks)', async () => {
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, 'nf.c'), '#include <hotload.h>\nint f2(int x) { return x; }\nHOTLOAD_REPLACE(no_such_fn, f2);\n');
  const r = await hotload(['mkpatch', path.join(dir, 'nf.c'), '--target', TARGET, '-o', path.join(dir, 'x.so')]);
  expect(r.code).toBe(4);
  expect(r.stderr.split('\n').filter((l) => l.includes('no_such_fn: no such function'))).toHaveLength(1);
  expect(r.stderr).toMatch(/^hint: Name a function the target has/m);
});
