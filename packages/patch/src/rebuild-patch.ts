// `hotload mkpatch --from <old build> --to <new build>`: a patch made from a
// rebuild, with no code written by hand.
//
// 1. Pair the object files of the two builds and diff them (diff-builds.ts).
// 2. Take the changed functions' sections from the new objects, and follow
//    their relocations. Each reference goes to one of:
//    - the running program (`target`): unchanged and changed functions alike
//      (a changed one's prologue jumps to its newest version, so a later patch
//      still reaches every caller), and every datum the program already has,
//      `static` ones included, so state carries over;
//    - the patch itself: new functions, new data (unless an earlier patch of
//      this program already added it: then that copy, see `data`), string
//      literals, jump tables and other read-only data;
//    - a shared library (`lib`): calls go through a two-instruction thunk whose
//      8-byte slot holds the function's address.
// 3. Write all of it as assembly (the bytes, with every relocated field an
//    expression) and let the system assembler and linker make a .so with no
//    undefined symbols. Fields that refer outside the patch are left zero and
//    listed in `.hotload.fixups`; `.hotload.rebuild` (JSON) describes what each
//    refers to.
//
// The code keeps its 32-bit rip-relative references to the program, so the
// patch must be mapped within 2 GiB of it: `hotload attach` maps such a patch
// itself, next to the program, and fills in the fixups (load-near.ts), instead
// of calling dlopen, which would put it anywhere.

import * as cp from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { HotloadError } from '@hotload/errors';
import { ET, ElfFile, ElfSymbol, SHF, SHT, STB, STT, loadPadIndex } from '@hotload/elf';
import { Build, BuildDiff, diffLoaded, key, readOnlyDatum, readOnlySection } from './diff-builds';
import { PatchTarget, TARGET_SECTION, readPatch } from './read-patch';
import { PatchPlan, planPatch } from './check-patch';

export const FIXUP_SECTION = '.hotload.fixups';
export const REBUILD_SECTION = '.hotload.rebuild';
/** Bytes per entry of .hotload.fixups: u64 field address, i64 addend, u32 kind, u32 ref. */
export const FIXUP_SIZE = 24;
export const FIXUP_KIND = { PC32: 1, ABS64: 2 } as const;

/** What a fixup refers to; `base` + the fixup's addend is the address wanted. */
export type RebuildRef =
  /**
   * In the program: base = its load bias + `value`. For an exported datum of a
   * shared library, `got` is the library's own GOT entry for it: the datum
   * the library's code really uses (the executable's copy, after a copy
   * relocation, or another module's that interposes it) is read from there at
   * attach, and base = that address - `symOff`.
   */
  | { how: 'target'; name: string; value: number; got?: number; symOff?: number }
  /** In a shared library of the process, by name (an undefined weak one may be missing: 0). */
  | { how: 'lib'; name: string; weak?: boolean }
  /**
   * New writable data. The oldest loaded patch of the same program that has a
   * datum with this key and size owns it; else this patch's own copy
   * (section label `label`). base = the datum's address - objOff.
   */
  | { how: 'data'; key: string; size: number; label: string; objOff: number };

export interface RebuildInfo {
  version: 1;
  refs: RebuildRef[];
  /** New data this patch defines, for later patches to find: address = label + objOff. */
  data: { key: string; size: number; label: string; objOff: number }[];
  /**
   * The unwind tables (CIEs and FDEs from the objects' .eh_frame, for the
   * patch's functions only, ending in a zero terminator): attach registers
   * them with libgcc's __register_frame so exceptions and backtraces pass
   * through the patch's code. `personality`: some function needs them for
   * exceptions (C++), so attach refuses when the process cannot register them.
   */
  ehFrame?: { label: string; personality: boolean };
}

export interface Fixup {
  at: number;
  addend: bigint;
  kind: number;
  ref: number;
}

/** Read a rebuilt patch's fixups and refs (undefined for a hand-written patch). */
export function readRebuild(elf: ElfFile): { info: RebuildInfo; fixups: Fixup[] } | undefined {
  const j = elf.section(REBUILD_SECTION);
  const f = elf.section(FIXUP_SECTION);
  if (!j) return undefined; // .hotload.fixups is left out when there are none
  let info: RebuildInfo;
  try {
    info = JSON.parse(elf.sectionData(j).toString('utf8').replace(/\0+$/, '')) as RebuildInfo;
  } catch {
    throw new HotloadError('PATCH_BAD', `${elf.path}: ${REBUILD_SECTION} is not valid JSON`);
  }
  const d = f ? elf.sectionData(f) : Buffer.alloc(0);
  const fixups: Fixup[] = [];
  for (let o = 0; o + FIXUP_SIZE <= d.length; o += FIXUP_SIZE) {
    const fx = { at: Number(d.readBigUInt64LE(o)), addend: d.readBigInt64LE(o + 8), kind: d.readUInt32LE(o + 16), ref: d.readUInt32LE(o + 20) };
    if (!info.refs[fx.ref] || (fx.kind !== FIXUP_KIND.PC32 && fx.kind !== FIXUP_KIND.ABS64)) throw new HotloadError('PATCH_BAD', `${elf.path}: a fixup at 0x${fx.at.toString(16)} is malformed`);
    fixups.push(fx);
  }
  return { info, fixups };
}

const R = { _64: 1, PC32: 2, PLT32: 4, GOTPCREL: 9, _32: 10, _32S: 11, GOTPCRELX: 41, REX_GOTPCRELX: 42 } as const;
const FRAGMENT = /\.(cold|part\.\d+)(\.\d+)?$/;

/**
 * The function a part belongs to, by diff key: `f.cold@x.c` -> [`f@x.c`, `f`]
 * (a part is local even when its function is global); [key] for a function.
 */
export function functionOfPart(key: string): string[] {
  const parent = key.replace(/\.(cold|part\.\d+)(\.\d+)?(?=@|$)/, '');
  return parent === key ? [key] : [parent, parent.split('@')[0]];
}

/** Object files of a build: a file, or every .o under a directory (by relative path). */
export function objectFiles(build: string): Map<string, string> {
  if (!fs.existsSync(build)) throw new HotloadError('FILE_NOT_FOUND', `${build}: no such file or directory`);
  const out = new Map<string, string>();
  if (!fs.statSync(build).isDirectory()) {
    out.set(path.basename(build), build);
    return out;
  }
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && e.name.endsWith('.o')) out.set(path.relative(build, p), p);
    }
  };
  walk(build);
  if (out.size === 0) throw new HotloadError('FILE_NOT_FOUND', `${build}: no object files (.o) in it`, { hint: 'Give the build directories that hold the objects (keep them: see `hotload flags --diff`).' });
  return out;
}

/** The one program (executable or shared library with a build-id) in a build directory. */
export function findProgram(build: string): string {
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && !e.name.endsWith('.o')) {
        const head = Buffer.alloc(18);
        const fd = fs.openSync(p, 'r');
        const n = fs.readSync(fd, head, 0, 18, 0);
        fs.closeSync(fd);
        if (n === 18 && head.readUInt32BE(0) === 0x7f454c46 && (head.readUInt16LE(16) === 2 || head.readUInt16LE(16) === 3)) found.push(p);
      }
    }
  };
  if (fs.existsSync(build) && fs.statSync(build).isDirectory()) walk(build);
  if (found.length !== 1) {
    throw new HotloadError('USAGE', found.length ? `${build} holds ${found.length} programs (${found.map((f) => path.relative(build, f)).join(', ')}); name the one the process runs with --target` : `name the program the process runs with --target (none found in ${build})`);
  }
  return found[0];
}

type Addr = { internal: string; off: bigint } | { ref: number; off: bigint };

interface Unit {
  idx: number;
  rel: string;
  b: Build;
  /** Included sections, by index. */
  include: Set<number>;
  /** Functions of this object that the patch replaces in the program. */
  replace: ElfSymbol[];
}

export interface RebuildOptions {
  from: string;
  to: string;
  target: string;
  out: string;
  /**
   * Functions to replace even when unchanged, as diff key -> object file
   * (relative path): watch passes what earlier patches replaced, so a function
   * edited back to its original is replaced by that again.
   */
  also?: Record<string, string>;
  cc?: string;
}

export interface RebuildResult {
  out: string;
  target: PatchTarget;
  plan: PatchPlan;
  /** Per object file: the diff against the old build. */
  diffs: { file: string; diff: BuildDiff }[];
  /** Replaced functions (diff keys), and the new ones the patch adds. */
  replaced: string[];
  /** The object file (relative path) of each replaced function. */
  replacedIn: Record<string, string>;
  added: string[];
}

class Generator {
  readonly refs: RebuildRef[] = [];
  private refIndex = new Map<string, number>();
  readonly fixups: { at: string; addend: bigint; kind: number; ref: number }[] = [];
  readonly problems: string[] = [];
  private thunks = new Map<string, string>();
  private slots = new Map<string, string>();
  readonly extraAsm: string[] = [];
  readonly dataDefs: RebuildInfo['data'] = [];
  /** Target symbols by key (locals name@file, globals by name without @version). */
  private targetSyms = new Map<string, ElfSymbol>();
  /** Globals defined by the new objects: name -> [unit, symbol]. */
  private globals = new Map<string, [Unit, ElfSymbol]>();
  /** The program's locals by plain name (null: more than one). */
  private localByName = new Map<string, ElfSymbol | null>();
  /** A shared library target's GOT entries for data (R_X86_64_GLOB_DAT), by symbol name. */
  private gotOf = new Map<string, number>();

  constructor(readonly target: ElfFile, readonly units: Unit[]) {
    for (const s of target.symbols('.symtab')) {
      if (s.shndx === 0 || s.shndx >= 0xff00 || !s.name) continue;
      if (s.type !== STT.FUNC && s.type !== STT.OBJECT && s.type !== STT.GNU_IFUNC) continue;
      const k = s.bind === STB.LOCAL ? key(s) : s.name.replace(/@.*$/, '');
      if (!this.targetSyms.has(k)) this.targetSyms.set(k, s);
      if (s.bind === STB.LOCAL) this.localByName.set(s.name, this.localByName.has(s.name) ? null : s);
    }
    const library = target.header.type === ET.DYN && !target.programs.some((p) => p.type === 3); // no PT_INTERP: not a program
    if (library) {
      const dynsym = target.symbols('.dynsym');
      for (const r of target.relocations('.rela.dyn')) if (r.type === 6 && dynsym[r.sym]?.type === STT.OBJECT) this.gotOf.set(dynsym[r.sym].name, r.offset);
    }
    for (const u of units) {
      for (const s of u.b.syms) if (s.bind !== STB.LOCAL && s.shndx !== 0 && s.shndx < 0xff00 && s.name) this.globals.set(s.name, [u, s]);
    }
  }

  inTarget(s: ElfSymbol): ElfSymbol | undefined {
    const t = this.targetSyms.get(key(s));
    if (t || s.bind === STB.LOCAL) return t;
    // A hidden global of the objects is a local of the linked program.
    const l = this.localByName.get(s.name);
    return l ?? undefined;
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
      const t = fn && !FRAGMENT.test(fn.name) ? this.inTarget(fn) : undefined;
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

function signed(n: bigint): string {
  return n === 0n ? '' : n > 0n ? ` + ${n}` : ` - ${-n}`;
}

function asmName(name: string): string {
  return /^[A-Za-z_.$][A-Za-z0-9_.$]*$/.test(name) ? name : `"${name.replace(/"/g, '')}"`;
}

/** Emit one included section as assembly. */
function emitSection(g: Generator, u: Unit, secIdx: number, queue: [Unit, number][], names: Map<ElfSymbol, string>): string {
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

interface ByteBlock {
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

/** Bytes as assembly, every relocated field an expression or a fixup. */
function emitBytes(g: Generator, u: Unit, blk: ByteBlock): string {
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
      const stop = Math.min(end, pos + 16, ...[...labelsAt.keys()].filter((k) => k > pos));
      out.push(`\t.byte ${[...data.subarray(pos, stop)].join(',')}`);
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
        out.push(r.type === 24 || r.type === 25 ? '\t.quad 0' : '\t.long 0');
    }
    pos = r.offset + (r.type === R._64 || r.type === 24 || r.type === 25 ? 8 : 4);
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
function unwindRecords(u: Unit): { data: Buffer; relocs: ByteBlock['relocs']; personality: boolean } | undefined {
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

/** Build a patch from two builds of a program. */
export function mkpatchFromBuilds(opts: RebuildOptions): RebuildResult {
  const targetElf = ElfFile.open(opts.target);
  const buildId = targetElf.buildId();
  if (!buildId) throw new HotloadError('PATCH_BUILD_MISMATCH', `${opts.target} has no GNU build-id, so a patch cannot be tied to it`, { hint: 'Link the target with -Wl,--build-id (the default of Debian gcc).' });
  const target: PatchTarget = { version: 1, buildId, module: path.basename(opts.target), path: path.resolve(opts.target) };
  const oldObjs = objectFiles(opts.from);
  const newObjs = objectFiles(opts.to);
  const also = new Set(Object.keys(opts.also ?? {}));
  const alsoObjects = new Set(Object.values(opts.also ?? {}));

  const units: Unit[] = [];
  const diffs: RebuildResult['diffs'] = [];
  const refused: string[] = [];
  for (const [rel, file] of newObjs) {
    const old = oldObjs.get(rel);
    // An object file the rebuild left as it was holds no change: skip it (the
    // quick path of a one-file edit in a large build).
    if (old && !alsoObjects.has(rel) && sameFile(old, file)) continue;
    const b = new Build(file);
    const d = old ? diffLoaded(new Build(old), b) : diffLoaded(emptyLike(b), b);
    diffs.push({ file: rel, diff: d });
    refused.push(...d.refused.map((r) => `${r.symbol}: ${r.reason}`));
    units.push({ idx: units.length, rel, b, include: new Set(), replace: [] });
  }
  const replacedIn: Record<string, string> = {};
  const g = new Generator(targetElf, units);

  // The --from objects must be the build the process runs. Functions may
  // differ (patches applied since replace them), but writable data cannot: a
  // size that differs from the program's means these objects are of another build.
  const mismatch: string[] = [];
  for (const u of units) {
    const old = oldObjs.get(u.rel);
    if (!old) continue;
    for (const [k, d] of new Build(old).items(STT.OBJECT)) {
      const t = g.inTarget(d.sym);
      if (t && t.size !== d.size && !readOnlyDatum(u.b, d.sym)) mismatch.push(`${k}: ${d.size} bytes in ${old}, ${t.size} in ${opts.target}`);
    }
  }
  if (mismatch.length) {
    throw new HotloadError('PATCH_BUILD_MISMATCH', `the objects in ${opts.from} are not those of ${opts.target}`, {
      details: mismatch,
      hint: 'Give --from the object files of the build the process runs (keep a copy of them when you start it).',
    });
  }
  if (refused.length) {
    throw new HotloadError('UNPATCHABLE', `${refused.length} change${refused.length === 1 ? '' : 's'} cannot be patched into a running process`, {
      details: refused,
      hint: 'Restart the program to take these changes (there is no --force: the running state has the old layout or values).',
    });
  }

  // The functions to replace: changed ones, the users of changed read-only data,
  // and those earlier patches replaced (`also`), each in the program too.
  const queue: [Unit, number][] = [];
  const replaced: string[] = [];
  for (const u of units) {
    const d = diffs[u.idx].diff;
    const changedRo = new Set(d.data.changed);
    const fns = u.b.items(STT.FUNC);
    // A changed part (`f.cold`: the unlikely code, a catch handler) changes its function.
    const changed = new Set([...d.changed, ...d.changed.flatMap(functionOfPart)]);
    for (const [k, f] of fns) {
      const usesChangedRo = f.relocs.some((r) => {
        const base = r.split(':').slice(2).join(':').replace(/[+-]\d+$/, '');
        return changedRo.has(base) || [...changedRo].some((c) => c.split('@')[0] === base);
      });
      if (!changed.has(k) && !also.has(k) && !usesChangedRo) continue;
      if (FRAGMENT.test(f.name)) continue; // a .cold part comes with its function
      if (!g.inTarget(f.sym)) continue; // new: included if referenced
      const sec = u.b.elf.sections[f.sym.shndx];
      const others = (u.b.symsBySection.get(f.sym.shndx) ?? []).filter((s) => s.type === STT.FUNC && s !== f.sym && !FRAGMENT.test(s.name));
      if (others.length) {
        g.problems.push(`${k}: shares section ${sec.name} with ${others.map((s) => s.name).join(', ')}; build with -ffunction-sections (see \`hotload flags --diff\`)`);
        continue;
      }
      u.replace.push(f.sym);
      replaced.push(k);
      replacedIn[k] = u.rel;
      if (!u.include.has(f.sym.shndx)) {
        u.include.add(f.sym.shndx);
        queue.push([u, f.sym.shndx]);
      }
    }
  }
  if (replaced.length === 0 && g.problems.length === 0) {
    throw new HotloadError('NO_CHANGE', `${opts.to} runs the same code as ${opts.from}: no function changed`);
  }

  // Emit every included section; following relocations includes more.
  const names = new Map<ElfSymbol, string>();
  const used = new Set<string>();
  const nameOf = (s: ElfSymbol) => {
    let n = s.name;
    for (let i = 2; used.has(n) || n.startsWith('hotload_') || n.startsWith('hl.'); i++) n = `${s.name}.hl${i}`;
    used.add(n);
    names.set(s, n);
    return n;
  };
  const sectionsAsm: string[] = [];
  const done = new Set<string>();
  const drain = () => {
    while (queue.length) {
      const [u, sec] = queue.shift()!;
      const k = `${u.idx}.${sec}`;
      if (done.has(k)) continue;
      done.add(k);
      for (const s of u.b.symsBySection.get(sec) ?? []) if (!names.has(s) && s.name) nameOf(s);
      sectionsAsm.push(emitSection(g, u, sec, queue, names));
    }
  };
  drain();
  // Unwind tables for the included functions (after the code, whose
  // sections they refer to; their LSDAs may include more read-only data).
  let ehFrame: RebuildInfo['ehFrame'];
  for (const u of units) {
    const rec = unwindRecords(u);
    if (!rec) continue;
    // One list in one section: only the first block aligns (padding between
    // records would read as the terminator).
    const header = ['\t.section .rodata.hotload.eh_frame,"a",@progbits', ...(ehFrame ? [] : ['\t.p2align 3'])];
    ehFrame ??= { label: `hl.eh.${u.idx}`, personality: false };
    ehFrame.personality ||= rec.personality;
    sectionsAsm.push(emitBytes(g, u, { header, label: `hl.eh.${u.idx}`, name: `.eh_frame (${u.rel})`, data: rec.data, relocs: rec.relocs, labelsAt: new Map(), names, queue }));
    drain();
  }
  if (ehFrame) sectionsAsm.push('\t.section .rodata.hotload.eh_frame,"a",@progbits\n\t.long 0');
  if (g.problems.length) {
    throw new HotloadError('REBUILD_UNSUPPORTED', `${g.problems.length} reference${g.problems.length === 1 ? '' : 's'} of the changed code cannot be patched`, { details: g.problems });
  }

  const added: string[] = [];
  for (const u of units) {
    for (const sec of u.include) {
      for (const s of u.b.symsBySection.get(sec) ?? []) if (s.type === STT.FUNC && !g.inTarget(s) && !FRAGMENT.test(s.name)) added.push(key(s));
    }
  }

  // Metadata: what each function replaces, the prev slots, the target.
  const meta: string[] = [];
  const pairs = units.flatMap((u) => u.replace.map((s) => `${key(s)}\\0${names.get(s)}\\0`));
  meta.push(`\t.section ${'.hotload.replace'},"a",@progbits\n\t.ascii "${pairs.join('')}"`);
  meta.push(`\t.section ${TARGET_SECTION},"a",@progbits\n\t.asciz ${JSON.stringify(JSON.stringify(target))}`);
  meta.push('\t.data\n\t.p2align 3');
  for (const u of units) {
    for (const s of u.replace) {
      const n = `hotload_prev__${names.get(s)}`;
      meta.push(`\t.globl ${asmName(n)}\n\t.type ${asmName(n)}, @object\n\t.size ${asmName(n)}, 8\n${asmName(n)}:\n\t.quad 0`);
    }
  }
  meta.push('\t.globl hotload_applied_at\n\t.type hotload_applied_at, @object\n\t.size hotload_applied_at, 8\nhotload_applied_at:\n\t.quad 0');
  meta.push('\t.globl hotload_source_path\n\t.type hotload_source_path, @object\n\t.size hotload_source_path, 512\nhotload_source_path:\n\t.zero 512');
  const info: RebuildInfo = { version: 1, refs: g.refs, data: g.dataDefs, ehFrame };
  meta.push(`\t.section ${REBUILD_SECTION},"",@progbits\n\t.ascii ${JSON.stringify(JSON.stringify(info))}`);
  meta.push(`\t.section ${FIXUP_SECTION},"",@progbits`);
  for (const f of g.fixups) meta.push(`\t.quad ${f.at}\n\t.quad ${f.addend}\n\t.long ${f.kind}\n\t.long ${f.ref}`);
  meta.push('\t.section .note.GNU-stack,"",@progbits');

  const asm = `# generated by hotload mkpatch --from ${opts.from} --to ${opts.to}\n${[...sectionsAsm, ...g.extraAsm, ...meta].join('\n')}\n`;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hotload-rebuild-'));
  try {
    const src = path.join(work, 'patch.s');
    fs.writeFileSync(src, asm);
    const tmpOut = path.join(work, 'patch.so');
    const cc = opts.cc ?? process.env.CC ?? 'cc';
    const r = cp.spawnSync(cc, ['-shared', '-nostdlib', '-Wl,--build-id', '-Wl,-z,noexecstack', '-Wl,-z,now', src, '-o', tmpOut], { encoding: 'utf8' });
    if (r.error || r.status !== 0) {
      if (process.env.HOTLOAD_KEEP_ASM) fs.copyFileSync(src, process.env.HOTLOAD_KEEP_ASM);
      throw new HotloadError('INTERNAL', `linking the patch failed (${cc})`, { details: (r.stderr || String(r.error)).trim().split('\n') });
    }
    if (process.env.HOTLOAD_KEEP_ASM) fs.copyFileSync(src, process.env.HOTLOAD_KEEP_ASM);
    const patchElf = ElfFile.open(tmpOut);
    const plan = planPatch(readPatch(patchElf), patchElf, targetElf, loadPadIndex(targetElf));
    fs.copyFileSync(tmpOut, opts.out);
    fs.chmodSync(opts.out, 0o644);
    return { out: opts.out, target, plan, diffs, replaced: replaced.sort(), replacedIn, added: added.sort() };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** Same size and bytes. */
export function sameFile(a: string, b: string): boolean {
  try {
    if (fs.statSync(a).size !== fs.statSync(b).size) return false;
    return fs.readFileSync(a).equals(fs.readFileSync(b));
  } catch {
    return false;
  }
}

/** A stand-in "old build" for an object file new in the build: nothing in it existed. */
function emptyLike(b: Build): Build {
  const e = Object.create(Build.prototype) as Build;
  Object.assign(e, { elf: b.elf, relocatable: true, syms: [], relocsBySection: new Map(), symsBySection: new Map() });
  return e;
}
