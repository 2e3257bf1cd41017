// Does a patch fit a target build? Used by `mkpatch` (before writing the .so)
// and by `attach` (before touching the process), so both refuse the same
// things, listing every problem at once:
// - each replaced function exists in the target and has a usable pad;
// - each HOTLOAD_STATIC name exists in the target's symbol table, once;
// - the patch's undefined symbols that the target defines but does not export
//   (so dlopen could not bind them) are named, with the fix.

import { HotloadError } from '@hotload/errors';
import { ElfFile, ElfSymbol, PadFunction, PadIndex, STB, STT, findByCxxName, findFunction } from '@hotload/elf';
import { PatchMeta } from './read-patch';
import { REBUILD_SECTION } from './rebuild-format';

export interface PlannedFunction {
  old: string;
  new: string;
  fn: PadFunction;
  newValue: number;
  prevSlot?: number;
}

export interface PatchPlan {
  functions: PlannedFunction[];
  /** HOTLOAD_STATIC name -> link-time address in the target. */
  refs: { name: string; slot: number; value: number }[];
  /** Notes that do not stop the patch (clones that keep the old code). */
  notes: string[];
}

/** A file as the process names it: attach opens the target through /proc/PID/root (the process's own view). */
function shownPath(elf: ElfFile): string {
  return elf.path.replace(/^\/proc\/\d+\/root(?=\/)/, '');
}

/** A defined symbol of the target named `name` (locals included); throws on ambiguity. */
export function targetSymbol(elf: ElfFile, name: string): { sym?: ElfSymbol; problem?: string } {
  const all = [...elf.symbols('.symtab'), ...elf.symbols('.dynsym')].filter(
    (s) => s.name === name && s.shndx !== 0 && s.shndx < 0xff00 && (s.type === STT.OBJECT || s.type === STT.FUNC || s.type === STT.NOTYPE || s.type === STT.GNU_IFUNC),
  );
  const values = [...new Set(all.map((s) => s.value))];
  if (values.length === 0) {
    const stripped = elf.symbols('.symtab').length === 0 ? ' (the target has no .symtab: it was stripped)' : '';
    return { problem: `${name}: no such symbol in ${shownPath(elf)}${stripped}` };
  }
  if (values.length > 1) {
    const where = all.map((s) => `${s.file ?? '?'}@0x${s.value.toString(16)}`).join(', ');
    return { problem: `${name}: ambiguous, ${values.length} symbols of that name in ${shownPath(elf)} (${where})` };
  }
  return { sym: all[0] };
}

/** A function of the target named as C++ source names it (`Square::area() const`). */
function cxxFunction(idx: PadIndex, name: string): PadFunction | { problem: string } | undefined {
  return findByCxxName(idx.functions, (f) => [f.name, ...f.aliases], name);
}

/** A function of the target as a patch names it: its symbol name, or as C++ source names it. */
export function resolveFunction(idx: PadIndex, name: string): PadFunction | undefined {
  const f = findFunction(idx, name) ?? cxxFunction(idx, name);
  return f && !('problem' in f) ? f : undefined;
}

export function planPatch(meta: PatchMeta, patchElf: ElfFile, target: ElfFile, idx: PadIndex): PatchPlan {
  const problems: string[] = [];
  const unresolved: string[] = [];
  const notes: string[] = [];
  const functions: PlannedFunction[] = [];
  // A patch made from a rebuild replaces every function that changed, gcc's
  // clones included: the advice about clones is for hand-written patches.
  const handWritten = !patchElf.section(REBUILD_SECTION);
  for (const r of meta.replacements) {
    const found = findFunction(idx, r.old) ?? cxxFunction(idx, r.old);
    if (!found || 'problem' in found) {
      problems.push(found ? `${r.old}: ${found.problem}` : `${r.old}: no such function in ${shownPath(target)}${/[:(]/.test(r.old) ? '' : ' (a C++ function: name it as Class::method(args), or by its mangled name from `hotload index --json`)'}`);
      continue;
    }
    const fn = found;
    if (fn.status !== 'patchable' && fn.status !== 'clone') {
      problems.push(`${r.old}: ${fn.status}: ${fn.reason ?? 'cannot be patched'}`);
      continue;
    }
    // One jump per entry: a second replacement of the same function (an alias,
    // or a copy from another object) is dropped when it is the same code, and
    // refused when it is not (which one would run?).
    const twice = functions.find((x) => x.fn.address === fn.address);
    if (twice) {
      if (twice.newValue !== r.newValue) problems.push(`${r.old}: replaced twice by this patch (by ${twice.new} and ${r.new}); replace it once`);
      continue;
    }
    if (fn.status === 'clone' && handWritten) notes.push(`${r.old}: ${fn.reason}`);
    if (fn.clones?.length && handWritten) notes.push(`${r.old}: callers that call ${fn.clones.join(', ')} keep the old code; replace those too`);
    functions.push({ old: fn.name === r.old || fn.aliases.includes(r.old) ? r.old : fn.name, new: r.new, fn, newValue: r.newValue, prevSlot: r.prevSlot });
  }
  const refs: PatchPlan['refs'] = [];
  for (const ref of meta.refs) {
    const { sym, problem } = targetSymbol(target, ref.name);
    const tls = problem && target.symbols('.symtab').some((s) => s.name === ref.name && s.type === STT.TLS && s.shndx !== 0);
    if (tls) unresolved.push(`HOTLOAD_STATIC(${ref.name}): a thread-local variable of ${shownPath(target)}; hotload cannot reach thread-local variables yet (each thread has its own copy)`);
    else if (problem) unresolved.push(`HOTLOAD_STATIC(${ref.name}): ${problem}`);
    else refs.push({ name: ref.name, slot: ref.slot, value: sym!.value });
  }
  // Undefined in the patch, defined in the target but not exported: dlopen
  // cannot bind it to the target's. A hand-written patch's plain `extern`
  // naming a `static` of the target would bind to another module's export of
  // that name if there is one (a program's own `daylight` became glibc's).
  const exported = new Set(target.symbols('.dynsym').filter((s) => s.shndx !== 0).map((s) => s.name));
  const inTarget = new Map(target.symbols('.symtab').filter((s) => s.shndx !== 0 && s.bind !== STB.LOCAL).map((s) => [s.name, s]));
  const statics = new Set(handWritten ? target.symbols('.symtab').filter((s) => s.shndx !== 0 && s.bind === STB.LOCAL && (s.type === STT.OBJECT || s.type === STT.FUNC || s.type === STT.TLS)).map((s) => s.name) : []);
  for (const s of patchElf.symbols('.dynsym')) {
    if (s.shndx !== 0 || !s.name || s.bind === STB.WEAK || exported.has(s.name)) continue;
    if (inTarget.has(s.name)) {
      unresolved.push(`${s.name}: a global of ${shownPath(target)} that it does not export; use HOTLOAD_STATIC(type, ${s.name}) or link the target with -rdynamic`);
    } else if (statics.has(s.name)) {
      unresolved.push(`${s.name}: a static of ${shownPath(target)}; a plain extern would bind to another module's ${s.name}, if any, not to the target's: use HOTLOAD_STATIC(type, ${s.name}) and HOTLOAD_REF(${s.name})`);
    }
  }
  // A function to replace that is missing or has no usable pad cannot be
  // patched (exit 4); a reference that does not resolve is the patch's (6).
  // The message names the symbols: the patch file may be mkpatch's temporary one.
  if (unresolved.length || problems.length) {
    const all = [...problems, ...unresolved];
    const names = all.map((p) => p.split(': ')[0]);
    const named = names.length > 3 ? `${names.slice(0, 3).join(', ')} and ${names.length - 3} more` : names.join(', ');
    throw new HotloadError(problems.length ? 'UNPATCHABLE' : 'PATCH_UNRESOLVED', `${named}: ${all.length === 1 ? all[0].slice(names[0].length + 2) : `${all.length} problems against ${shownPath(target)}`}`, {
      details: all,
      hint: problems.length ? 'Name a function the target has (`hotload index <target>` lists them) that was built with -fpatchable-function-entry=16,14.' : undefined,
    });
  }
  return { functions, refs, notes };
}
