// One build tree holding a program's objects and a module's (a plug-in the
// program dlopens): mkpatch --from/--to on the whole tree takes, per target,
// only the objects that belong to it (most of their functions are the
// target's), and says which it left out.
import { execFileSync } from 'child_process';
import * as path from 'path';
import * as fs from 'fs';
import { BIN, Target, hotload, tmpdir, writeModuleTree } from './helpers';

const CFLAGS = ['-O2', '-g', '-fpatchable-function-entry=16,14', '-ffunction-sections', '-fdata-sections', '-fPIC'];
/** The tree: app/main.c, app/util.c (the program), mod/mod.c (the module); compiled, and linked in `link`. */
function tree(dir: string, appK: number, modK: number, link: boolean): void {
  for (const f of writeModuleTree(dir, appK, modK)) execFileSync('gcc', [...CFLAGS, '-c', f, '-o', f.replace(/\.c$/, '.o')], { cwd: dir });
  if (!link) return;
  execFileSync('gcc', ['app/main.o', 'app/util.o', '-o', 'app/prog', '-ldl'], { cwd: dir });
  execFileSync('gcc', ['-shared', 'mod/mod.o', '-o', 'mod/mod.so'], { cwd: dir });
}

test('a patch per target from one tree: the program\'s objects for the program, the module\'s for the module', async () => {
  const dir = tmpdir();
  const old = path.join(dir, 'old');
  const now = path.join(dir, 'new');
  tree(old, 1, 2, true);
  tree(now, 10, 20, false);
  const t = Target.start(path.join(old, 'app/prog'), [path.join(old, 'mod/mod.so')]);
  try {
    await t.waitFor(/^app 1 mod 2$/);
    const p = await hotload(['mkpatch', '--from', old, '--to', now, '--target', path.join(old, 'app/prog'), '-o', path.join(dir, 'app.so'), '--json']);
    expect(p.stderr).toBe('');
    expect(p.json.replaced).toEqual(['app_value']);
    expect(p.json.otherModules).toEqual(['mod/mod.o']);
    const m = await hotload(['mkpatch', '--from', old, '--to', now, '--target', path.join(old, 'mod/mod.so'), '-o', path.join(dir, 'mod.so'), '--json']);
    expect(m.stderr).toBe('');
    expect(m.json.replaced).toEqual(['mod_value']);
    expect(m.json.otherModules.sort()).toEqual(['app/main.o', 'app/util.o']);
    expect((await hotload(['attach', String(t.pid), path.join(dir, 'app.so')])).code).toBe(0);
    await t.next(/^app 10 mod 2$/);
    expect((await hotload(['attach', String(t.pid), path.join(dir, 'mod.so')])).code).toBe(0);
    await t.next(/^app 10 mod 20$/);
    t.expectHealthy();
  } finally {
    await t.stop();
  }
});

describe.each([['clang++'], ['g++']])('C++ with %s: an inline function of a header the program and the module share, edited', (cxx) => {
  // Each object keeps its own (weak) copy of the inline function. The
  // module's object shares it with the program, but it is the module's: most
  // of its own (strong) functions are not the program's.
  const FILES = (k: number): Record<string, string> => ({
    'inc/shared.h': `__attribute__((noinline)) inline int shared_inline(int x) { return x + ${k}; }\n`,
    'app/a.cc': '#include "../inc/shared.h"\n__attribute__((noinline)) int a_value() { return shared_inline(1); }\n',
    'app/b.cc': '#include "../inc/shared.h"\n__attribute__((noinline)) int b_value() { return shared_inline(2); }\n',
    'app/main.cc':
      '#include <cstdio>\n#include <dlfcn.h>\n#include <unistd.h>\nint a_value(); int b_value();\n' +
      'int main(int, char **argv) {\n  setvbuf(stdout, nullptr, _IOLBF, 0);\n  void *h = dlopen(argv[1], RTLD_NOW); if (!h) return 1;\n' +
      '  int (*mod_value)() = (int (*)())dlsym(h, "mod_value");\n  for (;;) { printf("a %d b %d mod %d\\n", a_value(), b_value(), mod_value()); usleep(20000); }\n}\n',
    'mod/m.cc': '#include "../inc/shared.h"\nextern "C" __attribute__((noinline)) int mod_value() { return shared_inline(3); }\nextern "C" int mod_other() { return 0; }\n',
  });
  const FLAGS = ['-O2', '-g', '-fpatchable-function-entry=16,14', '-ffunction-sections', '-fdata-sections', '-fPIC'];
  function tree(dir: string, k: number, link: boolean) {
    for (const [f, src] of Object.entries(FILES(k))) {
      fs.mkdirSync(path.join(dir, path.dirname(f)), { recursive: true });
      fs.writeFileSync(path.join(dir, f), src);
    }
    for (const f of ['app/a.cc', 'app/b.cc', 'app/main.cc', 'mod/m.cc']) execFileSync(cxx === 'g++' ? process.execPath : cxx, [...(cxx === 'g++' ? [BIN, 'c++'] : []), ...FLAGS, '-c', f, '-o', f.replace(/\.cc$/, '.o')], { cwd: dir });
    if (!link) return;
    execFileSync(cxx === 'g++' ? process.execPath : cxx, [...(cxx === 'g++' ? [BIN, 'c++'] : []), 'app/a.o', 'app/b.o', 'app/main.o', '-o', 'app/prog', '-ldl'], { cwd: dir });
    execFileSync(cxx === 'g++' ? process.execPath : cxx, [...(cxx === 'g++' ? [BIN, 'c++'] : []), '-shared', 'mod/m.o', '-o', 'mod/m.so'], { cwd: dir });
  }

  test('each target\'s patch replaces the inline once, from its own objects; one jump per entry; every caller takes it', async () => {
    const dir = tmpdir();
    const old = path.join(dir, 'old');
    const now = path.join(dir, 'new');
    tree(old, 10, true);
    tree(now, 1000, false);
    const t = Target.start(path.join(old, 'app/prog'), [path.join(old, 'mod/m.so')]);
    try {
      await t.waitFor(/^a 11 b 12 mod 13$/);
      const p = await hotload(['mkpatch', '--from', old, '--to', now, '--target', path.join(old, 'app/prog'), '-o', path.join(dir, 'app.so'), '--json']);
      expect(p.stderr).toBe('');
      expect(p.json.replaced).toEqual(['_Z13shared_inlinei']);
      expect(p.json.otherModules).toEqual(['mod/m.o']);
      const m = await hotload(['mkpatch', '--from', old, '--to', now, '--target', path.join(old, 'mod/m.so'), '-o', path.join(dir, 'mod.so'), '--json']);
      expect(m.stderr).toBe('');
      expect(m.json.replaced).toEqual(['_Z13shared_inlinei']);
      expect(m.json.otherModules.sort()).toEqual(['app/a.o', 'app/b.o', 'app/main.o']);
      const a = await hotload(['attach', String(t.pid), path.join(dir, 'app.so'), '--json']);
      expect(a.code).toBe(0);
      expect(a.one.functions).toHaveLength(1);
      await t.next(/^a 1001 b 1002 mod 13$/);
      expect((await hotload(['attach', String(t.pid), path.join(dir, 'mod.so')])).code).toBe(0);
      await t.next(/^a 1001 b 1002 mod 1003$/);
      const st = await hotload(['status', String(t.pid), '--json']);
      expect(st.one.functions.map((f: { stack: unknown[] }) => f.stack.length)).toEqual([1, 1]);
      t.expectHealthy();
    } finally {
      await t.stop();
    }
  });
});
