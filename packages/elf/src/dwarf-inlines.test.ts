// The DWARF reader behind `hotload diff`'s inlining labels, on the fixture
// built from fixtures/src/diff.c (an object file, with relocated debug
// sections, and a linked program), on the Lua objects if built, and on a
// file with no debug information.
import * as fs from 'fs';
import * as path from 'path';
import { ElfFile } from './read-elf';
import { inlinedFunctions } from './dwarf-inlines';

const D = path.resolve(__dirname, '../../../fixtures/build/diff');

test.each(['diff.o', 'diff'])('%s: user_of_tiny has tiny inlined, main has loop, static names keyed by file too', (file) => {
  const m = inlinedFunctions(ElfFile.open(path.join(D, 'base', file)));
  expect([...(m.get('user_of_tiny') ?? [])]).toEqual(['tiny']);
  expect(m.get('main')?.has('loop')).toBe(true);
  expect(m.get('main@diff.c')?.has('loop')).toBe(true);
  expect(m.has('constant')).toBe(false); // inlines nothing
});

test('no debug information: nothing, and no error', () => {
  const crt = ['/usr/lib/x86_64-linux-gnu/crt1.o', '/usr/lib/x86_64-linux-gnu/Scrt1.o'].find((f) => fs.existsSync(f))!;
  expect(inlinedFunctions(ElfFile.open(crt)).size).toBe(0);
});
