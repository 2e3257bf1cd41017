// Which functions each function has inlined, from the DWARF debug information
// (.debug_info, versions 4 and 5): every concrete DW_TAG_subprogram and the
// DW_TAG_inlined_subroutine entries under it, named through their
// DW_AT_abstract_origin / DW_AT_specification. `hotload diff` uses it to say
// that a caller differs because a function inlined into it changed.
//
// Only what that needs is read: names (DW_FORM_string, strp, line_strp), the
// two references, and enough of every other form to skip it. In an object
// file the fields pointing into other debug sections are relocated, so the
// section's RELA entries are applied to a copy first.

import { ElfFile } from './read-elf';

const TAG_SUBPROGRAM = 0x2e;
const TAG_INLINED = 0x1d;
const TAG_CU = 0x11;
const AT_NAME = 0x03;
const AT_LOW_PC = 0x11;
const AT_RANGES = 0x55;
const AT_ABSTRACT_ORIGIN = 0x31;
const AT_SPECIFICATION = 0x47;
const AT_EXTERNAL = 0x3f;
const AT_LINKAGE_NAME = 0x6e;
const AT_MIPS_LINKAGE_NAME = 0x2007;
const AT_DWO_NAME = 0x76;
const AT_GNU_DWO_NAME = 0x2130;

interface Abbrev {
  tag: number;
  children: boolean;
  attrs: [number, number, bigint][]; // attribute, form, implicit_const
}

interface Die {
  name?: string;
  linkage?: string;
  external?: boolean;
  origin?: number; // absolute offset in .debug_info
  concrete: boolean;
  tag: number;
}

class Reader {
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
  cstr(): string {
    const end = this.b.indexOf(0, this.p);
    const s = this.b.toString('utf8', this.p, end);
    this.p = end + 1;
    return s;
  }
}

/** The contents of a debug section with its relocations applied (object files). */
function relocated(elf: ElfFile, name: string): Buffer | undefined {
  const sec = elf.section(name);
  if (!sec) return undefined;
  const data = Buffer.from(elf.sectionContents(sec)); // inflated when -gz compressed it
  if (elf.header.type !== 1) return data; // linked: already resolved
  const syms = elf.symbols('.symtab');
  for (const r of elf.relocations(`.rela${name}`)) {
    const v = BigInt(syms[r.sym]?.value ?? 0) + r.addend;
    if (r.type === 10 || r.type === 11) data.writeUInt32LE(Number(BigInt.asUintN(32, v)), r.offset);
    else if (r.type === 1) data.writeBigUInt64LE(BigInt.asUintN(64, v), r.offset);
  }
  return data;
}

function str(buf: Buffer | undefined, off: number): string | undefined {
  if (!buf || off >= buf.length) return undefined;
  const end = buf.indexOf(0, off);
  return buf.toString('utf8', off, end < 0 ? buf.length : end);
}

/**
 * For every function with code in this file: the names of the functions
 * inlined into it (directly or nested). Keys are plain names; statics are also
 * keyed `name@file` (the compile unit's base name), as `hotload diff` names them.
 * Names are symbol names (C++: mangled). `local` holds the inlined functions
 * that are file-local (static, not DW_AT_external).
 */
export function inlinedFunctions(elf: ElfFile): Map<string, Set<string>> & { local: Set<string>; split: boolean } {
  const local = new Set<string>();
  // `split`: built with -gsplit-dwarf, the inline information is in .dwo
  // files, which are not read: the map is empty, and callers should say so.
  const out = Object.assign(new Map<string, Set<string>>(), { local, split: false });
  const info = relocated(elf, '.debug_info');
  const abbrevSec = elf.section('.debug_abbrev');
  if (!info || !abbrevSec) return out;
  const abbrevData = elf.sectionContents(abbrevSec);
  const strs = relocated(elf, '.debug_str');
  const lineStrs = relocated(elf, '.debug_line_str');
  try {
    walk();
  } catch {
    /* unreadable or unusual DWARF: no inline information, never an error */
  }
  return out;

  function walk() {
    const r = new Reader(info!);
    while (r.p + 11 < info!.length) {
      const unitStart = r.p;
      const len = r.u32();
      if (len === 0xffffffff) return; // 64-bit DWARF: not produced by gcc/clang by default
      const end = r.p + len;
      const version = r.u16();
      let addrSize: number;
      let abbrevOff: number;
      if (version >= 5) {
        const unitType = r.u8();
        addrSize = r.u8();
        abbrevOff = r.u32();
        if (unitType === 2 || unitType === 6) r.p += 12; // type units: signature, type offset
        else if (unitType === 4 || unitType === 5) {
          r.p += 8; // skeleton/split: dwo id
          out.split = true;
        }
      } else {
        abbrevOff = r.u32();
        addrSize = r.u8();
      }
      const abbrevs = readAbbrevs(abbrevOff);
      const dies = new Map<number, Die>();
      // Each entry: the function it belongs to (the innermost concrete subprogram).
      const stack: (number | undefined)[] = [];
      const inlinedBy: [number, number][] = []; // [subprogram DIE, inlined DIE]
      let cuName = '';
      while (r.p < end) {
        const at = r.p;
        const code = r.uleb();
        if (code === 0n) {
          stack.pop();
          continue;
        }
        const ab = abbrevs.get(code);
        if (!ab) return;
        const die: Die = { tag: ab.tag, concrete: false };
        for (const [attr, form, implicit] of ab.attrs) {
          const v = readForm(r, form, addrSize, unitStart, implicit);
          if (attr === AT_NAME && typeof v === 'string') die.name = v;
          else if ((attr === AT_LINKAGE_NAME || attr === AT_MIPS_LINKAGE_NAME) && typeof v === 'string') die.linkage = v;
          else if (attr === AT_EXTERNAL) die.external = true;
          else if ((attr === AT_ABSTRACT_ORIGIN || attr === AT_SPECIFICATION) && typeof v === 'number') die.origin = v;
          else if (attr === AT_LOW_PC || attr === AT_RANGES) die.concrete = true;
          else if (attr === AT_DWO_NAME || attr === AT_GNU_DWO_NAME) out.split = true; // DWARF 4's -gsplit-dwarf skeleton
        }
        dies.set(at, die);
        if (ab.tag === TAG_CU && die.name) cuName = die.name.split('/').pop()!;
        const owner = stack.length ? stack[stack.length - 1] : undefined;
        let mine = owner;
        if (ab.tag === TAG_SUBPROGRAM && die.concrete) mine = at;
        if (ab.tag === TAG_INLINED && owner !== undefined) inlinedBy.push([owner, at]);
        if (ab.children) stack.push(mine);
      }
      // A DIE's symbol name (the linkage name of C++, else the name) and
      // whether it is external, following abstract_origin/specification.
      const chain = (off: number) => {
        const out: Die[] = [];
        for (let d = dies.get(off); d && out.length < 8; d = d.origin !== undefined ? dies.get(d.origin) : undefined) out.push(d);
        return out;
      };
      const nameOf = (off: number) => {
        const c = chain(off);
        return c.find((d) => d.linkage)?.linkage ?? c.find((d) => d.name)?.name;
      };
      for (const [fn, inl] of inlinedBy) {
        const f = nameOf(fn);
        const g = nameOf(inl);
        if (!f || !g || f === g) continue;
        if (!chain(inl).some((d) => d.external)) local.add(g);
        for (const k of [f, `${f}@${cuName}`]) {
          const set = out.get(k) ?? new Set<string>();
          set.add(g);
          out.set(k, set);
        }
      }
      r.p = end;
    }
  }

  function readAbbrevs(off: number): Map<bigint, Abbrev> {
    const m = new Map<bigint, Abbrev>();
    const r = new Reader(abbrevData, off);
    for (;;) {
      const code = r.uleb();
      if (code === 0n) return m;
      const tag = Number(r.uleb());
      const children = r.u8() === 1;
      const attrs: Abbrev['attrs'] = [];
      for (;;) {
        const a = Number(r.uleb());
        const f = Number(r.uleb());
        if (a === 0 && f === 0) break;
        attrs.push([a, f, f === 0x21 ? r.sleb() : 0n]);
      }
      m.set(code, { tag, children, attrs });
    }
  }

  /** Read one attribute value: names as strings, references as absolute offsets; others skipped. */
  function readForm(r: Reader, form: number, addrSize: number, unitStart: number, implicit: bigint): string | number | undefined {
    switch (form) {
      case 0x01: r.p += addrSize; return undefined; // addr
      case 0x03: r.skip(r.u16()); return undefined; // block2
      case 0x04: r.skip(r.u32()); return undefined; // block4
      case 0x05: r.p += 2; return undefined; // data2
      case 0x06: r.p += 4; return undefined; // data4
      case 0x07: r.p += 8; return undefined; // data8
      case 0x08: return r.cstr(); // string
      case 0x09: case 0x18: r.skip(Number(r.uleb())); return undefined; // block, exprloc
      case 0x0a: r.skip(r.u8()); return undefined; // block1
      case 0x0b: case 0x0c: r.p += 1; return undefined; // data1, flag
      case 0x0d: r.sleb(); return undefined; // sdata
      case 0x0e: return str(strs, r.u32()); // strp
      case 0x0f: case 0x1a: case 0x1b: case 0x22: case 0x23: r.uleb(); return undefined; // udata, strx, addrx, loclistx, rnglistx
      case 0x10: return r.u32(); // ref_addr: absolute
      case 0x11: return unitStart + r.u8(); // ref1
      case 0x12: return unitStart + r.u16(); // ref2
      case 0x13: return unitStart + r.u32(); // ref4
      case 0x14: { const v = Number(r.b.readBigUInt64LE(r.p)); r.p += 8; return unitStart + v; } // ref8
      case 0x15: return unitStart + Number(r.uleb()); // ref_udata
      case 0x16: return readForm(r, Number(r.uleb()), addrSize, unitStart, implicit); // indirect
      case 0x17: case 0x1c: case 0x1d: r.p += 4; return undefined; // sec_offset, ref_sup4, strp_sup
      case 0x19: case 0x21: return undefined; // flag_present, implicit_const
      case 0x1e: r.p += 16; return undefined; // data16
      case 0x1f: return str(lineStrs, r.u32()); // line_strp
      case 0x20: case 0x24: r.p += 8; return undefined; // ref_sig8, ref_sup8
      case 0x25: case 0x29: r.p += 1; return undefined; // strx1, addrx1
      case 0x26: case 0x2a: r.p += 2; return undefined;
      case 0x27: case 0x2b: r.p += 3; return undefined;
      case 0x28: case 0x2c: r.p += 4; return undefined;
      default:
        throw new Error(`DWARF form 0x${form.toString(16)}`);
    }
  }
}
