// Patches from a rebuild never read the running process's memory with another
// layout: a type whose layout changed between the running build and the
// rebuild is refused (diff, mkpatch --from, watch), naming the type and the
// change, and the process runs on untouched. fixtures/src/layout.c and
// layout.cpp, one -D variant per change; then the real programs.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { ROOT, Target, hotload, tmpdir } from './helpers';
import { Watch } from './watch-client';
import { memcachedBuilds } from './memcached-client';

const FLAGS = ['-O2', '-g', '-fpatchable-function-entry=16,14', '-ffunction-sections', '-fdata-sections'];

/** Compile fixtures/src/<src> with `defines` into dir/<variant>/layout.o; `link`: also the program. */
function build(dir: string, compiler: string, src: string, variant: string, link = false): string {
  const d = path.join(dir, variant);
  fs.mkdirSync(d, { recursive: true });
  const defines = variant === 'base' ? [] : [`-D${variant}`];
  execFileSync(compiler, [...FLAGS, ...defines, '-c', path.join(ROOT, 'fixtures/src', src), '-o', path.join(d, 'layout.o')]);
  if (link) execFileSync(compiler, [path.join(d, 'layout.o'), '-o', path.join(d, 'layout')]);
  return d;
}

const running: Target[] = [];
afterAll(async () => {
  for (const t of running) await t.stop();
});

/** The program of `base` running, printing its sums. */
async function start(base: string): Promise<Target> {
  const t = Target.start(path.join(base, 'layout'));
  running.push(t);
  await t.waitFor(/^sum=/);
  return t;
}

/** Refused by diff and by mkpatch --from, naming `type` and `change`; the process untouched. */
async function expectRefused(t: Target, base: string, variant: string, type: string, change: RegExp) {
  const line = await t.next(/^sum=/);
  const d = await hotload(['diff', base, variant, '--json']);
  expect(d.code).toBe(4);
  expect(d.json.error.code).toBe('UNPATCHABLE');
  const detail = d.json.error.details.find((x: string) => x.startsWith(`${type}: `));
  expect(detail).toMatch(change);
  expect(detail).toMatch(/used by \d+ of the running build's functions and data, e\.g\. /);
  const out = path.join(variant, 'p.so');
  const m = await hotload(['mkpatch', '--from', base, '--to', variant, '--target', path.join(base, 'layout'), '-o', out, '--json']);
  expect(m.code).toBe(4);
  expect(m.json.error.details.join('\n')).toMatch(new RegExp(`^${type.replace(/[()]/g, '\\$&')}: `, 'm'));
  expect(fs.existsSync(out)).toBe(false);
  expect((await hotload(['status', String(t.pid)])).stdout).toMatch(/no patch applied/);
  expect(await t.next(/^sum=/)).toBe(line); // the same values: nothing changed in it
  t.expectHealthy();
}

describe('C: a change of layout is refused, naming the type', () => {
  let dir: string;
  let base: string;
  let t: Target;
  beforeAll(async () => {
    dir = tmpdir();
    base = build(dir, 'gcc', 'layout.c', 'base', true);
    t = await start(base);
  });

  test.each([
    ['INSERT', 'a field inserted in the middle of a struct the program holds only on the heap', 'struct session', /^struct session: size 24 -> 32; field retries inserted at offset 4; sock 4 -> 8; .*and \d+ more/],
    ['WIDEN', 'a field\'s type widened', 'struct session', /sock: int -> long int; sock 4 -> 8/],
    ['REORDER', 'two fields swapped', 'struct session', /^struct session: id 0 -> 4; sock 4 -> 0;/],
    ['BITFIELD', 'a bit-field added', 'struct session', /field urgent inserted at offset 8/],
    ['ENUM', 'an enum value inserted', 'enum state', /^enum state: value BUSY 1 -> 2; value DONE 2 -> 3;/],
  ])('%s: %s', async (variant, _what, type, change) => {
    await expectRefused(t, base, build(dir, 'gcc', 'layout.c', variant), type, change);
  });

  test('the heap-only struct is named with its users (functions and the array of pointers)', async () => {
    const d = await hotload(['diff', base, build(dir, 'gcc', 'layout.c', 'INSERT'), '--json']);
    expect(d.json.error.details[0]).toMatch(/e\.g\. open_session, session_value, sessions \(layout\.c\)/);
  });

  test.each([
    ['CODE_ONLY', 'a code-only edit in a file that defines many types', 4 * 7],
    ['NEWCODE', 'a new struct used only by new code', 4 * 2],
  ])('accepted: %s, %s (each of the 4 sessions\' values moves by the edit)', async (variant, _what, delta) => {
    const v = build(dir, 'gcc', 'layout.c', variant);
    const p = path.join(v, 'p.so');
    const m = await hotload(['mkpatch', '--from', base, '--to', v, '--target', path.join(base, 'layout'), '-o', p]);
    expect(m.stderr).toBe('');
    expect(m.code).toBe(0);
    const before = Number(/sum=(\d+)/.exec(await t.next(/^sum=/))![1]);
    const a = await hotload(['attach', String(t.pid), p]);
    expect(a.code).toBe(0);
    const after = Number(/sum=(\d+)/.exec(await t.next(/^sum=/))![1]);
    expect(after - before).toBe(delta);
    expect((await hotload(['revert', String(t.pid), '--all'])).code).toBe(0);
  });

  test('accepted: a struct changed only in a file whose functions and data are all new', async () => {
    const v = path.join(dir, 'newfile');
    fs.mkdirSync(v);
    fs.copyFileSync(path.join(base, 'layout.o'), path.join(v, 'layout.o'));
    fs.writeFileSync(path.join(v, 'extra.c'), 'struct session { long everything; char different[40]; };\nint extra_size(struct session *s) { return (int)sizeof *s + (int)s->everything; }\n');
    execFileSync('gcc', [...FLAGS, '-c', 'extra.c', '-o', 'extra.o'], { cwd: v });
    const d = await hotload(['diff', base, v, '--json']);
    expect(d.code).toBe(0);
    expect(d.json.added).toEqual(['extra_size']);
    expect(d.json.refused).toEqual([]);
  });
});

describe.each([['g++'], ['clang++']])('C++ with %s: a change of a class layout is refused', (compiler) => {
  let dir: string;
  let base: string;
  let t: Target;
  beforeAll(async () => {
    dir = tmpdir();
    base = build(dir, compiler, 'layout.cpp', 'base', true);
    t = await start(base);
  });

  test('a virtual function added: the vtable layout changed (the size did not)', async () => {
    await expectRefused(t, base, build(dir, compiler, 'layout.cpp', 'VIRTUAL'), 'struct Shape', /^struct Shape: virtual functions perimeter added \(the vtable's layout changed\)/);
  });

  test('a member added to a base class: the base and the derived class that moved', async () => {
    const v = build(dir, compiler, 'layout.cpp', 'BASE_MEMBER');
    await expectRefused(t, base, v, 'struct Named', /^struct Named: size 4 -> 8; field generation inserted at offset 4/);
    const d = await hotload(['diff', base, v, '--json']);
    expect(d.json.error.details.join('\n')).toMatch(/^struct Square: size 16 -> 24; side 12 -> 16;/m);
  });

  test('accepted: a method\'s code changed', async () => {
    const v = build(dir, compiler, 'layout.cpp', 'CODE_ONLY');
    const d = await hotload(['diff', base, v, '--json']);
    expect(d.code).toBe(0);
    expect(d.json.changed).toEqual(['_ZNK6Square4areaEv']);
  });
});

test('watch: a struct edit is refused naming the type; the process runs on, and watch goes on to patch the next save', async () => {
  const dir = tmpdir('hotload-layout-watch-');
  fs.copyFileSync(path.join(ROOT, 'fixtures/src/layout.c'), path.join(dir, 'layout.c'));
  fs.writeFileSync(path.join(dir, 'Makefile'), `CFLAGS = ${FLAGS.join(' ')}\nlayout: layout.o\n\t$(CC) layout.o -o layout\n`);
  execFileSync('make', ['-s'], { cwd: dir });
  const t = await start(dir);
  const w = new Watch(dir, ['--pid', String(t.pid), 'layout.c']);
  try {
    await w.event('ready', 0);
    const src = path.join(dir, 'layout.c');
    let n = w.events.length;
    fs.writeFileSync(src, fs.readFileSync(src, 'utf8').replace('struct session {\n#ifdef REORDER', 'struct session {\n  int retries;\n#ifdef REORDER'));
    const r = await w.event('refused', n);
    expect(r.error.code).toBe('UNPATCHABLE');
    expect(r.error.details.join('\n')).toMatch(/^struct session: size 24 -> 32; field retries inserted at offset 0;/m);
    expect((await hotload(['status', String(t.pid)])).stdout).toMatch(/no patch applied/);
    n = w.events.length;
    fs.writeFileSync(src, fs.readFileSync(src, 'utf8').replace('  int retries;\n', '').replace('(int)s->flags;\n#endif', '(int)s->flags + 100;\n#endif'));
    await w.event('patched', n);
    await t.next(/^sum=\d+ /);
    t.expectHealthy();
  } finally {
    await w.stop();
  }
});

/** Copy every object file of `dir` (flat) into a new directory: the running build's objects. */
function objectsAside(dir: string): string {
  const old = tmpdir('hotload-layout-old-');
  for (const f of fs.readdirSync(dir)) if (f.endsWith('.o')) fs.copyFileSync(path.join(dir, f), path.join(old, f));
  return old;
}

/**
 * In a copy of a real program's build: the object files set aside, one edit
 * of a header (`from` -> `to`), `make <goal>`, and `hotload diff`: the
 * refusal that names `type`.
 */
async function headerEditRefusal(dir: string, header: string, from: string, to: string, goal: string, type: string): Promise<string> {
  const old = objectsAside(dir);
  const h = path.join(dir, header);
  const text = fs.readFileSync(h, 'utf8');
  expect(text).toContain(from);
  fs.writeFileSync(h, text.replace(from, to));
  execFileSync('make', ['-s', '-j2', goal], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  const d = await hotload(['diff', old, dir, '--json']);
  expect(d.code).toBe(4);
  const detail: string = d.json.error.details.find((x: string) => x.startsWith(`${type}: `));
  expect(detail).toMatch(/used by \d{2,} of the running build's functions and data/);
  return detail;
}

test('the real program Lua 5.4: a field added to struct Table (lobject.h, used by most files) is refused, naming it', async () => {
  const dir = tmpdir('hotload-layout-lua-');
  execFileSync(path.join(ROOT, 'scripts/lua-workdir.sh'), [dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  const field = "  lu_byte lsizenode;  /* log2 of size of 'node' array */";
  const detail = await headerEditRefusal(dir, 'lobject.h', field, `${field}\n  int hotload_extra;`, 'lua', 'struct Table');
  expect(detail).toMatch(/^struct Table: size 56 -> 64; field hotload_extra inserted at offset 12; alimit 12 -> 16;/);
  expect(detail).toMatch(/\((.*\.c, ){3,}/); // several files
}, 240000);

test('the real program memcached: a field added to struct conn (memcached.h) is refused, naming it', async () => {
  const dir = tmpdir('hotload-layout-mc-');
  execFileSync('cp', ['-a', `${memcachedBuilds().o2}/.`, dir]); // stamps kept: make rebuilds what the header edit touches
  const head = 'struct conn {\n    sasl_conn_t *sasl_conn;\n';
  const detail = await headerEditRefusal(dir, 'memcached.h', head, `${head}    int    hotload_extra;\n`, 'memcached', 'struct conn');
  expect(detail).toMatch(/^struct conn: size \d+ -> \d+; field hotload_extra inserted at offset 8; sfd 8 -> 12;/);
}, 300000);

test('a table of addresses into data whose type changed layout: its new initial value is said to follow from that change', async () => {
  const dir = tmpdir();
  const src = (extra: string) => `struct slot { int a; ${extra} int b; };\nstruct slot slots[2];\nint *bs[] = { &slots[0].b, &slots[1].b };\nint get(int i) { return *bs[i]; }\n`;
  for (const [v, extra] of [['a', ''], ['b', 'int inserted;']]) {
    fs.mkdirSync(path.join(dir, v));
    fs.writeFileSync(path.join(dir, v, 't.c'), src(extra));
    execFileSync('gcc', [...FLAGS, '-c', 't.c', '-o', 't.o'], { cwd: path.join(dir, v) });
  }
  const d = await hotload(['diff', path.join(dir, 'a'), path.join(dir, 'b'), '--json']);
  expect(d.code).toBe(4);
  const details: string[] = d.json.error.details;
  expect(details.find((x) => x.startsWith('bs: '))).toBe('bs: its initial value changed because struct slot changed layout (see there): the addresses it holds moved');
  expect(details.find((x) => x.startsWith('struct slot: '))).toMatch(/^struct slot: size 8 -> 12; field inserted inserted at offset 4; b 4 -> 8;/);
});

describe('the --from build must be the one the process runs', () => {
  // A runs; B adds a field to the heap-only struct; C is B plus a code edit.
  // B -> C alone is a clean code edit, but its code reads the sessions with
  // B's layout while the process holds A's: refused, whichever way it is asked.
  let dir: string;
  let a: string;
  let b: string;
  let c: string;
  let t: Target;
  beforeAll(async () => {
    dir = tmpdir();
    a = build(dir, 'gcc', 'layout.c', 'base', true);
    b = build(dir, 'gcc', 'layout.c', 'INSERT');
    c = path.join(dir, 'INSERT+CODE_ONLY');
    fs.mkdirSync(c);
    execFileSync('gcc', [...FLAGS, '-DINSERT', '-DCODE_ONLY', '-c', path.join(ROOT, 'fixtures/src/layout.c'), '-o', path.join(c, 'layout.o')]);
    t = await start(a);
  });

  test('mkpatch --from B --to C --target A is refused (PATCH_BUILD_MISMATCH), naming the object and the first function that differs; nothing written, the process untouched', async () => {
    const line = await t.next(/^sum=/);
    const out = path.join(dir, 'bc.so');
    const m = await hotload(['mkpatch', '--from', b, '--to', c, '--target', path.join(a, 'layout'), '-o', out, '--json']);
    expect(m.json.error.code).toBe('PATCH_BUILD_MISMATCH');
    expect(m.code).toBe(6);
    expect(m.json.error.message).toMatch(/are not the build .*layout was linked from \(the first difference: layout\.o, function or datum (open_session|session_value)\)/);
    expect(m.json.error.details[0]).toMatch(/^layout\.o: (open_session|session_value): /);
    expect(m.json.error.hint).toMatch(/--from the object files of the build the process runs/);
    expect(fs.existsSync(out)).toBe(false);
    expect((await hotload(['status', String(t.pid)])).stdout).toMatch(/no patch applied/);
    expect(await t.next(/^sum=/)).toBe(line);
  });

  test('diff B C --target A says the same; without --target it compares B and C only; A -> C stays refused for its layout', async () => {
    const d = await hotload(['diff', b, c, '--target', path.join(a, 'layout'), '--json']);
    expect(d.json.error.code).toBe('PATCH_BUILD_MISMATCH');
    expect(d.json.error.details[0]).toMatch(/^layout\.o: (open_session|session_value): /);
    const plain = await hotload(['diff', b, c, '--json']);
    expect(plain.code).toBe(0);
    expect(plain.json.changed).toEqual(['session_value']);
    const ac = await hotload(['mkpatch', '--from', a, '--to', c, '--target', path.join(a, 'layout'), '-o', path.join(dir, 'ac.so'), '--json']);
    expect(ac.json.error.code).toBe('UNPATCHABLE');
  });

  test('the right --from is accepted, and diff --target on it is the plain diff', async () => {
    const v = build(dir, 'gcc', 'layout.c', 'CODE_ONLY');
    const d = await hotload(['diff', a, v, '--target', path.join(a, 'layout'), '--json']);
    expect(d.code).toBe(0);
    expect(d.json.changed).toEqual(['session_value']);
    const m = await hotload(['mkpatch', '--from', a, '--to', v, '--target', path.join(a, 'layout'), '-o', path.join(dir, 'ok.so')]);
    expect(m.stderr).toBe('');
    expect(m.code).toBe(0);
  });
});
