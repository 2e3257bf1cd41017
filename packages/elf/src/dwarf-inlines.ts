// Which functions each function has inlined, from the DWARF debug information
// (dwarf.ts): every concrete DW_TAG_subprogram and the
// DW_TAG_inlined_subroutine entries under it, named through their
// DW_AT_abstract_origin / DW_AT_specification. `hotload diff` uses it to say
// that a caller differs because a function inlined into it changed.

import { isHotloadError } from '@hotload/errors';
import { ElfFile } from './read-elf';
import { Die, TAG, dieAt, readUnits } from './dwarf';

/**
 * For every function with code in this file: the names of the functions
 * inlined into it (directly or nested). Keys are plain names; statics are also
 * keyed `name@file` (the compile unit's base name), as `hotload diff` names them.
 * Names are symbol names (C++: mangled). `local` holds the inlined functions
 * that are file-local (static, not DW_AT_external).
 */
export function inlinedFunctions(elf: ElfFile): Map<string, Set<string>> & { local: Set<string> } {
  const local = new Set<string>();
  const out = Object.assign(new Map<string, Set<string>>(), { local });
  let units;
  try {
    units = readUnits(elf);
  } catch (e) {
    if (isHotloadError(e)) throw e; // a section that cannot be read: say so
    return out; // unreadable or unusual DWARF: no inline information, never an error
  }
  for (const u of units) {
    const cuName = u.name.split('/').pop()!;
    // A DIE's symbol name (the linkage name of C++, else the name) and
    // whether it is external, following abstract_origin/specification.
    const chain = (d: Die | undefined) => {
      const c: Die[] = [];
      for (; d && c.length < 8; d = dieAt(u, d.origin)) c.push(d);
      return c;
    };
    const nameOf = (d: Die) => {
      const c = chain(d);
      return c.find((x) => x.linkage)?.linkage ?? c.find((x) => x.name)?.name;
    };
    // Each entry's function: the innermost concrete subprogram around it (or itself).
    const owner: number[] = [];
    u.dies.forEach((d, i) => {
      owner[i] = d.tag === TAG.subprogram && d.concrete ? i : d.parent >= 0 ? owner[d.parent] : -1;
      if (d.tag !== TAG.inlinedSubroutine || d.parent < 0 || owner[d.parent] < 0) return;
      const f = nameOf(u.dies[owner[d.parent]]);
      const g = nameOf(d);
      if (!f || !g || f === g) return;
      if (!chain(d).some((x) => x.external)) local.add(g);
      for (const k of [f, `${f}@${cuName}`]) {
        const set = out.get(k) ?? new Set<string>();
        set.add(g);
        out.set(k, set);
      }
    });
  }
  return out;
}
