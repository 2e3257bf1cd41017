// `hotload attach` on real processes: the patch goes in, every thread keeps its
// state, blocked syscalls finish normally, and the new code runs.
import * as fs from 'fs';
import * as path from 'path';
import { attach } from '@hotload/api';
import { FIX, WAIT_KINDS, computePatch, hotload, mkpatch, sleep, stoppedAfterEach, symbolAddress } from './helpers';

const TARGET = path.join(FIX, 'target');

let patch: string;
beforeAll(async () => {
  patch = await mkpatch(computePatch(7), TARGET);
});

const start = stoppedAfterEach();

test('single-threaded loop: the new code runs and the static counter carries on', async () => {
  const t = start(TARGET, ['loop']);
  const before = await t.waitFor(/^compute 6 counter (\d+)/);
  await sleep(100);
  const r = await hotload(['attach', String(t.pid), patch, '--json']);
  expect(r.code).toBe(0);
  expect(r.one.functions).toEqual([expect.objectContaining({ name: 'compute', previous: 'original' })]);
  expect(r.one.timings.stoppedMs).toBeGreaterThan(0);
  // Per thread, from its stop to its resume: the one thread stopped at least
  // once for the code writes (and as the host), all of it counted in the sum.
  expect(r.one.timings.threadStopMaxMs).toBeGreaterThan(0);
  expect(r.one.timings.threadStopSumMs).toBeGreaterThanOrEqual(r.one.timings.threadStopMaxMs);
  const after = await t.next(/^compute 1012 counter (\d+)/);
  const c0 = Number(/counter (\d+)/.exec(before)![1]);
  const c1 = Number(/counter (\d+)/.exec(after)![1]);
  expect(c1).toBeGreaterThan(c0); // not restarted from zero
  t.expectHealthy();
});

test('8 threads calling the function in tight loops: every call runs old or new code', async () => {
  const t = start(TARGET, ['threads', '8']);
  await t.waitFor(/^compute 6/);
  const r = await hotload(['attach', String(t.pid), patch, '--json']);
  expect(r.code).toBe(0);
  expect(r.one.threads).toBe(9);
  // Nine threads each stopped for the code writes: the sum is several single stops.
  expect(r.one.timings.threadStopSumMs).toBeGreaterThan(r.one.timings.threadStopMaxMs);
  await t.next(/^compute 1012 .* new [1-9]/);
  await sleep(300);
  t.expectHealthy();
});

describe.each([
  ['read', 1],
  ['nanosleep', 0],
  ['futex', 0],
  ['epoll', 1],
  ['accept', 1],
])('a thread blocked in %s', (what, ret) => {
  test('finishes that call normally, without EINTR, after the patch goes in', async () => {
    const t = start(TARGET, ['block', what]);
    await t.waitFor(new RegExp(`^blocking in ${what}`));
    await sleep(300);
    const r = await hotload(['attach', String(t.pid), patch]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const line = await t.waitFor(new RegExp(`^${what} returned`), 10000);
    expect(line).toMatch(new RegExp(`^${what} returned ${ret} errno 0 after ([3-5]\\.\\d\\d) s; compute 1012$`));
    await t.waitFor(/^done$/);
  });
});

// A wait the kernel resumes through restart_syscall keeps its deadline however
// often its thread is borrowed (5 s: both attaches are done well before it): the second borrow finds it in restart_syscall,
// whose restart block an rt_sigreturn would clear (EINTR). epoll_wait has no
// restart block: the kernel fails it with EINTR, and hotload re-issues it with
// its whole timeout (so it sleeps longer, but sees no EINTR).
const WAIT_S = 5;
describe.each(WAIT_KINDS)(`the only thread, waiting ${WAIT_S} s in %s, borrowed twice`, (kind, ret, exact) => {
  test('wakes at its deadline, never with EINTR', async () => {
    // Both patches made before the wait starts: a compile inside the 5 s
    // window made a loaded machine miss it (the wait over before attach 2).
    const second = await mkpatch(computePatch(8), TARGET, `wait-${kind}`);
    const t = start(TARGET, ['wait', kind]);
    await t.waitFor(new RegExp(`^waiting in ${kind}$`));
    // Through the API, in this process: no CLI start-up inside the window
    // (on a loaded machine two of them took most of the 5 s).
    for (const p of [patch, second]) {
      await sleep(400);
      const r = attach(t.pid, p);
      expect(r.hostThread).toBe(t.pid); // the waiting thread itself ran dlopen
    }
    expect(t.lines.some((l) => l.startsWith(`${kind} returned`))).toBe(false); // both borrows happened during the wait
    const line = await t.waitFor(new RegExp(`^${kind} returned`), 15000);
    expect(line).toMatch(new RegExp(`^${kind} returned ${ret} after \\d+\\.\\d+ s; compute 1013$`)); // the second patch runs
    const slept = Number(/after (\d+\.\d+) s/.exec(line)![1]);
    expect(slept).toBeGreaterThanOrEqual(WAIT_S - 0.01);
    if (exact) expect(slept).toBeLessThan(WAIT_S + 0.5); // the deadline kept, not started over
    else expect(slept).toBeLessThan(2 * WAIT_S);
  });
});

/** Does this CPU have a feature (a flag of /proc/cpuinfo)? */
function cpuHas(flag: string): boolean {
  return new RegExp(`^flags\\s*:.*\\b${flag}\\b`, 'm').test(fs.readFileSync('/proc/cpuinfo', 'utf8'));
}

test('a thread doing SSE/AVX (and AVX-512, AMX where the CPU has them) arithmetic never sees a wrong register, even the one borrowed for dlopen', async () => {
  // The only thread spins in vector code, so it is the one that runs dlopen.
  const t = start(TARGET, ['simd']);
  // The fixture uses every register file this CPU has: zmm0-31 and k0-7 with
  // AVX-512, a tile with AMX (when the kernel grants the permission).
  const uses = await t.waitFor(/^simd with avx 1 avx512 (\d) amx (\d)$/);
  expect(uses).toContain(`avx512 ${cpuHas('avx512f') && cpuHas('avx512bw') ? 1 : 0}`);
  if (!cpuHas('amx_tile')) expect(uses).toContain('amx 0');
  await t.waitFor(/^simd round \d+ ok compute 6/);
  // Ten different patches: each is a new dlopen on the borrowed thread.
  const patches = await Promise.all([...Array(10).keys()].map((k) => mkpatch(computePatch(20 + k), TARGET, `simd${k}`)));
  for (const p of patches) {
    const r = await hotload(['attach', String(t.pid), p, '--json']);
    expect(r.code).toBe(0);
    expect(r.one.hostThread).toBe(t.pid);
    expect(r.one.repairedRegisters).toBe(false); // rt_sigreturn alone put every register back
  }
  expect((await hotload(['revert', String(t.pid), '--all'])).code).toBe(0);
  await t.next(/^simd round \d+ ok/); // a full checking round after the last one
  t.expectHealthy();
});

test('a replaced function that is running (main: it never returns) is named with its thread: that call keeps the old code', async () => {
  const t = start(TARGET, ['threads', '2']);
  await t.waitFor(/^compute 6/);
  const p = await mkpatch('#include <hotload.h>\nint main_v2(int argc, char **argv) { (void)argc; (void)argv; return 0; }\nHOTLOAD_REPLACE(main, main_v2);\n', TARGET, 'main');
  const r = await hotload(['attach', String(t.pid), p, '--json']);
  expect(r.code).toBe(0);
  expect(r.one.active).toEqual([expect.objectContaining({ function: 'main', thread: t.pid })]);
  expect(r.one.active[0].depth).toBeGreaterThan(0); // main is below usleep and libc on its stack
  expect(r.one.notes.join('\n')).toMatch(new RegExp(`main is running on thread ${t.pid} .*keeps the old code until it returns`));
  await t.next(/^compute 6 /); // main runs on, in its old code
  t.expectHealthy();
});

test('--wait-inactive: redirects at a moment no replaced function runs; refuses a main loop after the wait, naming it, with nothing redirected', async () => {
  const t = start(TARGET, ['loop']);
  await t.waitFor(/^compute 6/);
  const main = await mkpatch('#include <hotload.h>\nint main_v3(int argc, char **argv) { (void)argc; (void)argv; return 0; }\nHOTLOAD_REPLACE(main, main_v3);\n', TARGET, 'main-wait');
  const at = symbolAddress(t.pid, TARGET, 'main') - 14n;
  const before = t.readMem(at, 16);
  const started = Date.now();
  const r = await hotload(['attach', String(t.pid), main, '--wait-inactive=1', '--json']);
  expect(r.code).toBe(7);
  expect(r.one.error.code).toBe('FUNCTIONS_ACTIVE');
  expect(r.one.error.details).toEqual([expect.stringMatching(new RegExp(`^main is running on thread ${t.pid} `))]);
  expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
  expect(t.readMem(at, 16)).toEqual(before); // nothing redirected
  // compute runs for a moment every 20 ms: there is a moment it does not.
  const c = await hotload(['attach', String(t.pid), patch, '--wait-inactive', '--json']);
  expect(c.code).toBe(0);
  expect(c.one.active).toEqual([]);
  await t.next(/^compute 1012 /);
  t.expectHealthy();
});

test('a CET build (endbr64 at the entry) is patched after the endbr64', async () => {
  const bin = path.join(FIX, 'target-cet');
  const p = await mkpatch(computePatch(3), bin);
  const t = start(bin, ['threads', '2']);
  await t.waitFor(/^compute 6/);
  const r = await hotload(['attach', String(t.pid), p]);
  expect(r.code).toBe(0);
  await t.next(/^compute 1008/);
  t.expectHealthy();
});

test('a file that was not posted (90 90 entries) is patched too', async () => {
  const bin = path.join(FIX, 'target-unposted');
  const p = await mkpatch(computePatch(4), bin);
  const t = start(bin, ['threads', '4']);
  await t.waitFor(/^compute 6/);
  expect((await hotload(['attach', String(t.pid), p])).code).toBe(0);
  await t.next(/^compute 1009/);
  t.expectHealthy();
});

test('a function in a shared library, using the library\'s exported global as a plain extern', async () => {
  const lib = path.join(FIX, 'libtarget.so');
  const p = await mkpatch('#include <hotload.h>\nextern int lib_calls;\nint lib_compute_v2(int x) { lib_calls += 1000; return x * 2 + 1000; }\nHOTLOAD_REPLACE(lib_compute, lib_compute_v2);\n', lib);
  const t = start(path.join(FIX, 'target-lib'), ['loop']); // one lib_compute call per line
  await t.waitFor(/lib 10$/);
  const r = await hotload(['attach', String(t.pid), p, '--json']);
  expect(r.code).toBe(0);
  expect(r.one.module).toMatch(/libtarget\.so$/);
  const a = await t.next(/lib_calls (-?\d+) lib 1010$/);
  const i = t.lines.indexOf(a);
  while (t.lines.length < i + 2) await sleep(10);
  const b = t.lines[i + 1]; // the very next line
  // The patch's extern is the library's own counter: it carries on, 1000 more per line.
  const [ca, cb] = [a, b].map((l) => Number(/lib_calls (-?\d+)/.exec(l)![1]));
  expect(cb - ca).toBe(1000);
  expect(ca).toBeGreaterThan(1000); // not a fresh copy: the calls before the patch are in it
  t.expectHealthy();
});

test('a patch replacing 200 functions at once', async () => {
  const bin = path.join(FIX, 'target-many');
  const p = path.join(path.dirname(patch), 'many.so');
  const r0 = await hotload(['mkpatch', path.join(FIX, 'many-patch.c'), '--target', bin, '-o', p]);
  expect(r0.code).toBe(0);
  const t = start(bin, ['many']);
  await t.waitFor(/many 0$/);
  const names = Array.from({ length: 200 }, (_, i) => `f${i}`);
  const f0 = symbolAddress(t.pid, bin, 'f0'); // the others from their distance to it (one nm, not 200)
  const { spawnSync } = await import('child_process');
  const nm = new Map(spawnSync('nm', [bin], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(' ')).filter((x) => x.length === 3).map(([a, , n]) => [n, BigInt('0x' + a)]));
  const addr = (name: string) => f0 + nm.get(name)! - nm.get('f0')!;
  const prologue = (name: string) => t.readMem(addr(name) - 14n, 16);
  const before = names.map(prologue);
  const r = await hotload(['attach', String(t.pid), p, '--json']);
  expect(r.code).toBe(0);
  expect(r.one.functions.map((f: { name: string }) => f.name).sort()).toEqual([...names].sort());
  await t.next(/many 200$/); // every f_i now returns i + 1000
  // Each of the 200 entries jumps to its own new function, the one attach reported:
  // the pad holds `jmp *0(%rip)` and the address, the entry `jmp .-14`.
  for (const f of r.one.functions as { name: string; old: string; new: string }[]) {
    const b = prologue(f.name);
    expect(BigInt(f.old)).toBe(addr(f.name));
    expect([f.name, b.subarray(0, 6).toString('hex'), b.readBigUInt64LE(6), b.subarray(14).toString('hex')]).toEqual([f.name, 'ff2500000000', BigInt(f.new), 'ebf0']);
  }
  t.expectHealthy();
  expect((await hotload(['revert', String(t.pid), '--all'])).code).toBe(0);
  await t.next(/many 0$/);
  // All 200 entries back as they were (the pads may keep the last jump: no entry leads there).
  expect(names.map((n) => prologue(n).subarray(14).toString('hex'))).toEqual(before.map((b) => b.subarray(14).toString('hex')));
  t.expectHealthy();
});

test('stacking, status, revert of the middle patch, revert --all, apply after revert', async () => {
  const [p1, p2, p3] = await Promise.all([1, 2, 3].map((k) => mkpatch(computePatch(k), TARGET, `stack${k}`)));
  const t = start(TARGET, ['loop']);
  await t.waitFor(/^compute 6/);
  expect((await hotload(['status', String(t.pid)])).stdout).toMatch(/no patch applied/);
  for (const p of [p1, p2, p3]) expect((await hotload(['attach', String(t.pid), p])).code).toBe(0);
  await t.next(/^compute 1008 /);
  const again = await hotload(['attach', String(t.pid), p3]);
  expect(again.code).toBe(10); // already applied: a distinct status, not a failure
  expect(again.stderr).toMatch(/PATCH_ALREADY_APPLIED/);
  const st = await hotload(['status', String(t.pid), '--json']);
  expect(st.one.functions[0].stack.map((e: { patch: string }) => path.basename(e.patch).replace(/^[0-9a-f]+-/, ''))).toEqual(['stack3.so', 'stack2.so', 'stack1.so']);
  expect(st.one.patches.map((x: { source: string }) => x.source).sort()).toEqual([p1, p2, p3].sort()); // the files applied
  expect(st.one.patches.every((x: { buildId: string; appliedAt: string }) => /^[0-9a-f]{40}$/.test(x.buildId) && !isNaN(Date.parse(x.appliedAt)))).toBe(true);
  expect((await hotload(['revert', String(t.pid), p2])).code).toBe(0); // the middle one
  await sleep(100);
  await t.next(/^compute 1008 /); // the newest stays in force
  const st2 = await hotload(['status', String(t.pid), '--json']);
  expect(st2.one.functions[0].stack).toHaveLength(2);
  expect((await hotload(['revert', String(t.pid), p3])).code).toBe(0);
  await t.next(/^compute 1006 /); // back to p1
  expect((await hotload(['revert', String(t.pid), '--all'])).code).toBe(0);
  await t.next(/^compute 6 /);
  expect((await hotload(['status', String(t.pid)])).stdout).toMatch(/no patch applied/);
  expect((await hotload(['attach', String(t.pid), p2])).code).toBe(0); // apply after revert
  await t.next(/^compute 1007 /);
  t.expectHealthy();
});

test('signals that arrive while the patch goes in are delivered, none lost', async () => {
  const t = start(TARGET, ['signals']);
  await t.waitFor(/^signals 0 compute 6/);
  const SIG = 40; // SIGRTMIN+6 with glibc (SIGRTMIN = 34): real-time signals queue, so none may merge
  const patches = await Promise.all([0, 1, 2].map((k) => mkpatch(computePatch(30 + k), TARGET, `sig${k}`)));
  let sent = 0;
  const sender = setInterval(() => {
    for (let i = 0; i < 5; i++, sent++) process.kill(t.pid, SIG);
  }, 2);
  try {
    for (const p of patches) expect((await hotload(['attach', String(t.pid), p])).code).toBe(0);
  } finally {
    clearInterval(sender);
  }
  expect(sent).toBeGreaterThan(50);
  const line = await t.next(new RegExp(`^signals ${sent} compute 1037$`));
  expect(line).toBeTruthy();
  t.expectHealthy();
});

test('SIGINT or SIGTERM during an attach: it finishes, says so, then exits 130/143; the target is whole', async () => {
  const { spawn } = await import('child_process');
  const { BIN, until } = await import('./helpers');
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    const t = start(TARGET, ['threads', '2']);
    await t.waitFor(/^compute 6/);
    const p = await mkpatch(computePatch(40), TARGET, `int-${sig}`);
    const child = spawn(process.execPath, [BIN, 'attach', String(t.pid), p], { stdio: ['ignore', 'pipe', 'pipe'] });
    let [stdout, stderr] = ['', ''];
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.once('close', (c) => r(c)));
    // The signal lands during the attach: once hotload traces the target (seen
    // in /proc on a short timer), and while it still does after the signal was sent.
    await until(() => (t.state().tracer === child.pid ? true : child.exitCode !== null ? false : undefined), 'hotload to trace the target', 60000, 1);
    child.kill(sig);
    expect(t.state().tracer).toBe(child.pid); // it held the process when the signal came
    const status = await exited;
    // The attach is synchronous: it finishes, its result is printed, then the signal is taken.
    expect({ status, stderr }).toEqual({ status: code, stderr: '' });
    expect(stdout).toMatch(new RegExp(`^patched process ${t.pid} with ${p.replace(/[.]/g, '\\.')} \\(1 function\\)`));
    t.expectHealthy();
    await t.next(/^compute 1045 /); // the patch in force
    await t.stop();
  }
});
