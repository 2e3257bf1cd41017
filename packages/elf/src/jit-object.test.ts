// The debugger's copy of a patch: built from a real shared library (cc), and
// read back by readelf, which must see every section, symbol and program
// header moved by the bias, and the listed DWARF fields set.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ElfFile } from './read-elf';
import { objectForDebugger } from './jit-object';

// Made before the tests, not while jest collects them: a run that filters them all out (-t) runs no afterAll to remove it.
let dir: string;
let so: string;
let cc: ReturnType<typeof spawnSync>;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-jit-'));
  const src = path.join(dir, 'f.c');
  so = path.join(dir, 'f.so');
  fs.writeFileSync(src, 'int counter;\nint f(int x) { return x + counter; }\n');
  cc = spawnSync('cc', ['-O2', '-g', '-fPIC', '-shared', '-nostdlib', src, '-o', so], { encoding: 'utf8' });
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const readelf = (file: string, ...args: string[]) => spawnSync('readelf', ['-W', ...args, file], { encoding: 'utf8' }).stdout;
const BIAS = 0x7f0000001000n;

test('the fixture library builds', () => {
  expect(cc.stderr).toBe('');
  expect(cc.status).toBe(0);
});

test('allocated sections, program headers and symbols move by the bias; other sections and the rest stay', () => {
  const elf = ElfFile.open(so);
  const copy = new ElfFile('copy', objectForDebugger(elf, BIAS, []));
  for (const s of elf.sections) {
    const c = copy.sections[s.index];
    expect(c.name).toBe(s.name);
    expect(BigInt(c.addr)).toBe(s.flags & 2 ? BigInt(s.addr) + BIAS : BigInt(s.addr));
    expect(c.offset).toBe(s.offset);
  }
  for (const [i, p] of elf.programs.entries()) expect(BigInt(copy.programs[i].vaddr)).toBe(BigInt(p.vaddr) + BIAS);
  const f = elf.symbols('.symtab').find((s) => s.name === 'f')!;
  const fc = copy.symbols('.symtab').find((s) => s.name === 'f')!;
  expect(BigInt(fc.value)).toBe(BigInt(f.value) + BIAS);
  const file = copy.symbols('.symtab').find((s) => s.type === 4)!; // STT_FILE: not an address
  expect(file.value).toBe(0);
  // readelf agrees on the copy as a file.
  const out = path.join(dir, 'copy.so');
  fs.writeFileSync(out, copy.buf);
  expect(readelf(out, '-s')).toMatch(new RegExp(`${(BigInt(f.value) + BIAS).toString(16)} +\\d+ FUNC +GLOBAL +DEFAULT +\\d+ f\\b`));
});

test('listed fields: an address inside the file moves by the bias, a reference gets its value', () => {
  const elf = ElfFile.open(so);
  const info = elf.section('.debug_info')!;
  const original = elf.sectionData(info);
  const copy = objectForDebugger(elf, BIAS, [
    { section: '.debug_info', offset: 8, width: 8 },
    { section: '.debug_info', offset: 16, width: 8, value: 0x1234n },
    { section: '.debug_info', offset: 24, width: 4, value: 7n },
  ]);
  const at = info.offset;
  expect(copy.readBigUInt64LE(at + 8)).toBe(original.readBigUInt64LE(8) + BIAS);
  expect(copy.readBigUInt64LE(at + 16)).toBe(0x1234n);
  expect(copy.readUInt32LE(at + 24)).toBe(7);
  expect(copy.subarray(at + 28, at + info.size).equals(original.subarray(28))).toBe(true);
  expect(() => objectForDebugger(elf, BIAS, [{ section: '.debug_info', offset: info.size - 4, width: 8 }])).toThrow(/outside the section/);
  expect(() => objectForDebugger(elf, BIAS, [{ section: '.debug_nothing', offset: 0, width: 8 }])).toThrow(/outside the section/);
});
