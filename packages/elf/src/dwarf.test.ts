// The DWARF reader (dwarf.ts) and the type layouts read through it
// (dwarf-types.ts), on an object file gcc compiles here: reading for types
// only leaves out the functions' parameters and variables but keeps a type
// defined inside a function; the users of a type still come from the whole
// reading; constants that need more than 53 bits keep their exact value.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ElfFile } from './read-elf';
import { TAG, childrenOf, readUnits } from './dwarf';
import { typeLayouts } from './dwarf-types';

const SRC = `
struct outer { int a; long b; };
enum big { SMALL = 7, BIG = 0xffffffffffffffffUL };
enum neg { NEG = -5, HUGE_NEG = -0x7fffffffffffffffL - 1 };
struct outer g;
enum big e;
enum neg f;
int count(struct outer *o, int n) {
  static struct local { char c; int d; } seen;
  int sum = 0;
  for (int i = 0; i < n; i++) sum += o[i].a;
  seen.d += sum;
  return sum + seen.c;
}
`;

let obj: string;
let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-dwarf-'));
  fs.writeFileSync(path.join(dir, 't.c'), SRC);
  obj = path.join(dir, 't.o');
  execFileSync('gcc', ['-g', '-O2', '-c', '-o', obj, path.join(dir, 't.c')], { stdio: 'pipe' });
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test('read for types only: no functions, variables or parameters, the same types, subtrees that end where the whole reading says', () => {
  // A fresh ElfFile each: readUnits remembers its answer per file.
  const whole = readUnits(new ElfFile(obj, fs.readFileSync(obj)))[0];
  const types = readUnits(new ElfFile(obj, fs.readFileSync(obj)), true)[0];
  expect(whole.bodies).toBe(true);
  expect(types.bodies).toBe(false);
  expect(whole.code && types.code).toBe(true);
  const fn = whole.dies.find((d) => d.tag === TAG.subprogram && d.name === 'count')!;
  const inBody = childrenOf(whole, fn).map((d) => d.name);
  expect(inBody).toEqual(expect.arrayContaining(['o', 'n', 'sum', 'seen']));
  expect(types.dies.filter((d) => d.tag === TAG.subprogram || d.tag === TAG.variable || d.tag === TAG.formalParameter)).toEqual([]);
  // The type defined in the function's body is kept, with its members, under the function's parent.
  const local = types.dies.find((d) => d.tag === TAG.structure && d.name === 'local')!;
  expect(childrenOf(types, local).map((d) => d.name)).toEqual(['c', 'd']);
  expect(types.dies[local.parent].tag).toBe(TAG.compileUnit);
  // Every type entry of the whole reading is in the types-only one.
  const typeTags = new Set<number>([TAG.structure, TAG.member, TAG.enumeration, TAG.enumerator, TAG.pointer, TAG.baseType]);
  const offs = new Set(types.dies.map((d) => d.off));
  expect(whole.dies.filter((d) => typeTags.has(d.tag) && !offs.has(d.off))).toEqual([]);
  const outer = types.dies.find((d) => d.tag === TAG.structure && d.name === 'outer')!;
  expect(childrenOf(types, outer).map((d) => `${d.name}@${d.memberOffset}`)).toEqual(['a@0', 'b@8']);
});

test('layouts from the types-only reading; users from the whole one', () => {
  const t = typeLayouts(new ElfFile(obj, fs.readFileSync(obj)));
  expect(t.lacking).toBeUndefined();
  const u = t.units[0];
  expect(u.layouts.get('struct local')?.members.map((m) => `${m.name}@${m.offset}`)).toEqual(['c@0', 'd@4']);
  expect(u.users().get('struct outer')).toEqual(expect.arrayContaining(['count', 'g']));
  expect(u.users().get('struct local')).toEqual(expect.arrayContaining(['count']));
  expect(u.dataTypes().get('g')).toEqual(new Set(['struct outer']));
});

test('enumerator values beyond 53 bits are exact, negative ones too', () => {
  const t = typeLayouts(new ElfFile(obj, fs.readFileSync(obj)));
  const values = new Map([...t.units[0].layouts.get('enum big')!.values, ...t.units[0].layouts.get('enum neg')!.values].map(([n, v]) => [n, BigInt.asUintN(64, v)]));
  expect(values.get('NEG')).toBe(BigInt.asUintN(64, -5n));
  expect(values.get('SMALL')).toBe(7n);
  expect(values.get('BIG')).toBe(0xffffffffffffffffn);
  expect(values.get('HUGE_NEG')).toBe(0x8000000000000000n);
});

test('names that are not ASCII (C allows UTF-8 identifiers) are read as UTF-8; the ASCII ones beside them too', () => {
  const src = path.join(dir, 'u.c');
  const o = path.join(dir, 'u.o');
  fs.writeFileSync(src, 'struct café { int ü; long plain; } g2;\n');
  execFileSync('gcc', ['-g', '-c', '-o', o, src], { stdio: 'pipe' });
  const u = typeLayouts(new ElfFile(o, fs.readFileSync(o))).units[0];
  expect(u.layouts.get('struct café')?.members.map((m) => `${m.name}@${m.offset}`)).toEqual(['ü@0', 'plain@8']);
});
