// The borrowed thread's own wait, on every way out of a call hotload makes on
// it (issue 22, 5): a patch that fails to load (dlopen, then dlerror on the
// same thread), an on-apply hook that fails (dlopen, then the hook), a patch
// from a rebuild (open, mmap, close... on one thread), and hotload killed with
// SIGKILL while the patch's constructor runs on the borrowed thread. Each must
// leave the wait as the kernel would have: no EINTR, and a deadline kept.
//
// The target's only thread waits 5 s in one system call (fixtures/src/target.c,
// `wait KIND`), so it is the thread hotload borrows. nanosleep, clock_nanosleep,
// futex (both) and poll are resumed by the kernel through restart_syscall and
// its per-thread restart block, which rt_sigreturn resets: those are what these
// tests are about. clock_nanosleep with TIMER_ABSTIME and ppoll are re-issued
// (they never use the restart block) and epoll_wait fails with EINTR when its
// thread stops, which hotload undoes by re-issuing it (its timeout starts
// over): they are here to show those ways stay right.
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { BIN, FIX, Target, WAIT_KINDS, computePatch, hotload, mkpatch, sleep, tmpdir } from './helpers';

const TARGET = path.join(FIX, 'target');
const WAIT_S = 5;

const KINDS = WAIT_KINDS;

let good: string;
let unresolved: string;
let hookFails: string;
let blockedCtor: string;
let sleepyCtor: string;
let fifo: string;
let good8: string;
let rebuilt: string;
const LIB = path.join(FIX, 'rebuild-lib/base/libtarget.so');
beforeAll(async () => {
  good8 = await mkpatch(computePatch(8), TARGET, 'good8');
  rebuilt = path.join(tmpdir(), 'lib.so');
  const L = path.join(FIX, 'rebuild-lib');
  const mk = await hotload(['mkpatch', '--from', path.join(L, 'base/libtarget.o'), '--to', path.join(L, 'PLUS/libtarget.o'), '--target', LIB, '-o', rebuilt]);
  if (mk.code !== 0) throw new Error(`mkpatch --from failed: ${mk.stderr}`);
  good = await mkpatch(computePatch(7), TARGET, 'good');
  unresolved = await mkpatch('#include <hotload.h>\nextern int no_such_symbol_anywhere(int);\nint compute_v2(int x) { return no_such_symbol_anywhere(x); }\nHOTLOAD_REPLACE(compute, compute_v2);\n', TARGET, 'unresolved');
  hookFails = await mkpatch('#include <hotload.h>\nstatic int check(void) { return HOTLOAD_HOOK_FAIL("not now"); }\nHOTLOAD_ON_APPLY(check);\nint compute_v2(int x) { return x + 1002; }\nHOTLOAD_REPLACE(compute, compute_v2);\n', TARGET, 'hook-fails');
  // A constructor that says when it runs (on the borrowed thread, inside
  // dlopen), then waits in open() of a FIFO until the test opens it: the
  // moment the test kills hotload, by an event, not by timing. (It waits in
  // open, which leaves the restart block alone: see the sleeping one below.)
  fifo = path.join(tmpdir(), 'ctor.fifo');
  if (spawnSync('mkfifo', [fifo]).status !== 0) throw new Error('mkfifo failed');
  blockedCtor = await mkpatch(
    `#include <hotload.h>
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void blocked(void) {
  static const char a[] = "patch constructor waiting\\n", b[] = "patch constructor done\\n";
  char c[8];
  write(1, a, sizeof a - 1);
  int fd = open("${fifo}", O_RDONLY);
  if (fd >= 0) { (void)!read(fd, c, sizeof c); close(fd); }
  write(1, b, sizeof b - 1);
}
int compute_v2(int x) { return x + 1009; }
HOTLOAD_REPLACE(compute, compute_v2);
`,
    TARGET,
    'blocked-ctor',
  );
  // A constructor that sleeps: nanosleep resets the calling thread's restart
  // block as it begins, so the borrowed thread's own wait cannot be resumed
  // through restart_syscall after it.
  sleepyCtor = await mkpatch(
    `#include <hotload.h>
#include <time.h>
__attribute__((constructor)) static void sleepy(void) { struct timespec d = { 0, 200000000 }; nanosleep(&d, 0); }
int compute_v2(int x) { return x + 1003; }
HOTLOAD_REPLACE(compute, compute_v2);
`,
    TARGET,
    'sleepy-ctor',
  );
});

const targets: Target[] = [];
function start(bin: string, args: string[], env?: NodeJS.ProcessEnv): Target {
  const t = Target.start(bin, args, { env });
  targets.push(t);
  return t;
}
afterEach(async () => {
  for (const t of targets.splice(0)) await t.stop();
});

/** Wait for the wait's own line, and check it: its result, the patch running (compute), no EINTR, its deadline. */
async function expectWaitEnded(t: Target, kind: string, ret: string, exact: boolean, compute: number): Promise<void> {
  const line = await t.waitFor(new RegExp(`^${kind} returned`), 3 * WAIT_S * 1000);
  expect(line).toMatch(new RegExp(`^${kind} returned ${ret} after \\d+\\.\\d+ s; compute ${compute}$`));
  const slept = Number(/after (\d+\.\d+) s/.exec(line)![1]);
  expect(slept).toBeGreaterThanOrEqual(WAIT_S - 0.01);
  if (exact) expect(slept).toBeLessThan(WAIT_S + 0.5); // the deadline kept, not started over
  else expect(slept).toBeLessThan(2 * WAIT_S + 1);
}

async function waiting(kind: string, bin = TARGET, env?: NodeJS.ProcessEnv): Promise<Target> {
  const t = start(bin, ['wait', kind], env);
  await t.waitFor(new RegExp(`^waiting in ${kind}$`));
  await sleep(300);
  return t;
}

describe.each(KINDS)(`the only thread, waiting ${WAIT_S} s in %s`, (kind, ret, exact) => {
  test(`${kind}: two attaches of a patch that fails to load (dlopen, then dlerror on the same thread) leave the wait as it was`, async () => {
    const t = await waiting(kind);
    for (let k = 0; k < 2; k++) {
      // The second finds the thread where the first left it (restart_syscall, for most kinds).
      const r = await hotload(['attach', String(t.pid), unresolved]);
      expect(r.code).toBe(6);
      expect(r.stderr).toMatch(/error PATCH_DLOPEN_FAILED: .*undefined symbol: no_such_symbol_anywhere/);
      await sleep(200);
    }
    expect(t.lines.some((l) => l.startsWith(`${kind} returned`))).toBe(false);
    await expectWaitEnded(t, kind, ret, exact, 6);
  });

  test(`${kind}: an on-apply hook that fails (dlopen, then the hook on the same thread) leaves the wait as it was`, async () => {
    const t = await waiting(kind);
    const r = await hotload(['attach', String(t.pid), hookFails]);
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/error HOOK_FAILED: .*returned 1: not now; nothing was changed/);
    expect(t.lines.some((l) => l.startsWith(`${kind} returned`))).toBe(false);
    await expectWaitEnded(t, kind, ret, exact, 6);
  });

  test(`${kind}: a patch from a rebuild, mapped by hotload (several calls on the same thread), leaves the wait as it was`, async () => {
    const t = await waiting(kind, path.join(FIX, 'target-lib'), { LD_LIBRARY_PATH: path.dirname(LIB) });
    // The stub's own way home runs to its end and is checked against the saved state (the shim's test switch).
    const r = await hotload(['attach', String(t.pid), rebuilt, '--json'], { HOTLOAD_SHIM_SELF_RETURN: '1' });
    expect(r.code).toBe(0);
    expect(r.one.hostThread).toBe(t.pid);
    expect(r.one.repairedRegisters).toBe(false);
    expect(t.lines.some((l) => l.startsWith(`${kind} returned`))).toBe(false);
    await expectWaitEnded(t, kind, ret, exact, 6);
  });

  test(`${kind}: hotload killed (SIGKILL) while the patch loads on the borrowed thread: the thread goes home to its wait by itself`, async () => {
    const t = await waiting(kind);
    // A first patch, so the thread is in restart_syscall (most kinds) when borrowed again;
    // its way home, run to the end by the thread's own code, is checked against the saved state.
    const first = await hotload(['attach', String(t.pid), good, '--json'], { HOTLOAD_SHIM_SELF_RETURN: '1' });
    expect(first.code).toBe(0);
    expect(first.one.hostThread).toBe(t.pid);
    expect(first.one.repairedRegisters).toBe(false);
    await sleep(200);
    const from = t.lines.length;
    const h = spawn(process.execPath, [BIN, 'attach', String(t.pid), blockedCtor], { stdio: 'ignore' });
    const exited = new Promise((r) => h.once('exit', r));
    try {
      await t.waitFor(/^patch constructor waiting$/, 10000, from); // dlopen runs on the borrowed thread now
      expect(h.kill('SIGKILL')).toBe(true);
    } finally {
      if (h.exitCode === null && h.signalCode === null) h.kill('SIGKILL');
      await exited;
    }
    expect(h.signalCode).toBe('SIGKILL');
    fs.writeFileSync(fifo, 'go\n'); // the constructor goes on, with hotload dead
    await t.waitFor(/^patch constructor done$/, 5000, from);
    expect(t.lines.some((l) => l.startsWith(`${kind} returned`))).toBe(false);
    await sleep(100);
    const st = t.state();
    expect(st.tracer).toBe(0);
    expect(st.threads).toEqual(['S']); // back in its wait, not stopped
    // The process is whole: the next attach and a revert work, still during the wait.
    const next = await hotload(['attach', String(t.pid), good8, '--json']);
    expect(next.code).toBe(0);
    expect(next.one.functions).toEqual([expect.objectContaining({ name: 'compute' })]);
    const back = await hotload(['revert', String(t.pid), good8]);
    expect(back.code).toBe(0);
    expect(t.lines.some((l) => l.startsWith(`${kind} returned`))).toBe(false);
    await expectWaitEnded(t, kind, ret, exact, 1012); // the first patch (5 + 1007) runs again; the killed one redirected nothing
  });

  test(`${kind}: a patch whose constructor sleeps (nanosleep, which resets the restart block) still ends the wait without EINTR`, async () => {
    const t = await waiting(kind);
    const r = await hotload(['attach', String(t.pid), sleepyCtor, '--json']);
    expect(r.code).toBe(0);
    expect(r.one.hostThread).toBe(t.pid);
    expect(t.lines.some((l) => l.startsWith(`${kind} returned`))).toBe(false);
    // The wait is issued again instead of resumed: a relative timeout starts over, an absolute one is kept.
    await expectWaitEnded(t, kind, ret, /abs/.test(kind), 1008);
  });
});
