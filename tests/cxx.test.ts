// A C++ program of several files, with an inline function and a template
// instance that both files use (fixtures/src/cxx), built with the pads by g++
// and by clang++. g++ 12 alone cannot link it (its patchable-entry sections
// point into COMDAT copies the linker drops); `hotload c++` as CXX can. Each
// build then runs, passes `hotload check`, and takes a patch of the inline
// function while it runs.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { BIN, ROOT, Target, hotload, tmpdir } from './helpers';

const SRC = path.join(ROOT, 'fixtures/src/cxx');
const FLAGS = ['-O2', '-g', '-fpatchable-function-entry=16,14', '-ffunction-sections', '-fdata-sections'];

/** Compile each file with `cxx` (a command and its first arguments) and link: the program's path, or the link's error. */
function build(dir: string, cxx: string[]): { prog?: string; error?: string } {
  fs.mkdirSync(dir, { recursive: true });
  for (const f of ['count.cpp', 'main.cpp']) {
    const r = spawnSync(cxx[0], [...cxx.slice(1), ...FLAGS, '-MMD', '-c', path.join(SRC, f), '-o', path.join(dir, f.replace('.cpp', '.o'))], { encoding: 'utf8' });
    if (r.status !== 0) return { error: r.stderr };
  }
  const prog = path.join(dir, 'prog');
  const l = spawnSync(cxx[0], [...cxx.slice(1), path.join(dir, 'count.o'), path.join(dir, 'main.o'), '-o', prog], { encoding: 'utf8' });
  return l.status === 0 ? { prog } : { error: l.stderr };
}

const hotloadCxx = [process.execPath, BIN, 'c++'];

describe.each([
  ['g++ through hotload c++', hotloadCxx],
  ['g++ through hotload launch (a build system\'s compiler launcher)', [process.execPath, BIN, 'launch', 'g++']],
  ['clang++', ['clang++']],
])('built with %s', (_name, cxx) => {
  let prog: string;
  let dir: string;
  beforeAll(() => {
    dir = tmpdir();
    const b = build(dir, cxx);
    if (!b.prog) throw new Error(`the build failed:\n${b.error}`);
    prog = b.prog;
  });

  test('links, runs, every function of the program has its pad, and dependency files name the objects', async () => {
    const c = await hotload(['check', prog]);
    expect(c.stdout).toMatch(/ok: every function can be patched/);
    const idx = await hotload(['index', prog, '--json']);
    const names = idx.json.functions.filter((f: { status: string }) => f.status === 'patchable').map((f: { name: string }) => f.name);
    expect(names).toEqual(expect.arrayContaining(['main', '_Z11count_namesi', '_Z10make_namesB5cxx11i']));
    // C++ names as people write them, the mangled one kept in --json.
    expect(idx.json.functions.find((f: { name: string }) => f.name === '_Z11count_namesi').demangled).toBe('count_names(int)');
    expect((await hotload(['index', prog])).stdout).toMatch(/^make_names\[abi:cxx11\]\(int\)\s+0x/m);
    expect(fs.readFileSync(path.join(dir, 'count.d'), 'utf8')).toMatch(new RegExp(`^${path.join(dir, 'count.o').replace(/[/.]/g, '\\$&')}: .*count\\.cpp .*names\\.h`, 's'));
  });

  test('the inline function of the header is patched while the program runs; both files\' callers take it', async () => {
    const t = Target.start(prog);
    try {
      await t.waitFor(/^names 3 n2 count 2$/);
      const p = path.join(dir, 'p.cpp');
      // The new function (C linkage, so the header can name it) takes the place of the mangled old one.
      fs.writeFileSync(p, '#include <hotload.h>\n#include <string>\n#include <vector>\n#pragma GCC diagnostic ignored "-Wreturn-type-c-linkage"\nextern "C" std::vector<std::string> new_names(int n) { std::vector<std::string> v; for (int i = 0; i <= n; i++) v.push_back("x" + std::to_string(i)); return v; }\nextern "C" { HOTLOAD_REPLACE(_Z10make_namesB5cxx11i, new_names); }\n');
      const m = await hotload(['mkpatch', p, '--target', prog, '-o', path.join(dir, 'p.so'), '--cc', cxx[0] === 'clang++' ? 'clang++' : 'g++']);
      expect(m.stderr).toBe('');
      expect(m.code).toBe(0);
      const a = await hotload(['attach', String(t.pid), path.join(dir, 'p.so')]);
      expect(a.code).toBe(0);
      expect(a.stdout).toMatch(/^  make_names\[abi:cxx11\]\(int\) 0x/m);
      await t.next(/^names 4 x3 count 3$/);
      const st = await hotload(['status', String(t.pid), '--json']);
      expect(st.one.functions[0]).toMatchObject({ name: '_Z10make_namesB5cxx11i', demangled: 'make_names[abi:cxx11](int)' });
      t.expectHealthy();
    } finally {
      await t.stop();
    }
  });
});

test('hotload c++ passes a link, and anything but a single compile, straight to the compiler', () => {
  const r = spawnSync(process.execPath, [BIN, 'c++', '--version'], { encoding: 'utf8' });
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/g\+\+/);
  const bad = spawnSync(process.execPath, [BIN, 'c++', '-c', path.join(SRC, 'no-such.cpp'), '-fpatchable-function-entry=16,14'], { encoding: 'utf8' });
  expect(bad.status).not.toBe(0);
  expect(bad.stderr).toMatch(/no-such\.cpp/);
});

test('clang++: a constructor edit (C1 an alias of C2, one section) is patched from a rebuild, not refused', async () => {
  const dir = tmpdir();
  for (const [v, scale] of [['a', 10], ['b', 20]] as const) {
    fs.mkdirSync(path.join(dir, v));
    const r = spawnSync('clang++', [...FLAGS, `-DSCALE=${scale}`, '-c', path.join(SRC, 'user.cpp'), '-o', path.join(dir, v, 'user.o')], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
  }
  expect(spawnSync('nm', [path.join(dir, 'a', 'user.o')], { encoding: 'utf8' }).stdout).toMatch(/([0-9a-f]+) T _ZN4UserC1Ei\n\1 T _ZN4UserC2Ei/); // aliases
  const prog = path.join(dir, 'a', 'prog');
  expect(spawnSync('clang++', [path.join(dir, 'a', 'user.o'), '-o', prog]).status).toBe(0);
  const t = Target.start(prog);
  try {
    await t.waitFor(/^score 30$/);
    const m = await hotload(['mkpatch', '--from', path.join(dir, 'a'), '--to', path.join(dir, 'b'), '--target', prog, '-o', path.join(dir, 'p.so'), '--json']);
    expect(m.stderr).toBe('');
    expect(m.code).toBe(0);
    expect(m.json.replaced).toHaveLength(1); // one function, two names
    expect((await hotload(['attach', String(t.pid), path.join(dir, 'p.so')])).code).toBe(0);
    await t.next(/^score 60$/);
    t.expectHealthy();
  } finally {
    await t.stop();
  }
});

test('a hand-written C++ patch names the old function as C++ does and defines the new one in C++', async () => {
  const dir = tmpdir();
  const b = build(path.join(dir, 'b'), ['clang++']);
  const t = Target.start(b.prog!);
  try {
    await t.waitFor(/^names 3 n2 count 2$/);
    const p = path.join(dir, 'p.cpp');
    fs.writeFileSync(p, '#include <hotload.h>\nint count_names_v2(int n) { return n * 100; }\nHOTLOAD_REPLACE_CXX("count_names(int)", count_names_v2);\n');
    const m = await hotload(['mkpatch', p, '--target', b.prog!, '-o', path.join(dir, 'p.so'), '--cc', 'clang++']);
    expect(m.stderr).toBe('');
    expect(m.code).toBe(0);
    const a = await hotload(['attach', String(t.pid), path.join(dir, 'p.so'), '--json']);
    expect(a.code).toBe(0);
    expect(a.one.functions[0]).toMatchObject({ name: '_Z11count_namesi', demangled: 'count_names(int)' });
    await t.next(/^names 3 n2 count 200$/);
    const st = await hotload(['status', String(t.pid), '--json']);
    expect(st.one.functions[0].stack[0].function).toBe('_Z14count_names_v2i'); // the new function by its own (C++) symbol
    expect((await hotload(['revert', String(t.pid), path.join(dir, 'p.so')])).code).toBe(0);
    await t.next(/^names 3 n2 count 2$/);
    // A name that is not there: refused with what to write instead.
    fs.writeFileSync(p, '#include <hotload.h>\nint v3(int n) { return n; }\nHOTLOAD_REPLACE_CXX("count_names(long)", v3);\n');
    const bad = await hotload(['mkpatch', p, '--target', b.prog!, '-o', path.join(dir, 'q.so'), '--cc', 'clang++']);
    expect(bad.code).toBe(4);
    expect(bad.stderr).toMatch(/count_names\(long\): no such function/);
  } finally {
    await t.stop();
  }
});

test('a hand-written C++ patch may define the member itself, as the program\'s source does (HOTLOAD_REDEFINE_CXX); patches of it stack and revert in order; a name the patch does not define is refused', async () => {
  const dir = tmpdir();
  const prog = path.join(ROOT, 'fixtures/build/cxx/base/cxx'); // Greeter::greet(int) returns x + name.size() + 1
  const patch = (k: number) => {
    const p = path.join(dir, `greet${k}.cpp`);
    fs.writeFileSync(p, `#include <hotload.h>\n#include <string>\nstruct Greeter {\n  std::string name;\n  int greet(int x);\n};\nint Greeter::greet(int x) { return x + (int)name.size() + ${k}; }\nHOTLOAD_REDEFINE_CXX("Greeter::greet(int)");\n`);
    return p;
  };
  const t = Target.start(prog);
  try {
    await t.waitFor(/^greet=5 /);
    for (const [k, cc] of [[1000, 'g++'], [2000, 'clang++']] as const) {
      const m = await hotload(['mkpatch', patch(k), '--target', prog, '-o', path.join(dir, `p${k}.so`), '--cc', cc]);
      expect(m.stderr).toBe('');
      expect(m.stdout).toMatch(/Greeter::greet\(int\) \(redefined\)/);
      expect((await hotload(['attach', String(t.pid), path.join(dir, `p${k}.so`)])).code).toBe(0);
      await t.next(new RegExp(`^greet=${k + 4} `));
    }
    const st = await hotload(['status', String(t.pid), '--json']);
    expect(st.one.functions[0].stack.map((e: { function: string }) => e.function)).toEqual(['_ZN7Greeter5greetEi', '_ZN7Greeter5greetEi']);
    expect((await hotload(['revert', String(t.pid), path.join(dir, 'p2000.so')])).code).toBe(0);
    await t.next(/^greet=1004 /);
    expect((await hotload(['revert', String(t.pid), path.join(dir, 'p1000.so')])).code).toBe(0);
    await t.next(/^greet=5 /);

    // The patch names a member it does not define: refused, saying how to define it.
    const bad = path.join(dir, 'bad.cpp');
    fs.writeFileSync(bad, '#include <hotload.h>\nint helper(int x) { return x; }\nHOTLOAD_REDEFINE_CXX("Greeter::greet(int)");\n');
    const r = await hotload(['mkpatch', bad, '--target', prog, '-o', path.join(dir, 'bad.so'), '--cc', 'g++']);
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/HOTLOAD_REDEFINE_CXX\("Greeter::greet\(int\)"\): the patch defines no function of that name \(define it in the patch as the program's source does/);
    expect(fs.existsSync(path.join(dir, 'bad.so'))).toBe(false);
    t.expectHealthy();
  } finally {
    await t.stop();
  }
});

describe('g++ -O0: this-adjusting thunks, and names with ABI tags', () => {
  // C overrides B::b; a call through a B* enters a thunk (`sub $16,%rdi; jmp
  // C::b`) that g++ emits without a pad at -O0. S::name returns std::string,
  // so its symbol carries the tag [abi:cxx11] that source never writes.
  const SRC = `#include <cstdio>
#include <string>
#include <unistd.h>
struct A { virtual ~A(); virtual int a(); int x = 1; };
struct B { virtual ~B(); virtual int b(); int y = 2; };
struct C : A, B { ~C() override; int b() override; int c = 3; };
struct S { std::string name(bool x); };
A::~A() {} int A::a() { return 1; } B::~B() {} int B::b() { return 2; }
C::~C() {}
int C::b() { return c; }
std::string S::name(bool x) { return x ? "old" : "none"; }
int main() {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  C *c = new C; B *p = c; S s;
  for (;;) { printf("b=%d name=%s\\n", p->b(), s.name(true).c_str()); usleep(20000); }
}
`;
  let dir: string;
  let prog: string;
  beforeAll(() => {
    dir = tmpdir();
    fs.writeFileSync(path.join(dir, 'u.cc'), SRC);
    const r = spawnSync('g++', ['-O0', '-g', '-fpatchable-function-entry=16,14', 'u.cc', '-o', 'u'], { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
    prog = path.join(dir, 'u');
  });

  test('hotload check passes: a thunk without a pad that jumps to a padded function is covered by it (index: status thunk, "to C::b()")', async () => {
    const c = await hotload(['check', prog]);
    expect(c.stderr).toBe('');
    expect(c.code).toBe(0);
    expect(c.stdout).toMatch(/\d+ thunk/);
    const idx = await hotload(['index', prog]);
    expect(idx.stdout).toMatch(/^non-virtual thunk to C::b\(\)\s+0x[0-9a-f]+\s+\d+\s+thunk\s+to C::b\(\)$/m);
  });

  test('C::b patched: the call through B* (the thunk) takes it; S::name(bool) found without its [abi:cxx11] tag, by REPLACE_CXX and REDEFINE_CXX', async () => {
    const t = Target.start(prog);
    try {
      await t.waitFor(/^b=3 name=old$/);
      fs.writeFileSync(path.join(dir, 'b.cc'), '#include <hotload.h>\nstruct A { virtual ~A(); virtual int a(); int x; };\nstruct B { virtual ~B(); virtual int b(); int y; };\nstruct C : A, B { ~C() override; int b() override; int c; };\nint C::b() { return c + 1000; }\nHOTLOAD_REDEFINE_CXX("C::b()");\n');
      fs.writeFileSync(path.join(dir, 'n.cc'), '#include <hotload.h>\n#include <string>\nstruct S { std::string name(bool x); };\nstd::string S::name(bool x) { return x ? "new" : "none"; }\nHOTLOAD_REDEFINE_CXX("S::name(bool)");\n');
      fs.writeFileSync(path.join(dir, 'r.cc'), '#include <hotload.h>\n#include <string>\nstruct S;\nstatic std::string name_v3(S *, bool x) { return x ? "v3" : "none"; }\nHOTLOAD_REPLACE_CXX("S::name(bool)", name_v3);\n');
      for (const p of ['b', 'n', 'r']) {
        const m = await hotload(['mkpatch', path.join(dir, `${p}.cc`), '--target', prog, '-o', path.join(dir, `${p}.so`), '--cc', 'g++']);
        expect([p, m.stderr]).toEqual([p, '']);
        expect((await hotload(['attach', String(t.pid), path.join(dir, `${p}.so`)])).code).toBe(0);
      }
      await t.next(/^b=1003 name=v3$/);
      t.expectHealthy();
    } finally {
      await t.stop();
    }
  });
});
