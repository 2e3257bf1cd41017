// The pad-index pass on fixtures built by gcc and clang in every variant, and
// `post` on copies of them.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ElfFile } from './read-elf';
import { INDEX_SECTION, PadFunction, findFunction, indexPads, readRecordedIndex, unpatchable } from './index-pads';
import { postFile } from './post-elf';

const FIX = path.resolve(__dirname, '../../../fixtures/build');
const entries = (file: string) => {
  const m = /__patchable_function_entries\s+PROGBITS\s+[0-9a-f]+ [0-9a-f]+ ([0-9a-f]+)/.exec(spawnSync('readelf', ['-SW', file], { encoding: 'utf8' }).stdout);
  return m ? parseInt(m[1], 16) / 8 : 0;
};
const byName = (fns: PadFunction[], n: string) => fns.find((f) => f.name === n || f.aliases.includes(n));

const GCC = ['pads-O0', 'pads-O2', 'pads-O2-cet', 'pads-O2-nopie', 'pads-O0-nopie-cet', 'libpads.so'];
const CLANG = ['pads-clang-O2', 'pads-clang-O2-cet'];

describe.each([...GCC, ...CLANG])('index of %s', (name) => {
  const file = path.join(FIX, name);
  const idx = indexPads(ElfFile.open(file));
  const cet = name.includes('cet');

  test('finds every pad in __patchable_function_entries', () => {
    expect(idx.padEntries).toBe(entries(file));
    expect(idx.functions.filter((f) => f.pad !== undefined)).toHaveLength(idx.padEntries);
  });

  test('public, static and aliased functions are patchable, with their pad 14 bytes before the entry', () => {
    for (const n of ['pads_value', 'pads_checked', 'pads_all']) {
      const f = byName(idx.functions, n)!;
      expect(f.status).toBe('patchable');
      expect(f.pad).toBe(f.address - 14);
      expect(f.endbr).toBe(cet && f.name !== 'bump');
    }
    expect(byName(idx.functions, 'pads_value')!.aliases).toContain('pads_value_alias');
    const bump = byName(idx.functions, 'bump')!;
    expect(bump.local).toBe(true);
    expect(bump.status).toBe('patchable');
  });

  test('a function built without the flag is no-pad, with its reason, and fails check', () => {
    const f = byName(idx.functions, 'nopad_twice')!;
    expect(f.status).toBe('no-pad');
    expect(f.reason).toMatch(/without -fpatchable-function-entry/);
    expect(unpatchable(idx).map((x) => x.name)).toEqual(['nopad_twice']);
  });

  if (name.includes('O2') && !name.includes('clang')) {
    test('gcc clones are flagged, and their originals know of them', () => {
      const clones = idx.functions.filter((f) => f.status === 'clone').map((f) => f.name).sort();
      expect(clones).toEqual(['first_field.constprop.0.isra.0', 'lookup.part.0', 'scale.constprop.0']);
      expect(byName(idx.functions, 'scale.constprop.0')!.reason).toMatch(/patching scale does not change them/);
      const cold = byName(idx.functions, 'pads_checked.cold')!;
      expect(cold.status).toBe('part');
      expect(cold.origin).toBe('pads_checked');
    });
  }
});

test('a pad whose bytes were changed is reported as modified', () => {
  const file = path.join(FIX, 'pads-O2');
  const buf = Buffer.from(fs.readFileSync(file));
  const elf = new ElfFile(file, buf);
  const f = findFunction(indexPads(elf), 'pads_value')!;
  buf[elf.vaddrToOffset(f.pad! + 3)!] = 0xcc;
  const g = findFunction(indexPads(new ElfFile(file, buf)), 'pads_value')!;
  expect(g.status).toBe('modified');
  expect(g.reason).toMatch(/not NOPs/);
});

test("glibc's atexit and pthread_atfork stubs (libc_nonshared.a, never padded) are start-up code, not the user's unpatchable functions", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-atexit-'));
  try {
    fs.writeFileSync(path.join(dir, 'a.c'), '#include <stdlib.h>\n#include <pthread.h>\nstatic void bye(void) {}\nint main(void) { pthread_atfork(0, 0, bye); return atexit(bye); }\n');
    const r = spawnSync('gcc', ['-O2', '-fpatchable-function-entry=16,14', '-o', path.join(dir, 'a'), path.join(dir, 'a.c')], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const idx = indexPads(ElfFile.open(path.join(dir, 'a')));
    expect(byName(idx.functions, 'atexit')!.status).toBe('startup');
    expect(byName(idx.functions, '__pthread_atfork')!.status).toBe('startup');
    expect(unpatchable(idx)).toEqual([]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

describe('post', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-post-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test.each(['pads-O2', 'pads-O2-cet', 'pads-O2-nopie', 'libpads.so', 'pads-clang-O2'])('%s: entries become 66 90, the index is recorded, a second run changes nothing', (name) => {
    const copy = path.join(dir, name);
    fs.copyFileSync(path.join(FIX, name), copy);
    const before = indexPads(ElfFile.open(copy));
    const r = postFile(copy);
    expect(r.changed).toBe(true);
    // clang already emits the 2-byte `66 90`; gcc emits `90 90`.
    expect(r.rewritten).toBe(before.functions.filter((f) => f.pad !== undefined && !f.posted).length);
    if (!name.includes('clang')) expect(r.rewritten).toBe(before.padEntries);
    const elf = ElfFile.open(copy);
    const after = indexPads(elf);
    expect(after.functions.filter((f) => f.pad !== undefined).every((f) => f.posted)).toBe(true);
    for (const f of after.functions.filter((x) => x.pad !== undefined)) {
      const off = elf.vaddrToOffset(f.address + (f.endbr ? 4 : 0))!;
      expect(elf.buf.subarray(off, off + 2).toString('hex')).toBe('6690');
    }
    // Only the entry bytes differ in the loaded part of the file.
    const orig = fs.readFileSync(path.join(FIX, name));
    let diffs = 0;
    for (let i = 0; i < orig.length; i++) if (orig[i] !== elf.buf[i]) diffs++;
    expect(diffs).toBeLessThanOrEqual(before.padEntries + 16); // + e_shoff/e_shnum bytes
    expect(readRecordedIndex(elf)!.functions.length).toBe(after.functions.length);
    expect(elf.section(INDEX_SECTION)!.flags & 2).toBe(0); // not allocated
    const bytes = fs.readFileSync(copy);
    const r2 = postFile(copy);
    expect(r2.changed).toBe(false);
    expect(fs.readFileSync(copy).equals(bytes)).toBe(true);
    // The toolchain still accepts the file.
    for (const [cmd, args] of [['readelf', ['-a', '-W', copy]], ['objdump', ['-d', copy]], ['gdb', ['-batch', '-ex', 'info functions pads_value', copy]]] as const) {
      const res = spawnSync(cmd, [...args], { encoding: 'utf8' });
      expect(res.status).toBe(0);
      expect(res.stderr).not.toMatch(/warning|error/i);
    }
  });

  test('a posted program runs and prints exactly what it did before', () => {
    const copy = path.join(dir, 'run-pads-O2');
    fs.copyFileSync(path.join(FIX, 'pads-O2'), copy);
    const run = (f: string, args: string[]) => spawnSync(f, args, { encoding: 'utf8' });
    const before = [run(copy, []), run(copy, ['a', 'b', 'c', 'd', 'e', 'f']), run(copy, ['fail'])];
    postFile(copy);
    const after = [run(copy, []), run(copy, ['a', 'b', 'c', 'd', 'e', 'f']), run(copy, ['fail'])];
    expect(after.map((r) => [r.status, r.stdout])).toEqual(before.map((r) => [r.status, r.stdout]));
    expect(before[1].stdout).toMatch(/lookup/); // the slow path ran too
  });
});
