// Which replaced functions are running right now, on which thread. The jump
// goes in at a function's entry: a call already inside the old code finishes
// in the old code, and a function that never returns (a main loop) never takes
// the change. Saying so is the difference between "patched" and "patched, but
// it cannot show until main returns".
//
// After the prologues are written, each thread is stopped on its own, its stack
// unwound (unwind.ts, with the modules' call frame information), and let go:
// the all-threads stop stays as short as it was. Where a stack cannot be
// unwound, the frames found up to there are still checked and the thread is
// counted as not fully known.

import * as fs from 'fs';
import { Session } from './session';
import { TargetRuntime, stoppedStack } from './call-in-target';
import type { ThreadRegs } from './native';
import { countWalk, walkStack, warmUnwind } from './unwind';
import { demangled } from '@hotload/elf';

export interface ActiveFunction {
  /** The replaced function (its old code) found on a stack. */
  function: string;
  thread: number;
  /** 0: the thread is executing it; n: n frames below the innermost. */
  depth: number;
}

export interface OldRange {
  name: string;
  start: bigint;
  end: bigint;
}

/** Threads beyond this many are not looked at (each look is a stop of its own). */
const MAX_THREADS = 256;

type Found = { active: ActiveFunction[]; unknown: number; skipped: number; failed?: string };

/** Look at one stopped thread's stack (registers `r`), adding what it runs of `ranges` to `found`. */
function look(s: Session, rt: TargetRuntime, ranges: OldRange[], r: ThreadRegs, found: Found): void {
  // The thread is stopped while we look: read the top of its stack in one go
  // and unwind from that copy (one read per frame through the shim made each
  // look a stop of milliseconds).
  const { read8 } = stoppedStack(s, r.rsp);
  const walk = rt.unwind ? countWalk(walkStack(rt.unwind, r, read8, rt.stub || undefined)) : undefined;
  // A walk that stopped short still names the frames it found.
  const frames = walk?.frames ?? [{ pc: r.rip, exact: true }];
  if (!walk || walk.fail) found.unknown++;
  frames.forEach((f, depth) => {
    const pc = f.exact ? f.pc : f.pc - 1n;
    const hit = ranges.find((x) => pc >= x.start && pc < x.end);
    if (hit && !found.active.some((a) => a.thread === r.tid && a.function === hit.name)) found.active.push({ function: hit.name, thread: r.tid, depth });
  });
}

/**
 * Every thread of the session's process whose stack holds one of `ranges`,
 * and how many could not be fully unwound. Each thread is stopped on its own
 * for its look, unless `allStopped`: then every thread already is (and stays).
 */
export function activeFunctions(s: Session, rt: TargetRuntime, ranges: OldRange[], allStopped = false): Found {
  const found: Found = { active: [], unknown: 0, skipped: 0 };
  warmUnwind(rt.unwind); // at once when already done (attach does it before stopping every thread)
  if (allStopped) {
    for (const r of s.survey()) look(s, rt, ranges, r, found);
    return found;
  }
  let tids: number[];
  try {
    tids = fs.readdirSync(`/proc/${s.pid}/task`).map(Number);
  } catch {
    return found;
  }
  found.skipped = Math.max(0, tids.length - MAX_THREADS);
  for (const tid of tids.slice(0, MAX_THREADS)) {
    if (!s.stopThread(tid)) continue;
    try {
      const r = s.survey().find((x) => x.tid === tid);
      if (r) look(s, rt, ranges, r, found);
    } finally {
      s.resumeThread(tid);
    }
  }
  return found;
}

/** The note a user reads about running functions. */
export function activeNote(a: ActiveFunction): string {
  return `${demangled(a.function)} is running on thread ${a.thread}${a.depth ? ` (${a.depth} frame${a.depth === 1 ? '' : 's'} down its stack)` : ''}: that call keeps the old code until it returns; the change takes effect at the next call`;
}
