// The patch lifecycle beyond one attach: hooks, several targets, ps, two
// hotloads at once, and rollouts over many processes.
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { BIN, FIX, Target, computePatch, hotload, mkpatch, sleep, tmpdir } from './helpers';

const TARGET = path.join(FIX, 'target');
const targets: Target[] = [];
function start(args: string[] = ['loop']): Target {
  const t = Target.start(TARGET, args);
  targets.push(t);
  return t;
}
afterEach(async () => {
  for (const t of targets.splice(0)) await t.stop();
});

/** A process name no other run can have: at most 15 characters, the length of a command name (comm). */
function uniqueName(): string {
  return `hlt${process.pid.toString(36)}${Math.random().toString(36).slice(2)}`.slice(0, 15);
}

describe('hooks', () => {
  test('an on-apply hook runs in the process before the patch goes live (state migration)', async () => {
    const p = await mkpatch(
      `#include <hotload.h>
HOTLOAD_STATIC(int, counter);
static int migrate(void) { HOTLOAD_REF(counter) = 500000; return 0; }
HOTLOAD_ON_APPLY(migrate);
int compute_v2(int x) { HOTLOAD_REF(counter)++; return x + 1001; }
HOTLOAD_REPLACE(compute, compute_v2);
`,
      TARGET,
      'hook-ok',
    );
    const t = start();
    await t.waitFor(/^compute 6 counter \d+/);
    const r = await hotload(['attach', String(t.pid), p]);
    expect(r.code).toBe(0);
    const line = await t.next(/^compute 1006 counter (\d+)/);
    expect(Number(/counter (\d+)/.exec(line)![1])).toBeGreaterThanOrEqual(500000);
    t.expectHealthy();
  });

  test('a failing on-apply hook aborts with its message and changes nothing', async () => {
    const p = await mkpatch(
      `#include <hotload.h>
static int check(void) { return HOTLOAD_HOOK_FAIL("the queue is not empty"); }
HOTLOAD_ON_APPLY(check);
int compute_v2(int x) { return x + 1002; }
HOTLOAD_REPLACE(compute, compute_v2);
`,
      TARGET,
      'hook-fail',
    );
    const t = start();
    await t.waitFor(/^compute 6/);
    const r = await hotload(['attach', String(t.pid), p]);
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/error HOOK_FAILED: the on-apply hook of .* returned 1: the queue is not empty; nothing was changed/);
    await t.next(/^compute 6 /);
    expect((await hotload(['status', String(t.pid)])).stdout).toMatch(/no patch applied/);
    t.expectHealthy();
  });

  test('an on-revert hook runs before the revert, and a failing one keeps the patch in force', async () => {
    const dir = tmpdir();
    const flag = path.join(dir, 'allow-revert');
    const p = await mkpatch(
      `#include <hotload.h>
#include <unistd.h>
static int before_revert(void) { return access("${flag}", F_OK) == 0 ? 0 : HOTLOAD_HOOK_FAIL("not allowed yet"); }
HOTLOAD_ON_REVERT(before_revert);
int compute_v2(int x) { return x + 1003; }
HOTLOAD_REPLACE(compute, compute_v2);
`,
      TARGET,
      'hook-revert',
    );
    const t = start();
    await t.waitFor(/^compute 6/);
    expect((await hotload(['attach', String(t.pid), p])).code).toBe(0);
    await t.next(/^compute 1008 /);
    const no = await hotload(['revert', String(t.pid), p]);
    expect(no.code).toBe(6);
    expect(no.stderr).toMatch(/on-revert hook .* not allowed yet/);
    await t.next(/^compute 1008 /);
    fs.writeFileSync(flag, '');
    expect((await hotload(['revert', String(t.pid), p])).code).toBe(0);
    await t.next(/^compute 6 /);
    t.expectHealthy();
  });
});

test('attach and revert take several pids, or a process name; ps lists patchable processes', async () => {
  const p = await mkpatch(computePatch(9), TARGET, 'multi');
  // The program under a name of this test's own (the same build), so the name
  // reaches only the processes started here, not another run's `target`s.
  const name = uniqueName();
  const prog = path.join(tmpdir(), name);
  fs.copyFileSync(TARGET, prog);
  fs.chmodSync(prog, 0o755);
  const [a, b] = [Target.start(prog, ['loop']), Target.start(prog, ['loop'])];
  targets.push(a, b);
  await a.waitFor(/^compute 6/);
  await b.waitFor(/^compute 6/);
  const r = await hotload(['attach', `${a.pid},${b.pid}`, p, '--json']);
  expect(r.code).toBe(0);
  expect(r.json.map((x: { pid: number; ok: boolean }) => [x.pid, x.ok])).toEqual([[a.pid, true], [b.pid, true]]);
  await a.next(/^compute 1014 /);
  await b.next(/^compute 1014 /);
  const list = await hotload(['ps', '--json']);
  const mine = list.json.filter((x: { pid: number }) => x.pid === a.pid || x.pid === b.pid);
  expect(mine).toHaveLength(2);
  expect(mine.every((x: { patches: number; modules: string[] }) => x.patches === 1 && x.modules[0] === prog)).toBe(true);
  expect((await hotload(['ps'])).stdout).toMatch(new RegExp(`^${a.pid}\\s+1\\s+${name}`, 'm'));
  const byName = await hotload(['revert', name, '--all', '--json']);
  expect(byName.code).toBe(0);
  expect(byName.json.map((x: { pid: number; ok: boolean }) => [x.pid, x.ok]).sort()).toEqual([[a.pid, true], [b.pid, true]].sort()); // these two, and only these
  await a.next(/^compute 6 /);
  await b.next(/^compute 6 /);
});

test('a second hotload on the same process fails clearly, whatever its TMPDIR; the lock goes with its holder', async () => {
  const t = start();
  await t.waitFor(/^compute 6/);
  // Another hotload holds the process: flock(1) on /proc/PID stands in for it.
  const holder = require('child_process').spawn('flock', ['-o', `/proc/${t.pid}`, 'sleep', '30'], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 100 && !fs.readFileSync('/proc/locks', 'utf8').includes(` ${holder.pid} `); i++) await sleep(20);
    const p = await mkpatch(computePatch(8), TARGET, 'busy');
    for (const env of [{}, { TMPDIR: tmpdir('hotload-other-tmp-') }]) {
      const r = await hotload(['attach', String(t.pid), p], env);
      expect(r.code).toBe(5);
      expect(r.stderr).toMatch(new RegExp(`PROCESS_BUSY: another hotload \\(pid ${holder.pid}\\) is working on process ${t.pid}`));
    }
    await t.next(/^compute 6 /); // untouched
    holder.kill('SIGKILL');
    await sleep(100);
    // Its holder is gone, and with it the lock.
    expect((await hotload(['attach', String(t.pid), p])).code).toBe(0);
  } finally {
    holder.kill('SIGKILL');
  }
});

describe('rollout', () => {
  async function fleet(n: number): Promise<Target[]> {
    const ts = Array.from({ length: n }, () => start());
    for (const t of ts) await t.waitFor(/^compute 6/);
    return ts;
  }
  /** Every process runs its original code again, and status says no patch is applied. */
  async function expectOriginal(ts: Target[]) {
    for (const t of ts) {
      await t.next(/^compute 6 /);
      expect((await hotload(['status', String(t.pid)])).stdout).toMatch(/no patch applied/);
    }
  }
  function writePlan(plan: object): string {
    const dir = tmpdir();
    const f = path.join(dir, 'plan.json');
    fs.writeFileSync(f, JSON.stringify(plan));
    return f;
  }

  test('over 20 processes: a failing health check on the canary reverts it and touches nothing else', async () => {
    const ts = await fleet(20);
    const p = await mkpatch(computePatch(11), TARGET, 'fleet');
    const plan = writePlan({ targets: { pids: ts.map((t) => t.pid) }, canary: 1, parallel: 5, steps: [{ apply: p }], healthCheck: 'echo unhealthy; exit 3' });
    const r = await hotload(['rollout', plan, '--json']);
    expect(r.code).toBe(12);
    const canary = r.json.processes.find((x: { canary: boolean }) => x.canary);
    expect(canary.status).toBe('failed');
    expect(canary.reason).toMatch(/health check failed: .*exited 3: unhealthy/);
    expect(canary.reverted).toEqual([p]);
    const rest = r.json.processes.filter((x: { canary: boolean }) => !x.canary);
    expect(rest).toHaveLength(19);
    expect(rest.every((x: { status: string }) => x.status === 'skipped')).toBe(true);
    await expectOriginal(ts);
  }, 120000);

  test('over 20 processes: all healthy, all patched; the report has one result per process', async () => {
    const ts = await fleet(20);
    const p = await mkpatch(computePatch(12), TARGET, 'fleet-ok');
    const plan = writePlan({ targets: { pids: ts.map((t) => t.pid) }, canary: 2, parallel: 4, steps: [{ apply: p }, { wait: 50 }], healthCheck: 'kill -0 $HOTLOAD_PID' });
    const dry = await hotload(['rollout', plan, '--dry-run', '--json']);
    expect(dry.code).toBe(0);
    expect(dry.json.processes.every((x: { status: string }) => x.status === 'would-apply')).toBe(true);
    await ts[0].next(/^compute 6 /); // the dry run changed nothing
    const r = await hotload(['rollout', plan, '--json']);
    expect(r.code).toBe(0);
    expect(r.json.outcome).toBe('success');
    expect(r.json.processes).toHaveLength(20);
    expect(r.json.processes.filter((x: { canary: boolean }) => x.canary)).toHaveLength(2);
    expect(r.json.processes.every((x: { status: string }) => x.status === 'applied')).toBe(true);
    for (const t of ts) await t.next(/^compute 1017 /);
    const again = await hotload(['rollout', plan, '--json']);
    expect(again.json.processes.every((x: { status: string }) => x.status === 'skipped')).toBe(true); // already applied
  }, 120000);

  test('a process that exits in the middle is reported, and the rest go on', async () => {
    const ts = await fleet(4);
    const p = await mkpatch(computePatch(13), TARGET, 'exiting');
    const victim = ts[2];
    const plan = writePlan({ targets: { pids: ts.map((t) => t.pid) }, canary: 1, parallel: 3, steps: [{ apply: p }, { wait: 700 }, { check: 'true' }] });
    const run = hotload(['rollout', plan, '--json']);
    await victim.next(/^compute 1018 /, 20000); // patched, now waiting
    await victim.stop();
    const r = await run;
    expect(r.code).toBe(11);
    const byPid = new Map(r.json.processes.map((x: { pid: number }) => [x.pid, x]));
    expect((byPid.get(victim.pid) as { status: string }).status).toBe('exited');
    for (const t of ts.filter((x) => x !== victim)) expect((byPid.get(t.pid) as { status: string }).status).toBe('applied');
  }, 120000);

  /** `hotload rollout plan --json`, with its process at hand (to signal it). */
  function rolloutRun(plan: string): { child: ChildProcess; done: Promise<{ code: number | null; json: any; ms: number }> } { // eslint-disable-line @typescript-eslint/no-explicit-any
    const child = spawn(process.execPath, [BIN, 'rollout', plan, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    let signalled = 0;
    const orig = child.kill.bind(child);
    child.kill = (sig?: NodeJS.Signals | number) => {
      signalled = Date.now();
      return orig(sig);
    };
    const done = new Promise<{ code: number | null; json: any; ms: number }>((resolve) => { // eslint-disable-line @typescript-eslint/no-explicit-any
      child.on('close', (code) => resolve({ code, json: out ? JSON.parse(out) : undefined, ms: Date.now() - signalled }));
    });
    return { child, done };
  }

  test('Ctrl-C during the canary\'s wait: nothing else starts, its patch is reverted, the summary printed, exit 130', async () => {
    const ts = await fleet(3);
    const p = await mkpatch(computePatch(19), TARGET, 'interrupted');
    const plan = writePlan({ targets: { pids: ts.map((t) => t.pid) }, canary: 1, parallel: 2, steps: [{ apply: p }, { wait: 5000 }, { check: 'false' }] });
    const run = rolloutRun(plan);
    const canary = ts.find((t) => t.pid === Math.min(...ts.map((x) => x.pid)))!;
    await canary.next(/^compute 1024 /, 20000); // the canary runs the patch and waits
    run.child.kill('SIGINT');
    const r = await run.done;
    expect(r.code).toBe(130);
    expect(r.ms).toBeLessThan(2000); // the wait was cut short
    expect(r.json.outcome).toBe('interrupted');
    const c = r.json.processes.find((x: { canary: boolean }) => x.canary);
    expect(c).toMatchObject({ pid: canary.pid, status: 'interrupted', reverted: [p], applied: [] });
    for (const x of r.json.processes.filter((y: { canary: boolean }) => !y.canary)) expect(x).toMatchObject({ status: 'skipped', reason: 'interrupted before it was started' });
    await expectOriginal(ts);
  }, 60000);

  test('SIGTERM after the canary passed: the finished and the running processes are reverted too, exit 143', async () => {
    const ts = await fleet(4);
    const p = await mkpatch(computePatch(20), TARGET, 'terminated');
    const plan = writePlan({ targets: { pids: ts.map((t) => t.pid) }, canary: 1, parallel: 2, steps: [{ apply: p }, { wait: 1500 }] });
    const run = rolloutRun(plan);
    const sorted = [...ts].sort((a, b) => a.pid - b.pid);
    await sorted[1].next(/^compute 1025 /, 20000); // the canary is done; the next two are patched and waiting
    await sorted[2].next(/^compute 1025 /, 20000);
    run.child.kill('SIGTERM');
    const r = await run.done;
    expect(r.code).toBe(143);
    expect(r.json.outcome).toBe('interrupted');
    const by = new Map<number, { status: string; reverted: string[]; applied: string[] }>(r.json.processes.map((x: { pid: number }) => [x.pid, x]));
    for (const t of sorted.slice(0, 3)) expect(by.get(t.pid)).toMatchObject({ status: 'interrupted', reverted: [p], applied: [] });
    expect(by.get(sorted[3].pid)).toMatchObject({ status: 'skipped' });
    for (const t of ts) await t.next(/^compute 6 /);
  }, 60000);

  test('an invalid plan is refused with every problem listed', async () => {
    const plan = writePlan({ targets: { pids: [], name: 'x' }, canary: -1, steps: [{ apply: 3 }, { bogus: 1 }], extra: true });
    const r = await hotload(['rollout', plan]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/PLAN_INVALID/);
    for (const m of [/unknown field "extra"/, /exactly one of/, /"canary" must be a whole number/, /steps\[0\]\.apply must be a non-empty string/, /steps\[1\]: unknown step "bogus"/]) expect(r.stderr).toMatch(m);
  });
});
