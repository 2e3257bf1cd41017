// `hotload diff <old> <new>`: which functions and data differ between two builds
// of one program, by code with the relocations taken into account.
//
// Inputs are ELF files that still carry their relocations: object files
// (`-c`), or programs and libraries linked with `-Wl,--emit-relocs` (see
// `hotload flags --diff`). With `-ffunction-sections -fdata-sections` every
// function and datum has a section of its own, so a reference is a name, not a
// section offset that shifts when something else grows.
//
// A function is compared as its bytes with every relocated field masked out,
// plus its list of relocations, each as (offset, type, what it refers to).
// "What it refers to" is a symbol name and offset, or for a string literal
// (a merged string section) the string itself. So a function whose bytes moved
// only because something else changed compares equal.
//
// Data objects are compared by size and initial bytes (relocated fields masked,
// their targets compared by name). Changes that code cannot carry are refused,
// each naming its symbol: a datum whose size changed (a struct that gained a
// field), a changed initial value of data that already exists in the process.

import { HotloadError } from '@hotload/errors';
import { ElfFile, ElfSymbol, SHF, SHT, STB, STT, Section, inlinedFunctions } from '@hotload/elf';

export interface BuildDiff {
  changed: string[];
  added: string[];
  removed: string[];
  unchanged: number;
  data: { changed: string[]; added: string[]; removed: string[] };
  /** Changes a patch cannot carry, each with its reason. */
  refused: { symbol: string; reason: string }[];
  /**
   * Changed functions that have inlined a function which changed too, or which
   * has no copy of its own to compare (a `static inline` used only inlined):
   * they may differ only because of that, and must be in the patch all the
   * same. From the DWARF of the new build (built with -g); empty without it.
   */
  inlined: Record<string, string[]>;
}

interface Item {
  name: string;
  sym: ElfSymbol;
  /** Bytes with relocated fields zeroed. */
  bytes: Buffer;
  /** Relocations, described position-independently. */
  relocs: string[];
  size: number;
  local: boolean;
}

const FIELD: Record<number, number> = { 1: 8, 2: 4, 4: 4, 9: 4, 10: 4, 11: 4, 24: 8, 41: 4, 42: 4, 26: 4 };
const SHF_MERGE = 0x10;
const SHF_STRINGS = 0x20;

/** Name for a function/object: globals by name, locals qualified by their file so two statics do not collide. */
export function key(s: ElfSymbol): string {
  return s.bind === STB.LOCAL && s.file ? `${s.name}@${s.file}` : s.name;
}

export class Build {
  readonly elf: ElfFile;
  readonly relocatable: boolean;
  readonly relocsBySection = new Map<number, { offset: number; type: number; sym: number; addend: bigint }[]>();
  readonly symsBySection = new Map<number, ElfSymbol[]>();
  readonly syms: ElfSymbol[];

  constructor(file: string) {
    this.elf = ElfFile.open(file);
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

  /** Describe what a relocation refers to, independent of layout. */
  private target(symIndex: number, addend: bigint, pcrel: boolean): string {
    const s = this.syms[symIndex];
    if (!s) return `?${symIndex}`;
    const bias = pcrel ? 4n : 0n; // a rip-relative field's addend includes -4 (its own size)
    if (s.type !== STT.SECTION && s.name) {
      const sec = s.shndx > 0 && s.shndx < 0xff00 ? this.elf.sections[s.shndx] : undefined;
      // String literals: by content. Their labels (.LC0, ...) are renumbered
      // whenever another literal comes or goes, and a linked file has merged
      // their sections into .rodata.
      if (sec && ((sec.flags & SHF_MERGE && sec.flags & SHF_STRINGS) || s.name.startsWith('.L'))) {
        return `str:${JSON.stringify(this.cstr(sec, s.value + Number(addend + bias)))}`;
      }
      return `${s.name}${addend + bias ? `${addend + bias > 0n ? '+' : ''}${addend + bias}` : ''}`;
    }
    const sec = this.elf.sections[s.shndx];
    if (!sec) return `sec?${s.shndx}`;
    const at = (this.relocatable ? 0 : sec.addr) + Number(addend + bias);
    if (sec.flags & SHF_MERGE && sec.flags & SHF_STRINGS) return `str:${JSON.stringify(this.cstr(sec, at))}`;
    const inside = (this.symsBySection.get(s.shndx) ?? []).find((x) => at >= x.value && at < x.value + Math.max(1, x.size));
    if (inside) return `${key(inside)}${at - inside.value ? `+${at - inside.value}` : ''}`;
    return `${sec.name}+${at - (this.relocatable ? 0 : sec.addr)}`;
  }

  private cstr(sec: Section, addr: number): string {
    const off = sec.offset + (addr - (this.relocatable ? 0 : sec.addr));
    if (off < 0 || off >= this.elf.buf.length) return '';
    const end = this.elf.buf.indexOf(0, off);
    return this.elf.buf.toString('latin1', off, Math.min(end < 0 ? off : end, off + 4096));
  }

  /** Functions (or objects) with their masked bytes and relocations. */
  items(type: number): Map<string, Item> {
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
        const width = FIELD[r.type] ?? 4;
        if (bytes.length) bytes.fill(0, pos, Math.min(bytes.length, pos + width));
        relocs.push(`${pos}:${r.type}:${this.target(r.sym, r.addend, r.type === 2 || r.type === 4 || r.type === 9 || r.type === 41 || r.type === 42 || r.type === 26 || r.type === 24)}`);
      }
      relocs.sort();
      out.set(key(s), { name: s.name, sym: s, bytes, relocs, size: s.size, local: s.bind === STB.LOCAL });
    }
    return out;
  }
}

function same(a: Item, b: Item): boolean {
  return a.size === b.size && a.bytes.equals(b.bytes) && a.relocs.length === b.relocs.length && a.relocs.every((r, i) => r === b.relocs[i]);
}

export function diffBuilds(oldFile: string, newFile: string): BuildDiff {
  return diffLoaded(new Build(oldFile), new Build(newFile), { inlines: true });
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

/** `inlines`: read the new build's DWARF for BuildDiff.inlined (tens of ms for a large object; patches do not need it). */
export function diffLoaded(a: Build, b: Build, opts: { inlines?: boolean } = {}): BuildDiff {
  const res: BuildDiff = { changed: [], added: [], removed: [], unchanged: 0, data: { changed: [], added: [], removed: [] }, refused: [], inlined: {} };
  const fa = a.items(STT.FUNC);
  const fb = b.items(STT.FUNC);
  for (const [k, f] of fb) {
    const o = fa.get(k);
    if (!o) res.added.push(k);
    else if (same(o, f)) res.unchanged++;
    else res.changed.push(k);
  }
  for (const k of fa.keys()) if (!fb.has(k)) res.removed.push(k);

  const da = a.items(STT.OBJECT);
  const db = b.items(STT.OBJECT);
  for (const [k, d] of db) {
    const o = da.get(k);
    if (!o) {
      res.data.added.push(k);
      continue;
    }
    if (same(o, d)) continue;
    res.data.changed.push(k);
    // Read-only data: the patch carries the new copy, and its users with it.
    if (readOnlyDatum(b, d.sym) && readOnlyDatum(a, o.sym)) continue;
    if (o.size !== d.size) {
      res.refused.push({ symbol: k, reason: `its size changed from ${o.size} to ${d.size} bytes (a changed struct layout or array size); the running process keeps the old layout, so code cannot be patched to use the new one` });
    } else {
      res.refused.push({ symbol: k, reason: 'its initial value changed; the running process already holds (and may have changed) the old value, so a patch cannot change it. Change it with an on-apply hook instead' });
    }
  }
  for (const k of da.keys()) if (!db.has(k)) res.data.removed.push(k);

  // Function-local statics are named `name.N`, numbered in source order among
  // those sharing `name`; one added or removed renumbers the rest, and the
  // names no longer say which is which.
  const family = (items: Map<string, Item>, build: Build) => {
    const m = new Map<string, number>();
    for (const [k, d] of items) {
      const f = /^(.*)\.\d+(@.*)?$/.exec(k);
      if (d.local && f && !readOnlyDatum(build, d.sym)) m.set(f[1] + (f[2] ?? ''), (m.get(f[1] + (f[2] ?? '')) ?? 0) + 1);
    }
    return m;
  };
  // Still fine when every function that used a `name.N` before uses the same
  // `name.N` now (gcc appends a new one when the others' functions are unchanged).
  const users = (fns: Map<string, Item>, datum: string) => {
    const plain = datum.split('@')[0];
    return new Set([...fns].filter(([, f]) => f.relocs.some((r) => {
      const t = r.split(':').slice(2).join(':').replace(/[+-]\d+$/, '');
      return t === datum || t === plain;
    })).map(([k]) => k));
  };
  const stable = (name: string) =>
    [...da.keys()].filter((k) => k.replace(/\.\d+(?=@|$)/, '') === name).every((m) => {
      const now = users(fb, m);
      return [...users(fa, m)].every((f) => !fb.has(f) || now.has(f));
    });
  const fa2 = family(da, a);
  for (const [name, n] of family(db, b)) {
    const before = fa2.get(name);
    if (before !== undefined && before !== n && !stable(name)) {
      res.refused.push({ symbol: name, reason: `the function-local statics named ${name.split('@')[0]} went from ${before} to ${n}: their numbering (${name.split('@')[0]}.0, .1, ...) shifted, so hotload cannot tell which running one each new one is. Give the new one another name` });
    }
  }

  // A removed function that unchanged code of the new build still refers to.
  for (const k of res.removed) {
    const name = fa.get(k)!.name;
    for (const [fk, f] of fb) {
      if (res.changed.includes(fk) || res.added.includes(fk)) continue;
      if (f.relocs.some((r) => r.split(':')[2] === name)) res.refused.push({ symbol: k, reason: `removed, but ${fk} (unchanged) still refers to it` });
    }
  }
  for (const l of [res.changed, res.added, res.removed, res.data.changed, res.data.added, res.data.removed]) l.sort();

  // Why a caller changed: a changed function inlined into it.
  if (opts.inlines && res.changed.length) {
    const inl = inlinedFunctions(b.elf);
    const changedNames = new Set(res.changed.map((k) => k.split('@')[0]));
    const outOfLine = new Set([...fb.values()].map((f) => f.name));
    for (const k of res.changed) {
      const callees = inl.get(k) ?? inl.get(k.split('@')[0]);
      // Changed itself, or a static with no copy of its own (a header's inline
      // functions, such as the C++ library's, are external: left out).
      const why = [...(callees ?? [])].filter((g) => changedNames.has(g) || (!outOfLine.has(g) && inl.local.has(g))).sort();
      if (why.length) res.inlined[k] = why;
    }
  }
  return res;
}
