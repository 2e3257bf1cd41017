// The suffixes gcc (and clang) add to a function's name when they make more
// code of it, and what each means for patching. One classifier: the pad
// index, the rebuild's choice of what to replace and watch's patch names all
// ask it.
//
//   f.cold, f.cold.1        the unlikely code split out of f: no entry of its
//                           own (f jumps into it), so it comes with f
//   f.part.0                partial inlining: callers that inlined f's head
//                           call f.part.0 directly, so it has its own entry
//   f.isra.0, f.constprop.0 copies specialised for some callers, who call them
//   f.lto_priv.0, f.localalias, f.specialized.0   (own entries too)

export type GccSuffix =
  /** No entry of its own: part of `base`. */
  | { kind: 'cold'; base: string }
  /** A copy with its own entry, made from `base`: some callers call it, not `base`. */
  | { kind: 'clone'; base: string };

const COLD = /^(.+?)\.cold(?:\.\d+)?$/;
const CLONE = /^(.+?)\.(?:isra|constprop|part|lto_priv|localalias|specialized)(?:\.\d+)?/;

/** What a compiler-added suffix of `name` says, or undefined for a plain name. A `@file` key suffix is kept out. */
export function gccSuffix(name: string): GccSuffix | undefined {
  if (!name.includes('.')) return undefined;
  const bare = name.split('@')[0];
  let m = COLD.exec(bare);
  if (m) return { kind: 'cold', base: m[1] };
  m = CLONE.exec(bare);
  if (m) return { kind: 'clone', base: m[1] };
  return undefined;
}
