// The debugging information entries of an ELF file's .debug_info (DWARF
// versions 4 and 5), as a flat list per compile unit: the one reader of DWARF
// in hotload. Its users (dwarf-inlines.ts: what each function inlined;
// dwarf-types.ts: the layout of every type) read what they need from it.
//
// Kept per entry: the tag, the parent, and the attributes those users read,
// decoded (names as strings, references as absolute offsets in .debug_info,
// constants as numbers). Every other attribute is skipped by its form. In an
// object file the fields pointing into other debug sections are relocated,
// so a section's RELA entries are applied to a copy first; compressed
// sections (-gz) are inflated (ElfFile.sectionContents).
//
// Left out, as no user reads them (a third of an optimised build's entries
// are call sites): DW_TAG_call_site and its parameters, GNU's older forms of
// them, labels, lexical blocks (their children stay, under the block's
// parent), unspecified parameters, and DWARF procedures (location
// expressions DW_OP_call reaches: gcc emits them at some optimisation levels
// only, so keeping them would make two builds' units of identical types
// differ). What an entry holds is stepped over whole, by its DW_AT_sibling,
// when none of it is kept: a call site's parameters; for a reading for types,
// a concrete instance of a function (inlined or out of line: its local types
// are described once, in the abstract instance) and a function's declaration.
//
// The loop over the entries is WebAssembly (wasm/dwarf-scan.c, built by
// `make`): a one-shot `hotload mkpatch --from` reads each changed object of
// both builds once, and a JavaScript loop spent most of that time being
// compiled by V8 (in the background, on the core the linker needs) rather
// than reading. It gives each unit's entries as records of numbers, their
// references also as entry indexes, their names and the unit's strings as
// texts, and their exact constants; dwarf.ts makes the EntryTables of them.

import * as fs from 'fs';
import * as path from 'path';
import { HotloadError } from '@hotload/errors';
import { ElfFile, SHT } from './read-elf';

/** DW_TAG_* this code reads. */
export const TAG = {
  array: 0x01, class: 0x02, enumeration: 0x04, formalParameter: 0x05, lexicalBlock: 0x0b, member: 0x0d, pointer: 0x0f,
  reference: 0x10, compileUnit: 0x11, structure: 0x13, subroutineType: 0x15, typedef: 0x16, union: 0x17,
  inheritance: 0x1c, inlinedSubroutine: 0x1d, ptrToMember: 0x1f, subrange: 0x21, baseType: 0x24, const: 0x26,
  enumerator: 0x28, subprogram: 0x2e, variable: 0x34, volatile: 0x35, restrict: 0x37, namespace: 0x39,
  rvalueReference: 0x42, atomic: 0x47,
} as const;

export interface Die {
  /** Absolute offset in .debug_info (what references hold). */
  off: number;
  tag: number;
  /** Index of the parent in its unit's `dies` (-1 for the unit's root). */
  parent: number;
  /** Index in its unit's `dies` past its last descendant (its children are the entries from the next one up to this). */
  end: number;
  name?: string;
  /** DW_AT_linkage_name (C++: the mangled name). */
  linkage?: string;
  type?: number;
  /** DW_AT_abstract_origin or DW_AT_specification. */
  origin?: number;
  byteSize?: number;
  bitSize?: number;
  /** DW_AT_data_bit_offset (DWARF 4+), or DW_AT_bit_offset (older, from the storage unit's high end). */
  dataBitOffset?: number;
  bitOffset?: number;
  /** DW_AT_data_member_location as a constant (or DW_OP_plus_uconst N). */
  memberOffset?: number;
  constValue?: bigint;
  upperBound?: number;
  count?: number;
  external?: boolean;
  declaration?: boolean;
  /** It has code (DW_AT_low_pc or DW_AT_ranges). */
  concrete?: boolean;
  virtuality?: number;
  vtableElem?: number;
  containingType?: number;
  /** DW_AT_decl_line of a function: the source line it is declared on. */
  declLine?: number;
}

export interface Unit {
  /** Offset of the unit's header in .debug_info. */
  off: number;
  version: number;
  /** The unit's DW_AT_name (its main source file), or ''. */
  name: string;
  producer: string;
  /** DW_AT_comp_dir: where it was compiled (DW_AT_name is relative to it), or ''. */
  compDir: string;
  /** A -gsplit-dwarf skeleton: the real entries are in a .dwo file. */
  split: boolean;
  /** In .debug_info order: ascending offsets. Made from `table` when first asked (a unit compared whole, by sameEntries, never needs them). */
  readonly dies: Die[];
  /** The same entries as numbers, one fixed-size record each. */
  table: EntryTable;
  /** False when read for types only: functions and variables are left out (those declared inside a class aside). */
  bodies: boolean;
  /** Some function of the unit has code (DW_AT_low_pc or DW_AT_ranges), whether or not its entry was kept. */
  code: boolean;
}

/** The entry of `u` at absolute offset `off` (what a reference holds), by binary search. */
export function dieAt(u: Unit, off: number | undefined): Die | undefined {
  if (off === undefined) return undefined;
  const i = search(u, off);
  return i >= 0 ? u.dies[i] : undefined;
}

/** The index in `u.dies` of an entry of `u`. */
export function indexOf(u: Unit, d: Die): number {
  return search(u, d.off);
}

/** The children of `d`, an entry of `u`, in order. */
export function childrenOf(u: Unit, d: Die): Die[] {
  const out: Die[] = [];
  for (let i = indexOf(u, d) + 1; i < d.end; i = u.dies[i].end) out.push(u.dies[i]);
  return out;
}

/**
 * Do two units hold the same entries, field by field, each reference to the
 * same position in its unit? Then whatever is computed from the entries alone
 * (type layouts) is the same for both, and need not be computed twice. Offsets
 * themselves are not compared: they move when an entry before them (a
 * function's, in a unit read for types only) changes size.
 */
export function sameEntries(a: Unit, b: Unit): boolean {
  const ta = a.table;
  const tb = b.table;
  if (ta.n !== tb.n || a.bodies !== b.bodies) return false;
  const bytes = (x: Float64Array | Int32Array, n: number) => Buffer.from(x.buffer, x.byteOffset, n * x.BYTES_PER_ELEMENT);
  if (!bytes(ta.rec, ta.n * VALUES).equals(bytes(tb.rec, tb.n * VALUES))) return false; // absent fields are NaN, one bit pattern
  if (!bytes(ta.refIndexes, ta.n * 3).equals(bytes(tb.refIndexes, tb.n * 3))) return false;
  // Names hold no NUL: one string comparison each for the names and the linkage names.
  if (ta.names.join('\0') !== tb.names.join('\0') || ta.linkages.join('\0') !== tb.linkages.join('\0')) return false;
  for (let i = 0; i < ta.n; i++) if (ta.consts[i] !== tb.consts[i]) return false;
  return true;
}

function search(u: Unit, off: number): number {
  return u.table.indexAt(off);
}

/** Does the file carry DWARF at all? */
export function hasDwarf(elf: ElfFile): boolean {
  return !!elf.section('.debug_info') && !!elf.section('.debug_abbrev');
}

/**
 * Every unit of the file's .debug_info with its entries. Throws on DWARF it
 * cannot read (64-bit DWARF, an unknown form); an ELF problem (a compressed
 * section this Node cannot inflate) is a HotloadError. With `typesOnly`,
 * functions and variables (with their parameters, variables and what they
 * inline) are stepped over, not kept: about half of an optimised build's
 * entries, which the type comparison does not read (`bodies` is false then).
 * Kept: every type, wherever it is defined (a type defined inside a function
 * is kept, under the function's parent), and the functions and data members
 * a class declares (its virtual functions are part of its layout).
 */
export function readUnits(elf: ElfFile, typesOnly = false): Unit[] {
  let units = unitsRead.get(elf);
  if (!units && typesOnly) {
    units = typesRead.get(elf);
    if (!units) typesRead.set(elf, (units = scanUnits(elf, true)));
  }
  if (!units) unitsRead.set(elf, (units = scanUnits(elf, false)));
  return units;
}

/** Read once per file: `diff` asks for the inlines and the types of the same objects. */
const unitsRead = new WeakMap<ElfFile, Unit[]>();
const typesRead = new WeakMap<ElfFile, Unit[]>();

/**
 * Where each field of an entry is in its record (EntryTable.rec): numbers,
 * NaN for an attribute the entry does not have; flags as 0 or 1. `full`: 1
 * when the entry's abbreviation has one of the rarer attributes (it is made
 * a FullEntry). Offsets (the entry's own, its references) are apart, in
 * EntryTable.refs: two builds' equal entries have equal records.
 */
// The same order and sizes as dwarf-scan.c's S_* and R_*, which fills them.
const enum S {
  tag, parent, end, full, byteSize, memberOffset, bitSize, dataBitOffset, bitOffset, upperBound, count, virtuality, vtableElem,
  declLine, declaration, external, concrete,
}
const VALUES = 17;
/** EntryTable.refs: the entry's offset and its references, as absolute offsets in .debug_info (NaN: none). */
const enum R { off, type, origin, containingType }
const REFS = 4;

/**
 * A unit's entries with no object per entry: a record of numbers each, its
 * offsets beside it, and its strings and exact constants beside those.
 * Reading a build's types makes tens of thousands of entries, most of which
 * are only compared with the other build's (sameEntries), never looked at
 * one by one; `entries()` makes the objects when they are.
 */
export class EntryTable {
  /** Numbers per entry in `rec` and in `refs`. */
  static readonly values = VALUES;
  static readonly refSlots = REFS;
  n = 0;
  rec = new Float64Array(0);
  refs = new Float64Array(0);
  /** Each entry's DW_AT_name and linkage name ('' for none: a name is never empty). */
  names: string[] = [];
  linkages: string[] = [];
  consts: (bigint | undefined)[] = [];
  /** Each entry's references (type, origin, containing type) as indexes of entries (-1: none of this unit's kept ones; -2: no reference). */
  refIndexes = new Int32Array(0);

  /** The index of the entry at absolute offset `off`, by binary search; -1 if none. */
  indexAt(off: number): number {
    const refs = this.refs;
    let lo = 0;
    let hi = this.n - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const o = refs[mid * REFS];
      if (o === off) return mid;
      if (o < off) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  tag(i: number): number {
    return this.rec[i * VALUES + S.tag];
  }

  /** Every entry as an object. */
  entries(): Die[] {
    const out: Die[] = new Array(this.n);
    const rec = this.rec;
    const refs = this.refs;
    const num = (v: number) => (v === v ? v : undefined);
    const flag = (v: number) => (v === v ? v === 1 : undefined);
    for (let i = 0; i < this.n; i++) {
      const b = i * VALUES;
      const rb = i * REFS;
      const off = refs[rb];
      const tag = rec[b + S.tag];
      const parent = rec[b + S.parent];
      const end = rec[b + S.end];
      let d: Entry;
      if (rec[b + S.full]) {
        const f = new FullEntry(off, tag, parent, end);
        f.linkage = this.linkages[i] || undefined;
        f.origin = num(refs[rb + R.origin]);
        f.containingType = num(refs[rb + R.containingType]);
        f.bitSize = num(rec[b + S.bitSize]);
        f.dataBitOffset = num(rec[b + S.dataBitOffset]);
        f.bitOffset = num(rec[b + S.bitOffset]);
        f.constValue = this.consts[i];
        f.upperBound = num(rec[b + S.upperBound]);
        f.count = num(rec[b + S.count]);
        f.external = flag(rec[b + S.external]);
        f.concrete = flag(rec[b + S.concrete]);
        f.virtuality = num(rec[b + S.virtuality]);
        f.vtableElem = num(rec[b + S.vtableElem]);
        f.declLine = num(rec[b + S.declLine]);
        d = f;
      } else d = new Entry(off, tag, parent, end);
      d.name = this.names[i] || undefined;
      d.type = num(refs[rb + R.type]);
      d.byteSize = num(rec[b + S.byteSize]);
      d.memberOffset = num(rec[b + S.memberOffset]);
      d.declaration = flag(rec[b + S.declaration]);
      out[i] = d;
    }
    return out;
  }
}

/**
 * An entry with the attributes most entries have (a type, a member, a
 * typedef), every field present from the start: one object shape for all of
 * them, fast to build and to read.
 */
class Entry implements Die {
  name?: string = undefined;
  type?: number = undefined;
  byteSize?: number = undefined;
  memberOffset?: number = undefined;
  declaration?: boolean = undefined;
  constructor(readonly off: number, readonly tag: number, readonly parent: number, public end: number) {}
}

/**
 * An entry whose abbreviation has one of the rarer attributes (functions,
 * variables, bit-fields, enumerators, array bounds, virtual functions): a
 * second shape. Kept apart, the common entries are half the size, which is
 * most of what the reading leaves to the garbage collector.
 */
class FullEntry extends Entry {
  linkage?: string = undefined;
  origin?: number = undefined;
  bitSize?: number = undefined;
  dataBitOffset?: number = undefined;
  bitOffset?: number = undefined;
  constValue?: bigint = undefined;
  upperBound?: number = undefined;
  count?: number = undefined;
  external?: boolean = undefined;
  concrete?: boolean = undefined;
  virtuality?: number = undefined;
  vtableElem?: number = undefined;
  containingType?: number = undefined;
  declLine?: number = undefined;
}

/**
 * The source line of each function with code in the file (its DW_AT_decl_line,
 * through its abstract origin or specification), keyed by symbol name (C++:
 * the mangled one). Empty without DWARF.
 */
export function functionLines(elf: ElfFile): Map<string, number> {
  const out = new Map<string, number>();
  let units: Unit[];
  try {
    units = readUnits(elf);
  } catch {
    return out;
  }
  for (const u of units) {
    for (const d of u.dies) {
      if (d.tag !== TAG.subprogram || !d.concrete) continue;
      let name: string | undefined;
      let line: number | undefined;
      for (let x: Die | undefined = d, n = 0; x && n < 8; x = dieAt(u, x.origin), n++) {
        name ??= x.linkage ?? x.name;
        line ??= x.declLine;
      }
      if (name && line !== undefined && !out.has(name)) out.set(name, line);
    }
  }
  return out;
}

// ---- the scanner (wasm/dwarf-scan.c) ----

interface Scanner {
  memory: WebAssembly.Memory;
  alloc(n: number): number;
  reset(): void;
  scan(info: number, infoLen: number, abbrev: number, abbrevLen: number, strOffsets: number, strOffsetsLen: number, str: number, strLen: number, lineStr: number, lineStrLen: number, typesOnly: number): number;
  result(): number;
  relocate(data: number, len: number, rela: number, relaLen: number, symtab: number, symLen: number): void;
}

const SCANNER = path.join(__dirname, '../wasm/build/dwarf-scan.wasm');
let scanner: Scanner | undefined;

/** The compiled scanner, instantiated once per process (a few milliseconds: V8's baseline compiler, no warm-up). */
function scannerOf(): Scanner {
  if (!scanner) {
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(SCANNER);
    } catch (e) {
      throw new HotloadError('INTERNAL', `hotload's DWARF reader is missing (${SCANNER}: ${(e as NodeJS.ErrnoException).code ?? e})`, {
        hint: 'In a checkout, run `make build` (it compiles packages/elf/wasm/dwarf-scan.c with clang and wasm-ld); an installed hotload ships it: reinstall.',
      });
    }
    scanner = new WebAssembly.Instance(new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>)).exports as unknown as Scanner;
  }
  return scanner;
}

/** `data` copied into the scanner's memory; its address there. */
function put(w: Scanner, data: Buffer): number {
  const at = w.alloc(data.length);
  if (!at && data.length) throw new Error('out of memory reading DWARF');
  new Uint8Array(w.memory.buffer, at, data.length).set(data);
  return at;
}

/** A debug section of `elf` in the scanner's memory, with its relocations applied (object files). */
function putRelocated(w: Scanner, elf: ElfFile, name: string): { at: number; len: number } {
  const sec = elf.section(name);
  if (!sec) return { at: 0, len: 0 };
  const contents = elf.sectionContents(sec);
  const at = put(w, contents);
  const rela = elf.header.type === 1 ? elf.section(`.rela${name}`) : undefined;
  if (rela) {
    const symtab = elf.sections[rela.link];
    if (rela.entsize !== 24 || symtab?.type !== SHT.SYMTAB || symtab.entsize !== 24) elf.forEachRela(`.rela${name}`, () => undefined); // says what is malformed
    else {
      const r = elf.sectionData(rela);
      const st = elf.sectionData(symtab);
      const ra = put(w, r);
      const sa = put(w, st);
      w.relocate(at, contents.length, ra, r.length, sa, st.length);
    }
  }
  return { at, len: contents.length };
}

const SCAN_ERRORS: Record<number, (detail: number) => string> = {
  [-1]: () => 'DWARF data ends inside an entry (a truncated .debug_info or .debug_abbrev)',
  [-2]: () => '64-bit DWARF is not read',
  [-3]: (d) => `DWARF abbreviation ${d} missing`,
  [-4]: (d) => `DWARF form 0x${d.toString(16)}`,
  [-5]: () => 'out of memory reading DWARF',
};
/** dwarf-scan.c's U_*: the fields of a unit in its table of units. */
const enum U { off, version, split, code, first, count, producer, producerLen, compDir, compDirLen, names, namesLen, linkages, linkagesLen, constFirst, constCount }
const UNIT_FIELDS = 16;

/** Every unit of the file, scanned (readUnits says what `typesOnly` leaves out); its strings decoded. */
function scanUnits(elf: ElfFile, typesOnly: boolean): Unit[] {
  const infoSec = elf.section('.debug_info');
  const abbrevSec = elf.section('.debug_abbrev');
  if (!infoSec || !abbrevSec) return [];
  const w = scannerOf();
  w.reset();
  const info = putRelocated(w, elf, '.debug_info');
  const abbrevData = elf.sectionContents(abbrevSec);
  const abbrev = put(w, abbrevData);
  const so = putRelocated(w, elf, '.debug_str_offsets');
  // The string sections, for the texts of the names (they carry no relocations).
  const str = putRelocated(w, elf, '.debug_str');
  const lineStr = putRelocated(w, elf, '.debug_line_str');
  const n = w.scan(info.at, info.len, abbrev, abbrevData.length, so.at, so.len, str.at, str.len, lineStr.at, lineStr.len, typesOnly ? 1 : 0);
  const mem = w.memory.buffer;
  const res = new Uint32Array(mem, w.result(), 8);
  if (n < 0) throw new Error((SCAN_ERRORS[n] ?? (() => `DWARF could not be read (${n})`))(res[6]));
  const total = res[5];
  const unitTable = new Uint32Array(mem, res[0], n * UNIT_FIELDS);
  const recs = new Float64Array(mem, res[1], total * VALUES);
  const refs = new Float64Array(mem, res[2], total * REFS);
  const text = (at: number, len: number) => Buffer.from(mem, res[3] + at, len).toString('utf8');
  const constList = new Uint32Array(mem, res[4]);
  const refIndexes = new Int32Array(mem, res[7], total * 3);
  const units: Unit[] = [];
  for (let k = 0; k < n; k++) {
    const u = unitTable.subarray(k * UNIT_FIELDS, (k + 1) * UNIT_FIELDS);
    const first = u[U.first];
    const count = u[U.count];
    const table = new EntryTable();
    table.n = count;
    table.rec = recs.slice(first * VALUES, (first + count) * VALUES);
    table.refs = refs.slice(first * REFS, (first + count) * REFS);
    table.refIndexes = refIndexes.slice(first * 3, (first + count) * 3);
    // One text per unit for all its names (an empty one for an entry without), split here.
    table.names = count ? text(u[U.names], u[U.namesLen]).split('\0') : [];
    table.linkages = count ? text(u[U.linkages], u[U.linkagesLen]).split('\0') : [];
    table.consts = new Array(count);
    for (let c = u[U.constFirst] * 4, end = c + u[U.constCount] * 4; c < end; c += 4) {
      const v = (BigInt(constList[c + 2]) << 32n) | BigInt(constList[c + 1]);
      table.consts[constList[c + 3]] = constList[c] === 2 ? BigInt.asIntN(64, v) : v;
    }
    let made: Die[] | undefined;
    units.push({
      off: u[U.off], version: u[U.version], name: table.names[0] || '', producer: text(u[U.producer], u[U.producerLen]),
      compDir: text(u[U.compDir], u[U.compDirLen]), split: u[U.split] !== 0, table, bodies: !typesOnly, code: u[U.code] !== 0,
      get dies() {
        return (made ??= table.entries());
      },
    });
  }
  return units;
}
