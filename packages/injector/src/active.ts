// Which replaced functions are running right now, on which thread. The jump
// goes in at a function's entry: a call already inside the old code finishes
// in the old code, and a function that never returns (a main loop) never takes
// the change. Saying so is the difference between "patched" and "patched, but
// it cannot show until main returns".
//
// After the prologues are written, each thread is stopped on its own, its stack
// unwound (unwind.ts, with the modules' call frame information), and let go:
// the all-threads stop stays as short as it was. Where a stack cannot be
// unwound, its innermost frame is still checked and the thread is counted as
// not fully known.

import * as fs from 'fs';
import { Session } from './session';
import type { TargetRuntime } from './call-in-target';
import { unwind } from './unwind';

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

/** Every thread of the session's process whose stack holds one of `ranges`; threads not fully known. */
export function activeFunctions(s: Session, rt: TargetRuntime, ranges: OldRange[]): { active: ActiveFunction[]; unknown: number; skipped: number } {
  const active: ActiveFunction[] = [];
  let unknown = 0;
  let tids: number[];
  try {
    tids = fs.readdirSync(`/proc/${s.pid}/task`).map(Number);
  } catch {
    return { active, unknown: 0, skipped: 0 };
  }
  const skipped = Math.max(0, tids.length - MAX_THREADS);
  const read8 = (at: bigint) => s.read(at, 8).readBigUInt64LE(0);
  for (const tid of tids.slice(0, MAX_THREADS)) {
    if (!s.stopThread(tid)) continue;
    try {
      const r = s.survey().find((x) => x.tid === tid);
      if (!r) continue;
      let frames: { pc: bigint; exact: boolean }[] | undefined;
      try {
        frames = rt.unwind ? unwind(rt.unwind, rt.restoreRt, r, read8) : undefined;
      } catch {
        frames = undefined;
      }
      if (!frames) {
        unknown++;
        frames = [{ pc: r.rip, exact: true }];
      }
      frames.forEach((f, depth) => {
        const pc = f.exact ? f.pc : f.pc - 1n;
        const hit = ranges.find((x) => pc >= x.start && pc < x.end);
        if (hit && !active.some((a) => a.thread === tid && a.function === hit.name)) active.push({ function: hit.name, thread: tid, depth });
      });
    } finally {
      s.resumeThread(tid);
    }
  }
  return { active, unknown, skipped };
}

/** The note a user reads about running functions. */
export function activeNote(a: ActiveFunction): string {
  return `${a.function} is running on thread ${a.thread}${a.depth ? ` (${a.depth} frame${a.depth === 1 ? '' : 's'} down its stack)` : ''}: that call keeps the old code until it returns; the change takes effect at the next call`;
}
