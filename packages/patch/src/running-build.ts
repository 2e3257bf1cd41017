// Is the --from build the one the process runs? A patch is made from the
// difference between two builds, so it is only right when the old build is
// what the target file (the one the process runs, pinned by its build-id)
// was linked from. A --from directory of another build (one with a field
// added to a heap struct, say) compares clean against its rebuild and makes a
// patch whose code reads the running process's memory with the wrong layout.
//
// So each function of each --from object that the target has is compared with
// the target's own bytes: the same size, and the same bytes once the fields
// the linker fills in are set aside (relocated fields, the few bytes it may
// rewrite when it relaxes an access, and the two entry NOPs `hotload post`
// rewrites). Writable data must have the target's size. Objects of another
// module of the tree (most of their functions not in the target) are skipped.

import { ElfFile, ElfSymbol, STB, STT, gccSuffix, perFile, relocationType } from '@hotload/elf';
import { classifyEntryBytes, entryNopOffset, startsWithEndbr } from '@hotload/x86';
import { HotloadError } from '@hotload/errors';
import { isColdPart } from './rebuild-asm';
import { Build, key, readOnlyDatum } from './build';
import { objectFiles } from './object-files';

/** The functions and data of a linked target, found by an object's symbols. */
export class TargetSymbols {
  /** By key: locals name@file, globals by name without @version. */
  private byKey = new Map<string, ElfSymbol>();
  /** Locals by plain name (null: more than one). */
  private localByName = new Map<string, ElfSymbol | null>();

  constructor(target: ElfFile) {
    for (const s of target.symbols('.symtab')) {
      if (s.shndx === 0 || s.shndx >= 0xff00 || !s.name) continue;
      if (s.type !== STT.FUNC && s.type !== STT.OBJECT && s.type !== STT.GNU_IFUNC) continue;
      const k = s.bind === STB.LOCAL ? key(s) : s.name.replace(/@.*$/, '');
      if (!this.byKey.has(k)) this.byKey.set(k, s);
      if (s.bind === STB.LOCAL) this.localByName.set(s.name, this.localByName.has(s.name) ? null : s);
    }
  }

  get(k: string): ElfSymbol | undefined {
    return this.byKey.get(k);
  }

  /** The target's symbol for an object's symbol (globals by name, locals by name and file), or undefined. */
  of(s: ElfSymbol): ElfSymbol | undefined {
    const t = this.byKey.get(key(s));
    if (t || s.bind === STB.LOCAL) return t;
    // A hidden global of the objects is a local of the linked program.
    return this.localByName.get(s.name) ?? undefined;
  }
}

/** A target's symbols, gathered once per file. */
export const targetSymbols = perFile((elf) => new TargetSymbols(elf));

export interface FromObject {
  /** Path relative to the --from directory (or the file given). */
  rel: string;
  build: Build;
}


/**
 * Refuse (PATCH_BUILD_MISMATCH) --from objects that are not the build `target`
 * was linked from, naming the first object and function that differ.
 */
export function refuseIfNotRunning(from: string, targetPath: string, targetElf: ElfFile, redirected?: ReadonlySet<string>): void {
  const objects = [...objectFiles(from)].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([rel, file]) => ({ rel, build: Build.of(file) }));
  const inTarget = targetSymbols(targetElf);
  const diffs = differencesFromTarget(objects, targetElf, (s) => inTarget.of(s), targetOwns(targetElf), redirected);
  if (diffs.length === 0) return;
  throw new HotloadError('PATCH_BUILD_MISMATCH', `the objects in ${from} are not the build ${targetPath} was linked from (the first difference: ${diffs[0].replace(/: .*/, '')}, function or datum ${diffs[0].split(': ')[1]})`, {
    details: diffs,
    hint: 'Give --from the object files of the build the process runs (keep a copy of them when you start it). A patch applied since does not change that: make the next patch from the same --from, and it carries every change so far.',
  });
}

/**
 * For a tree holding several modules' objects (a program and the libraries or
 * plug-ins it loads, built side by side): is an object file one of `target`'s?
 * Yes when most of the running build's copy's strong global functions (its
 * local ones when it has none; weak ones only when it has nothing else) are
 * in the target's symbol table. A file new to the build belongs (nothing of
 * it runs anywhere yet). Without a symbol table in the target, every file does.
 */
export function targetOwns(targetElf: ElfFile): ((a: Build | undefined) => boolean) | undefined {
  const names = new Set(targetElf.symbols('.symtab').filter((s) => s.type === STT.FUNC && s.shndx !== 0).map((s) => s.name));
  if (names.size === 0) return undefined;
  return (a) => {
    if (!a) return true;
    const fns = a.syms.filter((s) => s.type === STT.FUNC && s.shndx !== 0 && s.size > 0 && !isColdPart(s.name));
    // Weak functions (inline functions and template instances of shared
    // headers) are in every module that uses them: they say nothing of whose
    // object this is, unless it has nothing else.
    const strong = fns.filter((s) => s.bind === STB.GLOBAL);
    const own = fns.filter((s) => s.bind !== STB.WEAK);
    const pool = strong.length ? strong : own.length ? own : fns;
    return pool.length === 0 || pool.filter((s) => names.has(s.name)).length * 2 >= pool.length;
  };
}

/** The target's symbol for an object's symbol (globals by name, locals by name and file), or undefined. */
export type InTarget = (s: ElfSymbol) => ElfSymbol | undefined;

/**
 * Where the --from objects differ from the target, one line per function or
 * datum (at most `limit`), objects in the order given. Empty when they are
 * its build.
 */
export function differencesFromTarget(objects: FromObject[], targetElf: ElfFile, inTarget: InTarget, belongs?: (b: Build) => boolean, redirected?: ReadonlySet<string>, limit = 12): string[] {
  const out: string[] = [];
  // A function the process runs from a patch (watch started again on a
  // patched process: the objects are the build those patches came from) may
  // differ from the file's copy; so may its cold part. Data may not.
  const patched = (fn: string) => redirected !== undefined && (redirected.has(fn) || (gccSuffix(fn)?.kind === 'cold' && redirected.has(gccSuffix(fn)!.base)));
  for (const { rel, build } of objects) {
    if (belongs && !belongs(build)) continue;
    for (const d of objectDifferences(build, targetElf, inTarget)) {
      if (d.fn !== undefined && patched(d.fn)) continue;
      if (out.length >= limit) return out;
      out.push(`${rel}: ${d.text}`);
    }
  }
  return out;
}

/**
 * One object's differences, found once per parsed object and target (Build.of
 * and ElfFile.open hand back the same while the files stay as they are):
 * watch makes every save's patch from the same copy of the running build.
 */
const checked = new WeakMap<Build, WeakMap<ElfFile, Difference[]>>();
/** A difference, with the target's name of the function it is in. */
interface Difference {
  fn?: string;
  text: string;
}
function objectDifferences(build: Build, targetElf: ElfFile, inTarget: InTarget): Difference[] {
  let byTarget = checked.get(build);
  if (!byTarget) checked.set(build, (byTarget = new WeakMap()));
  let out = byTarget.get(targetElf);
  if (out) return out;
  out = [];
  for (const s of build.syms) {
    if (s.shndx === 0 || s.shndx >= 0xff00 || s.size === 0) continue;
    if (s.type === STT.FUNC) {
      const t = inTarget(s);
      if (!t) continue; // not linked in (an unused static), or new
      const why = functionDiffers(build, s, targetElf, t);
      if (why) out.push({ fn: t.name, text: `${s.name}: ${why}` });
    } else if (s.type === STT.OBJECT) {
      const t = inTarget(s);
      if (t && t.size !== s.size && !readOnlyDatum(build, s)) out.push({ text: `${s.name}: ${s.size} bytes of data here, ${t.size} in the target` });
    }
  }
  byTarget.set(targetElf, out);
  return out;
}

/** Why function `s` of an object is not the target's `t`, or undefined when it is. */
function functionDiffers(build: Build, s: ElfSymbol, targetElf: ElfFile, t: ElfSymbol): string | undefined {
  if (t.type !== STT.FUNC) return undefined;
  if (t.size !== s.size) return `${s.size} bytes of code here, ${t.size} in the target`;
  const sec = build.elf.sections[s.shndx];
  const start = s.value - (build.relocatable ? 0 : sec.addr);
  const mine = Buffer.from(build.elf.slice(sec.offset + start, s.size, s.name));
  const off = targetElf.vaddrToOffset(t.value);
  if (off === undefined || off + t.size > targetElf.buf.length) return undefined; // not in the file's bytes: nothing to compare
  const theirs = Buffer.from(targetElf.buf.subarray(off, off + t.size));
  // What the linker fills in or may rewrite, set aside in both.
  const blank = (from: number, to: number) => {
    for (let k = Math.max(0, from); k < Math.min(mine.length, to); k++) mine[k] = theirs[k] = 0;
  };
  for (const r of build.relocsBySection.get(s.shndx) ?? []) {
    const pos = r.offset - s.value;
    if (pos < -16 || pos >= s.size) continue;
    const rt = relocationType(r.type, `${build.elf.path}: ${s.name}`);
    const [before, after] = rt.relaxed ?? [0, rt.width];
    blank(pos - before, pos + after);
  }
  // The entry's two NOPs: `90 90` from the compiler, `66 90` once posted.
  const e = entryNopOffset(startsWithEndbr(mine));
  if (classifyEntryBytes(mine, false, e) !== 'other' && classifyEntryBytes(theirs, false, e) !== 'other') blank(e, e + 2);
  if (mine.equals(theirs)) return undefined;
  let at = 0;
  while (mine[at] === theirs[at]) at++;
  return `its code differs from the target's at +${at} (${s.size} bytes)`;
}
