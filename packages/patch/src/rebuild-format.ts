// The format of a patch made from a rebuild, as `hotload attach` reads it:
// `.hotload.fixups` (binary: each field of the code that refers outside the
// patch), `.hotload.rebuild` (JSON: what each refers to, the new data, the
// unwind tables, the debug sections) and `.hotload.debug` (binary: the address
// fields of the debug sections). Written by rebuild-asm.ts and
// rebuild-debug.ts, applied by the injector's load-near.ts and
// debug-register.ts.

import { HotloadError } from '@hotload/errors';
import { ElfFile, perFile } from '@hotload/elf';

export const FIXUP_SECTION = '.hotload.fixups';
export const REBUILD_SECTION = '.hotload.rebuild';
/** Bytes per entry of .hotload.fixups: u64 field address, i64 addend, u32 kind, u32 ref. */
export const FIXUP_SIZE = 24;
export const FIXUP_KIND = { PC32: 1, ABS64: 2 } as const;
export const DEBUG_SECTION = '.hotload.debug';
/**
 * Bytes per entry of .hotload.debug: u64 offset of an 8-byte address field in
 * its debug section, i64 addend, u32 the section (index into
 * RebuildInfo.debug.sections), u32 ref (DEBUG_INSIDE: an address inside the
 * patch, the field holds its link-time value).
 */
export const DEBUG_FIELD_SIZE = 24;
export const DEBUG_INSIDE = 0xffffffff;

/** What a fixup refers to; `base` + the fixup's addend is the address wanted. */
export type RebuildRef =
  /**
   * In the program: base = its load bias + `value`. For an exported datum of a
   * shared library, `got` is the library's own GOT entry for it: the datum
   * the library's code really uses (the executable's copy, after a copy
   * relocation, or another module's that interposes it) is read from there at
   * attach, and base = that address - `symOff`.
   */
  | { how: 'target'; name: string; value: number; got?: number; symOff?: number }
  /** In a shared library of the process, by name (an undefined weak one may be missing: 0). */
  | { how: 'lib'; name: string; weak?: boolean }
  /**
   * New writable data. The oldest loaded patch of the same program that has a
   * datum with this key and size owns it; else this patch's own copy
   * (section label `label`). base = the datum's address - objOff.
   */
  | { how: 'data'; key: string; size: number; label: string; objOff: number };

export interface RebuildInfo {
  version: 1;
  refs: RebuildRef[];
  /** New data this patch defines, for later patches to find: address = label + objOff. */
  data: { key: string; size: number; label: string; objOff: number }[];
  /**
   * The unwind tables (CIEs and FDEs from the objects' .eh_frame, for the
   * patch's functions only, ending in a zero terminator): attach registers
   * them with libgcc's __register_frame so exceptions and backtraces pass
   * through the patch's code. `personality`: some function needs them for
   * exceptions (C++), so attach refuses when the process cannot register them.
   */
  ehFrame?: { label: string; personality: boolean };
  /**
   * The objects' DWARF for the code the patch holds (whole units, with
   * addresses of code left out of the patch zeroed): the names of the debug
   * sections .hotload.debug refers to. Attach gives debuggers a copy with
   * every address at its run-time value (the GDB JIT interface).
   */
  debug?: { sections: string[] };
}

export interface DebugFixup {
  section: string;
  offset: number;
  addend: bigint;
  /** The reference (index into refs), or undefined: inside the patch. */
  ref?: number;
}

export interface Fixup {
  at: number;
  addend: bigint;
  kind: number;
  ref: number;
}

type Rebuild = { readonly info: RebuildInfo; readonly fixups: readonly Fixup[]; readonly debug: readonly DebugFixup[] };

/**
 * Read a rebuilt patch's fixups and refs (undefined for a hand-written patch),
 * once per file: attach reads every patch the process has loaded, on each save watch makes.
 */
export const readRebuild: (elf: ElfFile) => Rebuild | undefined = perFile(parseRebuild);

function parseRebuild(elf: ElfFile): Rebuild | undefined {
  const j = elf.section(REBUILD_SECTION);
  const f = elf.section(FIXUP_SECTION);
  if (!j) return undefined; // .hotload.fixups is left out when there are none
  let info: RebuildInfo;
  try {
    info = JSON.parse(elf.sectionData(j).toString('utf8').replace(/\0+$/, '')) as RebuildInfo;
  } catch {
    throw new HotloadError('PATCH_BAD', `${elf.path}: ${REBUILD_SECTION} is not valid JSON`);
  }
  const d = f ? elf.sectionData(f) : Buffer.alloc(0);
  const fixups: Fixup[] = [];
  for (let o = 0; o + FIXUP_SIZE <= d.length; o += FIXUP_SIZE) {
    const fx = { at: Number(d.readBigUInt64LE(o)), addend: d.readBigInt64LE(o + 8), kind: d.readUInt32LE(o + 16), ref: d.readUInt32LE(o + 20) };
    if (!info.refs[fx.ref] || (fx.kind !== FIXUP_KIND.PC32 && fx.kind !== FIXUP_KIND.ABS64)) throw new HotloadError('PATCH_BAD', `${elf.path}: a fixup at 0x${fx.at.toString(16)} is malformed`);
    fixups.push(fx);
  }
  const dbg = elf.section(DEBUG_SECTION);
  const dd = dbg ? elf.sectionData(dbg) : Buffer.alloc(0);
  const debug: DebugFixup[] = [];
  for (let o = 0; o + DEBUG_FIELD_SIZE <= dd.length; o += DEBUG_FIELD_SIZE) {
    const section = info.debug?.sections[dd.readUInt32LE(o + 16)];
    const ref = dd.readUInt32LE(o + 20);
    if (section === undefined || (ref !== DEBUG_INSIDE && !info.refs[ref])) throw new HotloadError('PATCH_BAD', `${elf.path}: entry ${o / DEBUG_FIELD_SIZE} of ${DEBUG_SECTION} is malformed`);
    debug.push({ section, offset: Number(dd.readBigUInt64LE(o)), addend: dd.readBigInt64LE(o + 8), ref: ref === DEBUG_INSIDE ? undefined : ref });
  }
  return { info, fixups, debug };
}
