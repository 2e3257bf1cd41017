// Each error code that no other test produced, produced here: by a real fault
// where one can be made (a file another user cannot read, a patch for a
// library the process has not loaded, a constructor that outlives the call's
// deadline, a thread on a 16 KiB stack, an address space full around the
// program: fixtures/src/faults.c), and by a unit test of the path that raises
// it where no honest fault makes it (the borrowed thread's registers not put
// back, a ptrace request failing with EIO). Every test acts on processes it
// started, by pid.
import { execFileSync, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { BIN, FIX, ROOT, Target, computePatch, hotload, mkpatch, stoppedAfterEach, tmpdir, until } from './helpers';
import { attach, isHotloadError } from '@hotload/api';

const TARGET = path.join(FIX, 'target');
const FAULTS_C = path.join(ROOT, 'fixtures/src/faults.c');

const start = stoppedAfterEach();

/** fixtures/src/faults.c built in `dir` with value() returning k, keeping its object (for mkpatch --from). */
function buildFaults(dir: string, k: number): string {
  fs.mkdirSync(dir, { recursive: true });
  execFileSync('cc', ['-O2', '-g', '-fpatchable-function-entry=16,14', '-ffunction-sections', '-fdata-sections', '-fPIE', `-DK=${k}`, '-c', FAULTS_C, '-o', 'faults.o'], { cwd: dir });
  execFileSync('cc', ['-pie', 'faults.o', '-o', 'faults', '-pthread'], { cwd: dir });
  return path.join(dir, 'faults');
}

/** What the process's pad of `fn` holds now (16 bytes from entry-14). */
function pad(t: Target, exe: string, fn: string): Buffer {
  const nm = execFileSync('nm', [exe], { encoding: 'utf8' });
  const off = BigInt('0x' + new RegExp(`^([0-9a-f]+) T ${fn}$`, 'm').exec(nm)![1]);
  const maps = fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8').split('\n');
  const real = fs.realpathSync(exe);
  const base = BigInt('0x' + maps.find((l) => l.endsWith(real))!.split('-')[0]);
  return t.readMem(base + off - 14n, 16);
}

describe('FILE_UNREADABLE', () => {
  test('a program only its owner may read, read by another user (nobody): exit 3, the file and the reason named', () => {
    const dir = tmpdir();
    fs.chmodSync(dir, 0o755); // nobody may look in, not read the file
    const file = path.join(dir, 'secret-program');
    fs.copyFileSync(path.join(FIX, 'pads-O2'), file);
    fs.chmodSync(file, 0o600);
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, BIN, 'index', file], { encoding: 'utf8', env: { ...process.env, HOME: dir } });
    expect(r.stderr).toMatch(new RegExp(`^error FILE_UNREADABLE: ${file}: EACCES: permission denied`, 'm'));
    expect(r.stderr).toMatch(/^hint: Check the file permissions\.$/m);
    expect(r.status).toBe(3);
    // The same file read by its owner: the fault was the permission.
    expect(spawnSync(process.execPath, [BIN, 'index', file], { encoding: 'utf8' }).status).toBe(0);
  });

  test('a symbolic link that leads back to itself (ELOOP: a fault root meets too): index says FILE_UNREADABLE, exit 3', async () => {
    const dir = tmpdir();
    const loop = path.join(dir, 'loop');
    fs.symlinkSync(loop, loop);
    const r = await hotload(['index', loop]);
    expect(r.stderr).toMatch(new RegExp(`FILE_UNREADABLE: ${loop}: ELOOP`));
    expect(r.code).toBe(3);
  });
});

test('PATCH_TARGET_NOT_MAPPED: a patch of libtarget.so attached to a process that never loaded it; nothing changes', async () => {
  const lib = path.join(FIX, 'libtarget.so');
  const p = await mkpatch(
    `#include <hotload.h>
int lib_compute_v2(int x) { return x * 2 + 1000; }
HOTLOAD_REPLACE(lib_compute, lib_compute_v2);
`,
    lib,
    'lib-only',
  );
  const t = start(TARGET, ['loop']); // the program without the library
  await t.waitFor(/^compute 6 /);
  const before = pad(t, TARGET, 'compute');
  const r = await hotload(['attach', String(t.pid), p, '--json']);
  expect(r.code).toBe(6);
  expect(r.one.error.code).toBe('PATCH_TARGET_NOT_MAPPED');
  expect(r.one.error.message).toMatch(new RegExp(`is for libtarget\\.so \\(build-id [0-9a-f]+\\), which process ${t.pid} has not loaded`));
  expect(pad(t, TARGET, 'compute')).toEqual(before);
  await t.next(/^compute 6 /);
  t.expectHealthy();
});

test('PATCH_NOT_APPLIED: reverting a patch never applied to the process (the CLI, and after one that was): exit 6, nothing changes', async () => {
  const applied = await mkpatch(computePatch(31), TARGET, 'applied');
  const never = await mkpatch(computePatch(32), TARGET, 'never');
  const t = start(TARGET, ['loop']);
  await t.waitFor(/^compute 6 /);
  const r = await hotload(['revert', String(t.pid), never]);
  expect(r.stderr).toMatch(/PATCH_NOT_APPLIED/);
  expect(r.code).toBe(6);
  expect((await hotload(['attach', String(t.pid), applied])).code).toBe(0);
  await t.next(/^compute 1036 /);
  const again = await hotload(['revert', String(t.pid), never, '--json']);
  expect(again.code).toBe(6);
  expect(again.one.error.code).toBe('PATCH_NOT_APPLIED');
  await t.next(/^compute 1036 /); // the applied one stays
  t.expectHealthy();
});

test('COMPILE_FAILED: a hand-written patch that does not compile: exit 8, the compiler\'s own lines in the details, no output file', async () => {
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, 'bad.c'), '#include <hotload.h>\nint compute_v2(int x) { return x + ; }\nHOTLOAD_REPLACE(compute, compute_v2);\n');
  const out = path.join(dir, 'bad.so');
  const r = await hotload(['mkpatch', path.join(dir, 'bad.c'), '--target', TARGET, '-o', out, '--json']);
  expect(r.code).toBe(8);
  expect(r.json.error.code).toBe('COMPILE_FAILED');
  expect(r.json.error.details.join('\n')).toMatch(/bad\.c:2:\d+: error: expected expression/);
  expect(fs.existsSync(out)).toBe(false);
});

test('CALL_TIMEOUT: a patch whose constructor sleeps past the call\'s deadline (the API\'s callTimeoutMs); the thread goes home by itself and nothing is redirected', async () => {
  const dir = tmpdir();
  const flag = path.join(dir, 'constructor-done');
  const p = await mkpatch(
    `#include <hotload.h>
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void slow(void) { usleep(1500000); close(open("${flag}", O_CREAT | O_WRONLY, 0600)); }
int compute_v2(int x) { return x + 1033; }
HOTLOAD_REPLACE(compute, compute_v2);
`,
    TARGET,
    'slow-ctor',
  );
  const t = start(TARGET, ['loop']);
  await t.waitFor(/^compute 6 /);
  const before = pad(t, TARGET, 'compute');
  let code: string | undefined;
  const t0 = Date.now();
  try {
    attach(t.pid, p, { callTimeoutMs: 300 });
  } catch (e) {
    if (isHotloadError(e)) code = e.code;
    else throw e;
  }
  expect(code).toBe('CALL_TIMEOUT');
  expect(Date.now() - t0).toBeLessThan(1500); // it did not wait for the constructor
  expect(fs.existsSync(flag)).toBe(false); // the constructor was still running when attach gave up
  // The thread finishes the constructor and goes home by itself: the file appears, the loop goes on in the old code.
  await until(() => (fs.existsSync(flag) ? true : undefined), 'the constructor to finish', 15000, 20);
  await t.next(/^compute 6 /);
  expect(pad(t, TARGET, 'compute')).toEqual(before);
  t.expectHealthy();
});

test('HOST_STACK_FULL: the only thread that may be borrowed runs on a 16 KiB stack: exit 5, nothing written, the process runs on', async () => {
  const exe = buildFaults(path.join(tmpdir(), 'smallstack'), 1);
  const p = await mkpatch('#include <hotload.h>\nint value_v2(void) { return 7; }\nHOTLOAD_REPLACE(value, value_v2);\n', exe, 'small');
  const t = start(exe, ['smallstack']);
  await t.waitFor(/^small stack thread running/);
  const before = pad(t, exe, 'value');
  const r = await hotload(['attach', String(t.pid), p]);
  expect(r.stderr).toMatch(/^error HOST_STACK_FULL: thread \d+ of process \d+ has \d+ bytes of stack below its stack pointer; the call needs \d+/m);
  expect(r.code).toBe(5);
  expect(pad(t, exe, 'value')).toEqual(before);
  expect(fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8')).not.toMatch(/hotload-\d+\//); // no patch copy was loaded
  t.expectHealthy();
});

test('PATCH_NO_ROOM: a patch from a rebuild, for a process that has reserved every free byte within 2.5 GiB of its program: exit 6, nothing mapped, the process runs on', async () => {
  const dir = tmpdir();
  const exe = buildFaults(path.join(dir, 'old'), 1);
  buildFaults(path.join(dir, 'new'), 2);
  const out = path.join(dir, 'p.so');
  const m = await hotload(['mkpatch', '--from', path.join(dir, 'old'), '--to', path.join(dir, 'new'), '--target', exe, '-o', out]);
  expect(m.stderr).toBe('');
  const t = start(exe, ['fullspace']);
  await t.waitFor(/^value=1$/);
  const mapsBefore = fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8');
  const r = await hotload(['attach', String(t.pid), out, '--json']);
  expect(r.code).toBe(6);
  expect(r.one.error.code).toBe('PATCH_NO_ROOM');
  expect(r.one.error.message).toMatch(new RegExp(`no free \\d+ bytes within 2 GiB of ${exe.replace(/[.]/g, '\\.')} in process ${t.pid}`));
  await t.next(/^value=1$/);
  // The patch is not mapped anywhere (its copy may be staged on disk, not in the process).
  expect(fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8').split('\n').filter((l) => /p\.so|hotload-\d+\/[0-9a-f]{16}/.test(l) && !mapsBefore.includes(l))).toEqual([]);
  t.expectHealthy();
  // The same patch goes into the same program when the space around it is free: the fault was the room.
  const plain = start(exe, ['plain']);
  await plain.waitFor(/^value=1$/);
  expect((await hotload(['attach', String(plain.pid), out])).code).toBe(0);
  await plain.next(/^value=2$/);
});

describe('INTERNAL', () => {
  test('mkpatch --from with a compiler driver that fails (--cc false) is the build\'s failure, not hotload\'s: COMPILE_FAILED naming the driver, exit 8', async () => {
    const D = path.join(FIX, 'diff');
    const out = path.join(tmpdir(), 'p.so');
    const r = await hotload(['mkpatch', '--from', path.join(D, 'base'), '--to', path.join(D, 'CONST'), '-o', out, '--cc', 'false', '--json']);
    expect(r.code).toBe(8);
    expect(r.json.error.code).toBe('COMPILE_FAILED');
    expect(r.json.error.message).toBe('the compiler driver `false` exited 1 and said nothing while linking the patch');
    expect(r.json.error.hint).toMatch(/--cc \(or \$CC\) names a working C compiler driver/);
    expect(fs.existsSync(out)).toBe(false);
  });

  test('a script that attaches from inside an attach (its onProgress callback): the inner one is refused, one ptrace session per process', async () => {
    const p = await mkpatch(computePatch(34), TARGET, 'outer');
    const q = await mkpatch(computePatch(35), TARGET, 'inner');
    const a = start(TARGET, ['loop']);
    const b = start(TARGET, ['loop']);
    await a.waitFor(/^compute 6 /);
    await b.waitFor(/^compute 6 /);
    let inner: unknown;
    let outer: unknown;
    try {
      attach(a.pid, p, {
        onProgress: () => {
          if (inner !== undefined) return;
          try {
            attach(b.pid, q);
            inner = 'no error';
          } catch (e) {
            inner = e;
          }
        },
      });
    } catch (e) {
      outer = e;
    }
    expect(isHotloadError(inner) && inner.code).toBe('INTERNAL');
    expect((inner as Error).message).toBe('a ptrace session is already open in this hotload process');
    expect(outer).toBeUndefined(); // the outer attach went on
    await a.next(/^compute 1039 /);
    await b.next(/^compute 6 /);
    a.expectHealthy();
    b.expectHealthy();
  });
});

describe('paths no honest fault reaches: the shim\'s answers mapped to the codes', () => {
  type Native = typeof import('../packages/injector/src/native');
  /** Session (packages/injector/src/session.ts) over the native module with some calls answering as `answers` says. */
  function sessionOver(answers: (native: Native) => Partial<Record<keyof Native, unknown>>) {
    let Session: typeof import('../packages/injector/src/session').Session | undefined;
    jest.isolateModules(() => {
      jest.doMock('../packages/injector/src/native', () => {
        const actual = jest.requireActual('../packages/injector/src/native') as Native;
        return { ...actual, openMem: () => undefined, survey: () => [], resumeAllExcept: () => undefined, ...answers(actual) };
      });
      Session = require('../packages/injector/src/session').Session;
    });
    jest.dontMock('../packages/injector/src/native');
    return Session!;
  }
  const codeOf = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return isHotloadError(e) ? { code: e.code, message: e.message, exit: e.exitCode } : { code: String(e) };
    }
    return undefined;
  };

  test('REGISTERS_NOT_RESTORED: the call returned but the thread\'s state could not be put back (the shim\'s -EIO): exit 5, naming what and the first XSAVE component', () => {
    const Session = sessionOver((native) => ({
      call: () => {
        throw new native.StateError({ registers: false, extendedState: true, signalMask: true }, 2);
      },
    }));
    const s = Session.open(4242);
    const r = codeOf(() => s.call(4243, 0x1000n, { sigreturn: 0x101cn, sigprocmask: 0x103an }, 0x2000n, Buffer.alloc(0), [], 100));
    expect(r).toEqual({ code: 'REGISTERS_NOT_RESTORED', message: 'thread 4243 of process 4242 could not be given back its extended state, signal mask (first difference in XSAVE component 2) after the call', exit: 5 });
  });

  test('PTRACE_FAILED: a ptrace request that fails other than by a gone process or a refusal (EIO): exit 5, naming the operation', () => {
    const Session = sessionOver((native) => ({
      openMem: () => {
        throw new native.Errno('open /proc/PID/mem', native.EIO);
      },
    }));
    const r = codeOf(() => Session.open(process.pid));
    expect(r).toEqual({ code: 'PTRACE_FAILED', message: `could not attach to process ${process.pid}: open /proc/PID/mem: EIO`, exit: 5 });
    // A thread that cannot be stopped for that reason, in an open session.
    const S2 = sessionOver((native) => ({
      stopThread: () => {
        throw new native.Errno('stop', native.EIO);
      },
    }));
    const s = S2.open(process.pid);
    expect(codeOf(() => s.stopThread(4243))).toEqual({ code: 'PTRACE_FAILED', message: `could not stop a thread in process ${process.pid}: stop: EIO`, exit: 5 });
  });
});

describe('ROLLOUT_FAILED, ROLLOUT_PARTIAL, INTERRUPTED as the CLI prints them (not only the exit status)', () => {
  function writePlan(plan: object): string {
    const f = path.join(tmpdir(), 'plan.json');
    fs.writeFileSync(f, JSON.stringify(plan));
    return f;
  }

  test('a failing canary: ROLLOUT_FAILED on stderr, exit 12; one of two failing: ROLLOUT_PARTIAL, exit 11', async () => {
    const p = await mkpatch(computePatch(36), TARGET, 'rollout-codes');
    const [a, b] = [start(TARGET, ['loop']), start(TARGET, ['loop'])];
    await a.waitFor(/^compute 6 /);
    await b.waitFor(/^compute 6 /);
    const failed = await hotload(['rollout', writePlan({ targets: { pids: [a.pid, b.pid] }, steps: [{ apply: p }], healthCheck: 'exit 1' })]);
    expect(failed.stderr).toMatch(/^ROLLOUT_FAILED: rollout failure$/m);
    expect(failed.stderr).toMatch(/^hint: Nothing is left applied by this rollout/m);
    expect(failed.code).toBe(12);
    const lo = Math.min(a.pid, b.pid);
    const partial = await hotload(['rollout', writePlan({ targets: { pids: [a.pid, b.pid] }, canary: 0, steps: [{ apply: p }], healthCheck: `test $HOTLOAD_PID != ${lo}` })]);
    expect(partial.stderr).toMatch(/^ROLLOUT_PARTIAL: rollout partial$/m);
    expect(partial.code).toBe(11);
    const hi = a.pid === lo ? b : a;
    await hi.next(/^compute 1041 /);
    await (a.pid === lo ? a : b).next(/^compute 6 /);
  });

  test('Ctrl-C during a wait: INTERRUPTED on stderr after the summary, exit 130', async () => {
    const p = await mkpatch(computePatch(37), TARGET, 'rollout-int');
    const t = start(TARGET, ['loop']);
    await t.waitFor(/^compute 6 /);
    const child = spawn(process.execPath, [BIN, 'rollout', writePlan({ targets: { pids: [t.pid] }, steps: [{ apply: p }, { wait: 60000 }] })], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.on('close', (c) => r(c)));
    await t.next(/^compute 1042 /, 20000);
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(out).toMatch(new RegExp(`^${t.pid}\\s+interrupted\\s+yes\\s+.*\\(reverted rollout-int\\.so\\)`, 'm'));
    expect(err).toMatch(/^INTERRUPTED: the rollout was interrupted; what it applied was reverted$/m);
    await t.next(/^compute 6 /);
  });
});
