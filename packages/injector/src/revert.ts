// `hotload revert <pid> patch.so` and `--all`: put back what each function ran
// before a patch: the original code, or the patch below it in the stack.
// Reverting a patch in the middle of a stack re-links the one above it to the
// one below, so newer patches stay in force.
//
// The reverted patch stays mapped: its code may still be running on some
// thread's stack (a call that began before the revert), and nothing proves it
// is not, so unmapping it could crash the process.

import * as crypto from 'crypto';
import * as path from 'path';
import { HotloadError } from '@hotload/errors';
import { NOP2, PAD_JUMP_ADDRESS } from '@hotload/x86';
import { Session } from './session';
import type { CodeWrite } from './native';
import { hex, modules, requireRunning } from './read-process';
import { withProcessLock } from './process-lock';
import { HookOptions, runHook } from './run-hook';
import { TargetRuntime, findRuntime, placeStub } from './call-in-target';
import { readPatchFile } from './stage-patch';
import { LoadedPatch, functionStack, functionState, loadedPatches, prevSlotAddress } from './read-patches';

export interface RevertedFunction {
  name: string;
  patch: string;
  /** "original" or the address it runs now. */
  now: string;
}

export interface RevertResult {
  pid: number;
  reverted: RevertedFunction[];
  /** As attach's: wall time of the all-threads stop, and per thread (the longest, and all added). */
  timings: { totalMs: number; stoppedMs: number; threadStopMaxMs: number; threadStopSumMs: number };
}

/** The loaded copy of `patchFile` in the process, found by content hash. */
export function findLoadedPatch(patches: LoadedPatch[], patchFile: string): LoadedPatch | undefined {
  const sha = crypto.createHash('sha256').update(readPatchFile(patchFile, true)).digest('hex');
  return patches.find((p) => path.basename(p.staged).startsWith(sha.slice(0, 16) + '-'));
}

export interface RevertOptions extends HookOptions {
  all?: boolean;
}

/** Revert a patch, or --all (one hotload at a time per process). */
export function revert(pid: number, patchFile: string | undefined, opts: RevertOptions = {}): RevertResult {
  return withProcessLock(pid, () => revertLocked(pid, patchFile, opts));
}

function revertLocked(pid: number, patchFile: string | undefined, opts: RevertOptions): RevertResult {
  const t0 = process.hrtime.bigint();
  requireRunning(pid);
  const patches = loadedPatches(pid);
  let chosen: LoadedPatch[];
  if (opts.all) {
    chosen = patches;
  } else {
    if (!patchFile) throw new HotloadError('USAGE', 'name a patch to revert, or pass --all');
    const p = findLoadedPatch(patches, patchFile);
    if (!p) throw new HotloadError('PATCH_NOT_APPLIED', `${patchFile} is not loaded in process ${pid}`);
    chosen = [p];
  }
  // Work out every write while the process runs; apply() checks each byte it
  // replaces is still what was read, with every thread stopped.
  const s = Session.open(pid);
  const reverted: RevertedFunction[] = [];
  let times = { stoppedMs: 0, maxStopMs: 0, threadStopMaxMs: 0, threadStopSumMs: 0 };
  try {
    const writes: CodeWrite[] = [];
    const names: string[] = [];
    const put = (addr: bigint, bytes: Buffer, name: string, entry = false) => {
      writes.push({ addr, expect: s.read(addr, bytes.length), bytes, entry });
      names.push(name);
    };
    const u64 = (v: bigint) => {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(v);
      return b;
    };
    for (const p of chosen) {
      for (const r of p.meta.replacements) {
        const st = functionState(s, p, r.old);
        if (!st) continue;
        const stack = functionStack(s, patches, st);
        const at = stack.findIndex((e) => e.patch === p && e.newName === r.new);
        if (at < 0) continue; // not in force: nothing to undo
        if (opts.all) {
          if (!writes.some((w) => w.addr === st.entrySite)) put(st.entrySite, NOP2, r.old, true); // 66 90: the original code runs again
          reverted.push({ name: r.old, patch: p.staged, now: 'original' });
          continue;
        }
        const slot = prevSlotAddress(p, r.new);
        const prev = slot !== undefined ? s.readU64(slot) : 0n;
        if (at === 0) {
          if (prev === 0n) put(st.entrySite, NOP2, r.old, true);
          else put(st.pad + BigInt(PAD_JUMP_ADDRESS), u64(prev), r.old); // the jump's 8-byte address
        } else {
          const above = stack[at - 1];
          const aboveSlot = prevSlotAddress(above.patch, above.newName);
          if (aboveSlot !== undefined) put(aboveSlot, u64(prev), r.old);
        }
        reverted.push({ name: r.old, patch: p.staged, now: at === 0 ? (prev === 0n ? 'original' : hex(prev)) : hex(stack[0].address) });
      }
    }
    // Each reverted patch's on-revert hook runs first; a failing one stops the revert.
    const hooked = chosen.filter((p) => p.meta.onRevert !== undefined && reverted.some((r) => r.patch === p.staged));
    if (hooked.length) {
      const mods = modules(pid);
      const rtBase = findRuntime(pid, mods);
      const rt: TargetRuntime = { ...rtBase, stub: placeStub(s, rtBase.stubCandidates) };
      let host = 0;
      for (const p of hooked) host = runHook(s, rt, host, p.meta, p.bias, p.meta.onRevert!, 'on-revert', opts);
    }
    if (writes.length) {
      const batch = Session.batch(writes, names);
      s.stopAll();
      s.apply(batch);
    }
    times = s.close();
  } finally {
    s.close();
  }
  if (!opts.all && reverted.length === 0) {
    throw new HotloadError('PATCH_NOT_APPLIED', `${patchFile} is loaded in process ${pid} but none of its functions is in force (reverted already)`);
  }
  return { pid, reverted, timings: { totalMs: Number(process.hrtime.bigint() - t0) / 1e6, stoppedMs: times.stoppedMs, threadStopMaxMs: times.threadStopMaxMs, threadStopSumMs: times.threadStopSumMs } };
}
