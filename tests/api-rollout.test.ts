// The API's rollout and its doors, on real processes, from a script's side:
// a health check given as a function, a plan with a misspelt step, a
// callback that throws, an abort, and arguments of the wrong type. Each result
// asked for is read back from the processes themselves (status(), and what
// the target prints), not only from the rollout's report.
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { HotloadError, ProcessResult, RolloutEvent, RolloutPlan, attach, checkAttach, isHotloadError, revert, rollout, status } from '@hotload/api';
import { FIX, ROOT, Target, computePatch, mkpatch, tmpdir } from './helpers';

const TARGET = path.join(FIX, 'target');
const targets: Target[] = [];
let patch: string;
const K = 31; // compute prints 1005 + K under the patch, 6 without it
const PATCHED = new RegExp(`^compute ${1005 + K} `);
const ORIGINAL = /^compute 6 /;

beforeAll(async () => {
  patch = await mkpatch(computePatch(K), TARGET, 'api-rollout');
});
afterEach(async () => {
  for (const t of targets.splice(0)) await t.stop();
});

/** `n` targets running their original code, by pid (the order a rollout takes them in: the canary first). */
async function fleet(n: number): Promise<Target[]> {
  const ts = Array.from({ length: n }, () => Target.start(TARGET, ['loop']));
  targets.push(...ts);
  for (const t of ts) await t.waitFor(ORIGINAL);
  return ts.sort((a, b) => a.pid - b.pid);
}

/** The process runs its original code, and status finds no patch function in force. */
async function expectOriginal(t: Target): Promise<void> {
  await t.fresh(ORIGINAL);
  expect(status(t.pid).functions).toEqual([]);
}

const byPid = (ps: ProcessResult[]) => new Map(ps.map((p) => [p.pid, p]));

describe('a health check given as a function', () => {
  test('async () => false fails the canary, which is reverted; nothing else is touched', async () => {
    const [a, b] = await fleet(2);
    const res = await rollout({ targets: { pids: [a.pid, b.pid] }, steps: [{ apply: patch }], healthCheck: async () => false });
    expect(res.outcome).toBe('failure');
    const r = byPid(res.processes);
    expect(r.get(a.pid)).toMatchObject({ status: 'failed', code: 'HEALTH_CHECK_FAILED', reverted: [patch], applied: [] });
    expect(r.get(a.pid)!.reason).toMatch(/health check failed: the health check function returned false/);
    expect(r.get(b.pid)).toMatchObject({ status: 'skipped', reason: 'the canary failed; nothing else was touched' });
    await expectOriginal(a);
    await expectOriginal(b);
  });

  test('a function that throws is a failing check, its message in the reason', async () => {
    const [a] = await fleet(1);
    const res = await rollout({
      targets: { pids: [a.pid] },
      steps: [
        { apply: patch },
        {
          check: function checkQueue() {
            throw new Error('queue depth 7 > 5');
          },
        },
      ],
    });
    expect(res.outcome).toBe('failure');
    expect(res.processes[0]).toMatchObject({ status: 'failed', reverted: [patch] });
    expect(res.processes[0].reason).toBe('health check failed: health check checkQueue() threw: queue depth 7 > 5');
    await expectOriginal(a);
  });

  test('given the pid, the step and a signal; sync true and async undefined pass; one that never settles fails at checkTimeoutMs', async () => {
    const [a, b] = await fleet(2);
    const seen: { pid: number; step: unknown; signal: boolean }[] = [];
    const step = {
      check: (pid: number, s: unknown, signal: AbortSignal) => {
        seen.push({ pid, step: s, signal: signal instanceof AbortSignal && !signal.aborted });
        return true;
      },
    };
    // The patch runs in the process while the check runs: the check can see it.
    const healthCheck = async (pid: number) => {
      await targets.find((t) => t.pid === pid)!.next(PATCHED);
    };
    const ok = await rollout({ targets: { pids: [a.pid, b.pid] }, steps: [{ apply: patch }, step], healthCheck });
    expect(ok.outcome).toBe('success');
    expect(ok.processes.map((p) => p.status)).toEqual(['applied', 'applied']);
    expect(seen).toEqual([
      { pid: a.pid, step, signal: true },
      { pid: b.pid, step, signal: true },
    ]);
    expect(status(b.pid).functions.map((f) => f.name)).toEqual(['compute']);

    let aborted = false;
    const hung = await rollout({
      targets: { pids: [a.pid] },
      checkTimeoutMs: 300,
      steps: [{ revert: patch }, { apply: patch }],
      healthCheck: (_pid, _step, signal) => new Promise<boolean>(() => signal.addEventListener('abort', () => (aborted = true))),
    });
    expect(hung.processes[0]).toMatchObject({ status: 'failed', reverted: [patch] });
    expect(hung.processes[0].reason).toMatch(/did not settle within 300 ms/);
    expect(aborted).toBe(true); // the check was told to stop
    await expectOriginal(a);
  });
});

test('rollout() validates its plan as the CLI does: a misspelt step is refused before anything is touched', async () => {
  const [a] = await fleet(1);
  const plan = { targets: { pids: [a.pid] }, steps: [{ aply: patch }] } as unknown as RolloutPlan;
  const err = await rollout(plan).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isHotloadError(err)).toBe(true);
  expect(err).toMatchObject({ code: 'PLAN_INVALID', details: ['steps[0]: unknown step "aply" (apply, revert, wait, check)'] });
  await expectOriginal(a);
});

describe('a callback that throws', () => {
  test('at process-start of the second process: caught, reported, and the whole rollout rolled back', async () => {
    const ts = await fleet(3);
    const events: RolloutEvent[] = [];
    let settled = false;
    const onEvent = (e: RolloutEvent) => {
      if (settled) throw new Error(`event after the promise settled: ${e.type}`);
      events.push(e);
      if (e.type === 'process-start' && e.pid === ts[1].pid) throw new TypeError('cannot read properties of undefined');
    };
    const res = await rollout({ targets: { pids: ts.map((t) => t.pid) }, canary: 1, parallel: 2, steps: [{ apply: patch }] }, { onEvent });
    settled = true;
    expect(res.outcome).toBe('failure');
    expect(res.error).toMatchObject({ code: 'CALLBACK_FAILED', message: `the onEvent callback threw at process-start of process ${ts[1].pid}: TypeError: cannot read properties of undefined` });
    expect(res.processes).toHaveLength(3);
    const r = byPid(res.processes);
    expect(r.get(ts[0].pid)).toMatchObject({ status: 'interrupted', code: 'CALLBACK_FAILED', applied: [], reverted: [patch] }); // the canary had passed
    expect(r.get(ts[1].pid)).toMatchObject({ status: 'interrupted', applied: [] });
    expect(r.get(ts[2].pid)!.applied).toEqual([]);
    // Nothing goes on after the promise: every process runs its original code.
    for (const t of ts) await expectOriginal(t);
    expect(events.filter((e) => e.type === 'process-done')).toHaveLength(3);
  });

  test('an async callback that rejects stops it the same way', async () => {
    const [a] = await fleet(1);
    const res = await rollout({ targets: { pids: [a.pid] }, steps: [{ apply: patch }] }, {
      onEvent: async (e) => {
        if (e.type === 'step') throw new Error('log sink closed');
      },
    });
    expect(res).toMatchObject({ outcome: 'failure', error: { code: 'CALLBACK_FAILED' } });
    expect(res.processes[0]).toMatchObject({ status: 'interrupted', reverted: [patch], applied: [] });
    await expectOriginal(a);
  });
});

test('on abort: one process-done per process; a finished process given back has a process-reverted', async () => {
  const ts = await fleet(3);
  const ac = new AbortController();
  const events: RolloutEvent[] = [];
  const applied = new Set<number>();
  // The canary's check passes at once; the two others' checks run until the abort kills them.
  const plan: RolloutPlan = { targets: { pids: ts.map((t) => t.pid) }, canary: 1, parallel: 2, steps: [{ apply: patch }, { check: `[ "$HOTLOAD_PID" = ${ts[0].pid} ] || exec sleep 60` }] };
  const run = rollout(plan, {
    signal: ac.signal,
    onEvent: (e) => {
      events.push(e);
      if (e.type === 'step' && 'apply' in e.step) applied.add(e.pid);
      if (applied.size === 3 && !ac.signal.aborted) ac.abort();
    },
  });
  const res = await run;
  expect(res.outcome).toBe('interrupted');
  const done = events.filter((e): e is Extract<RolloutEvent, { type: 'process-done' }> => e.type === 'process-done').map((e) => e.result.pid);
  expect(done.sort()).toEqual(ts.map((t) => t.pid).sort());
  const back = events.filter((e): e is Extract<RolloutEvent, { type: 'process-reverted' }> => e.type === 'process-reverted');
  expect(back.map((e) => e.result.pid)).toEqual([ts[0].pid]);
  for (const p of res.processes) expect(p).toMatchObject({ status: 'interrupted', code: 'INTERRUPTED', applied: [], reverted: [patch] });
  for (const t of ts) await expectOriginal(t);
});

describe('arguments of the wrong type are a HotloadError (USAGE)', () => {
  /** What `f` throws (or its promise rejects with). */
  async function thrown(f: () => unknown): Promise<unknown> {
    try {
      await f();
    } catch (e) {
      return e;
    }
    return undefined;
  }
  // From JavaScript (or through `any`) anything can come in.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const untyped = (f: unknown) => f as (...a: any[]) => unknown;

  test('a pid given as a string, to attach, checkAttach, revert and status: USAGE, and the process untouched', async () => {
    const [a] = await fleet(1);
    const pid = String(a.pid);
    for (const call of [() => untyped(attach)(pid, patch), () => untyped(checkAttach)(pid, patch), () => untyped(revert)(pid, patch), () => untyped(status)(pid)]) {
      const e = await thrown(call);
      expect(isHotloadError(e)).toBe(true);
      expect(e).toMatchObject({ code: 'USAGE' });
      expect((e as HotloadError).message).toMatch(new RegExp(`^\\w+\\(\\): pid must be a process id .*parsePid\\(\\).* \\(got the string "${pid}"\\)$`));
    }
    await expectOriginal(a);
  });

  test('a misspelt option, a missing argument, bad rollout options: every problem listed', async () => {
    const [a] = await fleet(1);
    const e = await thrown(() => untyped(attach)(a.pid, patch, { safePointTimeout: 100, onProgress: 'yes' }));
    expect(e).toMatchObject({ code: 'USAGE' });
    expect((e as HotloadError).details).toEqual([
      'attach(): opts has an unknown option "safePointTimeout" (known: allowUnsafeFile, safePointTimeoutMs, callTimeoutMs, waitInactiveMs, replace, onProgress)',
      'attach(): opts.onProgress must be a function (got the string "yes")',
    ]);
    expect(await thrown(() => untyped(revert)(a.pid))).toMatchObject({ code: 'USAGE', message: 'revert(): name a patch to revert, or pass { all: true }' });
    // An async function's bad arguments reject its promise.
    const p = untyped(rollout)({ targets: { pids: [a.pid] }, steps: [{ apply: patch }] }, { onEvent: 'log', dryrun: true });
    expect(p).toBeInstanceOf(Promise);
    const r = await thrown(() => p);
    expect((r as HotloadError).details).toEqual([
      'rollout(): opts has an unknown option "dryrun" (known: dryRun, onEvent, baseDir, signal)',
      'rollout(): opts.onEvent must be a function (got the string "log")',
    ]);
    await expectOriginal(a);
  });
});

describe('a script as a user writes it, compiled under strict against the built typings', () => {
  /** A directory with a tsconfig that maps @hotload/* to the packages' built typings (as the installed package has them). */
  async function project(files: Record<string, string>): Promise<string> {
    const dir = tmpdir('hotload-api-script-');
    const tsconfig = {
      compilerOptions: {
        strict: true,
        target: 'ES2022',
        module: 'commonjs',
        moduleResolution: 'node',
        esModuleInterop: true,
        outDir: 'out',
        typeRoots: [path.join(ROOT, 'node_modules/@types')],
        types: ['node'],
        baseUrl: '.',
        paths: { '@hotload/*': [path.join(ROOT, 'packages/*/dist/index.d.ts')] },
      },
      files: Object.keys(files),
    };
    fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify(tsconfig));
    for (const [f, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, f), text);
    await node([path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', dir]); // fails with the compiler's errors
    return dir;
  }

  test('a rollout with a function health check and an event callback compiles and runs; so does the README\'s example', async () => {
    const [a] = await fleet(1);
    const script = `import { HealthCheckFunction, RolloutEvent, isHotloadError, rollout, status } from '@hotload/api';
import type { ActiveFunction, ErrorCode, PatchPlan, PlannedFunction, RevertedFunction, StatusFunction, StatusPatch } from '@hotload/api';

const [pid, patch] = [Number(process.argv[2]), process.argv[3]];
// The element types a script names, exported (a typed report of its own).
const describe = (f: StatusFunction, p: StatusPatch[], a: ActiveFunction[], r: RevertedFunction[], q: PlannedFunction[], plan?: PatchPlan, c?: ErrorCode): string => [f.name, p.length, a.length, r.length, q.length, plan?.functions.length ?? 0, c ?? ''].join(' ');
void describe;
// Healthy when the patch's function is in force; a throw or false would fail it.
const inForce: HealthCheckFunction = async (p, step, signal) => !signal.aborted && 'check' in step && status(p).functions.some((f) => f.name === 'compute');
const seen: string[] = [];
const onEvent = (e: RolloutEvent): void => {
  seen.push(e.type === 'step' ? \`step \${Object.keys(e.step)[0]} \${e.ok}\` : e.type);
};

async function main(): Promise<void> {
  const res = await rollout({ targets: { pids: [pid] }, steps: [{ apply: patch }, { check: (p: number) => p === pid }], healthCheck: inForce }, { onEvent });
  const codes = res.processes.map((r) => r.code ?? 'none');
  process.stdout.write(JSON.stringify({ outcome: res.outcome, seen, codes, error: res.error?.code ?? null }));
}
main().catch((e: unknown) => {
  process.stderr.write(isHotloadError(e) ? \`\${e.code}: \${e.message}\` : String(e));
  process.exitCode = 1;
});
`;
    const dir = await project({ 'script.ts': script, 'readme.ts': readmeExample() });
    const out = await node([path.join(dir, 'out/script.js'), String(a.pid), patch], { NODE_PATH: path.join(ROOT, 'node_modules') });
    expect(JSON.parse(out)).toEqual({ outcome: 'success', seen: ['targets', 'process-start', 'step apply true', 'step check true', 'step check true', 'process-done'], codes: ['none'], error: null });
    await a.fresh(PATCHED);
  });
});

/** Run node (asynchronously: the targets' output keeps flowing); its stdout, or a failure with its output. */
function node(args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { encoding: 'utf8', env: { ...process.env, ...env } }, (err, stdout, stderr) => (err ? reject(new Error(`node ${args.join(' ')}: ${err.message}\n${stdout}${stderr}`)) : resolve(stdout)));
  });
}

/** The README's API example ("Rollouts and scripts"), as a function of the pid it uses, importing the checkout's package. */
function readmeExample(): string {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Rollouts and scripts'));
  const code = /```ts\n([\s\S]*?)```/.exec(section)![1].replace("'@hotload/hotload'", "'@hotload/api'");
  const lines = code.split('\n');
  const imports = lines.filter((l) => l.startsWith('import '));
  const body = lines.filter((l) => !l.startsWith('import '));
  return `${imports.join('\n')}\nexport async function example(pid: number): Promise<void> {\n${body.join('\n')}\n}\n`;
}
