// What is patched in a process, derived from the process itself (never from a
// file that can go stale): the patch copies it has mapped (/proc/PID/maps), the
// metadata inside each, the `hotload_prev__` slots in its memory (what each
// function ran before it), and the prologues of the target's functions.
//
// The stack of a function is found by following the pad's jump target to the
// patch that owns it, then that patch's prev slot to the one below, down to 0
// (the original code).

import * as fs from 'fs';
import { ElfFile, PadFunction, loadPadIndex } from '@hotload/elf';
import { PatchMeta, REBUILD_SECTION, readPatch, resolveFunction } from '@hotload/patch';
import { EntryState, PAD_BEFORE, classifyEntryBytes, decodePadJump, entryNopOffset } from '@hotload/x86';
import { Module, findTargetModule, modules, readMaps } from './read-process';
import { isStaged, stagedFile } from './stage-patch';

/** Reads memory of a live process through /proc/PID/mem (no stop needed). */
export interface MemReader {
  read(addr: bigint, len: number): Buffer;
}

export function procMemReader(pid: number): MemReader & { close(): void } {
  const fd = fs.openSync(`/proc/${pid}/mem`, 'r');
  return {
    read(addr, len) {
      const b = Buffer.alloc(len);
      const n = fs.readSync(fd, b, 0, len, Number(addr));
      return b.subarray(0, n);
    },
    close: () => fs.closeSync(fd),
  };
}

export interface LoadedPatch {
  /** The copy the process mapped, as it names it. */
  staged: string;
  /** The same file as hotload reaches it (through /proc/PID/root). */
  file: string;
  meta: PatchMeta;
  bias: bigint;
  module: Module;
  targetElf: ElfFile;
  appliedAt?: number;
  /** The file the user applied (the staged copy is what the process loaded). */
  source?: string;
  /** Mapped by hotload next to its target (a patch from a rebuild), not by dlopen: debuggers do not see it by themselves. */
  mappedByHotload: boolean;
}

export interface FunctionState {
  name: string;
  fn: PadFunction;
  module: Module;
  entrySite: bigint;
  pad: bigint;
  /** The entry holds our jump. */
  redirected: boolean;
  /** The pad's jump target (may be stale when not redirected). */
  target?: bigint;
}

/** Every hotload patch the process has mapped, with its metadata. */
export function loadedPatches(pid: number): LoadedPatch[] {
  const maps = readMaps(pid);
  const mods = modules(pid, maps);
  const out: LoadedPatch[] = [];
  const mem = procMemReader(pid);
  try {
    for (const m of maps) {
      if (m.offset !== 0n || !isStaged(m.path) || out.some((p) => p.staged === m.path)) continue;
      let elf: ElfFile;
      let meta: PatchMeta;
      try {
        elf = ElfFile.open(stagedFile(pid, m.path));
        meta = readPatch(elf);
      } catch {
        continue;
      }
      const bias = m.start - BigInt(elf.loadBase);
      let target;
      try {
        target = findTargetModule(pid, mods, meta);
      } catch {
        continue;
      }
      const appliedAt = meta.appliedAtSlot !== undefined ? Number(mem.read(bias + BigInt(meta.appliedAtSlot), 8).readBigUInt64LE(0)) : undefined;
      let source: string | undefined;
      if (meta.sourcePathSlot !== undefined) {
        const raw = mem.read(bias + BigInt(meta.sourcePathSlot), 512);
        const z = raw.indexOf(0);
        source = raw.toString('utf8', 0, z < 0 ? raw.length : z) || undefined;
      }
      out.push({ staged: m.path, file: stagedFile(pid, m.path), meta, bias, module: target.mod, targetElf: target.elf, appliedAt, source, mappedByHotload: !!elf.section(REBUILD_SECTION) });
    }
  } finally {
    mem.close();
  }
  return out;
}

/** What a function's pad and entry hold in the process now. */
export function readSite(mem: MemReader, bias: bigint, f: PadFunction): { pad: bigint; entrySite: bigint; padBytes: Buffer; entryBytes: Buffer; state: EntryState; target?: bigint } {
  const pad = bias + BigInt(f.pad!);
  const entrySite = pad + BigInt(PAD_BEFORE + entryNopOffset(f.endbr));
  const padBytes = mem.read(pad, PAD_BEFORE);
  const entryBytes = mem.read(entrySite, 2);
  const state = classifyEntryBytes(entryBytes, f.endbr);
  const target = decodePadJump(padBytes);
  // An entry jump with no jump of ours in the pad is not something hotload wrote.
  if (state === 'jump' && target === undefined) return { pad, entrySite, padBytes, entryBytes, state: 'other' };
  return { pad, entrySite, padBytes, entryBytes, state, target };
}

/** Prologue state of function `name` of a patch's target, read through `mem`. */
export function functionState(mem: MemReader, p: LoadedPatch, name: string): FunctionState | undefined {
  const fn = resolveFunction(loadPadIndex(p.targetElf), name);
  if (!fn || fn.pad === undefined) return undefined;
  const site = readSite(mem, p.module.bias, fn);
  return { name, fn, module: p.module, pad: site.pad, entrySite: site.entrySite, redirected: site.state === 'jump', target: site.target };
}

export function prevSlotAddress(p: LoadedPatch, newName: string): bigint | undefined {
  const r = p.meta.replacements.find((x) => x.new === newName);
  return r?.prevSlot !== undefined ? p.bias + BigInt(r.prevSlot) : undefined;
}

export interface StackEntry {
  patch: LoadedPatch;
  newName: string;
  address: bigint;
}

/**
 * The stack of patches on a function, newest first (empty when it runs its
 * original code). The walk ends at the original code, at a jump hotload did
 * not write, or at an address it has already passed: attach refuses a patch
 * that is already in a stack (PATCH_ALREADY_APPLIED), so a cycle can only be
 * left by an older hotload, and it is reported once, never followed round.
 */
export function functionStack(mem: MemReader, patches: LoadedPatch[], st: FunctionState): StackEntry[] {
  const stack: StackEntry[] = [];
  if (!st.redirected || st.target === undefined) return stack;
  const seen = new Set<bigint>();
  for (let addr: bigint = st.target; addr !== 0n && !seen.has(addr); ) {
    seen.add(addr);
    let owner: StackEntry | undefined;
    for (const p of patches) {
      if (p.module.path !== st.module.path) continue;
      for (const r of p.meta.replacements) {
        if (r.old === st.name && p.bias + BigInt(r.newValue) === addr) owner = { patch: p, newName: r.new, address: addr };
      }
    }
    if (!owner) break; // a jump hotload did not write: report what we know
    stack.push(owner);
    const slot = prevSlotAddress(owner.patch, owner.newName);
    addr = slot !== undefined ? mem.read(slot, 8).readBigUInt64LE(0) : 0n;
  }
  return stack;
}
