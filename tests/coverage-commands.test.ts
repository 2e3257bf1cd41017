// Commands and options no other test ran: `hotload cc`, `flags` and
// `flags --diff` (their output used as the Makefile it is), `index
// --recompute`, `post` of several files, `mkpatch --from` without
// `--target` (and the API's findProgram), rollout plans naming their targets
// by name, exe and buildId (and the API's pidsByExe, pidsByBuildId), revert
// steps, checkTimeoutMs, canary 0, relative paths, the second Ctrl-C, and
// watch with a process name, no paths, --interval and --max. Each process a
// test patches is one it started, from a build of its own (a build-id no
// other run has), so names, paths and build-ids reach only it.
import { ChildProcess, execFileSync, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { BIN, FIX, ROOT, Target, descendants, edit, exited, hotload, tmpdir, until } from './helpers';
import { findProgram, pidsByBuildId, pidsByExe } from '@hotload/api';
import { Watch } from './watch-client';

const targets: Target[] = [];
function start(bin: string, args: string[] = ['loop']): Target {
  const t = Target.start(bin, args);
  targets.push(t);
  return t;
}
const strays: number[] = [];
afterEach(async () => {
  for (const t of targets.splice(0)) await t.stop();
  for (const pid of strays.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

/** A name no other run has: at most 15 characters, the length of a command name. */
function uniqueName(): string {
  return `hlc${process.pid.toString(36)}${Math.random().toString(36).slice(2)}`.slice(0, 15);
}

/** fixtures/src/target.c built as `dir/name`, with a build-id of its own, posted. */
function ownTarget(dir: string, name: string): { exe: string; buildId: string } {
  const buildId = [...Array(40)].map(() => Math.floor(Math.random() * 16).toString(16)).join('');
  const exe = path.join(dir, name);
  execFileSync('cc', ['-O2', '-g', '-fpatchable-function-entry=16,14', '-pthread', path.join(ROOT, 'fixtures/src/target.c'), '-o', exe, '-ldl', `-Wl,--build-id=0x${buildId}`]);
  execFileSync(process.execPath, [BIN, 'post', exe]);
  return { exe, buildId };
}

const patchSource = (k: number) => `#include <hotload.h>
HOTLOAD_STATIC(int, counter);
int compute_v2(int x) { HOTLOAD_REF(counter) += 1; return x + 1000 + ${k}; }
HOTLOAD_REPLACE(compute, compute_v2);
`;

describe('hotload cc', () => {
  const SRC = 'int a(int x) { return x + 1; }\nint b(int x) { return x * 2; }\nint main(void) { return a(1) + b(2) - 6; }\n';
  /** The sections of `obj` named __patchable_function_entries, with the section each is linked to. */
  function entrySections(obj: string): number[] {
    const s = execFileSync('readelf', ['-SW', obj], { encoding: 'utf8' });
    return [...s.matchAll(/\] __patchable_function_entries\s+PROGBITS\s+\S+\s+\S+\s+\S+\s+\S+\s+\S*L\S*\s+(\d+)/g)].map((m) => Number(m[1]));
  }

  test('compiles through assembly: one pad section per function, each tied to its own; links, runs, every function patchable; a compile error is the compiler\'s, with its status', async () => {
    const dir = tmpdir();
    fs.writeFileSync(path.join(dir, 'a.c'), SRC);
    const flags = ['-O2', '-g', '-fpatchable-function-entry=16,14', '-ffunction-sections'];
    const r = await hotload(['cc', ...flags, '-c', 'a.c', '-o', 'a.o'], {}, { cwd: dir });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const ours = entrySections(path.join(dir, 'a.o'));
    expect(ours).toHaveLength(3); // a, b, main
    expect(new Set(ours).size).toBe(3);
    // gcc alone puts them in one section tied to the first function's: what `hotload cc` exists to change.
    execFileSync('gcc', [...flags, '-c', 'a.c', '-o', 'gcc.o'], { cwd: dir });
    expect(entrySections(path.join(dir, 'gcc.o'))).toHaveLength(1);
    // Linking goes through unchanged.
    expect((await hotload(['cc', 'a.o', '-o', 'prog'], {}, { cwd: dir })).code).toBe(0);
    expect(spawnSync(path.join(dir, 'prog')).status).toBe(0);
    const check = await hotload(['check', path.join(dir, 'prog'), '--json']);
    expect(check.code).toBe(0);
    const idx = await hotload(['index', path.join(dir, 'prog'), '--json']);
    for (const f of ['a', 'b', 'main']) expect(idx.json.functions.find((x: { name: string }) => x.name === f).status).toBe('patchable');
    // A compile that fails: the compiler's message and status.
    fs.writeFileSync(path.join(dir, 'bad.c'), 'int f(void) { return }\n');
    const bad = await hotload(['cc', ...flags, '-c', 'bad.c', '-o', 'bad.o'], {}, { cwd: dir });
    expect(bad.stderr).toMatch(/bad\.c:1:\d+: error: expected expression/);
    expect(bad.code).toBe(1);
    expect(fs.existsSync(path.join(dir, 'bad.o'))).toBe(false);
  });

  test('HOTLOAD_CC names the compiler it runs', async () => {
    const dir = tmpdir();
    fs.writeFileSync(path.join(dir, 'a.c'), SRC);
    fs.writeFileSync(path.join(dir, 'mycc'), `#!/bin/sh\necho "mycc $*" >> ${path.join(dir, 'log')}\nexec gcc "$@"\n`);
    fs.chmodSync(path.join(dir, 'mycc'), 0o755);
    const r = await hotload(['cc', '-O2', '-fpatchable-function-entry=16,14', '-c', 'a.c', '-o', 'a.o'], { HOTLOAD_CC: path.join(dir, 'mycc') }, { cwd: dir });
    expect(r.code).toBe(0);
    const log = fs.readFileSync(path.join(dir, 'log'), 'utf8');
    expect(log).toMatch(/^mycc -S .*a\.c .*-o \S+\.s$/m); // to assembly
    expect(log).toMatch(/^mycc -c \S+\.s -o a\.o$/m); // and from it
  });
});

describe('hotload flags', () => {
  /** A Makefile made of `fragment` (flags' output as is) and one rule building server from server.c. */
  function build(fragment: string, post: boolean): string {
    const dir = tmpdir();
    fs.writeFileSync(path.join(dir, 'server.c'), 'static int table[2] = {1, 2};\nint handle(int x) { return x + table[x & 1]; }\nint main(void) { return handle(1) - 3; }\n');
    fs.writeFileSync(path.join(dir, 'Makefile'), `${fragment}\nserver: server.o\n\t$(CC) -o $@ server.o\n${post ? `\tnode ${BIN} post $@\n` : ''}`);
    execFileSync('make', ['-s', 'server'], { cwd: dir });
    return dir;
  }

  test('flags: a Makefile fragment (pads, the post line in a comment, the C++ note); built with it, every function is patchable', async () => {
    const r = await hotload(['flags']);
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe('CFLAGS += -fpatchable-function-entry=16,14');
    expect(r.stdout).toMatch(/^#\s+hotload post \$@$/m);
    expect(r.stdout).toMatch(/^# C\+\+ with g\+\+: CXX = hotload c\+\+/m);
    const dir = build(r.stdout, true);
    expect((await hotload(['check', path.join(dir, 'server')])).code).toBe(0);
  });

  test('flags --diff: adds -g and one section per function and datum, names the LDFLAGS for diff and the CMake line; built with it, watch\'s needs are met', async () => {
    const r = await hotload(['flags', '--diff']);
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe('CFLAGS += -fpatchable-function-entry=16,14 -g -ffunction-sections -fdata-sections');
    expect(r.stdout).toMatch(/^# LDFLAGS \+= -Wl,--emit-relocs/m);
    expect(r.stdout).toMatch(/^# CMake: add_compile_options\(-fpatchable-function-entry=16,14 -g -ffunction-sections -fdata-sections\)$/m);
    const dir = build(r.stdout, false);
    const s = execFileSync('readelf', ['-SW', path.join(dir, 'server.o')], { encoding: 'utf8' });
    expect(s).toMatch(/\.text\.handle\b/);
    expect(s).toMatch(/\.data\.table\b/);
    expect(s).toMatch(/\.debug_info/);
    expect((await hotload(['check', path.join(dir, 'server')])).code).toBe(0);
    const json = await hotload(['flags', '--diff', '--json']);
    expect(json.json).toEqual({ CFLAGS: '-fpatchable-function-entry=16,14', CFLAGS_DIFF: '-g -ffunction-sections -fdata-sections', LDFLAGS_DIFF: '-Wl,--emit-relocs' });
  });
});

test('index --recompute reads the pads from the code, not the index `post` recorded: a pad changed after post shows as modified only with it', async () => {
  const dir = tmpdir();
  const f = path.join(dir, 'pads');
  fs.copyFileSync(path.join(FIX, 'pads-O2'), f);
  expect((await hotload(['post', f])).code).toBe(0);
  const rec = await hotload(['index', f, '--json']);
  expect(rec.json.recorded).toBe(true);
  const fn = rec.json.functions.find((x: { status: string }) => x.status === 'patchable');
  // Write a byte into that function's pad in the file (what a tool that rewrote code would leave).
  const text = /\]\s+\.text\s+PROGBITS\s+([0-9a-f]+)\s+([0-9a-f]+)/.exec(execFileSync('readelf', ['-SW', f], { encoding: 'utf8' }))!;
  const off = fn.address - parseInt(text[1], 16) + parseInt(text[2], 16);
  const buf = fs.readFileSync(f);
  expect(buf[off - 14]).toBe(0x90);
  buf[off - 14] = 0xcc;
  fs.writeFileSync(f, buf);
  const stale = await hotload(['index', f, '--json']);
  expect(stale.json.functions.find((x: { name: string }) => x.name === fn.name).status).toBe('patchable'); // as recorded
  const fresh = await hotload(['index', f, '--recompute', '--json']);
  expect(fresh.json.recorded).toBe(false);
  expect(fresh.json.functions.find((x: { name: string }) => x.name === fn.name).status).toBe('modified');
  const table = await hotload(['index', f, '--recompute']);
  expect(table.stdout).not.toMatch(/recorded by hotload post/);
  expect((await hotload(['index', f])).stdout).toMatch(/\(recorded by hotload post\)$/m);
});

test('post of several files: each is posted and reported, once; again, each is unchanged; --json gives one entry per file', async () => {
  const dir = tmpdir();
  const files = ['pads-O2', 'pads-O2-cet', 'libpads.so'].map((n) => {
    const f = path.join(dir, n);
    fs.copyFileSync(path.join(FIX, n), f);
    return f;
  });
  const r = await hotload(['post', ...files]);
  expect(r.code).toBe(0);
  const lines = r.stdout.trim().split('\n');
  expect(lines).toHaveLength(3);
  files.forEach((f, i) => expect(lines[i]).toMatch(new RegExp(`^${f}: posted, \\d+ entries rewritten to 66 90; \\d+ functions`)));
  for (const f of files) expect(execFileSync('readelf', ['-SW', f], { encoding: 'utf8' })).toMatch(/\.hotload\.index/);
  const again = await hotload(['post', ...files, '--json']);
  expect(again.code).toBe(0);
  expect(again.json.map((x: { file: string; changed: boolean }) => [x.file, x.changed])).toEqual(files.map((f) => [f, false]));
});

describe('mkpatch --from without --target', () => {
  function builds(): { running: string; build: string } {
    const dir = tmpdir();
    const running = path.join(dir, 'build.running');
    const build = path.join(dir, 'build');
    execFileSync('cp', ['-r', path.join(FIX, 'diff/base'), running]);
    execFileSync('cp', ['-r', path.join(FIX, 'diff/CONST'), build]);
    return { running, build };
  }

  test('takes the one program in the --from directory (findProgram), and the patch applies to it running', async () => {
    const { running, build } = builds();
    expect(findProgram(running)).toBe(path.join(running, 'diff'));
    const out = path.join(path.dirname(running), 'p.so');
    const r = await hotload(['mkpatch', '--from', running, '--to', build, '-o', out], {}, { cwd: path.dirname(running) });
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^wrote .*p\.so: replaces constant in diff \(build-id [0-9a-f]{16}\.\.\.\)$/m);
    const t = start(path.join(running, 'diff'));
    const before = Number(/constant=(\d+)/.exec(await t.waitFor(/^constant=/))![1]);
    expect((await hotload(['attach', String(t.pid), out])).code).toBe(0);
    const after = Number(/constant=(\d+)/.exec((await t.fresh(/^constant=/))[0])![1]);
    expect(after).not.toBe(before);
  });

  test('two programs, or none, in the --from directory: a usage error naming them', async () => {
    const { running, build } = builds();
    fs.copyFileSync(path.join(running, 'diff'), path.join(running, 'diff2'));
    const two = await hotload(['mkpatch', '--from', running, '--to', build, '-o', path.join(build, 'p.so')]);
    expect(two.code).toBe(2);
    expect(two.stderr).toMatch(/holds 2 programs \(diff, diff2\); name the one the process runs with --target/);
    fs.rmSync(path.join(running, 'diff'));
    fs.rmSync(path.join(running, 'diff2'));
    expect(() => findProgram(running)).toThrow(/none found in/);
  });
});

describe('rollout plans', () => {
  function writePlan(dir: string, plan: object): string {
    const f = path.join(dir, 'plan.json');
    fs.writeFileSync(f, JSON.stringify(plan));
    return f;
  }
  /** A program of this test's own, two processes of it, and a patch beside the plan (by relative path). */
  async function fleet(k: number) {
    const dir = tmpdir();
    const name = uniqueName();
    const { exe, buildId } = ownTarget(dir, name);
    const ts = [start(exe), start(exe)];
    for (const t of ts) await t.waitFor(/^compute 6 /);
    fs.writeFileSync(path.join(dir, 'fix.c'), patchSource(k));
    expect((await hotload(['mkpatch', 'fix.c', '--target', name, '-o', 'fix.so'], {}, { cwd: dir })).code).toBe(0);
    return { dir, name, exe, buildId, ts };
  }

  test.each(['name', 'exe', 'buildId'] as const)('targets by %s reach the processes of that program (and no other); relative paths are the plan\'s folder\'s', async (kind) => {
    const f = await fleet(50);
    const other = start(path.join(FIX, 'target')); // another build, not named by the plan
    await other.waitFor(/^compute 6 /);
    const targets = { name: { name: f.name }, exe: { exe: `./${f.name}` }, buildId: { buildId: f.buildId } }[kind];
    const plan = writePlan(f.dir, { targets, canary: 1, steps: [{ apply: 'fix.so' }], healthCheck: 'test -f fix.so && kill -0 $HOTLOAD_PID' });
    // Run from elsewhere: the plan's paths and its check's folder are the plan's.
    const r = await hotload(['rollout', plan, '--json'], {}, { cwd: '/' });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.json.processes.map((x: { pid: number }) => x.pid).sort()).toEqual(f.ts.map((t) => t.pid).sort());
    expect(r.json.processes.every((x: { status: string; applied: string[] }) => x.status === 'applied' && x.applied[0] === path.join(f.dir, 'fix.so'))).toBe(true);
    for (const t of f.ts) await t.next(/^compute 1055 /);
    await other.next(/^compute 6 /);
  });

  test('the API finds the same processes: pidsByExe (a path through a symlink too), pidsByBuildId', async () => {
    const f = await fleet(51);
    const mine = f.ts.map((t) => t.pid).sort((a, b) => a - b);
    expect(pidsByExe(f.exe).sort((a, b) => a - b)).toEqual(mine);
    const link = path.join(f.dir, 'link');
    fs.symlinkSync(f.exe, link);
    expect(pidsByExe(link).sort((a, b) => a - b)).toEqual(mine);
    expect(pidsByBuildId(f.buildId).sort((a, b) => a - b)).toEqual(mine);
    expect(pidsByBuildId('0'.repeat(40))).toEqual([]);
    expect(pidsByExe(path.join(f.dir, 'no-such-program'))).toEqual([]);
  });

  test('revert steps and canary 0: every process at once takes the new patch and gives back the old one, in the order of the steps', async () => {
    const f = await fleet(52);
    fs.writeFileSync(path.join(f.dir, 'old.c'), patchSource(53));
    expect((await hotload(['mkpatch', 'old.c', '--target', f.name, '-o', 'old.so'], {}, { cwd: f.dir })).code).toBe(0);
    for (const t of f.ts) expect((await hotload(['attach', String(t.pid), path.join(f.dir, 'old.so')])).code).toBe(0);
    for (const t of f.ts) await t.next(/^compute 1058 /);
    const plan = writePlan(f.dir, { targets: { exe: f.name }, canary: 0, parallel: 2, steps: [{ revert: 'old.so' }, { apply: 'fix.so' }] });
    const r = await hotload(['rollout', plan, '--json']);
    expect(r.code).toBe(0);
    expect(r.json.processes.every((x: { canary: boolean }) => !x.canary)).toBe(true);
    expect(r.json.processes.map((x: { applied: string[] }) => x.applied)).toEqual([[path.join(f.dir, 'fix.so')], [path.join(f.dir, 'fix.so')]]);
    for (const t of f.ts) {
      await t.next(/^compute 1057 /);
      const st = await hotload(['status', String(t.pid), '--json']);
      expect(st.one.patches.filter((p: { inForce: string[] }) => p.inForce.length).map((p: { source: string }) => path.basename(p.source))).toEqual(['fix.so']);
    }
  });

  test('checkTimeoutMs: a health check still running then is killed and fails the process, which is reverted', async () => {
    const f = await fleet(54);
    const plan = writePlan(f.dir, { targets: { pids: [f.ts[0].pid] }, steps: [{ apply: 'fix.so' }], healthCheck: 'exec sleep 30', checkTimeoutMs: 400 });
    const t0 = Date.now();
    const r = await hotload(['rollout', plan, '--json']);
    expect(Date.now() - t0).toBeLessThan(10000); // the default (10 s) would have run out later
    expect(r.code).toBe(12);
    expect(r.json.processes[0]).toMatchObject({ status: 'failed', code: 'HEALTH_CHECK_FAILED', reverted: [path.join(f.dir, 'fix.so')], applied: [] });
    expect(r.json.processes[0].reason).toMatch(/`exec sleep 30` killed after 400 ms/);
    await f.ts[0].next(/^compute 6 /);
  });

  test('checkTimeoutMs cuts a check whose shell runs a child of its own (the child goes too, and the rollout does not wait for it)', async () => {
    const f = await fleet(55);
    const mark = path.join(f.dir, 'child-pid');
    const plan = writePlan(f.dir, { targets: { pids: [f.ts[0].pid] }, steps: [{ apply: 'fix.so' }], healthCheck: `sleep 30 & echo $! > ${mark}; wait`, checkTimeoutMs: 400 });
    const t0 = Date.now();
    const r = await hotload(['rollout', plan, '--json']);
    expect(Date.now() - t0).toBeLessThan(8000); // it waited the 30 s of its child before
    expect(r.json.processes[0]).toMatchObject({ status: 'failed', code: 'HEALTH_CHECK_FAILED' });
    expect(r.json.processes[0].reason).toMatch(/killed after 400 ms/);
    const child = Number(fs.readFileSync(mark, 'utf8'));
    strays.push(child);
    await until(() => (exited(child) ? true : undefined), 'the check\'s child to be killed with it');
    await f.ts[0].next(/^compute 6 /);
  });

  test('a second Ctrl-C exits at once, naming what is left applied (and what it names is so); a check\'s own children go with it', async () => {
    const f = await fleet(56);
    const [a, b] = [...f.ts].sort((x, y) => x.pid - y.pid);
    const plan = writePlan(f.dir, { targets: { pids: [a.pid, b.pid] }, canary: 0, parallel: 2, steps: [{ apply: 'fix.so' }, { check: `if [ $HOTLOAD_PID = ${b.pid} ]; then sleep 120; fi; true` }, { wait: 120000 }] });
    const child: ChildProcess = spawn(process.execPath, [BIN, 'rollout', plan], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const exit = new Promise<number | null>((r) => child.on('close', (c) => r(c)));
    await a.next(/^compute 1061 /, 20000);
    await b.next(/^compute 1061 /, 20000);
    const sleeper = await until(() => descendants(child.pid!).find((p) => fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').startsWith('sleep')), 'the check\'s sleep');
    strays.push(...descendants(child.pid!));
    // The first Ctrl-C stops the rollout: the check is killed with its
    // children, and the way back reverts what was applied. A second one as
    // soon as the first is taken exits at once, saying what is left applied
    // at that moment, or comes after the way back is done. Either way exit
    // 130, and what is said is so.
    child.kill('SIGINT');
    await until(() => (/again to exit at once/.test(err) ? true : undefined), 'the first Ctrl-C\'s message');
    child.kill('SIGINT');
    expect(await exit).toBe(130);
    const said = /^exiting at once; (left applied: .*|nothing is left applied)$/m.exec(err);
    for (const t of [a, b]) {
      const left = said !== null && said[1].includes(`process ${t.pid}: fix.so`);
      await t.next(left ? /^compute 1061 / : /^compute 6 /, 20000);
    }
    if (said === null) expect(err).toMatch(/INTERRUPTED/); // the way back finished first: everything reverted, said so
    await until(() => (exited(sleeper) ? true : undefined), 'the check\'s sleep to be killed with its check'); // its group went with it
  });

});

describe('watch', () => {
  test('--pid by process name, no paths (the current directory), --interval, --max: a save seen only by the poll is patched in, then watch stops by itself', async () => {
    const dir = tmpdir();
    const name = uniqueName();
    fs.copyFileSync(path.join(ROOT, 'fixtures/src/diff.c'), path.join(dir, 'diff.c'));
    fs.writeFileSync(path.join(dir, 'Makefile'), `CFLAGS = -O2 -g -fpatchable-function-entry=16,14 -ffunction-sections -fdata-sections\n${name}: diff.o\n\t$(CC) diff.o -o ${name}\n`);
    execFileSync('make', ['-s'], { cwd: dir });
    const t = start(path.join(dir, name));
    await t.waitFor(/^constant=/);
    const w = new Watch(dir, ['--pid', name, '--interval', '50', '--max', '1']);
    try {
      const ready = await w.event('ready', 0);
      expect(ready.pids).toEqual([t.pid]);
      expect(ready.watching).toEqual([dir]);
      // Written through a hard link in another directory: inotify on the watched one never hears of it.
      const elsewhere = path.join(tmpdir(), 'alias.c');
      fs.linkSync(path.join(dir, 'diff.c'), elsewhere);
      const n = w.events.length;
      const t0 = Date.now();
      edit(elsewhere, 'return x + K;', 'return x + K + 100;'); // in place (the first save of this file)
      expect(fs.readFileSync(path.join(dir, 'diff.c'), 'utf8')).toMatch(/x \+ K \+ 100/);
      await w.event('change', n, 20000);
      const seenMs = Date.now() - t0;
      const patched = await w.event('patched', n);
      expect(patched.changed).toEqual(['constant']);
      expect((await new Promise<number | null>((r) => (w.child.exitCode !== null ? r(w.child.exitCode) : w.child.once('exit', r))))).toBe(0); // --max 1
      expect(Number(/constant=(\d+)/.exec((await t.fresh(/^constant=/))[0])![1])).toBe(111);
      expect(seenMs).toBeLessThan(1000); // the default poll (1 s, with inotify on every path) would not be this quick
    } finally {
      await w.stop();
    }
  });
});
