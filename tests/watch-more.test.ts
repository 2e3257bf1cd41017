// `hotload watch`, how it ends and what it says: the last event on Ctrl-C or
// SIGTERM, processes that exit one by one, objects rebuilt after the program
// the process runs was linked, a module built straight from its source that a
// saved header reaches; and what revert and status say of rebuild patches
// (C++ names, reverted copies that stay mapped). On the fixture
// fixtures/src/diff.c (built by a two-rule Makefile) and small programs made
// here.
import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { BIN, ROOT, Target, edit, hotload, sleep, tmpdir } from './helpers';
import { Watch } from './watch-client';
import { patchName } from '../packages/api/src/watch';

const FLAGS = '-O2 -g -fpatchable-function-entry=16,14 -ffunction-sections -fdata-sections';

/** A copy of fixtures/src/diff.c with a two-rule Makefile, built: a program and its object. */
function fixtureBuild(prefix: string): string {
  const dir = tmpdir(prefix);
  fs.copyFileSync(path.join(ROOT, 'fixtures/src/diff.c'), path.join(dir, 'diff.c'));
  fs.writeFileSync(path.join(dir, 'Makefile'), `CFLAGS = ${FLAGS}\n` + 'diff: diff.o\n\t$(CC) diff.o -o diff\ndiff.o: diff.c\n\t$(CC) $(CFLAGS) -c diff.c -o diff.o\n');
  execFileSync('make', ['-s'], { cwd: dir });
  return dir;
}

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function started(program: string, args: string[], first: RegExp): Promise<Target> {
  const t = Target.start(program, args);
  cleanup.push(() => t.stop());
  await t.waitFor(first);
  return t;
}

function watching(dir: string, args: string[]): Watch {
  const w = new Watch(dir, args);
  cleanup.push(() => w.stop());
  return w;
}

test.each(['SIGINT', 'SIGTERM'] as const)('watch --json stopped by %s ends with one stopped event, its last line: what each process keeps and the command that reverts it', async (sig) => {
  const dir = fixtureBuild('hotload-watch-stop-');
  const t = await started(path.join(dir, 'diff'), ['loop'], /^constant=11 /);
  const w = watching(dir, ['--pid', String(t.pid), 'diff.c']);
  await w.event('ready', 0, 10000);
  const n = w.events.length;
  edit(path.join(dir, 'diff.c'), 'return x + K;', 'return x + K + 100;');
  const p = await w.event('patched', n);
  await t.next(/^constant=111 /);
  expect(await w.stop(sig)).toBe(0);
  const last = w.events[w.events.length - 1];
  expect(last).toEqual({
    event: 'stopped',
    reason: 'aborted',
    processes: [{ pid: t.pid, patches: [p.patch], replaced: ['constant'] }],
    demangled: {},
    revert: `hotload revert ${t.pid} --all`,
  });
  expect(w.events.filter((e) => e.event === 'stopped')).toHaveLength(1);
  await t.next(/^constant=111 /); // the patch stays
  t.expectHealthy();
});

test('several processes: one that exits is dropped and said, watch goes on patching the others; it stops (exit 5, a stopped event last) when none is left; the text says the same', async () => {
  const dir = fixtureBuild('hotload-watch-exits-');
  const [a, b] = await Promise.all([0, 1].map(() => started(path.join(dir, 'diff'), ['loop'], /^constant=11 /)));
  const w = watching(dir, ['--pid', `${a.pid},${b.pid}`, 'diff.c']);
  await w.event('ready', 0, 10000);
  let n = w.events.length;
  await a.stop();
  expect(await w.event('exited', n)).toEqual({ event: 'exited', pid: a.pid, left: [b.pid] });
  n = w.events.length;
  edit(path.join(dir, 'diff.c'), 'return x + K;', 'return x + K + 100;');
  expect((await w.event('patched', n)).pids).toEqual([b.pid]); // still watching b
  await b.next(/^constant=111 /);
  n = w.events.length;
  await b.stop();
  expect(await w.event('exited', n)).toEqual({ event: 'exited', pid: b.pid, left: [] });
  expect(await w.closed).toBe(5); // after the relink of the program on disk: the build with +100 now
  expect(w.events[w.events.length - 1]).toMatchObject({ event: 'stopped', reason: 'exited', processes: [] });

  // In words, the same: two processes, one exits, a save still patches the other.
  const [d, e] = await Promise.all([0, 1].map(() => started(path.join(dir, 'diff'), ['loop'], /^constant=111 /)));
  let out = '';
  const text = spawn(process.execPath, [BIN, 'watch', '--pid', `${d.pid},${e.pid}`, 'diff.c'], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'] });
  cleanup.push(async () => text.exitCode === null && text.kill('SIGINT'));
  text.stdout!.on('data', (x) => (out += x));
  const closed = new Promise((r) => text.once('close', r));
  const until = async (re: RegExp) => {
    for (let i = 0; i < 1500 && !re.test(out); i++) await sleep(20);
    expect(out).toMatch(re);
  };
  await until(/watching .*diff\.c for processes \d+, \d+/);
  await d.stop();
  await until(new RegExp(`process ${d.pid} exited; still watching process ${e.pid}\\n`));
  edit(path.join(dir, 'diff.c'), 'return x + K + 100;', 'return x + K + 200;');
  await until(/patched constant in /);
  await e.next(/^constant=211 /);
  await e.stop();
  await until(new RegExp(`process ${e.pid} exited; no process left: stopping\\n`));
  expect(await closed).toBe(5);
});

test('objects newer than the program file the process runs are said at start, even for a process started after they were rebuilt (a worker forked later)', async () => {
  const dir = fixtureBuild('hotload-watch-newer-');
  // The program of that build, kept aside with its time (a day ago: linked before the rebuild below).
  fs.copyFileSync(path.join(dir, 'diff'), path.join(dir, 'diff-running'));
  const day = new Date(Date.now() - 86400e3);
  fs.utimesSync(path.join(dir, 'diff-running'), day, day);
  // Rebuilt with another string: the code is the same (checked at start), the constant is not.
  edit(path.join(dir, 'diff.c'), 'tiny=%d\\n', 'tiny=%d \\n');
  execFileSync('make', ['-s'], { cwd: dir });
  const t = await started(path.join(dir, 'diff-running'), ['loop'], /^constant=11 .*tiny=\d+$/); // started after the rebuild
  const w = watching(dir, ['--pid', String(t.pid), 'diff.c']);
  const ready = await w.event('ready', 0, 10000);
  expect(ready.warnings).toEqual([expect.stringMatching(new RegExp(`^object files newer than the program process ${t.pid} runs \\(diff\\.o\\): built after it was linked; .*constants .*not checked`))]);
  // A fresh build: nothing to say.
  const fresh = await started(path.join(dir, 'diff'), ['loop'], /^constant=11 /);
  const w2 = watching(dir, ['--pid', String(fresh.pid), 'diff.c']);
  expect((await w2.event('ready', 0, 10000)).warnings).toEqual([]);
});

test('a saved header used by a module built straight from its source to a .so (no object kept) is said to leave that module on its old code; a module with objects here is not named', async () => {
  const dir = tmpdir('hotload-watch-stale-mod-');
  const put = (f: string, text: string) => fs.writeFileSync(path.join(dir, f), text);
  put('shared.h', 'static inline int shared(int x) { return x + 1; }\n');
  put('main.c', [
    '#include <dlfcn.h>', '#include <stdio.h>', '#include <unistd.h>', '#include "shared.h"',
    '__attribute__((noinline)) int app_value(int x) { return shared(x); }',
    'int main(int argc, char **argv) {',
    '  int (*m)(int) = (int (*)(int))dlsym(dlopen(argv[1], RTLD_NOW), "mod_value");',
    '  int (*m2)(int) = (int (*)(int))dlsym(dlopen(argv[2], RTLD_NOW), "mod2_value");',
    '  static volatile int ten = 10;',
    '  for (;;) { printf("app %d mod %d mod2 %d\\n", app_value(ten), m(ten), m2(ten)); fflush(stdout); usleep(20000); }',
    '}', '',
  ].join('\n'));
  put('mod.c', '#include "shared.h"\nint mod_value(int x) { return shared(x) * 100; }\n');
  put('mod2.c', '#include "shared.h"\nint mod2_value(int x) { return shared(x) * 1000; }\n');
  put('Makefile', [
    `CFLAGS = ${FLAGS} -fPIC`,
    'all: app mod.so mod2.so',
    'app: main.o', '\t$(CC) main.o -o app -ldl',
    'mod.so: mod.c shared.h', '\t$(CC) $(CFLAGS) -shared mod.c -o mod.so',
    'mod2.so: mod2.o', '\t$(CC) -shared mod2.o -o mod2.so',
    '%.o: %.c', '\t$(CC) $(CFLAGS) -MD -c $< -o $@',
    '', ].join('\n'));
  execFileSync('make', ['-s'], { cwd: dir, env: { ...process.env, MAKEFLAGS: '', MAKELEVEL: '' } });
  const t = await started(path.join(dir, 'app'), [path.join(dir, 'mod.so'), path.join(dir, 'mod2.so')], /^app 11 mod 1100 mod2 11000$/);
  const w = watching(dir, ['--pid', String(t.pid), 'main.c', 'mod.c', 'mod2.c', 'shared.h']);
  await w.event('ready', 0, 10000);
  let n = w.events.length;
  edit(path.join(dir, 'shared.h'), 'x + 1', 'x + 2');
  const p = await w.event('patched', n);
  expect(p.changed).toEqual(['app_value']);
  const said = w.events.slice(n).filter((e) => e.event === 'stale-modules');
  expect(said).toEqual([{ event: 'stale-modules', modules: [{ module: path.join(dir, 'mod.so'), pids: [t.pid], files: ['shared.h'] }] }]);
  expect(w.events.indexOf(said[0])).toBeLessThan(w.events.indexOf(p)); // said before the outcome
  await t.next(/^app 12 mod 1100 mod2 11000$/); // what it said: mod.so (and mod2.so, another watch's) keep the old code
  // A save no such module uses: nothing said.
  await w.idle();
  n = w.events.length;
  edit(path.join(dir, 'main.c'), 'return shared(x);', 'return shared(x) + 5;');
  await w.event('patched', n);
  expect(w.events.slice(n).filter((e) => e.event === 'stale-modules')).toEqual([]);
  t.expectHealthy();
});

test('C++ rebuild patches: revert names the functions as written (demangled; --json keeps both); status says how many reverted copies stay mapped and why', async () => {
  const dir = tmpdir('hotload-revert-cxx-');
  const prog = path.join(ROOT, 'fixtures/build/cxx/base/cxx');
  const patch = path.join(dir, 'p.so');
  expect((await hotload(['mkpatch', '--from', path.join(ROOT, 'fixtures/build/cxx/base/cxx.o'), '--to', path.join(ROOT, 'fixtures/build/cxx/EDIT/cxx.o'), '--target', prog, '-o', patch])).code).toBe(0);
  const t = await started(prog, [], /^greet=5 /);
  expect((await hotload(['attach', String(t.pid), patch])).code).toBe(0);
  const r = await hotload(['revert', String(t.pid), patch]);
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(new RegExp(`^reverted Greeter::greet\\(int\\) in process ${t.pid}: now runs its original code$`, 'm'));
  expect(r.stdout).not.toMatch(/_Z/);
  expect((await hotload(['attach', String(t.pid), patch])).code).toBe(0); // the same file again: its copy already mapped is used again
  const j = await hotload(['revert', String(t.pid), patch, '--json']);
  expect(j.one.reverted).toContainEqual({ name: '_ZN7Greeter5greetEi', demangled: 'Greeter::greet(int)', patch: expect.any(String), now: 'original' });
  await t.next(/^greet=5 /);

  const st = await hotload(['status', String(t.pid), '--json']);
  expect(st.one.reverted).toEqual({ mapped: 1, why: expect.stringMatching(/^A reverted patch stays mapped until the process exits: a call that began before the revert may still run in it/) });
  const text = (await hotload(['status', String(t.pid)])).stdout;
  expect(text).toMatch(/no patch applied \(1 reverted patch still mapped\)\n {2}A reverted patch stays mapped until the process exits/);
  t.expectHealthy();
});

test('watch names its patch files readably: C++ names demangled and short, the program and the save number always kept', () => {
  const one = (mangled: string) => patchName('app', [mangled], 1);
  expect(one('_ZNK6Square4areaEv')).toBe('app-Square.area-1.so'); // Square::area() const
  expect(one('_ZN2ns3FooIiE3barERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE')).toBe('app-Foo.bar-1.so'); // ns::Foo<int>::bar(std::string const&)
  expect(one('_ZZ3runvENKUliE_clEi')).toBe('app-run.lambda-1.so'); // run()::{lambda(int)#1}::operator()(int) const
  expect(one('_ZNK3VeceqERKS_')).toBe('app-Vec.operator_eq-1.so'); // Vec::operator==(Vec const&) const
  expect(one('_ZN1S4nameB5cxx11Eb')).toBe('app-S.name-1.so'); // S::name[abi:cxx11](bool)
  expect(patchName('app', ['_ZNK6Square4areaEv'], 3)).toBe('app-Square.area-3.so');
  expect(patchName('server', ['handle_request@server.c', 'b'], 2)).toBe('server-b+1-2.so');
  const long = patchName('a'.repeat(200), ['_ZNSt6vectorIiSaIiEE17_M_realloc_insertIJRKiEEEvN9__gnu_cxx17__normal_iteratorIPiS1_EEDpOT_'], 12);
  expect(long.length).toBeLessThanOrEqual(120);
  expect(long).toMatch(/^a+-vector\._M_realloc_insert-12\.so$/); // before: cut at the front, the program lost
});
