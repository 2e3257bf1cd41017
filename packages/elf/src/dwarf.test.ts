// The DWARF reader (dwarf.ts) and the type layouts read through it
// (dwarf-types.ts), on an object file gcc compiles here: reading for types
// only leaves out the functions' parameters and variables but keeps a type
// defined inside a function; the users of a type still come from the whole
// reading; constants that need more than 53 bits keep their exact value;
// the entries of two builds compare equal when only functions moved.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ElfFile } from './read-elf';
import { EntryTable, TAG, Unit, childrenOf, readUnits, sameEntries } from './dwarf';
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

// A local type in a function inlined everywhere, in one inlined and also kept
// out of line (gcc describes its types once, in the abstract instance, and
// the reading for types steps over the concrete ones whole), and in a plain one.
const INLINED = (extra: string) => `
static inline __attribute__((always_inline)) int inl(int n) { struct inl_local { int a; long b; } x = { n, n * 2 }; return x.a + (int)x.b; }
static __attribute__((noinline)) int ool(int n) { struct ool_local { char c; double d; } y = { (char)n, n }; return y.c + (int)y.d + inl(n); }
static int both(int n) { struct both_local { short s; int t[3]; } z = { (short)n, { n, n, n } }; return z.s + z.t[n % 3]; }
${extra}
int f(int n) { return inl(n) + ool(n) + both(n) + both(n + 1); }
int g(int n) { return both(n * 3); }
`;

/** One source file (its name is part of the entries), compiled to an object named by `tag`. */
function compile(tag: string, src: string, opt: string): ElfFile {
  const c = path.join(dir, 'inl.c');
  const o = path.join(dir, `${tag}${opt}.o`);
  fs.writeFileSync(c, src);
  execFileSync('gcc', ['-g', opt, '-c', '-o', o, c], { stdio: 'pipe' });
  return new ElfFile(o, fs.readFileSync(o));
}

test('types defined in inlined functions and in their out-of-line copies are kept', () => {
  for (const opt of ['-O1', '-O2', '-O3']) {
    const elf = compile('inl', INLINED(''), opt);
    const whole = readUnits(elf)[0];
    expect(whole.dies.some((d) => d.tag === TAG.inlinedSubroutine)).toBe(true);
    const keys = [...typeLayouts(elf).units[0].layouts.keys()].sort();
    expect(keys).toEqual(['struct both_local', 'struct inl_local', 'struct ool_local']);
  }
});

test('two builds\' entries compare the same when only functions differ, not when a type does', () => {
  const types = (e: ElfFile) => readUnits(e, true)[0];
  const base = types(compile('same', INLINED(''), '-O2'));
  // Other code and optimisation: every offset after the first function moves.
  expect(sameEntries(base, types(compile('same-o1', INLINED('int h(int n) { return n * 7 + ool(n); }'), '-O1')))).toBe(true);
  expect(sameEntries(base, types(compile('field', INLINED('').replace('short s;', 'short s; char added;'), '-O2')))).toBe(false);
  expect(sameEntries(base, types(compile('width', INLINED('').replace('long b;', 'int b;'), '-O2')))).toBe(false);
  // The whole reading is compared as a whole reading, never against one for types.
  const e = compile('same', INLINED(''), '-O2');
  expect(sameEntries(base, readUnits(e)[0])).toBe(false);
});

test('every field of an entry is compared: a change in any makes the units differ', () => {
  const u = readUnits(compile('fields', INLINED(''), '-O2'), true)[0];
  const copy = (): Unit => {
    const t = Object.assign(new EntryTable(), u.table);
    Object.assign(t, { rec: u.table.rec.slice(), refs: u.table.refs.slice(), refIndexes: u.table.refIndexes.slice(), names: [...t.names], linkages: [...t.linkages], consts: [...t.consts] });
    return { ...u, table: t };
  };
  expect(sameEntries(u, copy())).toBe(true);
  // Each number of an array bound's record (it has room for every field), and
  // each of its references (its own offset, which moves between builds, aside).
  const i = u.dies.findIndex((d) => d.tag === TAG.subrange);
  expect(i).toBeGreaterThan(0);
  const bump = (a: Float64Array, at: number) => (a[at] = Number.isNaN(a[at]) ? 1 : a[at] + 1);
  for (let k = 0; k < EntryTable.values; k++) {
    const c = copy();
    bump(c.table.rec, i * EntryTable.values + k);
    expect(['value', k, sameEntries(u, c)]).toEqual(['value', k, false]);
  }
  // References are compared by the index of the entry they reach (refIndexes).
  for (let k = 1; k < EntryTable.refSlots; k++) {
    const c = copy();
    c.table.refIndexes[i * (EntryTable.refSlots - 1) + k - 1] += 1;
    expect(['reference', k, sameEntries(u, c)]).toEqual(['reference', k, false]);
  }
  // Which are those of the offsets the references hold: every reference of every entry.
  const t = u.table;
  for (let e = 0; e < t.n; e++) {
    for (let k = 1; k < EntryTable.refSlots; k++) {
      const target = t.refs[e * EntryTable.refSlots + k];
      expect(t.refIndexes[e * (EntryTable.refSlots - 1) + k - 1]).toBe(Number.isNaN(target) ? -2 : t.indexAt(target));
    }
  }
  // And the fields kept beside the numbers.
  for (const [field, v] of [['names', 'x'], ['linkages', 'x'], ['consts', 5n]] as const) {
    const c = copy();
    (c.table[field] as unknown[])[i] = v;
    expect([field, sameEntries(u, c)]).toEqual([field, false]);
  }
  // Every field an entry is made with comes from those: the record (less the
  // `full` mark), the references, and the three kept beside them.
  expect(Object.keys(u.dies[i]).length).toBe(EntryTable.values - 1 + EntryTable.refSlots + 3);
});

test('a DWARF procedure (gcc\'s value of a pointer it optimised away) is no entry: the unit compares the same as one without', () => {
  const fn = (body: string) => `extern void sink(int);\nvoid f(int x) { const char *p = "tag"; ${body} }\n`;
  // p's value is described by DW_OP_implicit_pointer to a DW_TAG_dwarf_procedure holding "tag".
  const gone = compile('procedure', fn('sink(p[0] + x); sink(p[1]);'), '-O2');
  expect(execFileSync('readelf', ['--debug-dump=info', gone.path], { encoding: 'utf8' })).toContain('DW_TAG_dwarf_procedure');
  // The same types, p kept in a register: no procedure.
  const kept = compile('register', fn('__asm__("" : "+r"(p)); sink(p[0] + x); sink(p[1]);'), '-O2');
  expect(execFileSync('readelf', ['--debug-dump=info', kept.path], { encoding: 'utf8' })).not.toContain('DW_TAG_dwarf_procedure');
  // A fresh ElfFile each: readUnits remembers its answer per file.
  const again = (e: ElfFile) => new ElfFile(e.path, fs.readFileSync(e.path));
  for (const typesOnly of [false, true]) expect(readUnits(again(gone), typesOnly)[0].dies.filter((d) => d.tag === 0x36)).toEqual([]);
  expect(sameEntries(readUnits(again(gone), true)[0], readUnits(again(kept), true)[0])).toBe(true);
});

test('damaged DWARF is refused with a DWARF error, never read outside its section: every byte of a unit and its abbreviations changed in turn', () => {
  const bytes = fs.readFileSync(obj);
  const elf = new ElfFile(obj, bytes);
  const outcomes = new Map<string, number>();
  for (const name of ['.debug_info', '.debug_abbrev']) {
    const sec = elf.section(name)!;
    // Each byte (capped, for time) replaced by three values, read both ways.
    for (let at = 0; at < Math.min(sec.size, 600); at++) {
      for (const v of [0x00, 0x7f, 0xff]) {
        const b = Buffer.from(bytes);
        if (b[sec.offset + at] === v) continue;
        b[sec.offset + at] = v;
        for (const typesOnly of [false, true]) {
          let outcome = 'read';
          try {
            readUnits(new ElfFile(obj, b), typesOnly);
          } catch (e) {
            // A plain Error naming DWARF; a WebAssembly trap (RuntimeError) would mean a read out of bounds.
            outcome = `${(e as Error).constructor.name}: ${(e as Error).message.replace(/0x[0-9a-f]+|\d+/g, 'N')}`;
          }
          outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
        }
      }
    }
  }
  for (const o of outcomes.keys()) expect(o).toMatch(/^(read|Error: (DWARF|64-bit DWARF))/);
  expect(outcomes.get('read')).toBeGreaterThan(0);
  expect([...outcomes.keys()].length).toBeGreaterThan(2); // some damage is found, of more than one kind
});

test('a unit whose length runs past its section is an error, not a read past the end', () => {
  const b = Buffer.from(fs.readFileSync(obj));
  const sec = new ElfFile(obj, b).section('.debug_info')!;
  b.writeUInt32LE(sec.size + 100, sec.offset);
  expect(() => readUnits(new ElfFile(obj, b))).toThrow(/^DWARF data ends inside an entry/);
  b.writeUInt32LE(0xffffffff, sec.offset);
  expect(() => readUnits(new ElfFile(obj, b))).toThrow('64-bit DWARF is not read');
});
