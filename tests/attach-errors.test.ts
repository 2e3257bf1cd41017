// Bad input to `hotload attach`: a clear error with its code and exit status,
// and the target still running, untraced, with its prologues unchanged.
import * as fs from 'fs';
import * as path from 'path';
import { spawn, spawnSync } from 'child_process';
import { FIX, Target, buildIdOf, computePatch, exited, hotload, mkpatch, rawPatch, sleep, symbolAddress, tmpdir } from './helpers';

const TARGET = path.join(FIX, 'target');
let good: string;
let t: Target;
let prologue: Buffer;

beforeAll(async () => {
  good = await mkpatch(computePatch(1), TARGET);
  t = Target.start(TARGET, ['threads', '2']);
  await t.waitFor(/^compute 6/);
  prologue = t.readMem(symbolAddress(t.pid, TARGET, 'compute') - 14n, 16);
});
afterAll(async () => {
  await t.stop();
});

/** The target is alive, untraced, never stopped, still runs its old code, prologue unchanged. */
async function expectUnharmed(): Promise<void> {
  t.expectHealthy();
  await t.next(/^compute 6 /);
  expect(t.readMem(symbolAddress(t.pid, TARGET, 'compute') - 14n, 16)).toEqual(prologue);
  const maps = fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8');
  expect(maps).not.toMatch(/hotload-\d+\/[0-9a-f]{16}-(bad|raw|unres)/);
}

async function expectError(args: string[], code: string, exit: number, message: RegExp): Promise<void> {
  const r = await hotload(args);
  expect(r.stderr).toMatch(new RegExp(`error ${code}: `));
  expect(r.stderr).toMatch(message);
  expect(r.stderr).toMatch(/^hint: .+/m);
  expect(r.code).toBe(exit);
  // With --json: the per-process array, its one entry failed, with the same exit status.
  const j = await hotload([...args, '--json']);
  expect(j.code).toBe(exit);
  expect(j.json).toEqual([{ pid: Number(args[1]), ok: false, error: expect.objectContaining({ code }) }]);
  expect(j.one.error.hint.length).toBeGreaterThan(10);
}

test('no such pid', async () => {
  await expectError(['attach', '999999', good], 'PID_NOT_FOUND', 5, /no process with pid 999999/);
});

test('a pid we may not trace (already traced by another process)', async () => {
  const tr = Target.start(TARGET, ['traced']);
  let child = 0;
  try {
    const line = await tr.waitFor(/^child (\d+)/);
    child = Number(/child (\d+)/.exec(line)![1]);
    expect(tr.descendants()).toEqual([child]);
    await expectError(['attach', String(child), good], 'PTRACE_DENIED', 5, /not allowed to trace process \d+: it is already traced by pid \d+/);
  } finally {
    await tr.stop(); // and the child it forked, by its pid
  }
  expect(exited(child)).toBe(true);
});

test('a stopped process (Ctrl-Z, SIGSTOP) is refused and stays stopped', async () => {
  const st = Target.start(TARGET, ['loop']);
  try {
    await st.waitFor(/^compute 6/);
    const before = st.readMem(symbolAddress(st.pid, TARGET, 'compute') - 14n, 16);
    process.kill(st.pid, 'SIGSTOP');
    for (let i = 0; i < 100 && st.state().state !== 'T'; i++) await new Promise((r) => setTimeout(r, 10));
    await expectError(['attach', String(st.pid), good], 'PROCESS_STOPPED', 5, /process \d+ is stopped/);
    expect(st.state().state).toBe('T');
    expect(st.state().tracer).toBe(0);
    expect(st.readMem(symbolAddress(st.pid, TARGET, 'compute') - 14n, 16)).toEqual(before);
    process.kill(st.pid, 'SIGCONT');
    await st.next(/^compute 6 /);
  } finally {
    await st.stop();
  }
});

test('the pid of a process without pads', async () => {
  const np = Target.start(path.join(FIX, 'target-nopads'), ['loop']);
  try {
    await np.waitFor(/^compute 6/);
    await expectError(['attach', String(np.pid), good], 'PROCESS_NO_PADS', 4, /has no module built with -fpatchable-function-entry/);
    np.expectHealthy();
  } finally {
    await np.stop();
  }
});

test('a patch built for another build of the same program', async () => {
  const dir = tmpdir();
  const other = path.join(dir, 'target');
  const r = spawnSync('cc', ['-O2', '-g', '-fpatchable-function-entry=16,14', '-pthread', '-DANOTHER_BUILD=1', path.join(FIX, '../src/target.c'), '-o', other, '-ldl']);
  expect(r.status).toBe(0);
  const p = await mkpatch(computePatch(2), other, 'bad-build');
  await expectError(['attach', String(t.pid), p], 'PATCH_BUILD_MISMATCH', 6, /was built for target with build-id [0-9a-f]+, but process \d+ runs another build/);
  await expectUnharmed();
});

test('a file that is not ELF', async () => {
  const f = path.join(tmpdir(), 'bad.so');
  fs.writeFileSync(f, 'this is not a shared library\n');
  await expectError(['attach', String(t.pid), f], 'PATCH_BAD', 6, /not an ELF file/);
  await expectUnharmed();
});

test('a corrupt .so (truncated)', async () => {
  const f = path.join(tmpdir(), 'bad.so');
  fs.writeFileSync(f, fs.readFileSync(good).subarray(0, 3000));
  await expectError(['attach', String(t.pid), f], 'PATCH_BAD', 6, /outside the file/);
  await expectUnharmed();
});

test('a patch with a symbol that does not resolve: dlerror() is reported, nothing changes', async () => {
  const src = '#include <hotload.h>\nextern int no_such_symbol_anywhere(int);\nint compute_v2(int x) { return no_such_symbol_anywhere(x); }\nHOTLOAD_REPLACE(compute, compute_v2);\n';
  const p = await mkpatch(src, TARGET, 'unres');
  await expectError(['attach', String(t.pid), p], 'PATCH_DLOPEN_FAILED', 6, /could not load .*undefined symbol: no_such_symbol_anywhere/);
  await expectUnharmed();
});

test('a replaced function that does not exist: mkpatch refuses, attach refuses a hand-built one', async () => {
  const src = '#include <hotload.h>\nint nope_v2(int x) { return x; }\nHOTLOAD_REPLACE(no_such_function, nope_v2);\nHOTLOAD_STATIC(int, no_such_static);\n';
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, 'p.c'), src);
  const mk = await hotload(['mkpatch', path.join(dir, 'p.c'), '--target', TARGET, '-o', path.join(dir, 'p.so')]);
  expect(mk.code).toBe(4); // cannot be patched (README's table)
  // The first line names the function, not mkpatch's temporary file.
  expect(mk.stderr.split('\n')[0]).toMatch(/^error UNPATCHABLE: no_such_function, HOTLOAD_STATIC\(no_such_static\): 2 problems against /);
  expect(mk.stderr).not.toMatch(/hotload-mkpatch-/);
  expect(mk.stderr).toMatch(/- no_such_function: no such function in/); // every problem listed
  expect(mk.stderr).toMatch(/- HOTLOAD_STATIC\(no_such_static\): no_such_static: no such symbol/);
  expect(fs.existsSync(path.join(dir, 'p.so'))).toBe(false);
  const raw = rawPatch(src, TARGET, buildIdOf(TARGET));
  await expectError(['attach', String(t.pid), raw], 'UNPATCHABLE', 4, /2 problems against/);
  await expectUnharmed();
});

test('a function without a pad: mkpatch refuses with the reason', async () => {
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, 'p.c'), '#include <hotload.h>\nint nopad_v2(int x) { return x; }\nHOTLOAD_REPLACE(nopad_twice, nopad_v2);\n');
  const mk = await hotload(['mkpatch', path.join(dir, 'p.c'), '--target', path.join(FIX, 'pads-O2'), '-o', path.join(dir, 'p.so')]);
  expect(mk.code).toBe(4);
  expect(mk.stderr).toMatch(/nopad_twice: no-pad: no patchable entry/);
});

test('a patch file others could write is refused unless allowed', async () => {
  const dir = tmpdir();
  const f = path.join(dir, 'open.so');
  fs.copyFileSync(good, f);
  fs.chmodSync(f, 0o666);
  await expectError(['attach', String(t.pid), f], 'PATCH_UNSAFE_FILE', 6, /writable by group or others/);
  await expectUnharmed();
  const ok = await hotload(['attach', String(t.pid), f, '--allow-unsafe-file']);
  expect(ok.code).toBe(0);
  await t.next(/^compute 1006 /);
  expect((await hotload(['revert', String(t.pid), '--all'])).code).toBe(0);
});

test('the process loads the bytes that were checked, from a private copy', async () => {
  const r = await hotload(['attach', String(t.pid), good, '--json']);
  expect(r.code).toBe(0);
  expect(fs.readFileSync(r.one.staged).equals(fs.readFileSync(good))).toBe(true);
  const st = fs.statSync(r.one.staged);
  expect(st.mode & 0o222).toBe(0); // read-only copy
  expect(fs.statSync(path.dirname(r.one.staged)).mode & 0o022).toBe(0); // nobody else may write there
  expect(fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8')).toContain(r.one.staged);
  expect((await hotload(['revert', String(t.pid), '--all'])).code).toBe(0);
});

test('a thread asleep inside a dl_iterate_phdr callback is no host: its stack, unwound, shows the loader list held', async () => {
  const u = Target.start(TARGET, ['phdrcb']);
  try {
    await u.waitFor(/^in callback compute 6/);
    const r = await hotload(['attach', String(u.pid), good, '--timeout', '300']);
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/- thread \d+: inside malloc, dlopen, dl_iterate_phdr or the loader \(its stack unwound\)/);
    u.expectHealthy();
    expect(fs.readFileSync(`/proc/${u.pid}/maps`, 'utf8')).not.toMatch(/hotload-\d+\//);
  } finally {
    await u.stop();
  }
});

test('no safe moment within the deadline: fails cleanly, the process untouched', async () => {
  const u = Target.start(TARGET, ['unsafe']);
  let holder: number[] = [];
  try {
    await u.waitFor(/^blocking in flock/);
    holder = u.descendants(); // the child it forked to hold the lock
    expect(holder).toHaveLength(1);
    const before = u.readMem(symbolAddress(u.pid, TARGET, 'compute') - 14n, 16);
    const r = await hotload(['attach', String(u.pid), good, '--timeout', '300']);
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/error NO_SAFE_POINT: no thread of process \d+ reached a safe moment within 300 ms/);
    expect(r.stderr).toMatch(/- thread \d+: in system call 73 \(flock\), not a wait hotload may interrupt \(\d+x\)/); // why, per thread
    u.expectHealthy();
    expect(fs.readFileSync(`/proc/${u.pid}/syscall`, 'utf8').split(' ')[0]).toBe('73'); // still blocked in flock
    expect(u.readMem(symbolAddress(u.pid, TARGET, 'compute') - 14n, 16)).toEqual(before);
    expect(fs.readFileSync(`/proc/${u.pid}/maps`, 'utf8')).not.toMatch(/hotload-\d+\//);
  } finally {
    await u.stop(); // and its forked lock holder, by its pid
  }
  expect(holder.filter((p) => !exited(p))).toEqual([]);
});

describe('bad values on the command line: a usage error naming the value, nothing done', () => {
  test.each([
    [['status', '9'.repeat(5000)], /not a process id: "9{40}\.\.\."/],
    [['status', '0'], /not a process id: "0"/],
    [['attach', '9'.repeat(30), 'x.so'], /not a process id: "9{30}"/],
    [['attach', '1', 'x.so', '--timeout', 'abc'], /--timeout takes a whole number of at least 1, not "abc"/],
    [['attach', '1', 'x.so', '--timeout=-5'], /--timeout takes a whole number of at least 1, not "-5"/],
    [['watch', '--pid', '1', '--max', '1.5'], /--max takes a whole number of at least 1, not "1.5"/],
  ])('hotload %j', async (args, message) => {
    const r = await hotload(args as string[]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error USAGE: /);
    expect(r.stderr).toMatch(message);
  });

  test('--timeout abc on a live process: refused before anything is applied', async () => {
    const at = symbolAddress(t.pid, TARGET, 'compute') - 14n;
    const before = t.readMem(at, 16);
    const maps = fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8');
    const r = await hotload(['attach', String(t.pid), good, '--timeout', 'abc']);
    expect(r.code).toBe(2);
    expect(t.readMem(at, 16)).toEqual(before);
    expect(fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8')).toBe(maps);
    t.expectHealthy();
  });
});

test('status of a zombie: PID_NOT_FOUND, not an internal error', async () => {
  // A child that exited and that its parent (a shell asleep) has not reaped.
  const parent = spawn('sh', ['-c', 'sh -c "exit 0" & exec sleep 30'], { stdio: 'ignore' });
  try {
    let zombie = 0;
    for (let i = 0; i < 200 && !zombie; i++) {
      await sleep(20);
      for (const e of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
        try {
          const st = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
          const fields = st.slice(st.lastIndexOf(')') + 2).split(' ');
          if (fields[0] === 'Z' && Number(fields[1]) === parent.pid) zombie = Number(e);
        } catch {
          /* gone */
        }
      }
    }
    expect(zombie).toBeGreaterThan(0);
    const r = await hotload(['status', String(zombie), '--json']);
    expect(r.code).toBe(5);
    expect(r.one.error.code).toBe('PID_NOT_FOUND');
    expect(r.one.error.message).toMatch(/zombie/);
  } finally {
    parent.kill('SIGKILL');
  }
});

