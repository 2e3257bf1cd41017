// What a patch .so says about itself, read from the file before it is loaded:
// - `.hotload.target` (written by mkpatch): the build-id and name of the module
//   it was built against;
// - `.hotload.replace` (HOTLOAD_REPLACE): pairs of names "old\0new\0";
// - `.hotload.redefine` (HOTLOAD_REDEFINE_CXX): records of two pointers, to a
//   C++ name and to its previous-target slot: the patch defines that function
//   itself, under the program's own (mangled) name;
// - symbols `hotload_ref__NAME` (HOTLOAD_STATIC): pointer slots hotload fills
//   with the address of the target's NAME;
// - symbols `hotload_prev__NEW`: slots recording what `old` ran before this
//   patch, for revert and status;
// - `hotload_on_apply` / `hotload_on_revert` (optional hooks), and
//   `hotload_applied_at` and `hotload_source_path` (filled in by attach: when,
//   and from which file the user applied it).
// Addresses here are link-time values of the patch; add its load bias.

import { HotloadError } from '@hotload/errors';
import { ElfFile, ElfSymbol, ET, R_X86_64, STT, findByCxxName } from '@hotload/elf';

export const TARGET_SECTION = '.hotload.target';
/** What the patch is, in words (HOTLOAD_DESCRIPTION, `mkpatch --description`): NUL-terminated texts. */
export const DESCRIPTION_SECTION = '.hotload.description';
export const REPLACE_SECTION = '.hotload.replace';
export const REDEFINE_SECTION = '.hotload.redefine';
const REF_PREFIX = 'hotload_ref__';
const PREV_PREFIX = 'hotload_prev__';
const KEEP_PREFIX = 'hotload_keep__';

export interface PatchTarget {
  version: number;
  buildId: string;
  /** Base name of the target file (the executable or library). */
  module: string;
  /** The path mkpatch was given, for messages. */
  path: string;
}

export interface Replacement {
  old: string;
  new: string;
  /** Link-time address of the new function in the patch. */
  newValue: number;
  /** Link-time address of its hotload_prev__ slot. */
  prevSlot?: number;
}

export interface StaticRef {
  name: string;
  slot: number;
}

export interface PatchMeta {
  file: string;
  buildId?: string;
  target: PatchTarget;
  replacements: Replacement[];
  refs: StaticRef[];
  onApply?: number;
  onRevert?: number;
  appliedAtSlot?: number;
  /** Address of `hotload_source_path` (char[512]): the file the user applied, written by attach. */
  sourcePathSlot?: number;
  /** Address of `hotload_hook_message` (a const char *), set by a failing hook. */
  hookMessageSlot?: number;
  /** What the patch is, in words (HOTLOAD_DESCRIPTION or `mkpatch --description`). */
  description?: string;
}

/** Defined symbols by name: .dynsym first, then .symtab (a `static` new function is only there). */
function defined(elf: ElfFile): Map<string, ElfSymbol> {
  const m = new Map<string, ElfSymbol>();
  for (const s of [...elf.symbols('.dynsym'), ...elf.symbols('.symtab')]) if (s.shndx !== 0 && s.name && !m.has(s.name)) m.set(s.name, s);
  return m;
}

/**
 * The function HOTLOAD_REPLACE's `hotload_keep__NEW` pointer points at: the
 * way to a new function whose symbol is not NEW (C++ mangles it). The pointer
 * is filled in by a dynamic relocation: RELATIVE (its addend is the address)
 * or 64 against a symbol.
 */
function keptFunction(elf: ElfFile, syms: Map<string, ElfSymbol>, name: string): ElfSymbol | undefined {
  const plain = KEEP_PREFIX + name;
  const keep = syms.get(plain) ?? syms.get(`_ZL${plain.length}${plain}`); // C++ mangles a file-local variable's name
  if (!keep) return undefined;
  const dyn = elf.symbols('.dynsym');
  for (const r of elf.relocations('.rela.dyn')) {
    if (r.offset !== keep.value) continue;
    const at = r.type === R_X86_64.RELATIVE ? Number(r.addend) : r.type === R_X86_64._64 ? (dyn[r.sym]?.value ?? 0) + Number(r.addend) : undefined;
    if (at === undefined) return undefined;
    return [...elf.symbols('.symtab'), ...dyn].find((s) => s.type === STT.FUNC && s.shndx !== 0 && s.value === at);
  }
  return undefined;
}

/**
 * HOTLOAD_REDEFINE_CXX records: each a C++ name (as source writes it) that the
 * patch defines itself, and the slot for what ran before. Both pointers are
 * filled in by RELATIVE relocations (the records' targets are the patch's own
 * statics), so the file says where they point.
 */
function redefinitions(elf: ElfFile, problems: string[]): Replacement[] {
  const sec = elf.section(REDEFINE_SECTION);
  if (!sec) return [];
  const at = new Map<number, number>();
  for (const r of elf.relocations('.rela.dyn')) if (r.type === R_X86_64.RELATIVE) at.set(r.offset, Number(r.addend));
  // The patch's functions, each once with every name it has (aliases: one address).
  const namesAt = new Map<number, { value: number; name: string; names: string[] }>();
  for (const s of [...elf.symbols('.symtab'), ...elf.symbols('.dynsym')]) {
    if (s.type !== STT.FUNC || s.shndx === 0) continue;
    const f = namesAt.get(s.value) ?? namesAt.set(s.value, { value: s.value, name: s.name, names: [] }).get(s.value)!;
    if (!f.names.includes(s.name)) f.names.push(s.name);
  }
  const out: Replacement[] = [];
  for (let rec = sec.addr; rec + 16 <= sec.addr + sec.size; rec += 16) {
    const nameAt = at.get(rec);
    const name = nameAt !== undefined ? elf.stringAt(nameAt) : undefined;
    if (!name) {
      problems.push(`${REDEFINE_SECTION}: a record at 0x${rec.toString(16)} names no function (use HOTLOAD_REDEFINE_CXX("Class::method(args)"))`);
      continue;
    }
    const fn = findByCxxName([...namesAt.values()], (f) => f.names, name);
    if (!fn || 'problem' in fn) {
      problems.push(`HOTLOAD_REDEFINE_CXX("${name}"): ${fn ? fn.problem : 'the patch defines no function of that name'} (define it in the patch as the program's source does, e.g. \`int Counter::next(int step) { ... }\`, with the class declared as the program declares it)`);
      continue;
    }
    out.push({ old: name, new: fn.name, newValue: fn.value, prevSlot: at.get(rec + 8) });
  }
  return out;
}

/** The replacement pairs of a patch file (without checking they resolve). */
export function replacementPairs(elf: ElfFile): { old: string; new: string }[] {
  const sec = elf.section(REPLACE_SECTION);
  if (!sec) return [];
  const words = elf.sectionData(sec).toString('latin1').split('\0').filter((w) => w.length > 0);
  const out: { old: string; new: string }[] = [];
  for (let i = 0; i + 1 < words.length; i += 2) out.push({ old: words[i], new: words[i + 1] });
  return out;
}

export function readTarget(elf: ElfFile): PatchTarget | undefined {
  const sec = elf.section(TARGET_SECTION);
  if (!sec) return undefined;
  try {
    const t = JSON.parse(elf.sectionData(sec).toString('utf8').replace(/\0+$/, '')) as PatchTarget;
    return typeof t.buildId === 'string' && typeof t.module === 'string' ? t : undefined;
  } catch {
    return undefined;
  }
}

/** Read and check a patch's metadata. Every problem is listed in one error. */
export function readPatch(elf: ElfFile): PatchMeta {
  if (elf.header.type !== ET.DYN || !elf.section('.dynamic')) {
    throw new HotloadError('PATCH_BAD', `${elf.path}: not a shared library (a patch is a .so made by hotload mkpatch)`);
  }
  const target = readTarget(elf);
  const pairs = replacementPairs(elf);
  const problems: string[] = [];
  if (!target) problems.push(`no ${TARGET_SECTION} section: it was not built by hotload mkpatch`);
  const replacements: Replacement[] = redefinitions(elf, problems);
  if (pairs.length === 0 && replacements.length === 0 && !elf.section(REDEFINE_SECTION)) problems.push('declares no replacement (HOTLOAD_REPLACE)');
  const syms = defined(elf);
  for (const p of pairs) {
    // A C function by its name; any other (a C++ function, mangled) by what
    // the macro's `hotload_keep__NEW` pointer holds: its relocation names it.
    const fn = syms.get(p.new) ?? keptFunction(elf, syms, p.new);
    if (!fn) {
      problems.push(`${p.new} (replacing ${p.old}) is not a function defined in the patch (define it in the patch file; in C++ any linkage works)`);
      continue;
    }
    replacements.push({ old: p.old, new: fn.name, newValue: fn.value, prevSlot: syms.get(PREV_PREFIX + p.new)?.value });
  }
  const refs: StaticRef[] = [];
  for (const [name, s] of syms) if (name.startsWith(REF_PREFIX)) refs.push({ name: name.slice(REF_PREFIX.length), slot: s.value });
  if (problems.length) {
    throw new HotloadError('PATCH_BAD', `${elf.path}: not a usable patch`, { details: problems });
  }
  return {
    file: elf.path,
    buildId: elf.buildId(),
    target: target!,
    replacements,
    refs,
    onApply: syms.get('hotload_on_apply')?.value,
    onRevert: syms.get('hotload_on_revert')?.value,
    appliedAtSlot: syms.get('hotload_applied_at')?.value,
    hookMessageSlot: syms.get('hotload_hook_message')?.value,
    sourcePathSlot: syms.get('hotload_source_path')?.value,
    ...(description(elf) !== undefined ? { description: description(elf) } : {}),
  };
}

function description(elf: ElfFile): string | undefined {
  const sec = elf.section(DESCRIPTION_SECTION);
  if (!sec) return undefined;
  // One text per NUL (the source's HOTLOAD_DESCRIPTION and mkpatch's --description may both be there).
  const texts = elf.sectionData(sec).toString('utf8').split('\0').map((t) => t.trim()).filter(Boolean);
  return texts.length ? texts.join('; ') : undefined;
}
