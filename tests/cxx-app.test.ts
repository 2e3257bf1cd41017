// A C++ application of several files (fixtures/src/cxxapp: a class hierarchy
// with virtual functions and constructors, a template and an inline function
// in a header, exceptions, a plug-in it dlopens), built by its own Makefile
// with g++ through `hotload c++` and with clang++, and edited while it runs
// under two `hotload watch`es: one on the program, one on the plug-in.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { BIN, ROOT, Target, edit, tmpdir } from './helpers';
import { Watch } from './watch-client';

const MAKEFILE = `CXXFLAGS = -O2 -g -fpatchable-function-entry=16,14 -ffunction-sections -fdata-sections -fPIC -MMD
all: app plugin.so
app: main.o shapes.o
\t$(CXX) main.o shapes.o -o app -ldl
plugin.so: plugin.o
\t$(CXX) -shared plugin.o -o plugin.so
%.o: %.cpp
\t$(CXX) $(CXXFLAGS) -c $< -o $@
-include *.d
`;

const values = (line: string) => Object.fromEntries([...line.matchAll(/(\w+)=(-?\d+)/g)].map((m) => [m[1], Number(m[2])]));

describe.each([
  ['g++ through hotload c++', `${process.execPath} ${BIN} c++`],
  ['clang++', 'clang++'],
])('built with %s', (_name, cxx) => {
  test('watched: a constructor (throwing through patched code), a virtual method, a method of the plug-in, a template and an inline function of the header go live one save at a time', async () => {
    const dir = tmpdir('hotload-cxxapp-');
    for (const f of fs.readdirSync(path.join(ROOT, 'fixtures/src/cxxapp'))) fs.copyFileSync(path.join(ROOT, 'fixtures/src/cxxapp', f), path.join(dir, f));
    fs.writeFileSync(path.join(dir, 'Makefile'), `CXX = ${cxx}\n${MAKEFILE}`);
    const env = { ...process.env };
    delete env.MAKEFLAGS;
    delete env.MAKELEVEL;
    execFileSync('make', ['-s'], { cwd: dir, env });
    const t = Target.start(path.join(dir, 'app'), [path.join(dir, 'plugin.so')]);
    const app = new Watch(dir, ['--pid', String(t.pid), 'main.cpp', 'shapes.cpp', 'shapes.h']);
    const plugin = new Watch(dir, ['--pid', String(t.pid), '--target', path.join(dir, 'plugin.so'), 'plugin.cpp']);
    try {
      expect(values(await t.waitFor(/^area=/))).toEqual({ area: 9, side: 3, twice: 6, bonus: 4, greet: 9, caught: 1 });
      await app.event('ready', 0);
      await plugin.event('ready', 0);
      const next = async () => values((await t.fresh(/^area=/))[0]);

      // The constructor: one function with two names (C1/C2), named once.
      let n = app.events.length;
      edit(path.join(dir, 'shapes.cpp'), 'side(s)', 'side(s + 1)');
      let e = await app.event('patched', n);
      expect(e.changed).toEqual([expect.stringMatching(/^_ZN6SquareC[12]Ei$/)]);
      expect(e.compiled).toEqual(['shapes.o']);
      // The compiler's own time is part of the build step's (which also waits for the last relink and make's answers).
      expect(e.compilerMs).toBeGreaterThan(0);
      expect(e.compilerMs).toBeLessThanOrEqual(e.buildMs as number);
      expect(await next()).toEqual({ area: 16, side: 4, twice: 6, bonus: 4, greet: 9, caught: 1 });

      // A virtual method, called through the vtable.
      await app.idle();
      n = app.events.length;
      edit(path.join(dir, 'shapes.cpp'), 'return side * side;', 'return side * side * 10;');
      e = await app.event('patched', n);
      expect(e.changed).toEqual(['_ZNK6Square4areaEv']);
      expect((e.demangled as Record<string, string>)['_ZNK6Square4areaEv']).toBe('Square::area() const');
      expect((await next()).area).toBe(160);

      // The plug-in's own method, by the watch on the plug-in.
      await app.idle();
      n = plugin.events.length;
      edit(path.join(dir, 'plugin.cpp'), 'return x + twice(x);', 'return x * 100 + twice(x);');
      e = await plugin.event('patched', n);
      expect(e.changed).toEqual(['_ZNK7Greeter5greetEi']);
      expect(e.compiled).toEqual(['plugin.o']);
      expect((await next()).greet).toBe(306);

      // The header: a template instance and an inline function, in every object that includes it.
      await plugin.idle();
      n = app.events.length;
      edit(path.join(dir, 'shapes.h'), 'return x * 2;', 'return x * 3;');
      edit(path.join(dir, 'shapes.h'), 'return x + 1;', 'return x + 100;');
      e = await app.event('patched', n);
      expect(e.changed).toEqual(expect.arrayContaining(['_Z5bonusi', '_Z5twiceIiET_S0_']));
      expect((e.compiled as string[]).sort()).toEqual(['main.o', 'plugin.o', 'shapes.o']);
      // The program's copies changed; the plug-in keeps its own copy of twice until its watch patches it.
      expect(await next()).toEqual({ area: 160, side: 4, twice: 9, bonus: 103, greet: 306, caught: 1 });
      t.expectHealthy();
    } finally {
      await app.stop();
      await plugin.stop();
      await t.stop();
    }
  }, 180000);
});
