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

import { ElfFile, R_X86_64, SHT } from './read-elf';

/** DW_TAG_* this code reads. */
export const TAG = {
  array: 0x01, class: 0x02, enumeration: 0x04, formalParameter: 0x05, lexicalBlock: 0x0b, member: 0x0d, pointer: 0x0f,
  reference: 0x10, compileUnit: 0x11, structure: 0x13, subroutineType: 0x15, typedef: 0x16, union: 0x17,
  inheritance: 0x1c, inlinedSubroutine: 0x1d, ptrToMember: 0x1f, subrange: 0x21, baseType: 0x24, const: 0x26,
  enumerator: 0x28, subprogram: 0x2e, variable: 0x34, volatile: 0x35, restrict: 0x37, namespace: 0x39,
  rvalueReference: 0x42, atomic: 0x47,
} as const;

/** DW_AT_* this code decodes. */
const AT = {
  sibling: 0x01, name: 0x03, byteSize: 0x0b, bitOffset: 0x0c, bitSize: 0x0d, lowPc: 0x11, producer: 0x25, constValue: 0x1c,
  containingType: 0x1d, declLine: 0x3b, upperBound: 0x2f, abstractOrigin: 0x31, count: 0x37,
  dataMemberLocation: 0x38, declaration: 0x3c, external: 0x3f, specification: 0x47, type: 0x49, virtuality: 0x4c,
  vtableElemLocation: 0x4d, ranges: 0x55, dataBitOffset: 0x6b, linkageName: 0x6e, dwoName: 0x76,
  strOffsetsBase: 0x72, mipsLinkageName: 0x2007, gnuDwoName: 0x2130, compDir: 0x1b,
} as const;

const DW_OP_plus_uconst = 0x23;
const DW_OP_constu = 0x10;

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
  if (!bytes(ta.refIndexes(), ta.n * 3).equals(bytes(tb.refIndexes(), tb.n * 3))) return false;
  for (let i = 0; i < ta.n; i++) {
    if (ta.names[i] !== tb.names[i] || ta.linkages[i] !== tb.linkages[i] || ta.consts[i] !== tb.consts[i]) return false;
  }
  return true;
}

function search(u: Unit, off: number): number {
  return u.table.indexAt(off);
}

export class Reader {
  constructor(readonly b: Buffer, public p = 0) {}
  u8() {
    return this.b[this.p++];
  }
  /** Skip n bytes (a length read first: `p += read()` would lose the read's own advance). */
  skip(n: number) {
    this.p += n;
  }
  u16() {
    const v = this.b.readUInt16LE(this.p);
    this.p += 2;
    return v;
  }
  u32() {
    const v = this.b.readUInt32LE(this.p);
    this.p += 4;
    return v;
  }
  u64() {
    const v = this.b.readBigUInt64LE(this.p);
    this.p += 8;
    return v;
  }
  uleb(): bigint {
    let r = 0n;
    let shift = 0n;
    for (;;) {
      const byte = this.b[this.p++];
      r |= BigInt(byte & 0x7f) << shift;
      shift += 7n;
      if (!(byte & 0x80)) return r;
    }
  }
  /** A ULEB128 that fits a double exactly (sizes, offsets, abbreviation codes). */
  ulebN(): number {
    let r = 0;
    let mul = 1;
    for (;;) {
      const byte = this.b[this.p++];
      r += (byte & 0x7f) * mul;
      mul *= 128;
      if (!(byte & 0x80)) return r;
    }
  }
  sleb(): bigint {
    let r = 0n;
    let shift = 0n;
    let byte: number;
    do {
      byte = this.b[this.p++];
      r |= BigInt(byte & 0x7f) << shift;
      shift += 7n;
    } while (byte & 0x80);
    return byte & 0x40 ? r - (1n << shift) : r;
  }
  /** A ULEB128 as a number when exact, else a bigint. */
  ulebSmall(): number | bigint {
    const start = this.p;
    const v = this.ulebN();
    if (v <= Number.MAX_SAFE_INTEGER) return v;
    this.p = start;
    return this.uleb();
  }
  /** An SLEB128 as a number when it is small, else a bigint. */
  slebSmall(): number | bigint {
    const start = this.p;
    let r = 0;
    let mul = 1;
    let byte: number;
    do {
      byte = this.b[this.p++];
      r += (byte & 0x7f) * mul;
      mul *= 128;
    } while (byte & 0x80 && mul < 2 ** 42);
    if (byte & 0x80) {
      this.p = start;
      return this.sleb();
    }
    return byte & 0x40 ? r - mul : r;
  }
  cstr(): string {
    const end = this.b.indexOf(0, this.p);
    const s = this.b.toString('utf8', this.p, end);
    this.p = end + 1;
    return s;
  }
}

interface Abbrev {
  tag: number;
  children: boolean;
  /** The attributes and their forms, in order (parallel arrays). */
  attrs: number[];
  forms: number[];
  /** DW_FORM_implicit_const values, by attribute index (only abbreviations that have one). */
  implicit?: bigint[];
  /** Per attribute: what the reading loop does with it (Act.skip: steps over it; only those in READ are taken). */
  acts: Act[];
  /** An entry no user reads (UNREAD), one of a function's body (BODY), one that opens a function's body (FUNCTION). */
  unread: boolean;
  body: boolean;
  opens: boolean;
  /** A function or variable (left out when reading for types, unless a class declares it), and one with code. */
  symbol: boolean;
  concrete: boolean;
  /** It keeps an attribute only a FullEntry has a field for. */
  full: boolean;
  /** The entry's size when every form has a fixed size: `fixed` bytes plus `addrs` addresses; -1 otherwise. */
  fixed: number;
  addrs: number;
  /** Index of its DW_AT_sibling (an entry with children), or -1. */
  sibling: number;
  /**
   * Whether its children can be stepped over whole: 1, no entry below it is
   * ever read (a call site's parameters); 2, none is a type (a concrete
   * instance of a function, inlined or not, whose types are those of its
   * abstract instance; a function's declaration), so a reading for types
   * steps over it; 0 otherwise.
   */
  prune: 0 | 1 | 2;
}

/** The contents of a debug section with its relocations applied (object files). */
function relocated(elf: ElfFile, name: string): Buffer | undefined {
  const sec = elf.section(name);
  if (!sec) return undefined;
  const contents = elf.sectionContents(sec);
  const rela = elf.header.type === 1 ? elf.section(`.rela${name}`) : undefined;
  // Linked files are already resolved; the copy is only for relocations to apply (read-only otherwise).
  if (!rela) return contents;
  const data = Buffer.from(contents);
  const symtab = elf.sections[rela.link];
  if (rela.entsize !== 24 || symtab?.type !== SHT.SYMTAB || symtab.entsize !== 24) {
    elf.forEachRela(`.rela${name}`, () => undefined); // says what is malformed
    return data;
  }
  applyRela32(data, elf.sectionData(rela), elf.sectionData(symtab));
  return data;
}

/**
 * The 32-bit relocations of a RELA table applied to `data`, read straight
 * from the tables (tens of thousands of entries per object): only the low 32
 * bits of each field matter for a 32-bit result. 64-bit ones are addresses
 * (DW_AT_low_pc, DW_OP_addr), which no user reads: left as they are.
 */
function applyRela32(data: Buffer, r: Buffer, st: Buffer): void {
  for (let o = 0; o + 24 <= r.length; o += 24) {
    const type = u32(r, o + 8);
    if (type !== R_X86_64._32 && type !== R_X86_64._32S) continue;
    const at = u32(r, o);
    const sym = u32(r, o + 12);
    if (u32(r, o + 4) !== 0 || at + 4 > data.length || sym * 24 + 24 > st.length) continue; // outside the section
    // Symbols here are sections of the same object (values 0) plus small addends.
    const v = (u32(st, sym * 24 + 8) + u32(r, o + 16)) >>> 0;
    data[at] = v;
    data[at + 1] = v >>> 8;
    data[at + 2] = v >>> 16;
    data[at + 3] = v >>> 24;
  }
}

const u32 = (b: Buffer, o: number) => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;

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
    if (!units) typesRead.set(elf, (units = parseUnits(elf, true)));
  }
  if (!units) unitsRead.set(elf, (units = parseUnits(elf, false)));
  return units;
}

/** Read once per file: `diff` asks for the inlines and the types of the same objects. */
const unitsRead = new WeakMap<ElfFile, Unit[]>();
const typesRead = new WeakMap<ElfFile, Unit[]>();

/** The sections a unit's entries read from besides .debug_info. */
interface Sources {
  strs: (off: number) => string | undefined;
  lineStrs: (off: number) => string | undefined;
  /** DWARF 5's DW_FORM_strx* (clang). */
  strOffsets?: Buffer;
}

/** A unit being read: where its string indexes start, and the strings given by index, resolved at its end. */
interface Reading {
  strBase: number;
  pending: number[];
}

// The reading is cut into small functions: the optimising compiler takes
// each on early, where one large function was compiled (in the background,
// twice: whole and on-stack) for longer than a whole build takes to read.

function parseUnits(elf: ElfFile, typesOnly: boolean): Unit[] {
  const info = relocated(elf, '.debug_info');
  const abbrevSec = elf.section('.debug_abbrev');
  if (!info || !abbrevSec) return [];
  const abbrevData = elf.sectionContents(abbrevSec);
  const src: Sources = { strs: strings(relocated(elf, '.debug_str')), lineStrs: strings(relocated(elf, '.debug_line_str')), strOffsets: relocated(elf, '.debug_str_offsets') };
  const abbrevCache = new Map<number, Abbrev[]>();
  const units: Unit[] = [];
  const r = new Reader(info);
  while (r.p + 11 < info.length) {
    const unitStart = r.p;
    const len = r.u32();
    if (len === 0xffffffff) throw new Error('64-bit DWARF is not read');
    const end = r.p + len;
    const version = r.u16();
    let addrSize: number;
    let abbrevOff: number;
    let split = false;
    if (version >= 5) {
      const unitType = r.u8();
      addrSize = r.u8();
      abbrevOff = r.u32();
      if (unitType === 2 || unitType === 6) r.p += 12; // type units: signature, type offset
      else if (unitType === 4 || unitType === 5) {
        r.p += 8; // skeleton/split: dwo id
        split = true;
      }
    } else {
      abbrevOff = r.u32();
      addrSize = r.u8();
    }
    let abbrevs = abbrevCache.get(abbrevOff);
    if (!abbrevs) abbrevCache.set(abbrevOff, (abbrevs = readAbbrevs(abbrevData, abbrevOff)));
    const table = new EntryTable();
    let made: Die[] | undefined;
    const unit: Unit = {
      off: unitStart, version, name: '', producer: '', compDir: '', split, table, bodies: !typesOnly, code: false,
      get dies() {
        return (made ??= table.entries());
      },
    };
    readEntries(r, end, unit, abbrevs, addrSize, src, typesOnly);
    unit.name = table.names[0] ?? '';
    units.push(unit);
    r.p = end;
  }
  return units;
}

/** The entries of one unit, from `r.p` up to `end`, into its table. */
function readEntries(r: Reader, end: number, unit: Unit, abbrevs: Abbrev[], addrSize: number, src: Sources, typesOnly: boolean): void {
  const table = unit.table;
  const unitStart = unit.off;
  // Per open level (an entry with children): the kept entry that opened it
  // (-1 if it was stepped over), the kept parent of its children, and
  // whether they are inside a function (its parameters, variables, blocks).
  const openers: number[] = [];
  const parents: number[] = [];
  const inBody: boolean[] = [];
  const reading: Reading = { strBase: 8, pending: [] }; // 8: past the .debug_str_offsets header of the only contribution
  while (r.p < end) {
    const at = r.p;
    const code = r.ulebN();
    if (code === 0) {
      const opener = openers.pop();
      parents.pop();
      inBody.pop();
      if (opener !== undefined && opener >= 0) table.rec[opener * VALUES + S.end] = table.n;
      continue;
    }
    const ab = abbrevs[code];
    if (!ab) throw new Error(`DWARF abbreviation ${code} missing`);
    const depth = parents.length;
    const parent = depth ? parents[depth - 1] : -1;
    const body = depth > 0 && inBody[depth - 1];
    if (ab.concrete) unit.code = true;
    if (ab.unread || (typesOnly && ((body && ab.body) || (ab.symbol && !(parent >= 0 && CLASS.has(table.tag(parent))))))) {
      // Read past it; its children (if any) belong to its parent, unless
      // none of them is read: then they are stepped over at once, to its
      // next sibling (DW_AT_sibling, which gcc gives most such entries).
      const next = stepOver(r, ab, addrSize, unitStart, typesOnly);
      if (next > r.p && next <= end) {
        r.p = next;
        continue;
      }
      if (ab.children) {
        openers.push(-1);
        parents.push(parent);
        inBody.push(body || ab.opens);
      }
      continue;
    }
    const idx = table.add(at, ab.tag, parent, ab.full);
    readAttributes(r, ab, idx, unit, addrSize, src, reading);
    if (ab.children) {
      openers.push(idx);
      parents.push(idx);
      inBody.push(ab.opens);
    }
  }
  const { strBase, pending } = reading;
  for (let k = 0; k < pending.length; k += 3) {
    const at = strBase + pending[k + 2] * 4;
    const v = src.strOffsets && at + 4 <= src.strOffsets.length ? src.strs(src.strOffsets.readUInt32LE(at)) : undefined;
    if (v !== undefined) setString(unit, pending[k], pending[k + 1], v);
  }
}

/** Past an entry that is not kept; its DW_AT_sibling when all it holds can be stepped over too (else NaN). */
function stepOver(r: Reader, ab: Abbrev, addrSize: number, unitStart: number, typesOnly: boolean): number {
  const forms = ab.forms;
  let next = NaN;
  if (ab.sibling >= 0 && (ab.prune === 1 || (typesOnly && ab.prune === 2))) {
    for (let i = 0; i < forms.length; i++) {
      if (i === ab.sibling) next = readRef(r, forms[i], unitStart);
      else skipForm(r, forms[i], addrSize);
    }
  } else if (ab.fixed >= 0) r.p += ab.fixed + ab.addrs * addrSize;
  else for (let i = 0; i < forms.length; i++) skipForm(r, forms[i], addrSize);
  return next;
}

/** A kept entry's attributes into its record (entry `idx` of the unit's table). */
function readAttributes(r: Reader, ab: Abbrev, idx: number, unit: Unit, addrSize: number, src: Sources, reading: Reading): void {
  const table = unit.table;
  const unitStart = unit.off;
  const rec = table.rec;
  const refs = table.refs;
  const b = idx * VALUES;
  const rb = idx * REFS;
  const forms = ab.forms;
  const attrs = ab.attrs;
  const acts = ab.acts;
  for (let i = 0; i < forms.length; i++) {
    if (acts[i] === Act.skip) {
      skipForm(r, forms[i], addrSize);
      continue;
    }
    let form = forms[i];
    if (form === 0x16) form = r.ulebN(); // indirect: the form comes first
    switch (acts[i]) {
      case Act.str: {
        const v = readStr(r, form, addrSize, src);
        if (typeof v === 'string') setString(unit, idx, attrs[i], v);
        else if (v >= 0) reading.pending.push(idx, attrs[i], v);
        break;
      }
      case Act.type: refs[rb + R.type] = readRef(r, form, unitStart); break;
      case Act.origin: refs[rb + R.origin] = readRef(r, form, unitStart); break;
      case Act.containingType: refs[rb + R.containingType] = readRef(r, form, unitStart); break;
      case Act.byteSize: rec[b + S.byteSize] = readNum(r, form, ab, i); break;
      case Act.bitSize: rec[b + S.bitSize] = readNum(r, form, ab, i); break;
      case Act.dataBitOffset: rec[b + S.dataBitOffset] = readNum(r, form, ab, i); break;
      case Act.bitOffset: rec[b + S.bitOffset] = readNum(r, form, ab, i); break;
      case Act.upperBound: rec[b + S.upperBound] = readNum(r, form, ab, i); break;
      case Act.count: rec[b + S.count] = readNum(r, form, ab, i); break;
      case Act.virtuality: rec[b + S.virtuality] = readNum(r, form, ab, i); break;
      case Act.declLine: rec[b + S.declLine] = readNum(r, form, ab, i); break;
      case Act.memberOffset: rec[b + S.memberOffset] = isBlock(form) ? offsetExpr(r, form, true) : readNum(r, form, ab, i); break;
      // DW_OP_constu N (gcc, clang); a constant in older producers.
      case Act.vtableElem: {
        const v = isBlock(form) ? offsetExpr(r, form, false) : readNum(r, form, ab, i);
        rec[b + S.vtableElem] = v !== v ? 0 : v;
        break;
      }
      case Act.constValue: table.consts[idx] = readConst(r, form, ab, i); break;
      case Act.external: rec[b + S.external] = readFlag(r, form, addrSize); break;
      case Act.declaration: rec[b + S.declaration] = readFlag(r, form, addrSize); break;
      case Act.concrete: skipForm(r, form, addrSize); rec[b + S.concrete] = 1; break;
      case Act.split: skipForm(r, form, addrSize); unit.split = true; break;
      case Act.strOffsetsBase: {
        const v = readNum(r, form, ab, i);
        if (v === v) reading.strBase = v;
        break;
      }
      default: skipForm(r, form, addrSize);
    }
  }
}

/** A string attribute's value; for a string given by index (DWARF 5's strx forms), the index, resolved at the unit's end; -1 for a form that is no string. */
function readStr(r: Reader, form: number, addrSize: number, src: Sources): string | number {
  switch (form) {
    case 0x0e: return src.strs(r.u32()) ?? -1; // strp
    case 0x08: return r.cstr(); // string
    case 0x1f: return src.lineStrs(r.u32()) ?? -1; // line_strp
    case 0x1a: return r.ulebN(); // strx
    case 0x25: return r.u8(); // strx1
    case 0x26: return r.u16(); // strx2
    case 0x27: { const v = r.b.readUIntLE(r.p, 3); r.p += 3; return v; } // strx3
    case 0x28: return r.u32(); // strx4
    default: skipForm(r, form, addrSize); return -1;
  }
}

/** Step past one attribute's value without decoding it (most attributes: locations, ranges, lines). */
function skipForm(r: Reader, form: number, addrSize: number): void {
  switch (form) {
    case 0x01: r.p += addrSize; return; // addr
    case 0x03: r.skip(r.u16()); return; // block2
    case 0x04: r.skip(r.u32()); return; // block4
    case 0x05: case 0x12: case 0x26: case 0x2a: r.p += 2; return; // data2, ref2, strx2, addrx2
    case 0x06: case 0x0e: case 0x10: case 0x13: case 0x17: case 0x1c: case 0x1d: case 0x1f: case 0x28: case 0x2c: r.p += 4; return;
    case 0x07: case 0x14: case 0x20: case 0x24: r.p += 8; return; // data8, ref8, ref_sig8, ref_sup8
    case 0x08: r.p = r.b.indexOf(0, r.p) + 1; return; // string
    case 0x09: case 0x18: r.skip(r.ulebN()); return; // block, exprloc
    case 0x0a: r.skip(r.u8()); return; // block1
    case 0x0b: case 0x0c: case 0x11: case 0x25: case 0x29: r.p += 1; return; // data1, flag, ref1, strx1, addrx1
    case 0x0d: case 0x0f: case 0x15: case 0x1a: case 0x1b: case 0x22: case 0x23: // LEB128s
      while (r.b[r.p++] & 0x80);
      return;
    case 0x16: skipForm(r, r.ulebN(), addrSize); return; // indirect
    case 0x19: case 0x21: return; // flag_present, implicit_const
    case 0x1e: r.p += 16; return; // data16
    case 0x27: case 0x2b: r.p += 3; return; // strx3, addrx3
    default:
      throw new Error(`DWARF form 0x${form.toString(16)}`);
  }
}

/**
 * Strings of a string section by offset. A section of ASCII only (nearly
 * always: C identifiers and paths) is decoded once, each string then a slice
 * of it; otherwise each string is decoded as UTF-8 once per offset.
 */
function strings(buf: Buffer | undefined): (off: number) => string | undefined {
  if (!buf) return () => undefined;
  const text = buf.toString('latin1');
  if (!/[^\x00-\x7f]/.test(text)) {
    return (off) => {
      if (off >= text.length) return undefined;
      const end = text.indexOf('\0', off);
      return text.substring(off, end < 0 ? text.length : end);
    };
  }
  const seen = new Map<number, string>();
  return (off) => {
    if (off >= buf.length) return undefined;
    let s = seen.get(off);
    if (s === undefined) {
      const end = buf.indexOf(0, off);
      seen.set(off, (s = buf.toString('utf8', off, end < 0 ? buf.length : end)));
    }
    return s;
  };
}

/**
 * Where each field of an entry is in its record (EntryTable.rec): numbers,
 * NaN for an attribute the entry does not have; flags as 0 or 1. `full`: 1
 * when the entry's abbreviation has one of the rarer attributes (it is made
 * a FullEntry). Offsets (the entry's own, its references) are apart, in
 * EntryTable.refs: two builds' equal entries have equal records.
 */
// (const enums: their members are numbers in the compiled code, not property
// reads, which the reading loops would make tens of thousands of times.)
const enum S {
  tag, parent, end, full, byteSize, memberOffset, bitSize, dataBitOffset, bitOffset, upperBound, count, virtuality, vtableElem,
  declLine, declaration, external, concrete,
}
const VALUES = 17;
/** EntryTable.refs: the entry's offset and its references, as absolute offsets in .debug_info (NaN: none). */
const enum R { off, type, origin, containingType }
const REFS = 4;

/**
 * What the reading loop does with an attribute, worked out per abbreviation
 * (Abbrev.acts): a switch over these small numbers is a jump, where one over
 * the DW_AT_* codes is a comparison per case.
 */
const enum Act {
  skip, str, type, origin, containingType, byteSize, bitSize, dataBitOffset, bitOffset, upperBound, count, virtuality, declLine,
  memberOffset, vtableElem, constValue, external, declaration, concrete, split, strOffsetsBase,
}
const ACTS = new Map<number, Act>([
  [AT.name, Act.str], [AT.linkageName, Act.str], [AT.mipsLinkageName, Act.str], [AT.producer, Act.str], [AT.compDir, Act.str],
  [AT.type, Act.type], [AT.abstractOrigin, Act.origin], [AT.specification, Act.origin], [AT.containingType, Act.containingType],
  [AT.byteSize, Act.byteSize], [AT.bitSize, Act.bitSize], [AT.dataBitOffset, Act.dataBitOffset], [AT.bitOffset, Act.bitOffset],
  [AT.upperBound, Act.upperBound], [AT.count, Act.count], [AT.virtuality, Act.virtuality], [AT.declLine, Act.declLine],
  [AT.dataMemberLocation, Act.memberOffset], [AT.vtableElemLocation, Act.vtableElem], [AT.constValue, Act.constValue],
  [AT.external, Act.external], [AT.declaration, Act.declaration], [AT.lowPc, Act.concrete], [AT.ranges, Act.concrete],
  [AT.dwoName, Act.split], [AT.gnuDwoName, Act.split], [AT.strOffsetsBase, Act.strOffsetsBase],
]);

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
  names: (string | undefined)[] = [];
  linkages: (string | undefined)[] = [];
  consts: (bigint | undefined)[] = [];
  private indexes?: Int32Array;

  /** A new entry (its other fields NaN); returns its index. */
  add(off: number, tag: number, parent: number, full: boolean): number {
    const i = this.n++;
    if ((i + 1) * VALUES > this.rec.length) {
      const size = Math.max(256, 2 * i);
      const rec = new Float64Array(size * VALUES).fill(NaN);
      rec.set(this.rec);
      this.rec = rec;
      const refs = new Float64Array(size * REFS).fill(NaN);
      refs.set(this.refs);
      this.refs = refs;
    }
    const rec = this.rec;
    const b = i * VALUES;
    rec[b + S.tag] = tag;
    rec[b + S.parent] = parent;
    rec[b + S.end] = i + 1;
    rec[b + S.full] = full ? 1 : 0;
    this.refs[i * REFS] = off;
    return i;
  }

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

  /** Each entry's references as indexes of entries (-1: none of this unit's kept ones; -2: no reference). */
  refIndexes(): Int32Array {
    if (this.indexes) return this.indexes;
    const out = new Int32Array(this.n * 3);
    const refs = this.refs;
    // Entry index + 1 by offset from the first entry's, for the span of the
    // unit's entries (dropped after: a lookup each instead of a binary search).
    const first = this.n ? refs[0] : 0;
    const span = this.n ? refs[(this.n - 1) * REFS] - first + 1 : 0;
    const at = new Int32Array(span);
    for (let i = 0; i < this.n; i++) at[refs[i * REFS] - first] = i + 1;
    for (let i = 0; i < this.n; i++) {
      for (let k = 1; k < REFS; k++) {
        const v = refs[i * REFS + k] - first;
        out[i * 3 + k - 1] = v !== v ? -2 : v >= 0 && v < span ? at[v] - 1 : -1;
      }
    }
    return (this.indexes = out);
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
        f.linkage = this.linkages[i];
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
      d.name = this.names[i];
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

/** The attributes an Entry has a field for; an abbreviation with any other one it keeps makes FullEntry objects. */
const COMMON = new Set<number>([AT.name, AT.type, AT.byteSize, AT.dataMemberLocation, AT.declaration, AT.strOffsetsBase, AT.producer, AT.compDir, AT.dwoName, AT.gnuDwoName]);

/**
 * Entries no user reads, left out of `dies` (a third of an optimised build's
 * entries are call sites): DW_TAG_call_site and its parameters, GNU's older
 * forms of them, labels, lexical blocks (their children stay, under the block's
 * parent), unspecified parameters, and DWARF procedures (location expressions
 * that DW_OP_call reaches: gcc emits them at some optimisation levels only, so
 * keeping them would make two builds' units of identical types differ).
 */
const UNREAD = new Set([0x48, 0x49, 0x4109, 0x410a, 0x0a, 0x0b, 0x18, 0x36]);
/** Call sites (DWARF 5's and GNU's): their children are their parameters, which nothing reads. */
const CALL_SITE = new Set([0x48, 0x4109]);

/** Entries whose functions and variables are part of a type (methods, static members). */
const CLASS = new Set<number>([TAG.structure, TAG.class, TAG.union]);
/** Entries whose children are a function's own (parameters, variables, what it inlined). */
const FUNCTION = new Set<number>([TAG.subprogram, TAG.inlinedSubroutine, TAG.lexicalBlock]);
/** What a function's body holds besides types: left out when reading for types only. */
const BODY = new Set<number>([TAG.formalParameter, TAG.variable, TAG.inlinedSubroutine, 0x0a /* label */, 0x18 /* unspecified parameters */]);

/** The attributes the reading loop keeps (and the unit's string-offsets base); every other one is stepped over (DW_AT_sibling is read only to step over what an entry holds). */
const READ = new Set<number>(Object.values(AT).filter((a) => a !== AT.sibling));

/** A string attribute: of the entry, or (the compiler, the directory) of its unit. */
function setString(u: Unit, i: number, attr: number, v: string): void {
  if (attr === AT.name) u.table.names[i] = v;
  else if (attr === AT.linkageName || attr === AT.mipsLinkageName) u.table.linkages[i] = v;
  else if (attr === AT.producer) u.producer = v;
  else if (attr === AT.compDir) u.compDir = v;
}

// readRef, readNum and readConst step over a form they do not take with an
// address size of 8: x86-64's, and none of these attributes has an address form.

// The readers below give NaN for what is not there (an entry's record holds NaN for it).

/** A reference as an absolute offset in .debug_info; NaN for any other form (a type signature). */
function readRef(r: Reader, form: number, unitStart: number): number {
  switch (form) {
    case 0x13: return unitStart + r.u32(); // ref4
    case 0x11: return unitStart + r.u8(); // ref1
    case 0x12: return unitStart + r.u16(); // ref2
    case 0x14: return unitStart + Number(r.u64()); // ref8
    case 0x15: return unitStart + r.ulebN(); // ref_udata
    case 0x10: return r.u32(); // ref_addr: already absolute
    default: skipForm(r, form, 8); return NaN;
  }
}

/** A constant as a number (data forms unsigned, sdata signed); NaN for a form that is no constant (an expression, a reference). */
function readNum(r: Reader, form: number, ab: Abbrev, i: number): number {
  switch (form) {
    case 0x0b: return r.u8(); // data1
    case 0x05: return r.u16(); // data2
    case 0x06: return r.u32(); // data4
    case 0x07: return Number(r.u64()); // data8
    case 0x0f: return Number(r.ulebSmall()); // udata
    case 0x0d: return Number(r.slebSmall()); // sdata
    case 0x21: return Number(ab.implicit![i]); // implicit_const
    case 0x17: return r.u32(); // sec_offset (DW_AT_str_offsets_base)
    default: skipForm(r, form, 8); return NaN;
  }
}

/** DW_AT_const_value exactly (enumerators may need all 64 bits); undefined for a block or a string. */
function readConst(r: Reader, form: number, ab: Abbrev, i: number): bigint | undefined {
  switch (form) {
    case 0x0b: return BigInt(r.u8());
    case 0x05: return BigInt(r.u16());
    case 0x06: return BigInt(r.u32());
    case 0x07: return r.u64();
    case 0x0f: return BigInt(r.ulebSmall());
    case 0x0d: return BigInt(r.slebSmall());
    case 0x21: return ab.implicit![i];
    default: skipForm(r, form, 8); return undefined;
  }
}

/** A flag as 1 or 0. */
function readFlag(r: Reader, form: number, addrSize: number): number {
  if (form === 0x19) return 1; // flag_present
  if (form === 0x0c || form === 0x0b) return r.u8() !== 0 ? 1 : 0; // flag (data1 from old producers)
  skipForm(r, form, addrSize);
  return 0;
}

const isBlock = (form: number) => form === 0x18 || form === 0x09 || form === 0x0a || form === 0x03 || form === 0x04;

/**
 * A member's or virtual function's place given as an expression: gcc and
 * clang write DW_OP_plus_uconst N (member offsets) or DW_OP_constu N (both).
 * NaN for any other expression.
 */
function offsetExpr(r: Reader, form: number, plus: boolean): number {
  const n = form === 0x0a ? r.u8() : form === 0x03 ? r.u16() : form === 0x04 ? r.u32() : r.ulebN();
  const start = r.p;
  r.p += n;
  const op = r.b[start];
  if (n > 1 && (op === DW_OP_constu || (plus && op === DW_OP_plus_uconst))) return new Reader(r.b, start + 1).ulebN();
  return NaN;
}

/** An abbreviation table, by code (gcc and clang number them 1, 2, ...), each with what the reading loop asks of it worked out once. */
function readAbbrevs(data: Buffer, off: number): Abbrev[] {
  const table: Abbrev[] = [];
  const r = new Reader(data, off);
  for (;;) {
    const code = r.ulebN();
    if (code === 0) return table;
    const tag = r.ulebN();
    const children = r.u8() === 1;
    const ab: Abbrev = { tag, children, attrs: [], forms: [], acts: [], unread: UNREAD.has(tag), body: BODY.has(tag), opens: FUNCTION.has(tag), symbol: tag === TAG.subprogram || tag === TAG.variable, concrete: false, full: false, fixed: 0, addrs: 0, sibling: -1, prune: CALL_SITE.has(tag) ? 1 : tag === TAG.inlinedSubroutine ? 2 : 0 };
    for (;;) {
      const a = r.ulebN();
      const f = r.ulebN();
      if (a === 0 && f === 0) break;
      if (f === 0x21) (ab.implicit ??= [])[ab.attrs.length] = r.sleb();
      if (a === AT.sibling && children) ab.sibling = ab.attrs.length;
      // A concrete instance's types are its abstract instance's; a declaration (a prototype) defines none.
      if (tag === TAG.subprogram && (a === AT.abstractOrigin || (a === AT.declaration && f === 0x19))) ab.prune = 2;
      ab.attrs.push(a);
      ab.forms.push(f);
      const read = READ.has(a) && (a !== AT.declLine || tag === TAG.subprogram); // a line is read of functions only
      ab.acts.push(read ? ACTS.get(a) ?? Act.skip : Act.skip);
      if (tag === TAG.subprogram && (a === AT.lowPc || a === AT.ranges)) ab.concrete = true;
      if (read && !COMMON.has(a)) ab.full = true;
      const size = FIXED_SIZE[f];
      if (f === 0x01) ab.addrs++;
      else if (size === undefined) ab.fixed = -1;
      else if (ab.fixed >= 0) ab.fixed += size;
    }
    if (ab.fixed < 0) ab.addrs = 0;
    table[code] = ab;
  }
}

/** The size of each form whose values all have one (DW_FORM_addr aside: the unit's address size). */
const FIXED_SIZE: Record<number, number> = {
  0x05: 2, 0x06: 4, 0x07: 8, 0x0b: 1, 0x0c: 1, 0x10: 4, 0x11: 1, 0x12: 2, 0x13: 4, 0x14: 8, 0x17: 4, 0x19: 0, 0x1c: 4, 0x1d: 4, 0x1e: 16,
  0x1f: 4, 0x20: 8, 0x21: 0, 0x24: 8, 0x25: 1, 0x26: 2, 0x27: 3, 0x28: 4, 0x29: 1, 0x2a: 2, 0x2b: 3, 0x2c: 4, 0x0e: 4,
};

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
