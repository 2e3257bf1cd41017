// Walk a stopped thread's stack with the call frame information of the modules
// it runs (.eh_frame), to list the functions it is inside: exact where the
// stack scan of call-in-target.ts can only guess from words that look like
// return addresses (stale ones included). Signal frames are stepped through
// by their saved registers, so a handler's interrupted code is seen too.

import { EhFrame } from '@hotload/elf';
import type { ThreadRegs } from './native';
import { Module, openModule, setBias } from './read-process';

/** The code of one module, and its call frame information (read on first use). */
export interface UnwindModule {
  start: bigint;
  end: bigint;
  bias: bigint;
  frames(): EhFrame | undefined;
}

/** The executable ranges of the process's modules, each able to read its .eh_frame. */
export function unwindModules(pid: number, mods: Module[]): UnwindModule[] {
  const out: UnwindModule[] = [];
  for (const m of mods) {
    let eh: EhFrame | null | undefined;
    const frames = () => {
      if (eh === undefined) {
        try {
          const elf = openModule(pid, m);
          setBias(m, elf);
          eh = EhFrame.of(elf) ?? null;
        } catch {
          eh = null;
        }
      }
      return eh ?? undefined;
    };
    for (const map of m.mappings) {
      if (map.perms.includes('x')) out.push({ start: map.start, end: map.end, get bias() { frames(); return m.bias; }, frames });
    }
  }
  return out;
}

/** Read every module's call frame information now, not while a thread waits stopped for it. */
export function warmUnwind(mods: UnwindModule[] | undefined): void {
  for (const m of mods ?? []) m.frames();
}

/** A frame: its code address, and whether that is where it stopped (exact) or a return address. */
export interface Frame {
  pc: bigint;
  exact: boolean;
}

const MAX_FRAMES = 512;

/**
 * Offsets of saved registers in the kernel's x86-64 rt_sigframe, from its first
 * word (the handler's return address, __restore_rt): 8 (pretcode) + 40
 * (uc_flags, uc_link, uc_stack), then r8 .. r15, rdi, rsi, rbp, rbx, rdx, rax,
 * rcx, rsp, rip, 8 bytes each.
 */
export const SIGFRAME = { rbp: 128n, rax: 152n, rsp: 168n, rip: 176n };

/**
 * The frames of a stopped thread, innermost first, down to its outermost frame
 * (_start, or a thread's start); undefined when a frame cannot be followed (no
 * call frame information for it, a rule hotload does not evaluate, unreadable
 * memory): then nothing is known.
 */
export function unwind(mods: UnwindModule[], restoreRt: bigint | undefined, r: ThreadRegs, read8: (at: bigint) => bigint): Frame[] | undefined {
  let pc = r.rip;
  let rsp = r.rsp;
  let rbp = r.rbp;
  let exact = true;
  const frames: Frame[] = [];
  try {
    for (let n = 0; n < MAX_FRAMES; n++) {
      frames.push({ pc, exact });
      if (!exact && restoreRt !== undefined && pc === restoreRt) {
        // Returned into __restore_rt (its return-address slot popped): the
        // interrupted registers are in the signal frame.
        const frame = rsp - 8n;
        pc = read8(frame + SIGFRAME.rip);
        rbp = read8(frame + SIGFRAME.rbp);
        rsp = read8(frame + SIGFRAME.rsp);
        exact = true;
        continue;
      }
      const look = exact ? pc : pc - 1n; // a return address may be just past its function
      const m = mods.find((x) => look >= x.start && look < x.end);
      const eh = m?.frames();
      if (!m || !eh) return undefined;
      const row = eh.rowAt(Number(look - m.bias));
      if (!row) return undefined;
      if (row.outermost) return frames;
      if (row.cfaReg !== 7 && row.cfaReg !== 6) return undefined;
      const cfa = (row.cfaReg === 7 ? rsp : rbp) + BigInt(row.cfaOff);
      const ra = read8(cfa + BigInt(row.raAt!));
      if (row.rbpAt !== undefined) rbp = read8(cfa + BigInt(row.rbpAt));
      rsp = cfa;
      pc = ra;
      exact = false;
      if (pc === 0n) return frames;
    }
  } catch {
    return undefined;
  }
  return undefined; // deeper than any real stack: something is off
}
