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
