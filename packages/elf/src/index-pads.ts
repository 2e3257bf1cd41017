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
// - Start-up code from crt1.o/crti.o/crtbegin.o is never built with the flag; it
//   is listed as `startup` and does not fail `hotload check`.

import { HotloadError } from '@hotload/errors';
import { ElfFile, Section } from './read-elf';
import { PAD_BEFORE, classifyEntryBytes, entryNopOffset, isNopRun, startsWithEndbr } from '@hotload/x86';

export const PAD_SECTION = '__patchable_function_entries';
export const INDEX_SECTION = '.hotload.index';
export const INDEX_VERSION = 1;

export type FunctionStatus =
  | 'patchable' // pad of NOPs at the entry
  | 'clone' // a gcc clone of another function, with its own pad
  | 'no-pad' // built without the flag
  | 'modified' // pad present but its bytes are not NOPs
  | 'part' // a split-off part (f.cold) with no entry of its own
  | 'startup'; // toolchain start-up code (crt files), never padded

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
]);

const CLONE_RE = /^(.+?)\.(isra|constprop|part|lto_priv|localalias|specialized)\.\d+/;
const COLD_RE = /^(.+?)\.cold(\.\d+)?$/;

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
  for (const r of elf.relocations()) if (r.type === 8 /* R_X86_64_RELATIVE */) m.set(r.offset, r.addend);
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
  const state = classifyEntryBytes(elf.buf.subarray(site, site + 2), endbr);
  const padNops = isNopRun(elf.buf, off, PAD_BEFORE);
  if (!padNops || (state !== 'nop' && state !== 'posted')) {
    const what = !padNops ? `the 14 bytes before 0x${entry.toString(16)}` : `the entry bytes at 0x${(entry + entryNopOffset(endbr)).toString(16)}`;
    return { pad, ok: false, endbr, posted: false, problem: `${what} are not NOPs (${elf.buf.subarray(off, site + 2).toString('hex')})` };
  }
  return { pad, ok: true, endbr, posted: state === 'posted' };
}

/** Prefer a global, then a name without leading underscores, as the function's main name. */
function rankName(n: { name: string; local: boolean }): number {
  return (n.local ? 2 : 0) + (n.name.startsWith('_') ? 1 : 0);
}

/** Compute the pad index of an ELF file (ignores a recorded `.hotload.index`). */
export function indexPads(elf: ElfFile): PadIndex {
  const padAddrs = readPadAddresses(elf);
  const padByEntry = new Map<number, number>();
  for (const p of padAddrs) padByEntry.set(p + PAD_BEFORE, p);

  // Group function symbols by address: aliases share one record.
  const groups = new Map<number, { names: { name: string; local: boolean }[]; size: number; file?: string }>();
  for (const s of elf.functionSymbols()) {
    let g = groups.get(s.value);
    if (!g) {
      g = { names: [], size: 0 };
      groups.set(s.value, g);
    }
    if (!g.names.some((n) => n.name === s.name)) g.names.push({ name: s.name, local: s.bind === 0 });
    g.size = Math.max(g.size, s.size);
    if (s.file && !g.file) g.file = s.file;
  }

  const functions: PadFunction[] = [];
  const seenPads = new Set<number>();
  for (const [address, g] of groups) {
    g.names.sort((a, b) => rankName(a) - rankName(b) || a.name.localeCompare(b.name));
    const main = g.names[0];
    const f: PadFunction = {
      name: main.name,
      aliases: g.names.slice(1).map((n) => n.name),
      address,
      size: g.size,
      status: 'patchable',
      endbr: false,
      posted: false,
      local: main.local,
      ...(g.file ? { file: g.file } : {}),
    };
    const pad = padByEntry.get(address);
    const cold = COLD_RE.exec(main.name);
    const clone = CLONE_RE.exec(main.name);
    if (pad !== undefined) {
      seenPads.add(pad);
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
        f.origin = clone[1];
        f.reason = `gcc clone of ${clone[1]}: patching it changes only the callers that call the clone, and patching ${clone[1]} does not change them`;
        f.hint = `Patch both ${clone[1]} and ${main.name}, or build with -fno-ipa-cp -fno-ipa-sra -fno-partial-inlining.`;
      }
    } else if (cold) {
      f.status = 'part';
      f.origin = cold[1];
      f.reason = `cold part of ${cold[1]}, entered only from inside it; patching ${cold[1]} replaces it too`;
    } else if (STARTUP.has(main.name)) {
      f.status = 'startup';
      f.reason = 'toolchain start-up code (crt files), not built with the flag';
    } else {
      f.status = 'no-pad';
      f.reason = 'no patchable entry: built without -fpatchable-function-entry=16,14';
      f.hint = `Rebuild ${f.file ?? 'its object file'} with -fpatchable-function-entry=16,14.`;
    }
    functions.push(f);
  }

  // Pads whose entry has no function symbol (a stripped file): still indexed.
  for (const pad of padAddrs) {
    if (seenPads.has(pad)) continue;
    const pb = inspectPad(elf, pad);
    functions.push({
      name: `pad_0x${(pad + PAD_BEFORE).toString(16)}`,
      aliases: [],
      address: pad + PAD_BEFORE,
      size: 0,
      status: pb.ok ? 'patchable' : 'modified',
      pad,
      endbr: pb.endbr,
      posted: pb.posted,
      local: true,
      ...(pb.ok ? {} : { reason: `pad present but not NOPs: ${pb.problem}` }),
    });
  }

  // Tell each original about its clones.
  const byName = new Map(functions.map((f) => [f.name, f]));
  for (const f of functions) {
    if (f.status !== 'clone' || !f.origin) continue;
    const o = byName.get(f.origin);
    if (o) (o.clones ??= []).push(f.name);
  }

  functions.sort((a, b) => a.address - b.address);
  return {
    version: INDEX_VERSION,
    ...(elf.buildId() ? { buildId: elf.buildId() } : {}),
    pie: elf.isPie,
    padEntries: padAddrs.length,
    functions,
    summary: summarize(functions),
  };
}

export function summarize(functions: PadFunction[]): Record<FunctionStatus, number> {
  const s: Record<FunctionStatus, number> = { patchable: 0, clone: 0, 'no-pad': 0, modified: 0, part: 0, startup: 0 };
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

/** The recorded index when `post` left one, else a fresh one. */
export function loadPadIndex(elf: ElfFile): PadIndex {
  return readRecordedIndex(elf) ?? indexPads(elf);
}

/** Functions that hotload check fails on. */
export function unpatchable(idx: PadIndex): PadFunction[] {
  return idx.functions.filter((f) => UNPATCHABLE.has(f.status));
}

/** Find a function by any of its names. */
export function findFunction(idx: PadIndex, name: string): PadFunction | undefined {
  return idx.functions.find((f) => f.name === name || f.aliases.includes(name));
}
