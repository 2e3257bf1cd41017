// A build as the diff sees it: an ELF file that still carries its relocations
// (an object file, or a program linked with --emit-relocs), each function and
// datum described by its bytes with relocated fields masked out, plus its
// relocations by what they refer to (a name and offset; a string literal by
// its text; unnamed data by its bytes), so code that only moved compares equal.

import { createHash } from 'crypto';
import { HotloadError } from '@hotload/errors';
import { BuildTypes, ElfFile, ElfSymbol, SHF, SHT, STB, STT, Section, perFile, relocationType, typeLayouts } from '@hotload/elf';

export interface Item {
  name: string;
  sym: ElfSymbol;
  /** Bytes with relocated fields zeroed. */
  bytes: Buffer;
  /** Relocations, described position-independently. */
  relocs: string[];
  size: number;
  local: boolean;
}

const SHF_MERGE = 0x10;
const SHF_STRINGS = 0x20;

/** Name for a function/object: globals by name, locals qualified by their file so two statics do not collide. */
export function key(s: ElfSymbol): string {
  return s.bind === STB.LOCAL && s.file ? `${s.name}@${s.file}` : s.name;
}

const buildOf = perFile((elf) => new Build(elf.path, elf));

export class Build {
  readonly elf: ElfFile;
  readonly relocatable: boolean;
  readonly relocsBySection = new Map<number, { offset: number; type: number; sym: number; addend: bigint }[]>();
  readonly symsBySection = new Map<number, ElfSymbol[]>();
  readonly syms: ElfSymbol[];
  private typesRead?: BuildTypes;

  /** The layouts of the types its DWARF defines (read once). */
  types(): BuildTypes {
    return (this.typesRead ??= typeLayouts(this.elf));
  }

  /** The build of `file`, parsed once while the file stays as it is (watch diffs the same objects on every save). */
  static of(file: string): Build {
    return buildOf(ElfFile.open(file));
  }

  constructor(file: string, elf = ElfFile.open(file)) {
    this.elf = elf;
    this.relocatable = this.elf.header.type === 1; // ET_REL
    this.syms = this.elf.symbols('.symtab');
    if (this.syms.length === 0) throw new HotloadError('PATCH_BAD', `${file} has no symbol table (stripped?); diff needs it`);
    const relaForText = this.elf.sections.filter((s) => s.type === SHT.RELA && s.info > 0 && (this.elf.sections[s.info]?.flags & 4) !== 0);
    if (!this.relocatable && relaForText.length === 0) {
      throw new HotloadError('PATCH_BAD', `${file} carries no relocations for its code`, { hint: 'Link it with -Wl,--emit-relocs, or compare the object files (-c) instead (see `hotload flags --diff`).' });
    }
    for (const s of this.elf.sections) {
      if (s.type !== SHT.RELA || s.info === 0 || !(this.elf.sections[s.info]?.flags & 2)) continue;
      const list = this.relocsBySection.get(s.info) ?? [];
      list.push(...this.elf.relocations(s.name));
      this.relocsBySection.set(s.info, list);
    }
    for (const s of this.syms) {
      if (s.shndx === 0 || s.shndx >= 0xff00 || (s.type !== STT.FUNC && s.type !== STT.OBJECT)) continue;
      const l = this.symsBySection.get(s.shndx) ?? [];
      l.push(s);
      this.symsBySection.set(s.shndx, l);
    }
  }

  /**
   * Describe what a relocation refers to, independent of layout. `shallow`:
   * no content for unnamed data (describing the relocations inside that data).
   */
  private target(symIndex: number, addend: bigint, pcrel: boolean, shallow = false): string {
    const s = this.syms[symIndex];
    if (!s) return `?${symIndex}`;
    const bias = pcrel ? 4n : 0n; // a rip-relative field's addend includes -4 (its own size)
    const secIdx = s.shndx;
    const sec = secIdx > 0 && secIdx < 0xff00 ? this.elf.sections[secIdx] : undefined;
    const at = (s.type === STT.SECTION ? (this.relocatable || !sec ? 0 : sec.addr) : s.value) + Number(addend + bias);
    // String literals: by content. Their labels are renumbered whenever another
    // literal comes or goes, and a linked file has merged their sections.
    if (sec && sec.flags & SHF_MERGE && sec.flags & SHF_STRINGS) return `str=${JSON.stringify(this.cstr(sec, at))}`;
    const named = s.type !== STT.SECTION && s.name && !s.name.startsWith('.L');
    if (named) return `${s.name}${addend + bias ? `${addend + bias > 0n ? '+' : ''}${addend + bias}` : ''}`;
    if (!sec) return s.name || `sec?${secIdx}`;
    // From here on: unnamed data (a label such as .LC0, or a section and offset).
    const rel = at - (this.relocatable ? 0 : sec.addr); // offset in the section
    // Other constants the compiler pooled (.rodata.cst16: a local table's initial
    // values): by the bytes of the entry.
    if (sec.flags & SHF_MERGE && sec.entsize > 0 && sec.type !== SHT.NOBITS) {
      const start = rel - (rel % sec.entsize);
      return `cst=${this.elf.slice(sec.offset + start, sec.entsize, sec.name).toString('hex')}+${rel - start}`;
    }
    const inside = (this.symsBySection.get(secIdx) ?? []).find((x) => at >= x.value && at < x.value + Math.max(1, x.size));
    if (inside) return `${key(inside)}${at - inside.value ? `+${at - inside.value}` : ''}`;
    // Data no symbol names (the initial values of a local array, copied from
    // .data or .rodata): by its bytes up to the next symbol (at most 4 KiB),
    // relocated fields described, so a changed initializer changes its users.
    if (shallow || sec.type === SHT.NOBITS) return `${sec.name}+${rel}`;
    return `${sec.name}#${this.blob(secIdx, sec, at)}`; // no offset: in a linked file it shifts with everything before
  }

  /**
   * The bytes and relocations of unnamed data from `at` to where the next
   * piece starts (a symbol, or a place another relocation refers to; at most
   * 4 KiB), as one string.
   */
  private blob(secIdx: number, sec: Section, at: number): string {
    const base = this.relocatable ? 0 : sec.addr;
    const starts = this.refStarts(secIdx, base);
    let lo = 0;
    let hi = starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (starts[mid] <= at) lo = mid + 1;
      else hi = mid;
    }
    const next = (this.symsBySection.get(secIdx) ?? []).map((x) => x.value).filter((v) => v > at);
    const end = Math.min(base + sec.size, at + 4096, lo < starts.length ? starts[lo] : Infinity, ...next);
    const bytes = Buffer.from(this.elf.slice(sec.offset + (at - base), end - at, sec.name));
    const relocs: string[] = [];
    for (const r of this.relocsBySection.get(secIdx) ?? []) {
      if (r.offset < at || r.offset >= end) continue;
      const rt = relocationType(r.type, `${this.elf.path}: ${sec.name}`);
      bytes.fill(0, r.offset - at, Math.min(bytes.length, r.offset - at + rt.width));
      relocs.push(`${r.offset - at}/${r.type}/${this.target(r.sym, r.addend, rt.pcrel, true)}`);
    }
    // Trailing zeros are alignment padding as often as data (a string, then the
    // padding before the next piece): keep one.
    let n = bytes.length;
    while (n > 1 && bytes[n - 1] === 0 && bytes[n - 2] === 0) n--;
    return createHash('sha1').update(bytes.subarray(0, n)).update(relocs.sort().join(',')).digest('hex').slice(0, 16);
  }

  /** Every place in section `secIdx` some relocation refers to, sorted: where the pieces of unnamed data begin. */
  private refStarts(secIdx: number, base: number): number[] {
    this.starts ??= new Map();
    let l = this.starts.get(secIdx);
    if (!l) {
      const set = new Set<number>();
      for (const list of this.relocsBySection.values()) {
        for (const r of list) {
          const t = this.syms[r.sym];
          if (!t || t.shndx !== secIdx) continue;
          set.add((t.type === STT.SECTION ? base : t.value) + Number(r.addend) + (relocationType(r.type, this.elf.path).pcrel ? 4 : 0));
        }
      }
      l = [...set].sort((a, b) => a - b);
      this.starts.set(secIdx, l);
    }
    return l;
  }

  private cstr(sec: Section, addr: number): string {
    const off = sec.offset + (addr - (this.relocatable ? 0 : sec.addr));
    if (off < 0 || off >= this.elf.buf.length) return '';
    const end = this.elf.buf.indexOf(0, off);
    return this.elf.buf.toString('latin1', off, Math.min(end < 0 ? off : end, off + 4096));
  }

  // Caches, created on first use (emptyLike() makes a Build without running the field initializers).
  private itemsByType?: Map<number, Map<string, Item>>;
  private starts?: Map<number, number[]>;

  /**
   * Functions (or objects) with their masked bytes and relocations. Computed
   * once per type: the per-file diff, the across-files pass and mkpatch all
   * ask for them. Callers must not change what is returned.
   */
  items(type: number): Map<string, Item> {
    this.itemsByType ??= new Map();
    let out = this.itemsByType.get(type);
    if (!out) {
      out = this.computeItems(type);
      this.itemsByType.set(type, out);
    }
    return out;
  }

  private computeItems(type: number): Map<string, Item> {
    const out = new Map<string, Item>();
    for (const s of this.syms) {
      if (s.type !== type || s.shndx === 0 || s.shndx >= 0xff00 || s.size === 0) continue;
      const sec = this.elf.sections[s.shndx];
      const start = s.value - (this.relocatable ? 0 : sec.addr);
      const bytes = sec.type === SHT.NOBITS ? Buffer.alloc(0) : Buffer.from(this.elf.slice(sec.offset + start, s.size, `${s.name}`));
      const relocs: string[] = [];
      for (const r of this.relocsBySection.get(s.shndx) ?? []) {
        const pos = r.offset - s.value; // section-relative in objects, vaddr in linked files: same difference
        if (pos < 0 || pos >= s.size) continue;
        const rt = relocationType(r.type, `${this.elf.path}: ${s.name}`);
        // The field zeroed byte by byte: Buffer#fill checks its arguments first, which costs more than the 4 or 8 stores.
        for (let k = pos, end = Math.min(bytes.length, pos + rt.width); k < end; k++) bytes[k] = 0;
        relocs.push(`${pos}:${r.type}:${this.target(r.sym, r.addend, rt.pcrel)}`);
      }
      relocs.sort();
      out.set(key(s), { name: s.name, sym: s, bytes, relocs, size: s.size, local: s.bind === STB.LOCAL });
    }
    return out;
  }
}

/** What a relocation description (`pos:type:target`, from Build.items) refers to, without its offset. */
export function relocTarget(reloc: string): string {
  return reloc.split(':').slice(2).join(':').replace(/[+-]\d+$/, '');
}


/** Is this datum read-only (the process cannot have changed it, so a patch may carry its own copy)? */
export function readOnlyDatum(b: Build, s: ElfSymbol): boolean {
  const sec = b.elf.sections[s.shndx];
  return !!sec && readOnlySection(sec);
}

/**
 * Data the program cannot change: read-only sections, and `.data.rel.ro*`
 * (constants holding addresses, such as a function's table of labels, which
 * is only writable until the loader has relocated it).
 */
export function readOnlySection(sec: Section): boolean {
  return (sec.flags & SHF.WRITE) === 0 || sec.name.startsWith('.data.rel.ro');
}

/** A stand-in "old build" for an object file new in the build: nothing in it existed. */
export function emptyLike(b: Build): Build {
  const e = Object.create(Build.prototype) as Build;
  Object.assign(e, { elf: b.elf, relocatable: true, syms: [], relocsBySection: new Map(), symsBySection: new Map() });
  return e;
}
