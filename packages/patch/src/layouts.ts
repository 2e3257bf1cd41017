// Type layouts across a rebuild: a type whose layout changed between the
// running build and the rebuild is refused, naming it and its users (the
// process holds data of the old layout, which new code would misread).

import * as path from 'path';
import { HotloadError } from '@hotload/errors';
import { STT, UnitTypes, changedLayouts, demangled } from '@hotload/elf';
import { relocTarget } from './build';
import type { BuildDiff, UnitDiff } from './diff-builds';

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
export function typeRefusals(units: UnitDiff[], refused: BuildDiff['refused']): void {
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
