// One build tree holding a program's objects and a module's (a plug-in the
// program dlopens): mkpatch --from/--to on the whole tree takes, per target,
// only the objects that belong to it (most of their functions are the
// target's), and says which it left out.
import { execFileSync } from 'child_process';
import * as path from 'path';
import { Target, hotload, tmpdir, writeModuleTree } from './helpers';

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
