// Which debug level a unit was built with, judged as the compiler would: the
// last level option wins; and the types a real -O2 -g1 -g object holds.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ElfFile } from './read-elf';
import { debugLevel, typeLayouts } from './dwarf-types';

test('the last level option is in force', () => {
  expect(debugLevel('GNU C17 12.2.0 -mtune=generic -march=x86-64 -O2 -g1 -g').level).toBe(2);
  expect(debugLevel('GNU C17 12.2.0 -O2 -g -g1').level).toBe(1);
  expect(debugLevel('GNU C17 12.2.0 -O2 -g1').option).toBe('-g1');
  expect(debugLevel('GNU C17 12.2.0 -O2 -ggdb3').level).toBe(3);
  expect(debugLevel('GNU C17 12.2.0 -g1 -gdwarf-4').level).toBe(1); // a format, not a level
  expect(debugLevel('GNU C17 12.2.0 -gdwarf-4').level).toBe(2);
  expect(debugLevel('GNU C17 12.2.0 -O2').level).toBe(-1);
  expect(debugLevel('clang version 14 -gline-tables-only').level).toBe(1);
});

test('an object compiled -O2 -g1 -g has its types; -O2 -g -g1 is said to lack them', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-glevel-'));
  try {
    fs.writeFileSync(path.join(dir, 'a.c'), 'struct s { int a; long b; };\nlong f(struct s *p) { return p->a + p->b; }\n');
    const build = (flags: string[]) => {
      const o = path.join(dir, `${flags.join('')}.o`);
      execFileSync('gcc', ['-O2', ...flags, '-c', path.join(dir, 'a.c'), '-o', o]);
      return typeLayouts(ElfFile.open(o));
    };
    const full = build(['-g1', '-g']);
    expect(full.lacking).toBeUndefined();
    expect(full.units[0].layouts.has('struct s')).toBe(true);
    expect(build(['-g', '-g1']).lacking).toBe('built with -g1, which leaves out the types');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
