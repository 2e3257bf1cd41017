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

import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { HotloadError } from '@hotload/errors';
import { BuildTypes, UnitTypes, ElfFile, ElfSymbol, SHF, SHT, STB, STT, Section, functionLines, inlinedFunctions, changedLayouts, typeLayouts, demangled, perFile, relocationType } from '@hotload/elf';

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
  /**
   * Changed functions whose code differs only by constants that moved with
   * their line number (`__LINE__`, as assert() uses it), because lines were
   * inserted or removed above them. Still changed, and patched; said so the
   * user is not surprised. From DWARF, with `inlines`.
   */
  lineOnly: string[];
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

function same(a: Item, b: Item): boolean {
  return a.size === b.size && a.bytes.equals(b.bytes) && a.relocs.length === b.relocs.length && a.relocs.every((r, i) => r === b.relocs[i]);
}

/**
 * `hotload diff`: two files (objects, or programs linked with --emit-relocs),
 * or two directories of object files paired by relative path.
 */
export function diffBuilds(oldPath: string, newPath: string): BuildDiff & { objects: { compared: number; identical: number } } {
  const dirs = [oldPath, newPath].map((p) => fs.existsSync(p) && fs.statSync(p).isDirectory());
  if (dirs[0] !== dirs[1]) throw new HotloadError('USAGE', `compare a directory with a directory, or a file with a file (${oldPath}, ${newPath})`);
  const pair = dirs[0] ? [objectFiles(oldPath), objectFiles(newPath)] : [new Map([['', oldPath]]), new Map([['', newPath]])];
  const set = diffObjectSets(pair[0], pair[1], { inlines: true, always: dirs[0] ? undefined : new Set(['']) }); // two files: compared even when identical
  return { ...set.merged, objects: { compared: set.units.length, identical: set.identical } };
}

/** One object file of a rebuild that is not byte-identical to its old copy. */
export interface UnitDiff {
  rel: string;
  /** The old object; undefined when the file is new. */
  a?: Build;
  b: Build;
  diff: BuildDiff;
}

/**
 * Diff a rebuild object file by object file, then across them: a global
 * function that left one file for another is one function, changed or not (a
 * patch must replace it, not add a second copy beside the running one); and a
 * function removed while code of the new build still refers to it (which then
 * does not link, and a patch would quietly call the old copy) is refused.
 * Identical object files are skipped unless named in `always`.
 */
export function diffObjectSets(
  oldObjs: Map<string, string>,
  newObjs: Map<string, string>,
  opts: { inlines?: boolean; always?: Set<string>; belongs?: (old: Build | undefined) => boolean; layouts?: boolean } = {},
): { units: UnitDiff[]; merged: BuildDiff; identical: number; otherModules: string[] } {
  // `layouts: false`: only what changed, without comparing the types (watch's
  // quick look before mkpatch; mkpatch compares them with compareLayouts while
  // the patch links).
  // `belongs`: in a tree holding several modules' objects, whether a changed
  // object file (by its old build's copy; undefined for a new file) is one of
  // the target's (others are left out, and listed).
  const otherModules: string[] = [];
  const units: UnitDiff[] = [];
  let identical = 0;
  for (const [rel, file] of newObjs) {
    const old = oldObjs.get(rel);
    if (old && !opts.always?.has(rel) && sameFile(old, file)) {
      identical++;
      continue;
    }
    const b = Build.of(file);
    const a = old ? Build.of(old) : undefined;
    if (opts.belongs && !opts.belongs(a)) {
      otherModules.push(rel);
      continue;
    }
    units.push({ rel, a, b, diff: diffLoaded(a ?? emptyLike(b), b, opts) });
  }
  // Object files gone from the build: what they held is removed (or moved).
  const gone = [...oldObjs]
    .filter(([rel]) => !newObjs.has(rel))
    .map(([rel, file]) => ({ rel, a: Build.of(file) }))
    .filter((g) => {
      const keep = !opts.belongs || opts.belongs(g.a);
      if (!keep) otherModules.push(g.rel);
      return keep;
    });
  const refused: BuildDiff['refused'] = [];
  const goneRemoved = { fns: [] as string[], data: [] as string[] };
  for (const type of [STT.FUNC, STT.OBJECT]) {
    const fn = type === STT.FUNC;
    const listOf = (x: BuildDiff) => (fn ? x : x.data);
    const itemsB = new Map(units.map((u) => [u, u.b.items(type)]));
    // Asked per removed function, answered from one pass over the new build:
    // the names its globals define, and who refers to each relocation target.
    let globalsB: Set<string> | undefined;
    let referrers: Map<string, { unit: UnitDiff; key: string }[]> | undefined;
    const referrersOf = (target: string) => {
      if (!referrers) {
        referrers = new Map();
        for (const v of units) {
          for (const [fk, f] of itemsB.get(v)!) {
            for (const t of new Set(f.relocs.map(relocTarget))) {
              const l = referrers.get(t);
              if (l) l.push({ unit: v, key: fk });
              else referrers.set(t, [{ unit: v, key: fk }]);
            }
          }
        }
      }
      return referrers.get(target) ?? [];
    };
    for (const u of [...units, ...gone]) {
      const itemsA = u.a ? u.a.items(type) : new Map<string, Item>();
      const unit = 'diff' in u ? u : undefined;
      for (const k of unit ? listOf(unit.diff).removed : [...itemsA.keys()]) {
        const was = itemsA.get(k)!;
        // Moved: a global added in another file.
        const to = was.local ? undefined : units.find((v) => listOf(v.diff).added.includes(k));
        if (to) {
          listOf(to.diff).added = listOf(to.diff).added.filter((x) => x !== k);
          if (unit) listOf(unit.diff).removed = listOf(unit.diff).removed.filter((x) => x !== k);
          const now = itemsB.get(to)!.get(k)!;
          if (same(was, now)) {
            if (fn) to.diff.unchanged++;
          } else if (fn || readOnlyDatum(to.b, now.sym)) {
            listOf(to.diff).changed = [...listOf(to.diff).changed, k].sort();
          } else {
            refused.push({ symbol: k, reason: `moved from ${u.rel || 'the old file'} to ${to.rel || 'the new file'}, and its ${was.size !== now.size ? `size changed from ${was.size} to ${now.size} bytes` : 'initial value changed'}` });
          }
          continue;
        }
        if (!unit) (fn ? goneRemoved.fns : goneRemoved.data).push(k);
        if (!fn) continue;
        // A function removed while the new build still refers to it, with no other of that name to bind to.
        globalsB ??= new Set(units.flatMap((v) => [...itemsB.get(v)!.values()].filter((f) => !f.local).map((f) => f.name)));
        if (globalsB.has(was.name)) continue;
        const users = new Set(referrersOf(k).map((x) => x.key));
        for (const x of referrersOf(was.name)) if (!was.local || x.unit.rel === u.rel) users.add(x.key);
        if (!was.local) {
          // In object files the rebuild left as they were, a reference is an undefined symbol.
          for (const [rel, file] of newObjs) {
            if (units.some((v) => v.rel === rel)) continue;
            if (ElfFile.open(file).symbols('.symtab').some((s) => s.shndx === 0 && s.name === was.name)) users.add(rel);
          }
        }
        if (users.size) refused.push({ symbol: k, reason: `removed, but ${[...users].sort().join(', ')} still ${users.size > 1 ? 'refer' : 'refers'} to it` });
      }
    }
  }
  const merged: BuildDiff = { changed: [], added: [], removed: goneRemoved.fns, unchanged: 0, data: { changed: [], added: [], removed: goneRemoved.data }, refused: [], inlined: {}, lineOnly: [] };
  for (const { diff } of units) {
    merged.changed.push(...diff.changed);
    merged.added.push(...diff.added);
    merged.removed.push(...diff.removed);
    merged.unchanged += diff.unchanged;
    merged.data.changed.push(...diff.data.changed);
    merged.data.added.push(...diff.data.added);
    merged.data.removed.push(...diff.data.removed);
    merged.refused.push(...diff.refused);
    Object.assign(merged.inlined, diff.inlined);
    merged.lineOnly.push(...diff.lineOnly);
  }
  merged.refused.push(...refused);
  if (opts.layouts !== false) typeRefusals(units, merged.refused);
  for (const l of [merged.changed, merged.added, merged.removed, merged.data.changed, merged.data.added, merged.data.removed]) l.sort();
  return { units, merged, identical, otherModules };
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

/**
 * The type-layout refusals of a diff made with `layouts: false`, added to its
 * `merged.refused` (what diffObjectSets does itself otherwise).
 */
export function compareLayouts(set: { units: UnitDiff[]; merged: BuildDiff }): void {
  typeRefusals(set.units, set.merged.refused);
}

/**
 * Types whose layout changed between the builds (from their DWARF; see
 * packages/elf/src/dwarf-types.ts), added to `refused`: the running process
 * holds data of the old layout, which new code would misread. A type only new
 * code uses (added, or in an object file new to the build) is no concern. A
 * datum refused because its initial value changed is, when its type reaches
 * a changed type, said to follow from that layout change. Builds without type
 * information are refused: there would be no telling.
 */
function typeRefusals(units: UnitDiff[], refused: BuildDiff['refused']): void {
  const found = new Map<string, { changes: string[]; users: Set<string>; files: Set<string> }>();
  const seen: UnitTypes[] = [];
  for (const u of units) {
    if (!u.a) continue; // a new object file: every type in it is the new code's
    const ta = u.a.types();
    const tb = u.b.types();
    for (const [t, b] of [[ta, u.a], [tb, u.b]] as const) {
      if (t.lacking) {
        throw new HotloadError('REBUILD_UNSUPPORTED', `${b.elf.path}: ${t.lacking}; hotload compares the layout of every type the running code uses, and cannot without them`, {
          hint: 'Build with -g (not -g1, not -gsplit-dwarf); `hotload flags --diff` prints every flag a rebuild needs.',
        });
      }
    }
    seen.push(...ta.units);
    for (const { unit: ua, key: k, changes } of changedLayouts(ta, tb)) {
      const f = found.get(k) ?? { changes, users: new Set<string>(), files: new Set<string>() };
      for (const x of ua.users().get(k) ?? []) f.users.add(x);
      f.files.add(path.basename(ua.unit || u.rel));
      found.set(k, f);
    }
  }
  if (!found.size) return;
  const dataTypes = new Map<string, Set<string>>();
  for (const ua of seen) for (const [name, set] of ua.dataTypes()) dataTypes.set(name, set);
  // The data the datum's initial value points into (its relocations' targets), by name.
  const pointsInto = (symbol: string): string[] => {
    for (const u of units) {
      const item = u.b.items(STT.OBJECT).get(symbol);
      if (item) return item.relocs.map((r) => relocTarget(r).split('@')[0]);
    }
    return [];
  };
  for (const r of refused) {
    if (!/initial value changed/.test(r.reason)) continue;
    const reached = [r.symbol.split('@')[0], ...pointsInto(r.symbol)].flatMap((d) => [...(dataTypes.get(d) ?? [])]);
    const via = [...new Set(reached)].filter((k) => found.has(k)).sort();
    if (via.length) r.reason = `its initial value changed because ${via.join(', ')} changed layout (see there): the addresses it holds moved`;
  }
  for (const [k, f] of [...found].sort((x, y) => x[0].localeCompare(y[0]))) {
    const shown = f.changes.slice(0, 4).join('; ') + (f.changes.length > 4 ? `; and ${f.changes.length - 4} more` : '');
    const users = [...f.users].sort();
    const who = users.length ? `used by ${users.length} of the running build's functions and data, e.g. ${users.slice(0, 3).map(demangled).join(', ')}` : 'defined in the running build';
    refused.push({ symbol: k, reason: `${shown}; ${who} (${[...f.files].sort().join(', ')}): the running process holds data of the old layout, which new code would misread. Restart the process with the new build` });
  }
}

/** No function or datum changed, was added or removed (refusals aside). */
export function changesNothing(d: BuildDiff): boolean {
  return !d.changed.length && !d.added.length && !d.removed.length && !d.data.changed.length && !d.data.added.length && !d.data.removed.length;
}

/** Do `a` and `b` differ only in 32-bit little-endian fields where b's value is a's plus `delta`? */
function onlyShiftedBy(a: Buffer, b: Buffer, delta: number): boolean {
  if (a.length !== b.length || a.equals(b)) return false;
  for (let p = 0; p < a.length; ) {
    if (a[p] === b[p]) {
      p++;
      continue;
    }
    // The field holding byte p starts at most 3 bytes before it.
    let q = Math.max(0, p - 3);
    for (; q <= p && q + 4 <= a.length; q++) if (b.readInt32LE(q) - a.readInt32LE(q) === delta) break;
    if (q > p || q + 4 > a.length) return false;
    p = q + 4;
  }
  return true;
}

/** `inlines`: read the new build's DWARF for BuildDiff.inlined (tens of ms for a large object; patches do not need it). */
export function diffLoaded(a: Build, b: Build, opts: { inlines?: boolean } = {}): BuildDiff {
  const res: BuildDiff = { changed: [], added: [], removed: [], unchanged: 0, data: { changed: [], added: [], removed: [] }, refused: [], inlined: {}, lineOnly: [] };
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
      const t = relocTarget(r);
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

  for (const l of [res.changed, res.added, res.removed, res.data.changed, res.data.added, res.data.removed]) l.sort();

  // Changed only because its line moved: every differing byte lies in a
  // 32-bit constant that grew by exactly the function's line shift.
  if (opts.inlines && res.changed.length) {
    const la = functionLines(a.elf);
    const lb = functionLines(b.elf);
    for (const k of res.changed) {
      const o = fa.get(k)!;
      const n = fb.get(k)!;
      const name = k.split('@')[0];
      const before = la.get(name);
      const after = lb.get(name);
      if (before === undefined || after === undefined || before === after) continue;
      if (o.size !== n.size || o.relocs.join('\n') !== n.relocs.join('\n')) continue;
      if (onlyShiftedBy(o.bytes, n.bytes, after - before)) res.lineOnly.push(k);
    }
  }

  // Why a caller changed: a changed function inlined into it.
  if (opts.inlines && res.changed.length) {
    const inl = inlinedFunctions(b.elf);
    const changedNames = new Set(res.changed.map((k) => k.split('@')[0]));
    const outOfLine = new Set([...fb.values()].map((f) => f.name));
    // Who inlines each function (plain names): a copy-less static that some
    // unchanged function inlines too did not change (its every user would have).
    const inliners = new Map<string, Set<string>>();
    for (const [f, gs] of inl) {
      if (f.includes('@')) continue;
      for (const g of gs) (inliners.get(g) ?? inliners.set(g, new Set()).get(g)!).add(f);
    }
    // A user changed only by line numbers inlines exactly the code it did: then g did not change.
    const lineOnly = new Set(res.lineOnly.map((k) => k.split('@')[0]));
    const allChanged = (g: string) => [...(inliners.get(g) ?? [])].every((f) => changedNames.has(f) && !lineOnly.has(f));
    for (const k of res.changed) {
      const callees = inl.get(k) ?? inl.get(k.split('@')[0]);
      // Changed itself, or a static with no copy of its own whose every user
      // changed, none only by its line numbers (a header's inline functions,
      // such as the C++ library's, are external: left out).
      const why = [...(callees ?? [])].filter((g) => changedNames.has(g) || (!outOfLine.has(g) && inl.local.has(g) && allChanged(g))).sort();
      if (why.length) res.inlined[k] = why;
    }
  }
  foldAliases(res, fa, fb);
  return res;
}

/**
 * Aliases (one address, several names: the complete- and base-object
 * constructors and destructors C1/C2, D1/D2 of g++ and clang++) are one
 * function: listed once, by the first of its names. A patch replaces it once
 * and attach redirects every name (they share the pad).
 */
function foldAliases(res: BuildDiff, fa: Map<string, Item>, fb: Map<string, Item>): void {
  const lineOnly = new Set(res.lineOnly);
  const changed = new Set(res.changed);
  const fold = (list: string[], items: Map<string, Item>, counted = false) => {
    const first = new Map<string, string>();
    return list.filter((k) => {
      const s = items.get(k)!.sym;
      const at = `${s.shndx}:${s.value}`;
      const kept = first.get(at);
      if (kept === undefined) {
        first.set(at, k);
        return true;
      }
      if (counted) return false;
      if (lineOnly.has(k)) lineOnly.add(kept);
      if (res.inlined[k]) res.inlined[kept] ??= res.inlined[k];
      lineOnly.delete(k);
      delete res.inlined[k];
      return false;
    });
  };
  res.changed = fold(res.changed, fb);
  res.added = fold(res.added, fb);
  res.removed = fold(res.removed, fa, true);
  const unchanged = [...fb.keys()].filter((k) => fa.has(k) && !changed.has(k));
  res.unchanged -= unchanged.length - fold(unchanged, fb, true).length;
  res.lineOnly = [...lineOnly].sort();
}

/**
 * Object files of a build: a file, or every .o under a directory (by relative
 * path). A directory read before is read again only when its times changed
 * (an entry added, removed or renamed changes them): watch asks several times
 * per save, and a source tree such as memcached's has 500 entries in 33
 * directories, of which a save changes one or two.
 */
export function objectFiles(build: string): Map<string, string> {
  if (!fs.existsSync(build)) throw new HotloadError('FILE_NOT_FOUND', `${build}: no such file or directory`);
  const out = new Map<string, string>();
  if (!fs.statSync(build).isDirectory()) {
    out.set(path.basename(build), build);
    return out;
  }
  const walk = (dir: string) => {
    for (const [name, isDir] of listing(dir).entries) {
      const p = path.join(dir, name);
      if (isDir) walk(p);
      else out.set(path.relative(build, p), p);
    }
  };
  walk(build);
  if (out.size === 0) throw new HotloadError('FILE_NOT_FOUND', `${build}: no object files (.o) in it`, { hint: 'Give the build directories that hold the objects (keep them: see `hotload flags --diff`).' });
  return out;
}

/** A directory's subdirectories and object files (in the order it lists them), read again when its times change. */
function listing(dir: string): Listing {
  const st = fs.statSync(dir, { bigint: true });
  const stamp = `${st.dev}:${st.ino}:${st.mtimeNs}:${st.ctimeNs}`;
  const known = listings.get(dir);
  if (known && known.stamp === stamp) return known;
  // Changed within the last second: the file system's clock ticks coarsely
  // (milliseconds), so a change later in the same tick would leave these
  // times as they are. Such a directory is read again next time.
  const racy = Date.now() - Number((st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs) / 1000000n) < 1000;
  const l: Listing = { stamp: racy ? '' : stamp, entries: [] };
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) l.entries.push([e.name, true]);
    else if (e.isFile() && e.name.endsWith('.o')) l.entries.push([e.name, false]);
  }
  if (listings.size > 10000) listings.clear();
  listings.set(dir, l);
  return l;
}
type Listing = { stamp: string; entries: [name: string, isDir: boolean][] };
const listings = new Map<string, Listing>();

/** Same size and bytes. */
export function sameFile(a: string, b: string): boolean {
  try {
    const sa = fs.statSync(a, { bigint: true });
    const sb = fs.statSync(b, { bigint: true });
    if (sa.size !== sb.size) return false;
    if (sa.dev === sb.dev && sa.ino === sb.ino) return true; // one file (a hard link)
    // The same two files, neither changed since they were compared (watch asks on every save).
    const key = [a, b, ...[sa, sb].flatMap((x) => [x.dev, x.ino, x.mtimeNs, x.ctimeNs])].join('\0');
    let same = sameFiles.get(key);
    if (same === undefined) {
      same = fs.readFileSync(a).equals(fs.readFileSync(b));
      if (sameFiles.size > 4096) sameFiles.clear();
      sameFiles.set(key, same);
    }
    return same;
  } catch {
    return false;
  }
}
const sameFiles = new Map<string, boolean>();

/** A stand-in "old build" for an object file new in the build: nothing in it existed. */
export function emptyLike(b: Build): Build {
  const e = Object.create(Build.prototype) as Build;
  Object.assign(e, { elf: b.elf, relocatable: true, syms: [], relocsBySection: new Map(), symsBySection: new Map() });
  return e;
}
