// The layout of every named type of a build, from its DWARF (dwarf.ts), and
// what differs between two builds' layouts: the check that keeps a patch from
// a rebuild from reading the running process's memory with another layout.
//
// A layout is what code compiled against a type assumes of memory that holds
// one: a struct, class or union's size, its members' names, offsets, sizes,
// bit-fields and types, its base classes and their offsets, the order of its
// virtual functions (C++: the vtable's layout); an enum's size and values.
// Types are keyed by kind and name (`struct session`, `class ns::Conn`,
// `enum state`), an anonymous one by the typedef that names it (`conn_t
// (struct)`), and one nested without a name is spelled out inside its parent's
// member. Which functions and data of a build use a type (directly, or through
// pointers, arrays, members, typedefs, base classes) is recorded too, for the
// refusal to name them.

import { Die, TAG, Unit, childrenOf, dieAt, hasDwarf, readUnits, sameEntries } from './dwarf';
import { ElfFile } from './read-elf';

export interface Member {
  name: string;
  offset: number;
  size?: number;
  /** Bit-fields: width and offset in bits from the member's byte offset. */
  bits?: [number, number];
  type: string;
}

export interface TypeLayout {
  key: string;
  kind: 'struct' | 'class' | 'union' | 'enum';
  size?: number;
  members: Member[];
  bases: { type: string; offset?: number }[];
  /** Virtual functions in vtable order (C++). */
  virtuals: string[];
  /** Enumerators: name and value. */
  values: [string, bigint][];
}

export interface UnitTypes {
  /** The compile unit's name (its main source file). */
  unit: string;
  /** The unit's entries, as read for types. */
  entries: Unit;
  /** Computed when first asked: a unit whose entries are those of the unit it is compared with needs none. */
  readonly layouts: Map<string, TypeLayout>;
  /** Type key -> the functions and data of this unit that use it (computed when first asked: only a refusal needs it). */
  users(): Map<string, string[]>;
  /** Datum name -> the type keys its type reaches (for initial values that hold addresses). */
  dataTypes(): Map<string, Set<string>>;
}

export interface BuildTypes {
  units: UnitTypes[];
  /** Why the file has no type information to compare (no -g, or -g1), if so. */
  lacking?: string;
}

const AGGREGATE = new Map<number, TypeLayout['kind']>([
  [TAG.structure, 'struct'],
  [TAG.class, 'class'],
  [TAG.union, 'union'],
  [TAG.enumeration, 'enum'],
]);
/** Tags of type entries: a unit with none has no types to compare. */
const TYPE_TAGS = new Set<number>([TAG.baseType, TAG.pointer, TAG.structure, TAG.class, TAG.union, TAG.enumeration, TAG.typedef, TAG.subroutineType, TAG.array, TAG.const]);
/** Tags that only qualify or alias another type. */
const WRAPPERS = new Set<number>([TAG.typedef, TAG.const, TAG.volatile, TAG.restrict, TAG.atomic]);

/** The layouts of every type each unit of `elf` defines, and their users. */
export function typeLayouts(elf: ElfFile): BuildTypes {
  if (!hasDwarf(elf)) return { units: [], lacking: 'built without -g (no DWARF debug information)' };
  const units = readUnits(elf, true);
  const out: BuildTypes = { units: [] };
  for (const [i, u] of units.entries()) {
    if (u.split) out.lacking ??= 'built with -gsplit-dwarf (the types are in .dwo files, which hotload does not read)';
    else if (debugLevel(u.producer).level === 1) out.lacking ??= `built with ${debugLevel(u.producer).option}, which leaves out the types`;
    // clang does not record its options: functions described, no type at all.
    else if (u.code && !hasType(u)) out.lacking ??= 'built with -g1 or -gline-tables-only (its DWARF describes functions but no type)';
    out.units.push(unitTypes(u, () => readUnits(elf)[i]));
  }
  return out;
}

/**
 * The debug level a compiler's recorded options (DW_AT_producer) leave in
 * force: the last level option wins, as on the command line (a release
 * build's `-O2 -g1` followed by the user's `-g` is -g2). `-gdwarf-N` alone
 * means -g2; `-gmlt` and clang's `-gline-tables-only` are level 1.
 */
export function debugLevel(producer: string): { level: number; option: string } {
  let level = -1;
  let option = '';
  for (const tok of producer.split(/\s+/)) {
    let m: RegExpExecArray | null;
    if ((m = /^-g(?:gdb)?([0-3])$/.exec(tok))) level = Number(m[1]);
    else if (tok === '-g' || tok === '-ggdb') level = 2;
    else if (tok === '-gmlt' || tok === '-gline-tables-only') level = 1;
    else if (/^-gdwarf(-\d)?$/.test(tok)) level = level > 0 ? level : 2;
    else continue;
    option = tok;
  }
  return { level, option };
}

/** Has the unit any type entry? (From its table: the entries are not made into objects for this.) */
function hasType(u: Unit): boolean {
  for (let i = 0; i < u.table.n; i++) if (TYPE_TAGS.has(u.table.tag(i))) return true;
  return false;
}

/**
 * The types of one unit. `whole` gives the unit with its functions' bodies
 * when `u` was read for types only: the users of a type are found in it.
 */
function unitTypes(u: Unit, whole?: () => Unit): UnitTypes {
  const die = (off: number | undefined): Die | undefined => dieAt(u, off);
  const kids = (d: Die) => childrenOf(u, d);

  /** The name with its enclosing namespaces and classes (C++). */
  const qualified = (d: Die): string => {
    const parts = [d.name ?? ''];
    for (let p = d.parent; p >= 0; p = u.dies[p].parent) {
      const q = u.dies[p];
      if (q.tag === TAG.namespace || AGGREGATE.has(q.tag)) parts.unshift(q.name ?? '(anonymous)');
    }
    return parts.join('::');
  };

  const names = new Map<number, string>();
  /** A type as source spells it (canonical, for comparison); an anonymous aggregate spelled out. */
  const typeName = (off: number | undefined, depth = 0): string => {
    const d = die(off);
    if (!d) return 'void';
    const known = names.get(d.off);
    if (known !== undefined) return known;
    if (depth > 12) return '...';
    let s: string;
    const inner = () => typeName(d.type, depth + 1);
    switch (d.tag) {
      case TAG.baseType: s = d.name ?? '?'; break;
      case TAG.typedef: s = qualified(d); break;
      case TAG.pointer: s = `${inner()} *`; break;
      case TAG.reference: s = `${inner()} &`; break;
      case TAG.rvalueReference: s = `${inner()} &&`; break;
      case TAG.const: s = `const ${inner()}`; break;
      case TAG.volatile: s = `volatile ${inner()}`; break;
      case TAG.atomic: s = `_Atomic ${inner()}`; break;
      case TAG.restrict: s = `${inner()} restrict`; break;
      case TAG.array: s = `${inner()}${kids(d).filter((k) => k.tag === TAG.subrange).map((k) => `[${k.count ?? (k.upperBound !== undefined ? k.upperBound + 1 : '')}]`).join('') || '[]'}`; break;
      case TAG.subroutineType: s = `${inner()} (${kids(d).filter((k) => k.tag === TAG.formalParameter).map((k) => typeName(k.type, depth + 1)).join(', ')})`; break;
      case TAG.ptrToMember: s = `${inner()} ${typeName(d.containingType, depth + 1)}::*`; break;
      default: {
        const kind = AGGREGATE.get(d.tag);
        if (!kind) s = `<tag 0x${d.tag.toString(16)}>`;
        else if (d.name) s = `${kind} ${qualified(d)}`;
        else s = `${kind} { ${signature(layoutOf(d, ''), depth + 1)} }`;
      }
    }
    names.set(d.off, s);
    return s;
  };

  /** Size in bytes of a type, through typedefs, qualifiers and arrays. */
  const sizeOf = (off: number | undefined, depth = 0): number | undefined => {
    const d = die(off);
    if (!d || depth > 16) return undefined;
    if (d.byteSize !== undefined) return d.byteSize;
    if (WRAPPERS.has(d.tag)) return sizeOf(d.type, depth + 1);
    if (d.tag === TAG.array) {
      const el = sizeOf(d.type, depth + 1);
      if (el === undefined) return undefined;
      let n = el;
      for (const k of kids(d)) if (k.tag === TAG.subrange) n *= k.count ?? (k.upperBound !== undefined ? k.upperBound + 1 : 0);
      return n;
    }
    return undefined;
  };

  const layoutOf = (d: Die, key: string): TypeLayout => {
    const kind = AGGREGATE.get(d.tag)!;
    const l: TypeLayout = { key, kind, size: d.byteSize, members: [], bases: [], virtuals: [], values: [] };
    let anonymous = 0;
    for (const k of kids(d)) {
      if (k.tag === TAG.member && !k.declaration && (k.memberOffset !== undefined || kind === 'union' || k.dataBitOffset !== undefined)) {
        // A static data member is a declaration (C++), not part of the layout.
        // Unnamed members (a union inside a struct) are told apart by their order.
        const m: Member = { name: k.name ?? `(anonymous #${++anonymous})`, offset: k.memberOffset ?? 0, size: sizeOf(k.type), type: typeName(k.type) };
        if (k.bitSize !== undefined) {
          if (k.dataBitOffset !== undefined) {
            m.offset = Math.floor(k.dataBitOffset / 8);
            m.bits = [k.bitSize, k.dataBitOffset % 8];
          } else {
            // DWARF 2/3: bit_offset counts from the storage unit's most significant bit.
            const unit = (k.byteSize ?? m.size ?? 0) * 8;
            m.bits = [k.bitSize, unit - (k.bitOffset ?? 0) - k.bitSize];
          }
        }
        l.members.push(m);
      } else if (k.tag === TAG.inheritance) {
        l.bases.push({ type: typeName(k.type), offset: k.memberOffset });
      } else if (k.tag === TAG.subprogram && k.virtuality) {
        l.virtuals.push(`${k.name ?? '?'}@${k.vtableElem ?? '?'}`);
      } else if (k.tag === TAG.enumerator && k.name) {
        l.values.push([k.name, k.constValue ?? 0n]);
      }
    }
    return l;
  };

  // Every defined (not merely declared) named type, and anonymous ones a
  // typedef names, with its key; worked out when first asked.
  let layouts: Map<string, TypeLayout> | undefined;
  const keyOf = new Map<number, string>();
  const keyed = (): Map<string, TypeLayout> => {
    if (layouts) return layouts;
    for (const d of u.dies) {
      const kind = AGGREGATE.get(d.tag);
      if (kind && d.name && !d.declaration) keyOf.set(d.off, `${kind} ${qualified(d)}`);
    }
    for (const d of u.dies) {
      if (d.tag !== TAG.typedef || !d.name) continue;
      const t = die(d.type);
      if (t && AGGREGATE.has(t.tag) && !t.name && !t.declaration && !keyOf.has(t.off)) keyOf.set(t.off, `${qualified(d)} (${AGGREGATE.get(t.tag)})`);
    }
    layouts = new Map();
    for (const [off, key] of keyOf) if (!layouts.has(key)) layouts.set(key, layoutOf(die(off)!, key));
    return layouts;
  };

  // Which type keys a type reaches (through pointers, arrays, members, typedefs, bases).
  const reach = new Map<number, Set<string>>();
  const reachOf = (off: number | undefined): Set<string> => {
    const d = die(off);
    if (!d) return new Set();
    const done = reach.get(d.off);
    if (done) return done;
    const set = new Set<string>();
    reach.set(d.off, set); // before the members: a struct that points to itself
    const key = keyOf.get(d.off);
    if (key) set.add(key);
    if (d.type !== undefined) for (const k of reachOf(d.type)) set.add(k);
    if (AGGREGATE.has(d.tag) || d.tag === TAG.subroutineType) {
      for (const k of kids(d)) if (k.tag === TAG.member || k.tag === TAG.inheritance || k.tag === TAG.formalParameter) for (const x of reachOf(k.type)) set.add(x);
    }
    return set;
  };

  // The users: functions (their return type, parameters and variables) and data.
  let usersOf: { users: Map<string, string[]>; dataTypes: Map<string, Set<string>> } | undefined;
  const findUsers = () => {
    if (usersOf) return usersOf;
    if (u.bodies || !whole) return (usersOf = usersIn());
    const w = unitTypes(whole());
    return (usersOf = { users: w.users(), dataTypes: w.dataTypes() });
  };
  return {
    unit: u.name,
    entries: u,
    get layouts() {
      return keyed();
    },
    users: () => findUsers().users,
    dataTypes: () => findUsers().dataTypes,
  };

  function usersIn() {
  keyed();
  const users = new Map<string, string[]>();
  const dataTypes = new Map<string, Set<string>>();
  const chainName = (d: Die): string | undefined => {
    for (let x: Die | undefined = d, n = 0; x && n < 8; x = die(x.origin), n++) if (x.linkage || x.name) return x.linkage ?? x.name;
    return undefined;
  };
  const fnOf: number[] = [];
  const used = new Map<string, Set<string>>(); // user -> keys
  u.dies.forEach((d, i) => {
    fnOf[i] = d.tag === TAG.subprogram ? i : d.parent >= 0 ? fnOf[d.parent] : -1;
    let user: string | undefined;
    let t: number | undefined;
    if (d.tag === TAG.subprogram && d.concrete) {
      user = chainName(d);
      t = d.type ?? die(d.origin)?.type;
    } else if ((d.tag === TAG.formalParameter || d.tag === TAG.variable) && fnOf[i] >= 0) {
      const f = u.dies[fnOf[i]];
      if (!f.concrete) return;
      user = chainName(f);
      t = d.type ?? die(d.origin)?.type;
    } else if (d.tag === TAG.variable && !d.declaration) {
      user = chainName(d);
      t = d.type ?? die(d.origin)?.type;
      if (user) dataTypes.set(user, reachOf(t));
    }
    if (!user || t === undefined) return;
    const s = used.get(user) ?? new Set<string>();
    for (const k of reachOf(t)) s.add(k);
    used.set(user, s);
  });
  for (const [user, keys] of used) {
    for (const k of keys) {
      const l = users.get(k);
      if (l) l.push(user);
      else users.set(k, [user]);
    }
  }
  return { users, dataTypes };
  }
}

/** A layout as one line, for anonymous types spelled inside their parent. */
function signature(l: TypeLayout, depth: number): string {
  if (depth > 12) return '...';
  if (l.kind === 'enum') return l.values.map(([n, v]) => `${n}=${v}`).join(', ');
  return l.members.map((m) => `${m.type} ${m.name}@${m.offset}${m.bits ? `:${m.bits[0]}+${m.bits[1]}` : ''}`).join('; ');
}

/**
 * The types whose layout differs between two builds of one object file: each
 * unit of the new build against the old build's unit of the same name (or the
 * only one of each), each type both define.
 */
export function* changedLayouts(old: BuildTypes, now: BuildTypes): Generator<{ unit: UnitTypes; key: string; changes: string[] }> {
  for (const ub of now.units) {
    const ua = old.units.find((x) => x.unit === ub.unit) ?? (old.units.length === 1 && now.units.length === 1 ? old.units[0] : undefined);
    if (!ua || sameEntries(ua.entries, ub.entries)) continue;
    for (const [key, lb] of ub.layouts) {
      const la = ua.layouts.get(key);
      const changes = la ? layoutChanges(la, lb) : [];
      if (changes.length) yield { unit: ua, key, changes };
    }
  }
}

/** Field by field: nearly every type compared is unchanged, so this answers most comparisons. */
function sameLayout(a: TypeLayout, b: TypeLayout): boolean {
  if (a.kind !== b.kind || a.size !== b.size || a.members.length !== b.members.length || a.bases.length !== b.bases.length || a.virtuals.length !== b.virtuals.length || a.values.length !== b.values.length) return false;
  for (let i = 0; i < a.members.length; i++) {
    const m = a.members[i];
    const n = b.members[i];
    if (m.name !== n.name || m.offset !== n.offset || m.size !== n.size || m.type !== n.type || m.bits?.[0] !== n.bits?.[0] || m.bits?.[1] !== n.bits?.[1]) return false;
  }
  for (let i = 0; i < a.bases.length; i++) if (a.bases[i].type !== b.bases[i].type || a.bases[i].offset !== b.bases[i].offset) return false;
  for (let i = 0; i < a.virtuals.length; i++) if (a.virtuals[i] !== b.virtuals[i]) return false;
  for (let i = 0; i < a.values.length; i++) if (a.values[i][0] !== b.values[i][0] || a.values[i][1] !== b.values[i][1]) return false;
  return true;
}

/** What differs between two layouts of one type, in words; empty when they are the same. */
export function layoutChanges(a: TypeLayout, b: TypeLayout): string[] {
  if (sameLayout(a, b)) return [];
  const out: string[] = [];
  if (a.size !== b.size) out.push(`size ${a.size ?? '?'} -> ${b.size ?? '?'}`);
  if (a.kind === 'enum' || b.kind === 'enum') {
    const bv = new Map(b.values);
    for (const [n, v] of a.values) {
      if (!bv.has(n)) out.push(`value ${n} removed`);
      else if (bv.get(n) !== v) out.push(`value ${n} ${v} -> ${bv.get(n)}`);
    }
    return out;
  }
  const bm = new Map(b.members.map((m) => [m.name, m]));
  const am = new Map(a.members.map((m) => [m.name, m]));
  for (const m of b.members) if (!am.has(m.name)) out.push(`field ${m.name} inserted at offset ${m.offset}${m.offset >= (a.size ?? Infinity) ? ' (past the old end)' : ''}`);
  for (const m of a.members) {
    const n = bm.get(m.name);
    if (!n) {
      out.push(`field ${m.name} removed`);
      continue;
    }
    if (m.type !== n.type) out.push(`${m.name}: ${m.type} -> ${n.type}`);
    if (m.offset !== n.offset) out.push(`${m.name} ${m.offset} -> ${n.offset}`);
    else if (m.size !== n.size && m.type === n.type) out.push(`${m.name}: size ${m.size ?? '?'} -> ${n.size ?? '?'}`);
    const bits = (x: Member) => (x.bits ? `${x.bits[0]} bits at bit ${x.bits[1]}` : 'not a bit-field');
    if (String(m.bits) !== String(n.bits)) out.push(`${m.name}: ${bits(m)} -> ${bits(n)}`);
  }
  const bb = b.bases.map((x) => `${x.type}@${x.offset ?? '?'}`).join(', ');
  const ab = a.bases.map((x) => `${x.type}@${x.offset ?? '?'}`).join(', ');
  if (ab !== bb) out.push(`base classes ${ab || '(none)'} -> ${bb || '(none)'}`);
  if (a.virtuals.join() !== b.virtuals.join()) {
    const plain = (l: string[]) => l.map((v) => v.split('@')[0]);
    const added = plain(b.virtuals).filter((v) => !plain(a.virtuals).includes(v));
    const gone = plain(a.virtuals).filter((v) => !plain(b.virtuals).includes(v));
    out.push(added.length || gone.length ? `virtual functions${added.length ? ` ${added.join(', ')} added` : ''}${gone.length ? ` ${gone.join(', ')} removed` : ''} (the vtable's layout changed)` : 'virtual functions reordered (the vtable\'s layout changed)');
  }
  if (!out.length && JSON.stringify(a, replacer) !== JSON.stringify(b, replacer)) out.push('layout changed');
  return out;
}

const replacer = (_k: string, v: unknown) => (typeof v === 'bigint' ? v.toString() : v);
