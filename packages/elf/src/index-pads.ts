// The pad-index pass: from an ELF file built with
// `-fpatchable-function-entry=16,14`, find every NOP pad, tie it to the
// function symbols at its entry, and say of every function whether hotload can
// redirect it, and if not, why.
//
// Facts it relies on:
// - `__patchable_function_entries` holds one 8-byte pointer per pad, to the pad's
//   first byte (entry - 14). In a PIE or shared library the pointer is also the
//   addend of an R_X86_64_RELATIVE relocation; GNU ld and lld write the addend in
//   place, but we fall back to the relocation when the word is zero.
// - The symbol of the function is at pad + 14. With -fcf-protection the entry
//   starts with endbr64 and the two patchable NOP bytes follow it.
// - gcc clones (f.isra.0, f.constprop.0, f.part.0) are separate functions with
//   their own pads; patching f does not reach callers that call a clone, and the
//   other way round. `f.cold` is the cold part of f: it has no entry of its own.
// - Start-up code from crt1.o/crti.o/crtbegin.o is never built with the flag,
//   and neither are helpers the compiler writes itself (clang's
//   `__clang_call_terminate`, in every C++ file that may terminate), nor
//   glibc's libc_nonshared.a, linked into every program that calls `atexit`
//   (C++ static objects do) or `pthread_atfork`: they are listed as `startup`
//   and do not fail `hotload check` (rebuilding with the flag could not give
//   them a pad).

import { HotloadError } from '@hotload/errors';
import { ElfFile, Section, perFile } from './read-elf';
import { R_X86_64 } from './relocations';
import { gccSuffix } from './gcc-names';
import { PAD_BEFORE, classifyEntryBytes, entryNopOffset, isNopRun, startsWithEndbr, thunkJumpOffset } from '@hotload/x86';

export const PAD_SECTION = '__patchable_function_entries';
export const INDEX_SECTION = '.hotload.index';
export const INDEX_VERSION = 1;

export type FunctionStatus =
  | 'patchable' // pad of NOPs at the entry
  | 'clone' // a gcc clone of another function, with its own pad
  | 'no-pad' // built without the flag
  | 'modified' // pad present but its bytes are not NOPs
  | 'part' // a split-off part (f.cold) with no entry of its own
  | 'startup' // toolchain code (crt start-up files, compiler helpers), never padded
  | 'thunk'; // a C++ thunk without a pad that adjusts `this` and jumps to a padded function

/** Statuses that `hotload check` fails on. */
export const UNPATCHABLE: ReadonlySet<FunctionStatus> = new Set(['no-pad', 'modified']);

export interface PadFunction {
  name: string;
  /** Other symbols at the same address. */
  aliases: string[];
  /** Entry address (the symbol's value), link-time. */
  address: number;
  size: number;
  status: FunctionStatus;
  /** First byte of the 16-byte pad (entry - 14), when there is one. */
  pad?: number;
  /** endbr64 at the entry; the patchable bytes are at entry + 4. */
  endbr: boolean;
  /** The entry NOPs are the single 2-byte `66 90` (`hotload post` ran). */
  posted: boolean;
  local: boolean;
  /** Source file named by the nearest STT_FILE symbol, for locals. */
  file?: string;
  /** For clones and parts: the function they were made from. */
  origin?: string;
  /** For an original: its clones, which patching it does not change. */
  clones?: string[];
  /** Why it is not plainly patchable. */
  reason?: string;
  hint?: string;
}

export interface PadIndex {
  version: number;
  buildId?: string;
  pie: boolean;
  /** Pointers in __patchable_function_entries. */
  padEntries: number;
  functions: PadFunction[];
  summary: Record<FunctionStatus, number>;
}

const STARTUP = new Set([
  '_start', '_init', '_fini', 'deregister_tm_clones', 'register_tm_clones', '__do_global_dtors_aux',
  'frame_dummy', '__libc_csu_init', '__libc_csu_fini', '_dl_relocate_static_pie', '__x86.get_pc_thunk.bx',
  '__clang_call_terminate', // clang, C++: no pad whatever the flags
  'atexit', 'at_quick_exit', '__pthread_atfork', '__stack_chk_fail_local', // glibc's libc_nonshared.a
]);

/** Shared by every function without aliases (never mutated). */
const NO_ALIASES: string[] = Object.freeze([]) as unknown as string[];


/** Link-time addresses of every pad, in section order. */
export function readPadAddresses(elf: ElfFile): number[] {
  const secs = elf.sections.filter((s) => s.name === PAD_SECTION);
  const out: number[] = [];
  let relatives: Map<number, bigint> | undefined;
  for (const s of secs) {
    const d = elf.sectionData(s);
    if (d.length % 8 !== 0) throw new HotloadError('ELF_MALFORMED', `${elf.path}: ${PAD_SECTION} size ${d.length} is not a multiple of 8`);
    for (let o = 0; o < d.length; o += 8) {
      let v = d.readBigUInt64LE(o);
      if (v === 0n) {
        relatives ??= relativeAddends(elf);
        v = relatives.get(s.addr + o) ?? 0n;
      }
      if (v !== 0n) out.push(Number(v));
    }
  }
  return out;
}

function relativeAddends(elf: ElfFile): Map<number, bigint> {
  const m = new Map<number, bigint>();
  for (const r of elf.relocations()) if (r.type === R_X86_64.RELATIVE) m.set(r.offset, r.addend);
  return m;
}

interface PadBytes {
  pad: number;
  ok: boolean;
  endbr: boolean;
  posted: boolean;
  problem?: string;
}

function inspectPad(elf: ElfFile, pad: number): PadBytes {
  const off = elf.vaddrToOffset(pad);
  const entry = pad + PAD_BEFORE;
  if (off === undefined || off + PAD_BEFORE + 6 > elf.buf.length) {
    return { pad, ok: false, endbr: false, posted: false, problem: `pad at 0x${pad.toString(16)} is outside the file's loaded bytes` };
  }
  const endbr = startsWithEndbr(elf.buf, off + PAD_BEFORE);
  const site = off + PAD_BEFORE + entryNopOffset(endbr);
  const state = classifyEntryBytes(elf.buf, endbr, site);
  const padNops = isNopRun(elf.buf, off, PAD_BEFORE);
  if (!padNops || (state !== 'nop' && state !== 'posted')) {
    const what = !padNops ? `the 14 bytes before 0x${entry.toString(16)}` : `the entry bytes at 0x${(entry + entryNopOffset(endbr)).toString(16)}`;
    return { pad, ok: false, endbr, posted: false, problem: `${what} are not NOPs (${elf.buf.subarray(off, site + 2).toString('hex')})` };
  }
  return { pad, ok: true, endbr, posted: state === 'posted' };
}

/**
 * Indices of `values` in ascending order. Packing value and index into one
 * double and using the native numeric sort is several times faster than a
 * comparator; it is exact while value * 2^21 + index stays below 2^53.
 */
function sortedOrder(values: Float64Array): Uint32Array {
  const n = values.length;
  const order = new Uint32Array(n);
  let max = 0;
  for (let i = 0; i < n; i++) if (values[i] > max) max = values[i];
  if (n < 1 << 21 && max < 2 ** 31) {
    const keys = new Float64Array(n);
    for (let i = 0; i < n; i++) keys[i] = values[i] * 2 ** 21 + i;
    keys.sort();
    for (let i = 0; i < n; i++) order[i] = keys[i] % 2 ** 21;
    return order;
  }
  for (let i = 0; i < n; i++) order[i] = i;
  return order.sort((a, b) => values[a] - values[b]);
}

/** Prefer a global, then a name without leading underscores, as the function's main name. */
function rankName(n: { name: string; local: boolean }): number {
  return (n.local ? 2 : 0) + (n.name.startsWith('_') ? 1 : 0);
}

/**
 * Compute the pad index of an ELF file (ignores a recorded `.hotload.index`).
 * Pads and function symbols are both sorted by address and walked together:
 * no hash map per function, which matters at 100,000 functions.
 */
export function indexPads(elf: ElfFile): PadIndex {
  const padAddrs = readPadAddresses(elf);
  const pads = Float64Array.from(padAddrs).sort();
  const usedPad = new Uint8Array(pads.length);
  const cols = elf.functionColumns();
  const values = cols.value.subarray(0, cols.n);
  const order = sortedOrder(values);

  const functions: PadFunction[] = [];
  let thunks: [PadFunction, number][] | undefined;
  let pi = 0;
  for (let k = 0; k < order.length; ) {
    const first = order[k];
    const address = values[first];
    let main = { name: cols.name(first), local: cols.local[first] === 1 };
    let aliases: string[] = NO_ALIASES;
    let size = cols.size[first];
    let fileIdx = cols.file[first];
    if (k + 1 < order.length && values[order[k + 1]] === address) {
      // Aliases: every symbol at this address.
      const names: { name: string; local: boolean }[] = [];
      for (; k < order.length && values[order[k]] === address; k++) {
        const i = order[k];
        const name = cols.name(i);
        if (!names.some((x) => x.name === name)) names.push({ name, local: cols.local[i] === 1 });
        if (cols.size[i] > size) size = cols.size[i];
        if (fileIdx < 0) fileIdx = cols.file[i];
      }
      names.sort((a, b) => rankName(a) - rankName(b) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      main = names[0];
      aliases = names.slice(1).map((x) => x.name);
    } else {
      k++;
    }
    // The fields every function has, in one order (one object shape); the
    // rare ones (origin, clones, reason, hint) are added only where they apply.
    const f: PadFunction = { name: main.name, aliases, address, size, status: 'patchable', pad: undefined, endbr: false, posted: false, local: main.local, file: fileIdx >= 0 ? cols.files[fileIdx] : undefined };

    while (pi < pads.length && pads[pi] + PAD_BEFORE < address) pi++;
    const pad = pi < pads.length && pads[pi] + PAD_BEFORE === address ? pads[pi] : undefined;
    const suffix = gccSuffix(main.name);
    const cold = suffix?.kind === 'cold' ? suffix.base : undefined;
    const clone = suffix?.kind === 'clone' ? suffix.base : undefined;
    if (pad !== undefined) {
      usedPad[pi] = 1;
      const pb = inspectPad(elf, pad);
      f.pad = pad;
      f.endbr = pb.endbr;
      f.posted = pb.posted;
      if (!pb.ok) {
        f.status = 'modified';
        f.reason = `pad present but not NOPs: ${pb.problem}`;
        f.hint = 'The file was edited after linking; relink it from its objects.';
      } else if (clone) {
        f.status = 'clone';
        f.origin = clone;
        f.reason = `gcc clone of ${clone}: patching it changes only the callers that call the clone, and patching ${clone} does not change them`;
        f.hint = `Patch both ${clone} and ${main.name}, or build with -fno-ipa-cp -fno-ipa-sra -fno-partial-inlining.`;
      }
    } else if (cold) {
      f.status = 'part';
      f.origin = cold;
      f.reason = `cold part of ${cold}, entered only from inside it; patching ${cold} replaces it too`;
    } else if (STARTUP.has(main.name)) {
      f.status = 'startup';
      f.reason = 'toolchain start-up code (crt files), not built with the flag';
    } else {
      f.status = 'no-pad';
      f.reason = 'no patchable entry: built without -fpatchable-function-entry=16,14';
      f.hint = `Rebuild ${f.file ?? 'its object file'} with -fpatchable-function-entry=16,14.`;
      if (size > 0 && size <= 32) {
        const off = elf.vaddrToOffset(address);
        const to = off === undefined ? undefined : thunkJumpOffset(elf.buf.subarray(off, Math.min(elf.buf.length, off + size)));
        if (to !== undefined) (thunks ??= []).push([f, address + to]);
      }
    }
    functions.push(f);
  }
  // C++ thunks without a pad (g++ -O0) whose jump lands on a padded entry:
  // covered by patching that function.
  if (thunks) {
    const byAddress = new Map(functions.map((x) => [x.address, x]));
    for (const [f, to] of thunks) {
      const target = byAddress.get(to);
      if (!target || (target.status !== 'patchable' && target.status !== 'clone')) continue;
      f.status = 'thunk';
      f.origin = target.name;
      f.reason = `a thunk that adjusts \`this\` and jumps to ${target.name}; patching ${target.name} covers it`;
      delete f.hint;
    }
  }

  // Pads whose entry has no function symbol (a stripped file): still indexed.
  let unnamed = 0;
  for (let i = 0; i < pads.length; i++) {
    if (usedPad[i] || (i > 0 && pads[i] === pads[i - 1])) continue;
    const pad = pads[i];
    const pb = inspectPad(elf, pad);
    const f: PadFunction = { name: `pad_0x${(pad + PAD_BEFORE).toString(16)}`, aliases: NO_ALIASES, address: pad + PAD_BEFORE, size: 0, status: pb.ok ? 'patchable' : 'modified', pad, endbr: pb.endbr, posted: pb.posted, local: true, file: undefined };
    if (!pb.ok) f.reason = `pad present but not NOPs: ${pb.problem}`;
    functions.push(f);
    unnamed++;
  }
  if (unnamed) functions.sort((a, b) => a.address - b.address);

  // Tell each original about its clones.
  const clones = functions.filter((f) => f.status === 'clone');
  if (clones.length) {
    const origins = new Map<string, PadFunction>();
    const wanted = new Set(clones.map((c) => c.origin));
    for (const f of functions) if (wanted.has(f.name)) origins.set(f.name, f);
    for (const c of clones) {
      const o = origins.get(c.origin!);
      if (o) (o.clones ??= []).push(c.name);
    }
  }

  const buildId = elf.buildId();
  const idx: PadIndex = { version: INDEX_VERSION, pie: elf.isPie, padEntries: padAddrs.length, functions, summary: summarize(functions) };
  if (buildId) idx.buildId = buildId;
  return idx;
}

export function summarize(functions: PadFunction[]): Record<FunctionStatus, number> {
  const s: Record<FunctionStatus, number> = { patchable: 0, clone: 0, 'no-pad': 0, modified: 0, part: 0, startup: 0, thunk: 0 };
  for (const f of functions) s[f.status]++;
  return s;
}

/** The index recorded by `hotload post`, if the file has one that parses. */
export function readRecordedIndex(elf: ElfFile): PadIndex | undefined {
  const s: Section | undefined = elf.section(INDEX_SECTION);
  if (!s) return undefined;
  try {
    const idx = JSON.parse(elf.sectionData(s).toString('utf8')) as PadIndex;
    return idx.version === INDEX_VERSION && Array.isArray(idx.functions) ? idx : undefined;
  } catch {
    return undefined;
  }
}

/** The recorded index when `post` left one, else a fresh one (once per file). */
export const loadPadIndex: (elf: ElfFile) => PadIndex = perFile((elf) => readRecordedIndex(elf) ?? indexPads(elf));

/** Functions that hotload check fails on. */
export function unpatchable(idx: PadIndex): PadFunction[] {
  return idx.functions.filter((f) => UNPATCHABLE.has(f.status));
}

/** Find a function by any of its names. */
/** A function by name; `name@file.c` picks the file-local (static) one of that source file. */
export function findFunction(idx: PadIndex, name: string): PadFunction | undefined {
  const direct = idx.functions.find((f) => f.name === name || f.aliases.includes(name));
  if (direct) return direct;
  const at = name.lastIndexOf('@');
  if (at <= 0) return undefined;
  const [base, file] = [name.slice(0, at), name.slice(at + 1)];
  return idx.functions.find((f) => f.local && f.file === file && (f.name === base || f.aliases.includes(base)));
}
