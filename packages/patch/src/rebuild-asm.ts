// The assembly a patch from a rebuild is made of: the included sections'
// bytes, with each relocated field written as an assembler expression (a
// reference inside the patch) or as zero plus a fixup (a reference to the
// program, a library, or data an earlier patch may own). See rebuild-patch.ts
// for what gets included and why.

import { ET, ElfFile, ElfSymbol, RELOC_8_BYTES, R_X86_64 as R, SHF, SHT, STB, STT, gccSuffix } from '@hotload/elf';
import { Build, key, readOnlySection } from './build';
import { FIXUP_KIND, RebuildInfo, RebuildRef } from './rebuild-format';
import { TargetSymbols, targetSymbols } from './running-build';

/** A cold part (`f.cold`): no entry of its own, it comes with its function. */
export function isColdPart(name: string): boolean {
  return gccSuffix(name)?.kind === 'cold';
}

/**
 * The function a part belongs to, by diff key: `f.cold@x.c` or `f.part.0@x.c`
 * -> [`f@x.c`, `f`] (a part is local even when its function is global);
 * [key] for a function. A changed part changes its function.
 */
export function functionOfPart(key: string): string[] {
  const suffix = /^(.+?)\.(cold|part\.\d+)(\.\d+)?(@.*)?$/.exec(key);
  if (!suffix || gccSuffix(key)?.base !== suffix[1]) return [key];
  const parent = suffix[1] + (suffix[4] ?? '');
  return [parent, suffix[1]];
}

/** Where a relocated field points: a label of the patch, or a fixup reference; plus an offset. */
type Addr = { internal: string; off: bigint } | { ref: number; off: bigint };

/** One object file of the new build, and what the patch takes from it. */
export interface Unit {
  idx: number;
  rel: string;
  b: Build;
  /** Included sections, by index. */
  include: Set<number>;
  /** Functions of this object that the patch replaces in the program. */
  replace: ElfSymbol[];
}

export class Generator {
  readonly refs: RebuildRef[] = [];
  private refIndex = new Map<string, number>();
  readonly fixups: { at: string; addend: bigint; kind: number; ref: number }[] = [];
  readonly problems: string[] = [];
  private thunks = new Map<string, string>();
  private slots = new Map<string, string>();
  readonly extraAsm: string[] = [];
  readonly dataDefs: RebuildInfo['data'] = [];
  /** The target's functions and data, by key. */
  private targetSyms: TargetSymbols;
  /** Globals defined by the new objects: name -> [unit, symbol]. */
  private globals = new Map<string, [Unit, ElfSymbol]>();
  /** A shared library target's GOT entries for data (R_X86_64_GLOB_DAT), by symbol name. */
  private gotOf = new Map<string, number>();

  constructor(readonly target: ElfFile, readonly units: Unit[]) {
    this.targetSyms = targetSymbols(target);
    const library = target.header.type === ET.DYN && !target.programs.some((p) => p.type === 3); // no PT_INTERP: not a program
    if (library) {
      const dynsym = target.symbols('.dynsym');
      for (const r of target.relocations('.rela.dyn')) if (r.type === R.GLOB_DAT && dynsym[r.sym]?.type === STT.OBJECT) this.gotOf.set(dynsym[r.sym].name, r.offset);
    }
    for (const u of units) {
      for (const s of u.b.syms) if (s.bind !== STB.LOCAL && s.shndx !== 0 && s.shndx < 0xff00 && s.name) this.globals.set(s.name, [u, s]);
    }
  }

  inTarget(s: ElfSymbol): ElfSymbol | undefined {
    return this.targetSyms.of(s);
  }

  label(u: Unit, sec: number): string {
    return `hl.s.${u.idx}.${sec}`;
  }

  private ref(r: RebuildRef): number {
    const k = JSON.stringify(r);
    let i = this.refIndex.get(k);
    if (i === undefined) {
      i = this.refs.length;
      this.refs.push(r);
      this.refIndex.set(k, i);
    }
    return i;
  }

  /** The one function or object symbol a section holds, if any. */
  private entity(u: Unit, sec: number, type: number): ElfSymbol | undefined {
    const l = (u.b.symsBySection.get(sec) ?? []).filter((s) => s.type === type);
    return l.length === 1 ? l[0] : undefined;
  }

  private includeSection(u: Unit, sec: number, queue: [Unit, number][]): void {
    if (u.include.has(sec)) return;
    u.include.add(sec);
    queue.push([u, sec]);
  }

  /** Where symbol `si` of unit `u` + `off` lies, for a reference from the patch. */
  resolve(u: Unit, si: number, off: bigint, pcrel: boolean, queue: [Unit, number][], from: string): Addr | undefined {
    const sym = u.b.syms[si];
    if (!sym) {
      this.problems.push(`${from}: a relocation names symbol #${si}, which does not exist`);
      return undefined;
    }
    if (sym.shndx === 0) {
      // Defined in another object of the build, or in a library.
      const t = this.targetSyms.get(sym.name);
      if (t) return { ref: this.ref(this.targetRef(sym.name, t, 0)), off };
      const g = this.globals.get(sym.name);
      if (g) return this.resolve(g[0], g[0].b.syms.indexOf(g[1]), off, pcrel, queue, from);
      if (sym.bind === STB.WEAK) return { ref: this.ref({ how: 'lib', name: sym.name, weak: true }), off };
      return { ref: this.ref({ how: 'lib', name: sym.name }), off };
    }
    if (sym.shndx >= 0xff00) {
      this.problems.push(`${from}: refers to ${sym.name || 'an absolute symbol'} (section 0x${sym.shndx.toString(16)}), which hotload cannot place`);
      return undefined;
    }
    const secIdx = sym.shndx;
    const sec = u.b.elf.sections[secIdx];
    const tOff = BigInt(sym.type === STT.SECTION ? 0 : sym.value) + off; // offset within the section
    if (sec.flags & SHF.EXECINSTR) {
      const fn = sym.type === STT.FUNC ? sym : this.entity(u, secIdx, STT.FUNC);
      const t = fn && !isColdPart(fn.name) ? this.inTarget(fn) : undefined;
      const entry = fn ? BigInt(fn.value) : -1n;
      // A call or address of a function the program has: its entry in the program.
      if (t && fn && tOff + (pcrel ? 4n : 0n) === entry) {
        return { ref: this.ref({ how: 'target', name: key(fn), value: t.value - fn.value }), off: tOff };
      }
      this.includeSection(u, secIdx, queue);
      return { internal: this.label(u, secIdx), off: tOff };
    }
    if (readOnlySection(sec) && sec.type !== SHT.NOBITS) {
      // Read-only data (string literals, jump tables, const tables, label
      // tables of computed gotos): the patch's own copy.
      this.includeSection(u, secIdx, queue);
      return { internal: this.label(u, secIdx), off: tOff };
    }
    const obj = sym.type === STT.OBJECT ? sym : this.entity(u, secIdx, STT.OBJECT);
    if (!obj && sec.type !== SHT.NOBITS && !(u.b.symsBySection.get(secIdx) ?? []).length) {
      // Writable data no symbol names at all: what the compiler made for the
      // code (the initial values of a local array of pointers, which gcc puts
      // in .data). No source can name it, so only its users read it: the
      // patch's own copy, like read-only data.
      this.includeSection(u, secIdx, queue);
      return { internal: this.label(u, secIdx), off: tOff };
    }
    if (!obj) {
      this.problems.push(`${from}: refers to ${sec.name}+${tOff}, writable data with no single named object (build with -fdata-sections)`);
      return undefined;
    }
    const t = this.inTarget(obj);
    if (t) {
      if (t.size !== obj.size) {
        this.problems.push(`${key(obj)}: its size changed from ${t.size} to ${obj.size} bytes; the running process keeps the old layout`);
        return undefined;
      }
      return { ref: this.ref(this.targetRef(key(obj), t, obj.value)), off: tOff };
    }
    // New data: in the patch, or the copy an earlier patch added (resolved at attach).
    const label = this.label(u, secIdx);
    if (!u.include.has(secIdx)) this.dataDefs.push({ key: key(obj), size: obj.size, label, objOff: obj.value });
    this.includeSection(u, secIdx, queue);
    return { ref: this.ref({ how: 'data', key: key(obj), size: obj.size, label, objOff: obj.value }), off: tOff };
  }

  /**
   * Where an address in the unit's debug information points, for a debugger:
   * code and read-only data the patch holds (their label), a datum the
   * program has or new data (a reference resolved at attach, as the code's
   * are), or nothing (undefined: code left out of the patch, which the
   * program's own debug information describes). Includes nothing.
   */
  debugAddress(u: Unit, si: number, off: bigint): Addr | undefined {
    const sym = u.b.syms[si];
    if (!sym || sym.shndx >= 0xff00) return undefined;
    if (sym.shndx === 0) {
      const t = this.targetSyms.get(sym.name);
      return t && t.type !== STT.FUNC ? { ref: this.ref(this.targetRef(sym.name, t, 0)), off } : undefined;
    }
    const sec = u.b.elf.sections[sym.shndx];
    if (!(sec.flags & SHF.ALLOC)) return undefined;
    const tOff = BigInt(sym.type === STT.SECTION ? 0 : sym.value) + off;
    if (!(sec.flags & SHF.EXECINSTR) && !readOnlySection(sec)) {
      const obj = sym.type === STT.OBJECT ? sym : this.entity(u, sym.shndx, STT.OBJECT);
      const t = obj && this.inTarget(obj);
      if (obj && t && t.size === obj.size) return { ref: this.ref(this.targetRef(key(obj), t, obj.value)), off: tOff };
      const d = obj && this.dataDefs.find((x) => x.key === key(obj));
      if (d) return { ref: this.ref({ how: 'data', ...d }), off: tOff };
    }
    return u.include.has(sym.shndx) ? { internal: this.label(u, sym.shndx), off: tOff } : undefined;
  }

  /** A reference to the program's symbol `t`, which lies `symOff` into its section in the object. */
  private targetRef(name: string, t: ElfSymbol, symOff: number): RebuildRef {
    const got = t.bind !== STB.LOCAL ? this.gotOf.get(t.name.replace(/@.*$/, '')) : undefined;
    return got !== undefined ? { how: 'target', name, value: t.value - symOff, got, symOff } : { how: 'target', name, value: t.value - symOff };
  }

  /** A thunk `jmp *slot(%rip)` for a library function. */
  thunk(ref: number): string {
    const r = this.refs[ref] as { name: string };
    let t = this.thunks.get(r.name);
    if (!t) {
      t = `hl.th.${this.thunks.size}`;
      const slot = this.slot({ ref, off: 0n });
      this.extraAsm.push(`\t.section .text.hotload.thunks,"ax",@progbits\n\t.p2align 3\n${t}:\n\tjmp *${slot}(%rip)\n\tud2`);
      this.thunks.set(r.name, t);
    }
    return t;
  }

  /** An 8-byte slot holding an address (a GOT entry of our own). */
  slot(a: Addr): string {
    const k = JSON.stringify(a, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
    let s = this.slots.get(k);
    if (!s) {
      s = `hl.sl.${this.slots.size}`;
      this.extraAsm.push(`\t.section .data.hotload.slots,"aw",@progbits\n\t.p2align 3\n${s}:\n${this.field(a, 8, s, false)}`);
      this.slots.set(k, s);
    }
    return s;
  }

  /** One relocated field: an assembler expression, or zero plus a fixup. */
  field(a: Addr, width: 4 | 8, at: string, pcrel: boolean): string {
    const dir = width === 4 ? '.long' : '.quad';
    if ('internal' in a) return `\t${dir} ${a.internal}${signed(a.off)}${pcrel ? ' - .' : ''}`;
    this.fixups.push({ at, addend: a.off, kind: pcrel ? FIXUP_KIND.PC32 : FIXUP_KIND.ABS64, ref: a.ref });
    return `\t${dir} 0`;
  }
}

export function signed(n: bigint | number): string {
  return !n ? '' : n > 0 ? ` + ${n}` : ` - ${-n}`;
}

export function asmName(name: string): string {
  return /^[A-Za-z_.$][A-Za-z0-9_.$]*$/.test(name) ? name : `"${name.replace(/"/g, '')}"`;
}

/** Emit one included section as assembly. */
export function emitSection(g: Generator, u: Unit, secIdx: number, queue: [Unit, number][], names: Map<ElfSymbol, string>): string {
  const elf = u.b.elf;
  const sec = elf.sections[secIdx];
  const exec = (sec.flags & SHF.EXECINSTR) !== 0;
  const flags = `a${sec.flags & SHF.WRITE || sec.type === SHT.NOBITS ? 'w' : ''}${exec ? 'x' : ''}`;
  const kind = exec ? 'text' : flags.includes('w') ? 'data' : 'rodata';
  const labelsAt = new Map<number, ElfSymbol[]>();
  for (const s of u.b.symsBySection.get(secIdx) ?? []) {
    if (!names.has(s)) continue;
    const l = labelsAt.get(s.value) ?? [];
    l.push(s);
    labelsAt.set(s.value, l);
  }
  return emitBytes(g, u, {
    header: [`\t.section .${kind}.hl.${u.idx}.${secIdx},"${flags}",@progbits`, `\t.p2align ${Math.max(0, Math.log2(Math.max(1, sec.addralign)) | 0)}`],
    label: g.label(u, secIdx),
    name: sec.name,
    data: sec.type === SHT.NOBITS ? Buffer.alloc(sec.size) : elf.sectionData(sec),
    relocs: [...(u.b.relocsBySection.get(secIdx) ?? [])].sort((a, b) => a.offset - b.offset),
    labelsAt,
    names,
    queue,
  });
}

export interface ByteBlock {
  header: string[];
  label: string;
  /** For messages. */
  name: string;
  data: Buffer;
  relocs: { offset: number; type: number; sym: number; addend: bigint }[];
  labelsAt: Map<number, ElfSymbol[]>;
  names: Map<ElfSymbol, string>;
  queue: [Unit, number][];
}

/**
 * Raw bytes as `.ascii` directives (printable characters as they are, the
 * rest as three-digit octal escapes), in lines of at most 4 KiB of data: the
 * assembler reads these three times faster than `.byte` lists or `.incbin`
 * (which opens its file once per directive).
 */
export function asciiLines(data: Buffer): string[] {
  return new AsciiText(data).lines(0, data.length);
}

/**
 * A buffer escaped for `.ascii` once, whole; `lines(from, to)` is any range of
 * it, as asciiLines would write that range. A section with thousands of
 * relocations (DWARF) is thousands of short ranges, each then a substring.
 */
export class AsciiText {
  private readonly text: string;
  /** Where each byte's escape starts in `text` (one more entry: the end). */
  private readonly at: Int32Array;

  constructor(data: Buffer) {
    const out = Buffer.allocUnsafe(4 * data.length);
    const at = new Int32Array(data.length + 1);
    let o = 0;
    for (let i = 0; i < data.length; i++) {
      at[i] = o;
      const c = data[i];
      if (c >= 0x20 && c <= 0x7e && c !== 0x22 && c !== 0x5c) out[o++] = c;
      else {
        out[o++] = 0x5c; // \ooo
        out[o++] = 0x30 + (c >> 6);
        out[o++] = 0x30 + ((c >> 3) & 7);
        out[o++] = 0x30 + (c & 7);
      }
    }
    at[data.length] = o;
    this.text = out.toString('latin1', 0, o);
    this.at = at;
  }

  lines(from: number, to: number, out: string[] = []): string[] {
    for (let p = from; p < to; p += 4096) out.push(`\t.ascii "${this.text.substring(this.at[p], this.at[Math.min(to, p + 4096)])}"`);
    return out;
  }
}

/** Bytes as assembly, every relocated field an expression or a fixup. */
export function emitBytes(g: Generator, u: Unit, blk: ByteBlock): string {
  const { data, relocs, labelsAt, names, queue, label } = blk;
  const sec = { name: blk.name };
  const out: string[] = [...blk.header, `${label}:`];
  let pos = 0;
  const labels = () => {
    for (const s of labelsAt.get(pos) ?? []) {
      const n = asmName(names.get(s)!);
      out.push(`\t.type ${n}, @${s.type === STT.FUNC ? 'function' : 'object'}`, `\t.size ${n}, ${s.size}`, `${n}:`);
    }
    labelsAt.delete(pos);
  };
  const bytes = (end: number) => {
    while (pos < end) {
      labels();
      const stop = Math.min(end, ...[...labelsAt.keys()].filter((k) => k > pos));
      out.push(...asciiLines(data.subarray(pos, stop)));
      pos = stop;
    }
    labels();
  };
  for (const r of relocs) {
    const from = `${sec.name}+0x${r.offset.toString(16)} (${u.rel})`;
    if (r.offset < pos) {
      g.problems.push(`${from}: overlapping relocations`);
      continue;
    }
    bytes(r.offset);
    const at = `${label} + ${r.offset}`;
    const symName = u.b.syms[r.sym]?.name || `section ${u.b.syms[r.sym]?.shndx}`;
    switch (r.type) {
      case R.PC32:
      case R.PLT32: {
        const a = g.resolve(u, r.sym, r.addend, true, queue, from);
        if (!a) {
          out.push('\t.long 0');
          break;
        }
        const sym = u.b.syms[r.sym];
        if ('ref' in a && g.refs[a.ref].how === 'lib') {
          if (r.type !== R.PLT32) {
            g.problems.push(`${from}: reads ${sym.name} of a shared library directly; the running program never used it, so the patch cannot reach it`);
            out.push('\t.long 0');
            break;
          }
          out.push(`\t.long ${g.thunk(a.ref)}${signed(r.addend)} - .`);
          break;
        }
        out.push(g.field(a, 4, at, true));
        break;
      }
      case R.GOTPCREL:
      case R.GOTPCRELX:
      case R.REX_GOTPCRELX: {
        // A GOT load: point it at a slot of our own holding the symbol's address.
        const a = g.resolve(u, r.sym, 0n, false, queue, from);
        if (!a) {
          out.push('\t.long 0');
          break;
        }
        out.push(`\t.long ${g.slot(a)}${signed(r.addend)} - .`);
        break;
      }
      case R._64: {
        const a = g.resolve(u, r.sym, r.addend, false, queue, from);
        out.push(a ? g.field(a, 8, at, false) : '\t.quad 0');
        break;
      }
      case R._32:
      case R._32S:
        g.problems.push(`${from}: absolute 32-bit reference to ${symName}: the code was not built as position-independent (build with -fPIE, the default)`);
        out.push('\t.long 0');
        break;
      default:
        g.problems.push(`${from}: relocation type ${r.type} against ${symName} is not supported (thread-local variables are not)`);
        out.push(RELOC_8_BYTES.has(r.type) ? '\t.quad 0' : '\t.long 0');
    }
    pos = r.offset + (RELOC_8_BYTES.has(r.type) ? 8 : 4);
  }
  bytes(data.length);
  return out.join('\n');
}

/**
 * The unit's .eh_frame records for the functions the patch includes: their
 * FDEs and the CIEs those use, in their order, with each FDE's CIE pointer
 * recomputed for the new layout. Returns the bytes and relocations, or
 * undefined when the object has no .eh_frame (or one hotload cannot read).
 */
export function unwindRecords(u: Unit): { data: Buffer; relocs: ByteBlock['relocs']; personality: boolean } | undefined {
  const sec = u.b.elf.sections.find((x) => x.name === '.eh_frame');
  if (!sec) return undefined;
  const src = u.b.elf.sectionData(sec);
  const relocs = u.b.relocsBySection.get(sec.index) ?? [];
  const relocAt = new Map(relocs.map((r) => [r.offset, r]));
  type Rec = { off: number; len: number; cie: boolean; cieOff: number };
  const recs: Rec[] = [];
  for (let off = 0; off + 8 <= src.length; ) {
    const len = src.readUInt32LE(off);
    if (len === 0) break;
    if (len === 0xffffffff || off + 4 + len > src.length) return undefined; // 64-bit records: not produced for x86-64
    const id = src.readUInt32LE(off + 4);
    recs.push({ off, len: len + 4, cie: id === 0, cieOff: off + 4 - id });
    off += len + 4;
  }
  const keepFde = (r: Rec) => {
    const pc = relocAt.get(r.off + 8);
    const sym = pc && u.b.syms[pc.sym];
    return !!sym && u.include.has(sym.shndx);
  };
  const fdes = recs.filter((r) => !r.cie && keepFde(r));
  if (fdes.length === 0) return undefined;
  const cies = new Set(fdes.map((r) => r.cieOff));
  const kept = recs.filter((r) => (r.cie ? cies.has(r.off) : fdes.includes(r)));
  const newOff = new Map<number, number>();
  let n = 0;
  for (const r of kept) {
    newOff.set(r.off, n);
    n += r.len;
  }
  const data = Buffer.alloc(n);
  const out: ByteBlock['relocs'] = [];
  let personality = false;
  for (const r of kept) {
    const at = newOff.get(r.off)!;
    src.copy(data, at, r.off, r.off + r.len);
    if (!r.cie) data.writeUInt32LE(at + 4 - newOff.get(r.cieOff)!, at + 4);
    else {
      const aug = src.toString('latin1', r.off + 9, src.indexOf(0, r.off + 9));
      if (aug.includes('P')) personality = true;
    }
    for (const x of relocs) if (x.offset >= r.off && x.offset < r.off + r.len) out.push({ ...x, offset: x.offset - r.off + at });
  }
  return { data, relocs: out.sort((a, b) => a.offset - b.offset), personality };
}
