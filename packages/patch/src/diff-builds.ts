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

import * as fs from 'fs';
import { HotloadError } from '@hotload/errors';
import { ElfFile, STT, functionLines, inlinedFunctions } from '@hotload/elf';
import { Build, Item, emptyLike, readOnlyDatum, relocTarget } from './build';
import { objectFiles, sameFile } from './object-files';
import { typeRefusals } from './layouts';

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
