// `hotload status <pid>`: what a process runs, read from the process.
import { ElfFile, demangled } from '@hotload/elf';
import { requireAlive } from './read-process';
import { LoadedPatch, MemReader, functionStack, functionState, loadedPatches, procMemReader } from './read-patches';
import { debuggerCopies, seenByDebuggers } from './debug-register';

export interface StatusFunction {
  name: string;
  /** The C++ name (`Square::area() const`) of a mangled one. */
  demangled?: string;
  module: string;
  /** Newest first. */
  stack: { patch: string; source?: string; function: string; address: string }[];
}

export interface StatusPatch {
  staged: string;
  /** The file that was applied (recorded in the process at attach). */
  source?: string;
  /** What the patch is, in words (HOTLOAD_DESCRIPTION, `mkpatch --description`). */
  description?: string;
  buildId?: string;
  target: string;
  targetBuildId: string;
  appliedAt?: string;
  /** Functions of this patch in force now (anywhere in a stack). */
  inForce: string[];
  /** How it was loaded: dlopen (hand-written), or mapped by hotload next to its target (from a rebuild). */
  loadedBy: 'dlopen' | 'hotload';
  /** Its load address; for a patch dlopen did not load, gdb learns its symbols with `add-symbol-file <staged> -o <bias>`. */
  bias: string;
  /** A debugger attaching now sees it: loaded by dlopen, or in hotload's GDB JIT list. */
  debuggers: boolean;
}

export interface StatusResult {
  pid: number;
  functions: StatusFunction[];
  patches: StatusPatch[];
  /** The patches above that were reverted (none of their functions in force) and stay mapped, and why. */
  reverted: { mapped: number; why: string };
}

/**
 * Why a reverted patch stays mapped. Nothing hotload can check proves the
 * process will never run its code again: a thread's unwound stack shows the
 * calls running now, not a function pointer stored in the process's memory
 * (a callback registered by the patch's code, a signal handler) nor a later
 * patch's use of a static this one added (watch's patches find the data an
 * earlier one added there). Unmapping it would turn any of those into a crash.
 */
export const REVERTED_STAY =
  'A reverted patch stays mapped until the process exits: a call that began before the revert may still run in it or return into it, and the process may hold the address of its code or data (a callback it registered, a static a later patch uses), which hotload cannot see; unmapped, any of those would crash the process. It costs address space only.';

export function status(pid: number): StatusResult {
  requireAlive(pid);
  const patches: LoadedPatch[] = loadedPatches(pid);
  const mem = procMemReader(pid);
  let stacks: ReturnType<typeof readStacks>;
  const debuggers = new Map<LoadedPatch, boolean>();
  try {
    const copies = patches.some((p) => p.mappedByHotload) ? debuggerCopies(pid, mem) : [];
    for (const p of patches) debuggers.set(p, !p.mappedByHotload || seenByDebuggers(mem, copies, ElfFile.open(p.file)));
    stacks = readStacks(mem, patches);
  } finally {
    mem.close();
  }
  const { functions, inForce } = stacks;
  return {
    pid,
    functions,
    reverted: { mapped: patches.filter((p) => inForce.get(p)!.length === 0).length, why: REVERTED_STAY },
    patches: patches.map((p) => ({
      staged: p.staged,
      source: p.source,
      ...(p.meta.description !== undefined ? { description: p.meta.description } : {}),
      buildId: p.meta.buildId,
      target: p.module.path,
      targetBuildId: p.meta.target.buildId,
      appliedAt: p.appliedAt ? new Date(p.appliedAt).toISOString() : undefined,
      inForce: inForce.get(p)!,
      loadedBy: p.mappedByHotload ? ('hotload' as const) : ('dlopen' as const),
      bias: '0x' + p.bias.toString(16),
      debuggers: debuggers.get(p)!,
    })),
  };
}

/**
 * How many of the patches a process has mapped are in force (a function of
 * theirs anywhere in a function's stack), and how many are reverted copies
 * that stay mapped: what `hotload ps` counts, by the same reading as status.
 */
export function countPatches(pid: number): { inForce: number; reverted: number; descriptions: string[] } {
  const patches = loadedPatches(pid);
  if (patches.length === 0) return { inForce: 0, reverted: 0, descriptions: [] };
  const mem = procMemReader(pid);
  try {
    const { inForce } = readStacks(mem, patches);
    const live = patches.filter((p) => inForce.get(p)!.length > 0);
    return { inForce: live.length, reverted: patches.length - live.length, descriptions: live.flatMap((p) => (p.meta.description !== undefined ? [p.meta.description] : [])) };
  } finally {
    mem.close();
  }
}

/** Each patched function's stack, newest first, and the functions each patch has in force. */
function readStacks(mem: MemReader, patches: LoadedPatch[]): { functions: StatusFunction[]; inForce: Map<LoadedPatch, string[]> } {
  const functions: StatusFunction[] = [];
  const inForce = new Map<LoadedPatch, string[]>(patches.map((p) => [p, []]));
  const seen = new Set<string>();
  for (const p of patches) {
    for (const r of p.meta.replacements) {
      const key = `${p.module.path}:${r.old}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const st = functionState(mem, p, r.old);
      if (!st) continue;
      const stack = functionStack(mem, patches, st);
      if (stack.length === 0) continue;
      for (const e of stack) inForce.get(e.patch)!.push(r.old);
      functions.push({ name: r.old, ...(demangled(r.old) !== r.old ? { demangled: demangled(r.old) } : {}), module: p.module.path, stack: stack.map((e) => ({ patch: e.patch.staged, source: e.patch.source, function: e.newName, address: '0x' + e.address.toString(16) })) });
    }
  }
  return { functions, inForce };
}
