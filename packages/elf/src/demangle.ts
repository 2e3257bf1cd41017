// C++ symbol names as people write them: `_ZNK6Square4areaEv` is
// `Square::area() const`. The demangling is binutils' c++filt (installed
// wherever gcc is), fed every name at once; without it, names stay as they are.

import { spawnSync } from 'child_process';

const cache = new Map<string, string>();

/** A name that may be a mangled C++ name (Itanium ABI), as hotload keys it (`name` or `name@file`). */
function mangled(name: string): boolean {
  return /^_Z/.test(name);
}

/**
 * The demangled form of each mangled name in `names` (a `@file` suffix kept);
 * names that are not mangled, or that c++filt cannot read, are left out.
 */
export function demangle(names: Iterable<string>): Map<string, string> {
  const todo = [...new Set([...names].filter((n) => mangled(n) && !cache.has(n)))];
  if (todo.length) {
    const bare = todo.map((n) => n.split('@')[0]);
    const r = spawnSync('c++filt', [], { input: bare.join('\n') + '\n', encoding: 'utf8', maxBuffer: 64 << 20 });
    const lines = r.status === 0 ? r.stdout.split('\n') : [];
    todo.forEach((n, i) => {
      const d = lines[i];
      const at = n.indexOf('@');
      cache.set(n, d && d !== bare[i] ? d + (at >= 0 ? n.slice(at) : '') : n);
    });
  }
  const out = new Map<string, string>();
  for (const n of names) {
    const d = cache.get(n);
    if (d !== undefined && d !== n) out.set(n, d);
  }
  return out;
}

/** One name, demangled when it can be. */
export function demangled(name: string): string {
  return demangle([name]).get(name) ?? name;
}

/** A C++ name as written, spaced one way: `Square :: area ( ) const` is `Square::area()const`. */
function normalCxx(x: string): string {
  return x.replace(/\s+/g, ' ').replace(/\s*([(),*&:<>])\s*/g, '$1').trim();
}

/** Without ABI tags: `make_names[abi:cxx11](int)` is `make_names(int)`, as source writes it. */
function untagged(x: string): string {
  return x.replace(/\[abi:[^\]]*\]/g, '');
}

/**
 * The one item whose names (mangled) demangle to `want`, a function named as
 * C++ source names it: `Square::area() const`, or `count_names` when only one
 * function has that name. ABI tags (`[abi:cxx11]`, on functions returning
 * std::string) may be given or left out: source never writes them. A problem
 * when several match (overloads: say which).
 */
export function findByCxxName<T>(items: T[], namesOf: (t: T) => string[], want: string): T | { problem: string } | undefined {
  const w = normalCxx(want);
  const names = demangle(items.flatMap(namesOf));
  const spelled = (t: T) => namesOf(t).map((n) => normalCxx(names.get(n) ?? ''));
  const shown = (t: T) => names.get(namesOf(t)[0]) ?? namesOf(t)[0];
  const exact = items.filter((t) => spelled(t).includes(w));
  if (exact.length === 1) return exact[0];
  const bare = untagged(w);
  const loose = exact.length ? exact : items.filter((t) => spelled(t).some((n) => untagged(n) === bare));
  if (loose.length === 1) return loose[0];
  if (loose.length > 1) return { problem: `${loose.length} functions match: ${loose.map(shown).join(', ')}; name one as shown` };
  if (w.includes('(')) return undefined;
  // No parameters given: the one function of that name, if there is one.
  const byName = items.filter((t) => spelled(t).some((n) => untagged(n).startsWith(bare + '(')));
  if (byName.length === 1) return byName[0];
  if (byName.length > 1) return { problem: `overloaded: ${byName.map(shown).join(', ')}; name one with its parameters ("${w}(int)")` };
  return undefined;
}
