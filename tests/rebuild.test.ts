// `hotload mkpatch --from <old> --to <new>` and attach on a live process: each
// fixture variant of fixtures/src/diff.c changes one thing; the base build
// runs (`diff loop` prints its functions' results every 20 ms), a patch is
// made from the two object files and applied, and the output must change as
// the source did, with the program's state intact.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { FIX, ROOT, Target, hotload, tmpdir } from './helpers';

const D = path.join(FIX, 'diff');
const BASE = path.join(D, 'base/diff');
const obj = (v: string) => path.join(D, v, 'diff.o');

const targets: Target[] = [];
afterEach(async () => {
  for (const t of targets.splice(0)) await t.stop();
});

async function running(): Promise<Target> {
  const t = Target.start(BASE, ['loop']);
  targets.push(t);
  await t.waitFor(/^constant=/);
  return t;
}

const parse = (line: string) => Object.fromEntries([...line.matchAll(/(\w+)=(-?\d+)/g)].map((m) => [m[1], Number(m[2])]));

/** The values of a line the target printed after now (not one already on its way). */
async function values(t: Target, re = /^constant=/): Promise<Record<string, number>> {
  return parse((await t.fresh(re))[0]);
}

/** Two consecutive lines' values, printed after now. */
async function pair(t: Target): Promise<Record<string, number>[]> {
  return (await t.fresh(/^constant=/, 2)).map(parse);
}

async function make(variant: string, from = 'base'): Promise<{ file: string; json: any }> {
  const out = path.join(tmpdir(), `${variant}.so`);
  const r = await hotload(['mkpatch', '--from', obj(from), '--to', obj(variant), '--target', BASE, '-o', out, '--json']);
  if (r.code !== 0) throw new Error(`mkpatch ${variant}: ${r.stdout}${r.stderr}`);
  return { file: out, json: r.json };
}

test.each([
  ['CONST', 'a constant in one function', ['constant'], { constant: 12 }],
  ['TINY', 'a change inlined into its caller: the caller is replaced', ['user_of_tiny'], { tiny: 9 }],
  ['NEWHELPER', 'a new helper function, called by a changed one', ['constant'], { constant: 14 }],
])('%s: %s', async (variant, _what, replaced, expected) => {
  const t = await running();
  const p = await make(variant);
  expect(p.json.replaced).toEqual(replaced);
  const r = await hotload(['attach', String(t.pid), p.file, '--json']);
  expect(r.code).toBe(0);
  expect(r.one.functions.map((f: { name: string }) => f.name)).toEqual(replaced);
  const v = await values(t);
  for (const [k, n] of Object.entries(expected)) expect(v[k]).toBe(n);
  t.expectHealthy();
});

test('NEWHELPER: the new function lives in the patch', async () => {
  const p = await make('NEWHELPER');
  expect(p.json.added).toEqual(['extra@diff.c']);
});

test('PRINTF: a new printf call (a C library function the patch reaches through a thunk) and a new string literal', async () => {
  const t = await running();
  const p = await make('PRINTF');
  expect((await hotload(['attach', String(t.pid), p.file])).code).toBe(0);
  await t.next(/^hello 1$/);
  t.expectHealthy();
});

test('IFUNC: a new call of a glibc indirect function (strspn) reaches the implementation its resolver picks', async () => {
  const t = await running();
  const before = await values(t);
  const p = await make('IFUNC');
  expect((await hotload(['attach', String(t.pid), p.file])).code).toBe(0);
  await t.next(/^constant=/);
  const v = await values(t);
  expect(v.say).toBeGreaterThan(5000 + before.say); // 5000 from strspn, and conf.a counted on
  expect(v.say).toBeLessThan(5000 + before.say + 200);
  t.expectHealthy();
});

test('COUNT: a function updating a static counter: the count carries on, in steps of 2', async () => {
  const t = await running();
  const before = await values(t);
  const p = await make('COUNT');
  expect((await hotload(['attach', String(t.pid), p.file])).code).toBe(0);
  const [a, b] = await pair(t);
  expect(a.count).toBeGreaterThan(before.count); // not back to zero
  expect(b.count - a.count).toBe(2);
  // `say` (unchanged) updates the same struct the program had: its count continues too.
  expect(b.say).toBe(a.say + 1);
});

test('NEWSTATIC: a new static lives in the patch; a later patch finds it there and it carries on', async () => {
  const t = await running();
  const p1 = await make('NEWSTATIC');
  expect((await hotload(['attach', String(t.pid), p1.file])).code).toBe(0);
  await t.next(/^constant=/);
  const a = await values(t);
  const newvarA = Math.floor(a.count / 1000);
  expect(newvarA).toBeGreaterThanOrEqual(1);
  // The second patch also changes how counter grows; newvar must not restart at 0.
  const p2 = await make('NEWSTATIC_COUNT');
  expect((await hotload(['attach', String(t.pid), p2.file])).code).toBe(0);
  const [b, c] = await pair(t);
  expect(Math.floor(b.count / 1000)).toBeGreaterThan(newvarA);
  expect(c.count - b.count).toBe(2 + 1000);
  const st = await hotload(['status', String(t.pid), '--json']);
  expect(st.one.patches).toHaveLength(2);
});

test('a rebuilt patch reverts like any other, and the original code runs again', async () => {
  const t = await running();
  const p = await make('CONST');
  expect((await hotload(['attach', String(t.pid), p.file])).code).toBe(0);
  expect((await values(t)).constant).toBe(12);
  const r = await hotload(['revert', String(t.pid), p.file]);
  expect(r.code).toBe(0);
  await t.next(/^constant=/);
  expect((await values(t)).constant).toBe(11);
  t.expectHealthy();
});

test('a patch goes within 2 GiB of the program it patches, mapped from the staged file', async () => {
  const t = await running();
  const p = await make('CONST');
  const r = await hotload(['attach', String(t.pid), p.file, '--json']);
  const fn = r.one.functions[0];
  expect(Math.abs(Number(BigInt(fn.new) - BigInt(fn.old)))).toBeLessThan(2 ** 31);
  const maps = fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8');
  expect(maps).toContain(r.one.staged);
  expect(maps).not.toMatch(/rwxp/);
  const st = await hotload(['status', String(t.pid), '--json']);
  expect(st.one.patches[0]).toEqual(expect.objectContaining({ loadedBy: 'hotload', staged: r.one.staged, debuggers: true }));
  const text = await hotload(['status', String(t.pid)]);
  expect(text.stdout).toContain('mapped by hotload, not dlopen; debuggers see it through the GDB JIT interface');
});

test('a struct layout change is refused, naming the symbol, and nothing is written', async () => {
  const out = path.join(tmpdir(), 'bigger.so');
  const r = await hotload(['mkpatch', '--from', obj('base'), '--to', obj('BIGGER'), '--target', BASE, '-o', out, '--json']);
  expect(r.code).toBe(4);
  expect(r.json.error.code).toBe('UNPATCHABLE');
  expect(r.json.error.details[0]).toMatch(/^conf@diff\.c: its size changed from 8 to 12 bytes/);
  expect(fs.existsSync(out)).toBe(false);
});

test('two builds with the same code: exit 9, nothing to patch', async () => {
  const out = path.join(tmpdir(), 'same.so');
  const r = await hotload(['mkpatch', '--from', obj('base'), '--to', obj('GROW'), '--target', BASE, '-o', out]);
  expect(r.code).toBe(0); // GROW changes `first`
  const same = await hotload(['mkpatch', '--from', obj('base'), '--to', obj('base'), '--target', BASE, '-o', out + '2', '--json']);
  expect(same.code).toBe(9);
  expect(same.json.error.code).toBe('NO_CHANGE');
});

test('objects built without -ffunction-sections are refused with the flags to use', async () => {
  const r = await hotload(['mkpatch', '--from', obj('base'), '--to', obj('NOSECTIONS'), '--target', BASE, '-o', path.join(tmpdir(), 'x.so'), '--json']);
  expect(r.code).toBe(4);
  expect(r.json.error.code).toBe('REBUILD_UNSUPPORTED');
  expect(r.json.error.details.join('\n')).toMatch(/-ffunction-sections/);
});

test('a patch for another build is refused by attach (build-id), and the process is untouched', async () => {
  const t = await running();
  // Made against the CONST build's program, which the process does not run.
  const out = path.join(tmpdir(), 'other.so');
  const r = await hotload(['mkpatch', '--from', obj('CONST'), '--to', obj('COUNT'), '--target', path.join(D, 'CONST/diff'), '-o', out]);
  expect(r.code).toBe(0);
  const a = await hotload(['attach', String(t.pid), out, '--json']);
  expect(a.code).toBe(6);
  expect(a.one.error.code).toBe('PATCH_BUILD_MISMATCH');
  expect((await values(t)).constant).toBe(11);
  t.expectHealthy();
});

test('--from objects of another build than the program are refused (a datum differs in size)', async () => {
  const r = await hotload(['mkpatch', '--from', obj('BIGGER'), '--to', obj('COUNT'), '--target', BASE, '-o', path.join(tmpdir(), 'x.so'), '--json']);
  expect(r.code).toBe(6);
  expect(r.json.error.code).toBe('PATCH_BUILD_MISMATCH');
  expect(r.json.error.details).toContain('diff.o: conf: 12 bytes of data here, 8 in the target');
});

test('the real program: every function of a running Lua 5.4 replaced by its -O1 build, and the interpreter gives the same results', async () => {
  const a = tmpdir('hotload-lua-O2-');
  const b = tmpdir('hotload-lua-O1-');
  const lua = execFileSync(path.join(ROOT, 'scripts/lua-workdir.sh'), [a], { encoding: 'utf8' }).trim().split('\n').pop()!;
  execFileSync(path.join(ROOT, 'scripts/lua-workdir.sh'), [b, '-O1'], { encoding: 'utf8' });
  const t = Target.start(lua, [path.join(ROOT, 'tests/lua/repeat.lua'), path.join(ROOT, 'tests/lua/exercise.lua')]);
  targets.push(t);
  await t.waitFor(/^round 3 same$/, 30000);
  const out = path.join(tmpdir(), 'O1.so');
  const mk = await hotload(['mkpatch', '--from', a, '--to', b, '--target', lua, '-o', out, '--json']);
  expect(mk.code).toBe(0);
  expect(mk.json.replaced.length).toBeGreaterThan(500); // nearly every function differs at -O1
  expect(mk.json.replaced).toEqual(expect.arrayContaining(['luaH_getshortstr', 'str_format@lstrlib.c', 'math_abs@lmathlib.c']));
  const r = await hotload(['attach', String(t.pid), out, '--json']);
  expect(r.code).toBe(0);
  const n = t.lines.length;
  await t.next(/^round \d+ /);
  for (let i = 0; i < 20; i++) await t.next(/^round \d+ /, 30000);
  expect(t.lines.slice(n).filter((l) => /DIFF/.test(l))).toEqual([]);
  t.expectHealthy();
}, 120000);

test('a shared library: its exported global, which the program holds a copy of (copy relocation), carries on', async () => {
  const L = path.join(D, '../rebuild-lib');
  const lib = path.join(L, 'base/libtarget.so');
  const t = Target.start(path.join(FIX, 'target-lib'), ['loop'], { env: { LD_LIBRARY_PATH: path.dirname(lib) } });
  targets.push(t);
  const before = await t.waitFor(/^compute 6 .* lib_calls (\d+) lib 10$/);
  expect(fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8')).toContain(lib);
  const out = path.join(tmpdir(), 'lib.so');
  const mk = await hotload(['mkpatch', '--from', path.join(L, 'base/libtarget.o'), '--to', path.join(L, 'PLUS/libtarget.o'), '--target', lib, '-o', out]);
  expect(mk.code).toBe(0);
  expect((await hotload(['attach', String(t.pid), out])).code).toBe(0);
  const a = await t.next(/lib 1010$/);
  const b = await t.next(/lib 1010$/);
  const calls = (l: string) => Number(/lib_calls (\d+)/.exec(l)![1]);
  expect(calls(a)).toBeGreaterThan(calls(before));
  expect(calls(b)).toBeGreaterThan(calls(a)); // the program sees the patched code's increments
  t.expectHealthy();
});

test('C++: exceptions thrown and caught across patched functions (the patch registers its unwind tables)', async () => {
  const C = path.join(FIX, 'cxx');
  const t = Target.start(path.join(C, 'base/cxx'));
  targets.push(t);
  await t.waitFor(/guarded=-1 i=5 /);
  const out = path.join(tmpdir(), 'cxx.so');
  const mk = await hotload(['mkpatch', '--from', path.join(C, 'base/cxx.o'), '--to', path.join(C, 'EDIT/cxx.o'), '--target', path.join(C, 'base/cxx'), '-o', out, '--json']);
  expect(mk.code).toBe(0);
  // guarded's catch handler is in guarded.cold: that change makes guarded part of the patch.
  expect(mk.json.replaced).toEqual(['_Z5riskyi', '_Z7guardedi', '_ZN7Greeter5greetEi']);
  expect((await hotload(['attach', String(t.pid), out])).code).toBe(0);
  // Several throws from the patched risky, each caught by the patched guarded.
  const lines: string[] = [];
  for (let i = 0; i < 7; i++) lines.push(await t.next(/^greet=/));
  for (const l of lines) {
    const [, greet, guarded, n] = /greet=(\d+) guarded=(-?\d+) i=(\d+)/.exec(l)!.map(Number);
    expect(greet).toBe(104);
    expect(guarded).toBe(n % 3 === 0 ? -2 : n);
  }
  t.expectHealthy();
});

test('a patch calling a function no library of the process defines is refused by attach, naming it; the process is untouched', async () => {
  const dir = tmpdir();
  fs.copyFileSync(path.join(ROOT, 'fixtures/src/diff.c'), path.join(dir, 'diff.c'));
  execFileSync('cc', ['-O2', '-g', '-fpatchable-function-entry=16,14', '-ffunction-sections', '-fdata-sections', '-DUNRESOLVED', '-c', 'diff.c', '-o', 'diff.o'], { cwd: dir });
  const t = await running();
  const out = path.join(dir, 'u.so');
  expect((await hotload(['mkpatch', '--from', obj('base'), '--to', path.join(dir, 'diff.o'), '--target', BASE, '-o', out])).code).toBe(0);
  const mapsBefore = fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8');
  const r = await hotload(['attach', String(t.pid), out, '--json']);
  expect(r.code).toBe(6);
  expect(r.one.error.code).toBe('PATCH_UNRESOLVED');
  expect(r.one.error.details[0]).toMatch(/^hotload_no_such_function: not defined by any library of process/);
  expect(fs.readFileSync(`/proc/${t.pid}/maps`, 'utf8')).toBe(mapsBefore); // nothing mapped
  expect((await values(t)).say).toBeGreaterThan(0);
  t.expectHealthy();
});

describe('code hotload cannot place is refused, naming the reference', () => {
  const build = (flags: string[]) => {
    const dir = tmpdir();
    fs.copyFileSync(path.join(ROOT, 'fixtures/src/diff.c'), path.join(dir, 'diff.c'));
    execFileSync('cc', ['-O2', '-g', '-fpatchable-function-entry=16,14', '-ffunction-sections', '-fdata-sections', ...flags, '-c', 'diff.c', '-o', 'diff.o'], { cwd: dir });
    return path.join(dir, 'diff.o');
  };
  const mk = (o: string) => hotload(['mkpatch', '--from', obj('base'), '--to', o, '--target', BASE, '-o', path.join(tmpdir(), 'x.so'), '--json']);

  test('code built without -fPIE (absolute 32-bit addresses)', async () => {
    const r = await mk(build(['-fno-pie', '-DPRINTF']));
    expect(r.code).toBe(4);
    expect(r.json.error.code).toBe('REBUILD_UNSUPPORTED');
    expect(r.json.error.details.join('\n')).toMatch(/absolute 32-bit reference .*-fPIE/);
  });

  test('a thread-local variable', async () => {
    const r = await mk(build(['-DTLS']));
    expect(r.code).toBe(4);
    expect(r.json.error.details.join('\n')).toMatch(/tcount.*thread-local variables are not/);
  });
});

/**
 * A small PIE program built in `dir/name` from `files` (each compiled with the
 * pad and section flags) and a main.c printing `line` every 20 ms.
 */
function smallProgram(dir: string, name: string, files: Record<string, string>, decls: string, line: string): string {
  const d = path.join(dir, name);
  fs.mkdirSync(d);
  const main = `#include <stdio.h>\n#include <unistd.h>\n${decls}\nint main(void) { setvbuf(stdout, 0, _IOLBF, 0); for (;;) { ${line}; usleep(20000); } }\n`;
  for (const [f, src] of Object.entries({ 'main.c': main, ...files })) {
    fs.writeFileSync(path.join(d, f), src);
    execFileSync('cc', ['-O2', '-g', '-fpatchable-function-entry=16,14', '-ffunction-sections', '-fdata-sections', '-fPIE', '-c', f], { cwd: d });
  }
  execFileSync('cc', ['-pie', ...Object.keys(files).map((f) => f.replace(/\.c$/, '.o')), 'main.o', '-o', 'prog'], { cwd: d });
  return d;
}

test('a function moved to another file and edited there: the patch replaces the running one; a global counter moved along carries on', async () => {
  const dir = tmpdir();
  const decls = 'int user(int);\nextern int calls;';
  const line = 'printf("user=%d calls=%d\\n", user(5), calls)';
  const old = smallProgram(dir, 'old', {
    'a.c': 'int calls;\n__attribute__((noinline)) int foo(int x) { calls++; return x * 3; }\nint user(int x) { return foo(x) + 1; }\n',
    'b.c': 'int other(void) { return 0; }\n',
  }, decls, line);
  const edited = smallProgram(dir, 'new', {
    'a.c': 'int foo(int);\nint user(int x) { return foo(x) + 1; }\n',
    'b.c': 'int other(void) { return 0; }\nint calls;\n__attribute__((noinline)) int foo(int x) { calls++; return x * 4; }\n',
  }, decls, line);
  const out = path.join(dir, 'p.so');
  const m = await hotload(['mkpatch', '--from', old, '--to', edited, '--target', path.join(old, 'prog'), '-o', out, '--json']);
  expect(m.code).toBe(0);
  expect(m.json.replaced).toContain('foo');
  expect(m.json.added).toEqual([]);
  const t = Target.start(path.join(old, 'prog'), []);
  targets.push(t);
  const before = parse((await t.fresh(/^user=/))[0]);
  expect(before.user).toBe(16);
  expect((await hotload(['attach', String(t.pid), out])).code).toBe(0);
  const after = parse((await t.fresh(/^user=/))[0]);
  expect(after.user).toBe(21); // the edit, in the function's new file
  expect(after.calls).toBeGreaterThan(before.calls); // the program's own counter, not a new one in the patch
  t.expectHealthy();
});

test('an edit of a local table\'s initial values only (gcc copies them from unnamed .data): seen as a change, and patched', async () => {
  const dir = tmpdir();
  const src = (t: string) => `#include <string.h>
struct opt { const char *name; int has_arg; int *flag; int val; };
int lookup(const char *s) {
  const struct opt opts[] = {
    { "alpha", 0, 0, 'a' }, { "beta", 1, 0, 'b' }, { "gamma", 0, 0, 'g' }, { "delta", 1, 0, 'd' },
    { "epsilon", 0, 0, 'e' }, { "zeta", 1, 0, 'z' }, { "eta", 0, 0, 'h' }, { "theta", 1, 0, ${t} },
    { 0, 0, 0, 0 },
  };
  for (int i = 0; opts[i].name; i++) if (!strcmp(opts[i].name, s)) return opts[i].val;
  return -1;
}
`;
  const decls = 'int lookup(const char *);';
  const line = 'printf("theta=%d\\n", lookup("theta"))';
  const old = smallProgram(dir, 'old', { 'opts.c': src("'t'") }, decls, line);
  const edited = smallProgram(dir, 'new', { 'opts.c': src("'T'") }, decls, line);
  // The code of lookup is the same; only the unnamed initializer in .data differs.
  expect(execFileSync('readelf', ['-SW', path.join(old, 'opts.o')], { encoding: 'utf8' })).toMatch(/\] \.data\s+PROGBITS\s+\S+\s+\S+\s+0*[1-9a-f]/);
  const d = await hotload(['diff', path.join(old, 'opts.o'), path.join(edited, 'opts.o'), '--json']);
  expect(d.json.changed).toEqual(['lookup']);
  const out = path.join(dir, 'p.so');
  expect((await hotload(['mkpatch', '--from', path.join(old, 'opts.o'), '--to', path.join(edited, 'opts.o'), '--target', path.join(old, 'prog'), '-o', out])).code).toBe(0);
  const t = Target.start(path.join(old, 'prog'), []);
  targets.push(t);
  expect(parse((await t.fresh(/^theta=/))[0]).theta).toBe(116);
  expect((await hotload(['attach', String(t.pid), out])).code).toBe(0);
  expect(parse((await t.fresh(/^theta=/))[0]).theta).toBe(84);
  t.expectHealthy();
});

test('--to without an object file --from has (its compile failed) is refused naming the file, not "runs the same code"', async () => {
  const dir = tmpdir();
  const decls = 'int user(int);';
  const line = 'printf("user=%d\\n", user(5))';
  const files = { 'a.c': 'int user(int x) { return x + 1; }\n', 'b.c': 'int other(void) { return 0; }\n' };
  const old = smallProgram(dir, 'old', files, decls, line);
  const edited = smallProgram(dir, 'new', files, decls, line);
  fs.rmSync(path.join(edited, 'b.o'));
  const out = path.join(dir, 'p.so');
  const m = await hotload(['mkpatch', '--from', old, '--to', edited, '--target', path.join(old, 'prog'), '-o', out, '--json']);
  expect(m.json.error.code).toBe('FILE_NOT_FOUND');
  expect(m.json.error.message).toMatch(/has no b\.o, which .* has: its compile failed, or it was not built/);
  expect(m.json.error.details).toEqual([`b.o: in ${old}, not in ${edited}`]);
  expect(fs.existsSync(out)).toBe(false);
});

test('a partial-inlining part (f.part.0, called directly by callers that inlined f\'s head) is replaced itself: those callers take the edit', async () => {
  const dir = tmpdir();
  const src = (v: number) => `#include <stdio.h>
#include <unistd.h>
int table[64];
int f(int x) {
  if (__builtin_expect(x == 0, 1)) return 1;
  int s = 0;
  for (int i = 0; i < 64; i++) { s += table[i] * x + i * ${v}; if (s > 1000000) printf("big %d\\n", s); }
  for (int i = 0; i < 64; i++) { if (table[i] > 99) printf("t %d\\n", table[i]); }
  return s;
}
int g(int x) { return f(x) + 1; }
int main(void) { setvbuf(stdout, 0, _IOLBF, 0); for (int i = 0;; i++) { printf("g=%d\\n", g(1) + (i & 0)); usleep(20000); } }
`;
  for (const v of [1, 2]) {
    fs.mkdirSync(path.join(dir, `v${v}`));
    fs.writeFileSync(path.join(dir, `v${v}/p.c`), src(v));
    execFileSync('gcc', ['-O2', '-g', '-fpatchable-function-entry=16,14', '-ffunction-sections', '-fdata-sections', '-c', 'p.c', '-o', 'p.o'], { cwd: path.join(dir, `v${v}`) });
  }
  execFileSync('gcc', ['p.o', '-o', 'p'], { cwd: path.join(dir, 'v1') });
  const idx = await hotload(['index', path.join(dir, 'v1/p'), '--json']);
  const part = idx.json.functions.find((f: { name: string }) => f.name === 'f.part.0');
  expect(part).toMatchObject({ status: 'clone', origin: 'f' }); // gcc split f: the premise of this test
  const out = path.join(dir, 'p.so');
  const m = await hotload(['mkpatch', '--from', path.join(dir, 'v1'), '--to', path.join(dir, 'v2'), '--target', path.join(dir, 'v1/p'), '-o', out, '--json']);
  expect(m.json.replaced).toEqual(['f', 'f.part.0@p.c']);
  const t = Target.start(path.join(dir, 'v1/p'), []);
  targets.push(t);
  await t.waitFor(/^g=\d+$/);
  const before = Number(/g=(\d+)/.exec(await t.next(/^g=/))![1]);
  expect((await hotload(['attach', String(t.pid), out])).code).toBe(0);
  await t.next(/^g=/);
  const after = Number(/g=(\d+)/.exec(await t.next(/^g=/))![1]);
  expect(after - before).toBe(2016); // sum of i for i < 64: g(1) now adds 2 * i, not i
  t.expectHealthy();
});
