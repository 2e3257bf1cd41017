// `hotload diff` on builds of fixtures/src/diff.c that each change one thing,
// compared as linked programs (-Wl,--emit-relocs) and as object files.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { FIX, ROOT, hotload, tmpdir } from './helpers';

const D = path.join(FIX, 'diff');

describe.each([['program', 'diff'], ['object file', 'diff.o']])('as %s', (_kind, file) => {
  const diff = (variant: string) => hotload(['diff', path.join(D, 'base', file), path.join(D, variant, file), '--json']);

  test('a rebuild with no change: nothing changed', async () => {
    const r = await diff('base');
    expect(r.code).toBe(0);
    expect(r.json.changed).toEqual([]);
    expect(r.json.unchanged).toBeGreaterThanOrEqual(7);
  });

  test.each([
    ['CONST', 'a constant in one function', ['constant']],
    ['PRINTF', 'a new printf (a new string literal too)', ['say']],
    ['COUNT', 'a function updating a static counter', ['count']],
    ['TINY', 'a change in a function inlined into its caller: the caller is in the patch', ['user_of_tiny']],
    ['GROW', 'a function that grew: the functions after it moved, but are unchanged', ['first']],
  ])('%s: %s', async (variant, _what, changed) => {
    const r = await diff(variant);
    expect(r.code).toBe(0);
    expect(r.json.changed).toEqual(changed);
    expect(r.json.added).toEqual([]);
    expect(r.json.removed).toEqual([]);
    expect(r.json.refused).toEqual([]);
  });

  test('TINY: the caller is labelled with the changed function inlined into it (from DWARF)', async () => {
    const r = await diff('TINY');
    expect(r.json.inlined).toEqual({ user_of_tiny: ['tiny'] });
    const text = await hotload(['diff', path.join(D, 'base', file), path.join(D, 'TINY', file)]);
    expect(text.stdout).toMatch(/changed functions: user_of_tiny \(has tiny inlined\)/);
  });

  test('CONST: a change of the function itself carries no inlining label', async () => {
    expect((await diff('CONST')).json.inlined).toEqual({});
  });

  test('a new helper function is added, its caller changed', async () => {
    const r = await diff('NEWHELPER');
    expect(r.json.changed).toEqual(['constant']);
    expect(r.json.added).toEqual(['extra@diff.c']);
  });

  test('a new static variable is new data, its user changed', async () => {
    const r = await diff('NEWSTATIC');
    expect(r.json.changed).toEqual(['count']);
    expect(r.json.data.added).toEqual(['newvar@diff.c']);
  });

  test('a struct layout change is refused, naming the symbol', async () => {
    const r = await diff('BIGGER');
    expect(r.code).toBe(4);
    expect(r.json.error.code).toBe('UNPATCHABLE');
    expect(r.json.error.details[0]).toMatch(/^conf@diff\.c: its size changed from 8 to 12 bytes/);
    expect(r.json.error.hint).toMatch(/no --force/);
  });

  test('a changed initial value of existing data is refused', async () => {
    const r = await diff('INITVAL');
    expect(r.code).toBe(4);
    expect(r.json.error.details[0]).toMatch(/^limit: its initial value changed/);
  });
});

test('a linked program without --emit-relocs is refused with the flag to add', async () => {
  const r = await hotload(['diff', path.join(FIX, 'demo'), path.join(FIX, 'demo')]);
  expect(r.code).toBe(6);
  expect(r.stderr).toMatch(/carries no relocations for its code/);
  expect(r.stderr).toMatch(/-Wl,--emit-relocs/);
});

describe('function-local statics named alike (count.0, count.1, ...)', () => {
  const build = (dir: string, src: string) => {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'f.c'), src);
    execFileSync('cc', ['-O2', '-g', '-ffunction-sections', '-fdata-sections', '-c', 'f.c'], { cwd: dir });
    return path.join(dir, 'f.o');
  };
  const F = 'int f(void) { static int count; return ++count; }\n';
  const G = 'int g(void) { static int count; return count += 2; }\n';
  const H = 'int h(void) { static int count; return count += 3; }\n';

  test('one added whose numbering leaves the others as they were: accepted', async () => {
    const dir = tmpdir();
    const r = await hotload(['diff', build(path.join(dir, 'a'), F + G), build(path.join(dir, 'b'), H + F + G), '--json']);
    expect(r.code).toBe(0);
    expect(r.json.added).toEqual(['h']);
  });

  test('one added that renumbers the others: refused, naming them', async () => {
    const dir = tmpdir();
    const r = await hotload(['diff', build(path.join(dir, 'a'), F + G), build(path.join(dir, 'b'), F + H + G), '--json']);
    expect(r.code).toBe(4);
    expect(r.json.error.details[0]).toMatch(/^count@f\.c: the function-local statics named count went from 2 to 3/);
  });
});

/** A directory of object files compiled from `files` (name -> source) with the section flags. */
function objectsDir(dir: string, files: Record<string, string>): string {
  fs.mkdirSync(dir, { recursive: true });
  for (const [f, src] of Object.entries(files)) {
    fs.writeFileSync(path.join(dir, f), src);
    execFileSync('cc', ['-O2', '-g', '-fPIE', '-ffunction-sections', '-fdata-sections', '-c', f], { cwd: dir });
  }
  return dir;
}

describe('directories of object files: removed and moved functions', () => {
  const FOO = 'int foo(int x) { return x * 3; }\n';

  test('still called by code of the new build (unchanged or changed): refused, naming the callers', async () => {
    const dir = tmpdir();
    const a = objectsDir(path.join(dir, 'a'), { 'a.c': FOO, 'b.c': 'int foo(int);\nint bar(int x) { return foo(x) + 1; }\nint baz(int x) { return foo(x) + 2; }\n' });
    const b = objectsDir(path.join(dir, 'b'), { 'a.c': 'int unrelated(void) { return 0; }\n', 'b.c': 'int foo(int);\nint bar(int x) { return foo(x) + 1; }\nint baz(int x) { return foo(x) + 5; }\n' });
    const r = await hotload(['diff', a, b, '--json']);
    expect(r.code).toBe(4);
    expect(r.json.error.details[0]).toBe('foo: removed, but bar, baz still refer to it');
  });

  test('still called from an object file the rebuild left as it was: refused, naming the file', async () => {
    const dir = tmpdir();
    const B = 'int foo(int);\nint bar(int x) { return foo(x) + 1; }\n';
    const a = objectsDir(path.join(dir, 'a'), { 'a.c': FOO, 'b.c': B });
    const b = objectsDir(path.join(dir, 'b'), { 'a.c': 'int unrelated(void) { return 0; }\n' });
    fs.copyFileSync(path.join(a, 'b.o'), path.join(b, 'b.o')); // left as it was (a rebuild in another directory records that directory in its DWARF)
    const r = await hotload(['diff', a, b, '--json']);
    expect(r.code).toBe(4);
    expect(r.json.error.details[0]).toBe('foo: removed, but b.o still refers to it');
  });

  test('whose callers went with it, or whose name another function now bears: accepted', async () => {
    const dir = tmpdir();
    const a = objectsDir(path.join(dir, 'a'), { 'a.c': '__attribute__((noinline)) static int helper(int x) { return x * 3; }\nint user(int x) { return helper(x) + 1; }\n', 'b.c': 'int bar(int x) { return x; }\n' });
    const b = objectsDir(path.join(dir, 'b'), { 'a.c': 'int user(int x) { return x + 1; }\n', 'b.c': 'int helper(int x) { return x * 4; }\nint bar(int x) { return helper(x); }\n' });
    const r = await hotload(['diff', a, b, '--json']);
    expect(r.json.removed).toEqual(['helper@a.c']);
    expect(r.json.added).toEqual(['helper']);
    expect(r.json.error).toBeUndefined();
  });
});

describe('directories of object files: moves', () => {

  test('a function moved to another file is one function: changed if its code changed, else not listed', async () => {
    const dir = tmpdir();
    const a = objectsDir(path.join(dir, 'a'), { 'a.c': 'int foo(int x) { return x * 3; }\nint keep(int x) { return x - 1; }\n', 'b.c': 'int other(void) { return 0; }\n' });
    const b = objectsDir(path.join(dir, 'b'), { 'a.c': 'int other(void) { return 0; }\n', 'b.c': 'int keep(int x) { return x - 1; }\nint foo(int x) { return x * 4; }\n' });
    const r = await hotload(['diff', a, b, '--json']);
    expect(r.code).toBe(0);
    expect(r.json.changed).toEqual(['foo']);
    expect(r.json.added).toEqual([]);
    expect(r.json.removed).toEqual([]);
    expect(r.json.objects).toEqual({ compared: 2, identical: 0 });
  });

  test('a global datum moved to another file: unchanged, or refused when its size changed', async () => {
    const dir = tmpdir();
    const a = objectsDir(path.join(dir, 'a'), { 'a.c': 'int table[4] = {1, 2, 3, 4};\n', 'b.c': 'int other(void) { return 0; }\n' });
    const same = objectsDir(path.join(dir, 'b'), { 'a.c': 'int nothing;\n', 'b.c': 'int other(void) { return 0; }\nint table[4] = {1, 2, 3, 4};\n' });
    const grown = objectsDir(path.join(dir, 'c'), { 'a.c': 'int nothing;\n', 'b.c': 'int other(void) { return 0; }\nint table[5] = {1, 2, 3, 4, 5};\n' });
    const r = await hotload(['diff', a, same, '--json']);
    expect(r.code).toBe(0);
    expect(r.json.data).toEqual({ changed: [], added: ['nothing'], removed: [] });
    const g = await hotload(['diff', a, grown, '--json']);
    expect(g.code).toBe(4);
    expect(g.json.error.details[0]).toBe('table: moved from a.o to b.o, and its size changed from 16 to 20 bytes');
  });

  test('a file and a directory cannot be compared', async () => {
    const dir = tmpdir();
    const a = objectsDir(path.join(dir, 'a'), { 'a.c': 'int foo(int x) { return x; }\n' });
    const r = await hotload(['diff', a, path.join(a, 'a.o')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error USAGE: compare a directory with a directory, or a file with a file/);
  });
});

test('a change only in constants gcc pooled (.rodata.cst16: a local table) is a change; strings are compared by content', async () => {
  const dir = tmpdir();
  const src = (last: number, word: string) =>
    '#include <string.h>\n' +
    `int pick(int i) { const int tbl[12] = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, ${last}}; volatile int c[12]; memcpy((void *)c, tbl, sizeof tbl); return c[i]; }\n` +
    `const char *name(int i) { const char *n[3] = {"one", "two", "${word}"}; const char *volatile m[3]; memcpy((void *)m, n, sizeof n); return m[i]; }\n`;
  const build = (sub: string, text: string) => path.join(objectsDir(path.join(dir, sub), { 'x.c': text }), 'x.o');
  const a = build('a', src(120, 'three'));
  expect(execFileSync('readelf', ['-SW', a], { encoding: 'utf8' })).toMatch(/\.rodata\.cst16/); // the table is pooled there
  const r1 = await hotload(['diff', a, build('b', src(121, 'three')), '--json']);
  expect(r1.json.changed).toEqual(['pick']);
  const r2 = await hotload(['diff', a, build('c', src(120, 'THREE')), '--json']);
  expect(r2.json.changed).toEqual(['name']);
  const r3 = await hotload(['diff', a, build('d', src(120, 'three')), '--json']);
  expect(r3.json.changed).toEqual([]);
});

describe('debug information in other forms', () => {
  /** diff.c compiled twice, the second with TINYK=4 (a change inlined into user_of_tiny), with `flags`. */
  function pair(flags: string[]): [string, string] {
    const dir = tmpdir();
    const out: string[] = [];
    // `-CLANG` among the flags: compiled by clang (which records no options in its DWARF).
    const cc = flags.includes('-CLANG') ? 'clang' : 'gcc';
    const own = flags.filter((f) => f !== '-CLANG');
    for (const [name, extra] of [['a', []], ['b', ['-DTINYK=4']]] as const) {
      fs.mkdirSync(path.join(dir, name));
      const o = path.join(dir, name, 'diff.o');
      execFileSync(cc, ['-O2', '-g', '-fpatchable-function-entry=16,14', '-ffunction-sections', '-fdata-sections', ...own, ...extra, '-c', path.join(ROOT, 'fixtures/src/diff.c'), '-o', o], { cwd: path.join(dir, name) });
      out.push(o);
    }
    return [out[0], out[1]];
  }

  test('-gz (compressed debug sections): the same inline labels as without', async () => {
    const [a, b] = pair(['-gz']);
    expect(execFileSync('readelf', ['-SW', b], { encoding: 'utf8' })).toMatch(/\.debug_info\s+PROGBITS.*\sC\s/); // really compressed
    const r = await hotload(['diff', a, b, '--json']);
    expect(r.code).toBe(0);
    expect(r.json.changed).toEqual(['user_of_tiny']);
    expect(r.json.inlined).toEqual({ user_of_tiny: ['tiny'] });
  });

  // Without the types, a changed struct layout would go unseen: refused, not guessed.
  test.each([
    [['-gsplit-dwarf'], /built with -gsplit-dwarf \(the types are in \.dwo files/],
    [['-g1'], /built with -g1, which leaves out the types/],
    [['-g0'], /built without -g \(no DWARF debug information\)/],
    [['-gline-tables-only', '-CLANG'], /built with -g1 or -gline-tables-only \(its DWARF describes functions but no type\)/],
  ])('%j: refused, saying why and what to build with', async (flags, why) => {
    const [a, b] = pair(flags);
    const r = await hotload(['diff', a, b, '--json']);
    expect(r.code).toBe(4);
    expect(r.json.error.code).toBe('REBUILD_UNSUPPORTED');
    expect(r.json.error.message).toMatch(why);
    expect(r.json.error.hint).toMatch(/Build with -g .*hotload flags --diff/);
  });
});

test('a function changed only by its line number (assert after lines inserted above) is said to be so; a real edit is not', async () => {
  const dir = tmpdir();
  const src = '#include <assert.h>\nint checked(int x) { assert(x >= 0); return x * 2; }\nint other(int x) { return x + 1; }\n';
  const a = objectsDir(path.join(dir, 'a'), { 'f.c': src });
  const b = objectsDir(path.join(dir, 'b'), { 'f.c': '/* three\n   lines\n   more */\n' + src });
  const r = await hotload(['diff', a, b, '--json']);
  expect(r.code).toBe(0);
  expect(r.json.changed).toEqual(['checked']); // __LINE__ is in its code
  expect(r.json.lineOnly).toEqual(['checked']);
  expect((await hotload(['diff', a, b])).stdout).toMatch(/note: 1 function changed only by line numbers .*: checked/);
  const c = objectsDir(path.join(dir, 'c'), { 'f.c': '/* three\n   lines\n   more */\n' + src.replace('x * 2', 'x * 3') });
  const e = await hotload(['diff', a, c, '--json']);
  expect(e.json.changed).toEqual(['checked']);
  expect(e.json.lineOnly).toEqual([]);
});

test('a copy-less static inline that an unchanged function inlines too is not named as the reason a caller changed', async () => {
  const dir = tmpdir();
  const src = (k: number) => `static inline int len(const int *p) { return p[0] + 1; }\nint user_a(const int *p) { return len(p) * ${k}; }\nint user_b(const int *p) { return len(p) - 7; }\n`;
  const a = objectsDir(path.join(dir, 'a'), { 's.c': src(2) });
  const b = objectsDir(path.join(dir, 'b'), { 's.c': src(3) });
  const r = await hotload(['diff', a, b, '--json']);
  expect(r.json.changed).toEqual(['user_a']);
  expect(r.json.inlined).toEqual({}); // len did not change: user_b inlines it and is unchanged
  const c = objectsDir(path.join(dir, 'c'), { 's.c': src(2).replace('p[0] + 1', 'p[0] + 2') });
  const e = await hotload(['diff', a, c, '--json']);
  expect(e.json.changed).toEqual(['user_a', 'user_b']);
  expect(e.json.inlined).toEqual({ user_a: ['len'], user_b: ['len'] }); // len changed: every user changed
});
