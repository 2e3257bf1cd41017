// Walk a stopped thread's stack with the call frame information of the modules
// it runs (.eh_frame, packages/elf/src/eh-frame.ts), to list the functions it
// is inside, exactly: the host choice (call-in-target.ts) refuses a thread
// with a frame in the loader or the allocator, and active.ts names the
// replaced functions still running.
//
// Every row .eh_frame can give is evaluated: a CFA in any register whose value
// is known in that frame, or given by a DWARF expression (the linker's `.plt`
// entries); registers saved at an offset from the CFA, or by an expression
// (glibc's __restore_rt describes the kernel's rt_sigframe that way, marked
// 'S', so a signal handler's stack leads into the code it interrupted). The
// callee-saved registers (rbx, rbp, r12-r15) are carried from frame to frame
// by those rules; the others are known only where a frame restores them (a
// signal frame), since a call may clobber them.
//
// Code that has no call frame information gets a synthetic row:
//   - hotload's pad jump (`jmp *0(%rip)` at a patched function's entry-14,
//     found by its bytes and the entry jump after it): the state of the
//     function's entry, CFA = rsp+8, return address at CFA-8;
//   - hotload's call stub (CALL_STUB, where a borrowed thread runs a call):
//     like a signal frame, the thread's own registers are in the ucontext
//     the stub's caller (hl_call) put on the stack.
// The vdso is read from the process's memory. A pc in no known module makes
// the process's maps be read again once (a library loaded since).

import * as fs from 'fs';
import { CfaRow, EhFrame, ElfFile, ExprContext, RegRule, evalExpression } from '@hotload/elf';
import { CALLEE_SAVED, CALL_STUB, ENDBR64, startsWithEndbr, CALL_STUB_LAST_JUMP, CALL_STUB_UCONTEXT_AT_RSP, DWARF_REG, JMP_RIP_INDIRECT, SIGCONTEXT_REGS, UC_MCONTEXT } from '@hotload/x86';
import type { ThreadRegs } from './native';
import { Mapping, Module, modules, openModule, readMaps, setBias } from './read-process';

/** The code of one module, and its call frame information (read on first use). */
export interface UnwindModule {
  start: bigint;
  end: bigint;
  path: string;
  /** Load bias; known once frames() has read the file. */
  readonly bias: bigint;
  frames(): EhFrame | undefined;
  /** The row of code without call frame information whose frame is known from its bytes (_init, _fini), at a link-time address. */
  initFini(pc: bigint): CfaRow | undefined;
}

/**
 * _init and _fini, which the loader calls, are crti.o's and crtn.o's code
 * (glibc sysdeps/x86_64/crti.S, crtn.S) and have no call frame information:
 * `[endbr64] sub $8,%rsp ... add $8,%rsp; ret`. Their row, from those bytes:
 * the entry's state before the `sub` and at the `ret`, CFA = rsp+16 between.
 */
function initFiniRows(eh: EhFrame | undefined): (pc: bigint) => CfaRow | undefined {
  const secs: { start: bigint; sub: bigint; ret: bigint }[] = [];
  for (const name of ['.init', '.fini']) {
    const sec = eh?.elf.section(name);
    if (!sec || sec.size < 9) continue;
    const b = eh!.elf.sectionData(sec);
    const sub = startsWithEndbr(b) ? ENDBR64.length : 0;
    if (!b.subarray(sub, sub + 4).equals(SUB_RSP_8) || !b.subarray(b.length - 5).equals(ADD_RSP_8_RET)) continue;
    secs.push({ start: BigInt(sec.addr), sub: BigInt(sec.addr + sub), ret: BigInt(sec.addr + b.length - 1) });
  }
  return (pc) => {
    const s = secs.find((x) => pc >= x.start && pc <= x.ret);
    if (!s) return undefined;
    return pc <= s.sub || pc === s.ret ? ENTRY_ROW : { ...ENTRY_ROW, cfaOff: 16 };
  };
}
const SUB_RSP_8 = Buffer.from([0x48, 0x83, 0xec, 0x08]); // sub $8,%rsp
const ADD_RSP_8_RET = Buffer.from([0x48, 0x83, 0xc4, 0x08, 0xc3]); // add $8,%rsp; ret

/**
 * The executable ranges of a process's modules (and its vdso), each able to
 * read its .eh_frame; `refresh()` reads the maps again, keeping what was read
 * of modules still mapped where they were.
 */
export class CodeMap implements Code {
  private mods: UnwindModule[] = [];
  private readonly known = new Map<string, UnwindModule>();
  /** How often the maps were read again (once per round of looks, and after a walk that failed). */
  refreshes = 0;

  constructor(
    readonly pid: number,
    maps?: Mapping[],
  ) {
    this.load(maps ?? readMaps(pid));
  }

  /** The module whose code holds `pc`. */
  find(pc: bigint): UnwindModule | undefined {
    return this.mods.find((x) => pc >= x.start && pc < x.end);
  }

  /** Read /proc/PID/maps again (a library loaded, or unloaded, since); true when the modules changed. */
  refresh(): boolean {
    this.refreshes++;
    const before = this.mods;
    try {
      this.load(readMaps(this.pid));
    } catch {
      return false; // the process is gone: what we had stays
    }
    return this.mods.length !== before.length || this.mods.some((m, i) => m !== before[i]);
  }

  /** Read every module's call frame information now, not while a thread waits stopped for it. */
  warm(): void {
    for (const m of this.mods) m.frames();
  }

  private load(maps: Mapping[]): void {
    const out: UnwindModule[] = [];
    const seen = new Set<string>();
    const add = (key: string, make: () => UnwindModule[]) => {
      seen.add(key);
      const had = [...this.known.entries()].filter(([k]) => k.startsWith(key + '#'));
      if (had.length) {
        out.push(...had.map(([, m]) => m));
        return;
      }
      make().forEach((m, i) => {
        this.known.set(`${key}#${i}`, m);
        out.push(m);
      });
    };
    for (const m of modules(this.pid, maps)) {
      const key = `${m.path}|${m.inode}|${m.mappings[0].start}`;
      add(key, () => moduleCode(this.pid, m));
    }
    const vdso = maps.find((m) => m.path === '[vdso]' && m.perms.includes('x'));
    if (vdso) add(`[vdso]|${vdso.start}`, () => [vdsoCode(this.pid, vdso)]);
    for (const k of [...this.known.keys()]) if (!seen.has(k.slice(0, k.lastIndexOf('#')))) this.known.delete(k);
    this.mods = out;
  }
}

function moduleCode(pid: number, m: Module): UnwindModule[] {
  let eh: EhFrame | null | undefined;
  let rows: ((pc: bigint) => CfaRow | undefined) | undefined;
  const initFini = (pc: bigint) => (rows ??= initFiniRows(frames()))(pc);
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
  return m.mappings
    .filter((map) => map.perms.includes('x'))
    .map((map) => ({
      start: map.start,
      end: map.end,
      path: m.path,
      get bias() {
        frames();
        return m.bias;
      },
      frames,
      initFini,
    }));
}

/** The vdso: an ELF image the kernel maps into every process, read from its memory. */
function vdsoCode(pid: number, map: Mapping): UnwindModule {
  let eh: EhFrame | null | undefined;
  let bias = map.start;
  const frames = () => {
    if (eh === undefined) {
      try {
        const buf = Buffer.alloc(Number(map.end - map.start));
        const fd = fs.openSync(`/proc/${pid}/mem`, 'r');
        try {
          fs.readSync(fd, buf, 0, buf.length, Number(map.start));
        } finally {
          fs.closeSync(fd);
        }
        const elf = new ElfFile('[vdso]', buf);
        bias = map.start - BigInt(elf.loadBase);
        eh = EhFrame.of(elf) ?? null;
      } catch {
        eh = null;
      }
    }
    return eh ?? undefined;
  };
  return {
    start: map.start,
    end: map.end,
    path: '[vdso]',
    get bias() {
      frames();
      return bias;
    },
    frames,
    initFini: () => undefined,
  };
}

/** What a walk needs of the process's code (a CodeMap; unit tests give their own). */
export interface Code {
  find(pc: bigint): UnwindModule | undefined;
  /** Read the maps again; true when the modules changed. */
  refresh(): boolean;
}

/** The executable ranges of the process's modules, each able to read its .eh_frame. */
export function unwindModules(pid: number, maps?: Mapping[]): CodeMap {
  return new CodeMap(pid, maps);
}

/** Read every module's call frame information now, not while a thread waits stopped for it. */
export function warmUnwind(code: CodeMap | undefined): void {
  code?.warm();
}

/** A frame: its code address, and whether that is where it stopped (exact) or a return address. */
export interface Frame {
  pc: bigint;
  exact: boolean;
}

/** Why a walk stopped short of the outermost frame, and where. */
export interface UnwindFailure {
  why: string;
  /** The code address whose frame could not be followed. */
  pc: bigint;
  /** Its module and offset, or "no module". */
  where: string;
}

/** The frames found, innermost first; with `fail` when the walk did not reach the outermost frame. */
export interface Walk {
  frames: Frame[];
  fail?: UnwindFailure;
  /** Ended early at a frame `until` chose. */
  stopped?: boolean;
}

const MAX_FRAMES = 512;
const RIP = DWARF_REG.rip;
const RSP = DWARF_REG.rsp;
const REG_NAMES = Object.fromEntries(Object.entries(DWARF_REG).map(([k, v]) => [v, k])) as Record<number, string>;

type Regs = Map<number, bigint>;
/** What one frame says of its caller: its registers (rip, rsp at least), and whether its pc is exact. */
type Step = { regs: Regs; exact: boolean } | 'outermost' | { fail: string };

/**
 * The frames of a stopped thread, innermost first, down to its outermost frame
 * (_start, or a thread's start); `fail` says why and where it stopped short
 * (no call frame information, a register a rule needs that is not known,
 * unreadable memory). `stub` is hotload's call stub, when placed. With
 * `until`, the walk ends at the first frame it holds true for (the caller
 * has seen enough), with `stopped` set.
 */
export function walkStack(code: Code, r: ThreadRegs, read8: (at: bigint) => bigint, stub?: bigint, until?: (f: Frame) => boolean): Walk {
  const w = walkOnce(code, r, read8, stub, until);
  // A library loaded since the maps were read, or unloaded and another mapped
  // where it was (its rows then mislead a frame before it fails): read them
  // again and walk again.
  return w.fail && code.refresh() ? walkOnce(code, r, read8, stub, until) : w;
}

function walkOnce(code: Code, r: ThreadRegs, read8: (at: bigint) => bigint, stub?: bigint, until?: (f: Frame) => boolean): Walk {
  let regs: Regs = new Map([
    [RIP, r.rip],
    [RSP, r.rsp],
    [DWARF_REG.rbp, r.rbp],
    [DWARF_REG.rax, r.rax],
  ]);
  let exact = true;
  const frames: Frame[] = [];
  for (let n = 0; n < MAX_FRAMES; n++) {
    const pc: bigint = regs.get(RIP)!;
    frames.push({ pc, exact });
    if (until?.(frames[frames.length - 1])) return { frames, stopped: true };
    const look: bigint = exact ? pc : pc - 1n; // a return address may be just past its function (a call to a noreturn function)
    let step: Step;
    let mod: UnwindModule | undefined;
    try {
      if (stub !== undefined && look >= stub && look < stub + BigInt(CALL_STUB.length)) step = stubStep(regs, look - stub, read8);
      else {
        mod = code.find(look);
        step = mod ? moduleStep(mod, regs, look, exact, read8) : { fail: 'in no module' };
      }
    } catch (e) {
      step = { fail: `memory not readable (${(e as Error).message})` };
    }
    if (step === 'outermost') return { frames };
    if ('fail' in step) {
      const where = mod ? `${mod.path}+0x${(look - mod.bias).toString(16)}` : stub !== undefined && look >= stub && look < stub + BigInt(CALL_STUB.length) ? 'hotload call stub' : 'no module';
      return { frames, fail: { why: step.fail, pc: look, where } };
    }
    regs = step.regs;
    exact = step.exact;
    if (regs.get(RIP) === 0n) return { frames }; // a zero return address ends some hand-written starts
  }
  return { frames, fail: { why: `deeper than ${MAX_FRAMES} frames`, pc: regs.get(RIP)!, where: '' } };
}

/** The frames of a stopped thread (see walkStack), or undefined when the walk did not reach the outermost frame. */
export function unwind(code: Code, r: ThreadRegs, read8: (at: bigint) => bigint, stub?: bigint): Frame[] | undefined {
  const w = walkStack(code, r, read8, stub);
  return w.fail ? undefined : w.frames;
}

/** hotload's pad jump at `pc`: `jmp *0(%rip)`, its 8-byte target, then the entry's `jmp .-14` (after endbr64 or not). */
function isPadJump(pc: bigint, read8: (at: bigint) => bigint): boolean {
  if ((read8(pc) & 0xffffffffffffn) !== BigInt(JMP_RIP_INDIRECT.readUIntLE(0, 6))) return false;
  const entry = read8(pc + 14n);
  return (entry & 0xffffn) === 0xf0ebn || (entry & 0xffffffffffffn) === 0xecebfa1e0ff3n; // eb f0 | f3 0f 1e fa eb ec
}

function moduleStep(mod: UnwindModule, regs: Regs, look: bigint, exact: boolean, read8: (at: bigint) => bigint): Step {
  const eh = mod.frames();
  let row: CfaRow | undefined = eh?.rowAt(Number(look - mod.bias));
  // Code without call frame information whose frame is known: a module's
  // _init and _fini (crti.o's code), and hotload's pad jump (a function's entry).
  if (!row) row = mod.initFini(look - mod.bias) ?? (exact && isPadJump(look, read8) ? ENTRY_ROW : undefined);
  if (!row) return { fail: eh ? 'no call frame information covers it' : 'its module has no call frame information' };
  if (row.outermost) return 'outermost';
  const pc = regs.get(RIP)!;
  const cx: ExprContext = { reg: (n) => (n === RIP ? pc : regs.get(n)), read8 };
  let cfa: bigint;
  if (row.cfaExpr) {
    try {
      cfa = evalExpression(row.cfaExpr, cx);
    } catch (e) {
      return { fail: `its CFA expression: ${(e as Error).message}` };
    }
  } else {
    const base = regs.get(row.cfaReg);
    if (base === undefined) return { fail: `its CFA is in ${REG_NAMES[row.cfaReg] ?? `register ${row.cfaReg}`}, not known in this frame` };
    cfa = base + BigInt(row.cfaOff);
  }
  const next: Regs = new Map();
  const value = (reg: number, rule: RegRule | undefined): bigint | undefined => {
    if (rule === undefined || rule === 'same') return CALLEE_SAVED.includes(reg as never) ? regs.get(reg) : undefined;
    if (rule === 'undefined') return undefined;
    if ('at' in rule) return read8(cfa + BigInt(rule.at));
    if ('val' in rule) return cfa + BigInt(rule.val);
    if ('reg' in rule) return rule.reg === RIP ? pc : regs.get(rule.reg);
    if ('atExpr' in rule) return read8(evalExpression(rule.atExpr, cx, cfa));
    return evalExpression(rule.valExpr, cx, cfa);
  };
  for (const reg of new Set([...CALLEE_SAVED, ...row.regs.keys()])) {
    if (reg === row.raReg) continue;
    let v: bigint | undefined;
    try {
      v = value(reg, row.regs.get(reg));
    } catch (e) {
      if (reg === RSP || (CALLEE_SAVED as number[]).includes(reg)) return { fail: `the rule for ${REG_NAMES[reg]}: ${(e as Error).message}` };
    }
    if (v !== undefined) next.set(reg, v);
  }
  const raRule = row.regs.get(row.raReg);
  if (raRule === undefined || raRule === 'same') return { fail: 'no rule for the return address' };
  let ra: bigint | undefined;
  try {
    ra = value(row.raReg, raRule);
  } catch (e) {
    return { fail: `the rule for the return address: ${(e as Error).message}` };
  }
  if (ra === undefined) return { fail: 'the return address is not known' };
  next.set(RIP, ra);
  if (!row.regs.has(RSP)) next.set(RSP, cfa); // the caller's rsp is the CFA, unless a rule says otherwise (a signal frame)
  return { regs: next, exact: row.signal };
}

/** A function's entry, as at its first instruction: the return address at rsp, nothing else saved. */
const ENTRY_ROW: CfaRow = { cfaReg: RSP, cfaOff: 8, raAt: -8, raReg: RIP, regs: new Map([[RIP, { at: -8 }]]), signal: false };

/**
 * A frame of hotload's call stub: the thread's own registers are in the
 * ucontext hl_call built (at rsp+16 until the stub moves rsp onto it, at rsp
 * after), as in a signal frame; its pc there is exact.
 */
function stubStep(regs: Regs, off: bigint, read8: (at: bigint) => bigint): Step {
  if (off >= BigInt(CALL_STUB_LAST_JUMP)) return { fail: "in the call stub's last jump (the thread is home but for it)" };
  const rsp = regs.get(RSP)!;
  const uc = off < BigInt(CALL_STUB_UCONTEXT_AT_RSP) ? rsp + 16n : rsp;
  const next: Regs = new Map();
  SIGCONTEXT_REGS.forEach((name, i) => next.set(DWARF_REG[name], read8(uc + BigInt(UC_MCONTEXT + 8 * i))));
  return { regs: next, exact: true };
}

/**
 * Walks of real threads (the host choice and active.ts count theirs), and
 * those that stopped short, by reason and place: the stress tests print the
 * share, which should be 0.
 */
export const unwindCounts = { walks: 0, failed: 0, why: new Map<string, number>() };

/** Count a walk in unwindCounts; returns it. */
export function countWalk(w: Walk): Walk {
  unwindCounts.walks++;
  if (w.fail) {
    unwindCounts.failed++;
    const k = `${w.fail.why} (${w.fail.where})`;
    unwindCounts.why.set(k, (unwindCounts.why.get(k) ?? 0) + 1);
  }
  return w;
}
