// The unwinder's rules on made-up registers and memory, over the real call
// frame information of the test fixture, the C library and the loader: the
// `.plt` CFA expression, a signal frame (glibc's __restore_rt, marked 'S'),
// hotload's pad jump and call stub (synthetic rows), _init (crti.o's code),
// callee-saved registers carried by their rules, and a CFA in a register
// that is not known. Real stopped threads: tests/unwind.test.ts.
import { spawnSync } from 'child_process';
import * as path from 'path';
import { EhFrame, ElfFile } from '@hotload/elf';
import { CALL_STUB, SIGCONTEXT_REGS, UC_MCONTEXT, padJump } from '@hotload/x86';
import type { ThreadRegs } from './native';
import { Code, UnwindModule, walkStack } from './unwind';

const TARGET = path.resolve(__dirname, '../../../fixtures/build/target');
const LIBC = '/lib/x86_64-linux-gnu/libc.so.6';
const LOADER = '/lib64/ld-linux-x86-64.so.2';

/** A module of `file` loaded at `bias`, its code from `bias` to `bias + 16 MiB`. */
function mod(file: string, bias: bigint): UnwindModule {
  const elf = ElfFile.open(file);
  const eh = EhFrame.of(elf);
  const init = elf.section('.init')!;
  return {
    start: bias,
    end: bias + 0x1000000n,
    path: file,
    bias,
    frames: () => eh,
    // Only _init here: the rows of crti.o's code, as unwind.ts builds them.
    initFini: (pc) => (pc === BigInt(init.addr) ? { cfaReg: 7, cfaOff: 8, raAt: -8, raReg: 16, regs: new Map([[16, { at: -8 }]]), signal: false } : undefined),
  };
}

function code(...mods: UnwindModule[]): Code {
  return { find: (pc) => mods.find((m) => pc >= m.start && pc < m.end), refresh: () => false };
}

/** Memory: 8-byte words and code bytes at given addresses; anything else is unreadable. */
function memory(words: [bigint, bigint][], bytes: [bigint, Buffer][] = []): (at: bigint) => bigint {
  const m = new Map<bigint, number>();
  for (const [at, v] of words) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    b.forEach((x, i) => m.set(at + BigInt(i), x));
  }
  for (const [at, b] of bytes) b.forEach((x, i) => m.set(at + BigInt(i), x));
  return (at) => {
    const b = Buffer.alloc(8);
    for (let i = 0; i < 8; i++) {
      const x = m.get(at + BigInt(i));
      if (x === undefined) throw new Error(`unreadable 0x${at.toString(16)}`);
      b[i] = x;
    }
    return b.readBigUInt64LE(0);
  };
}

const regs = (r: Partial<ThreadRegs>): ThreadRegs => ({ tid: 1, rip: 0n, rax: 0n, origRax: -1n, rsp: 0x7ffc0000f000n, rbp: 0n, ...r });
const BIAS = 0x555555554000n;
const RSP = 0x7ffc0000f000n;

function symbol(file: string, name: string): number {
  return ElfFile.open(file)
    .symbols('.symtab')
    .concat(ElfFile.open(file).symbols('.dynsym'))
    .find((s) => s.name === name)!.value;
}

test('a .plt entry: the CFA expression (rsp+8, rsp+16 once the entry pushed its index) finds the return address', () => {
  const plt = ElfFile.open(TARGET).section('.plt')!;
  const entry = BigInt(plt.addr + 0x20); // the second entry (the first is the resolver's)
  const c = code(mod(TARGET, BIAS));
  // At the entry's jmp: the return address at rsp. A wrong CFA would read the junk word and fail.
  let w = walkStack(c, regs({ rip: BIAS + entry, rsp: RSP }), memory([[RSP, 0n], [RSP + 8n, 0xdeadn]]));
  expect(w.fail).toBeUndefined();
  expect(w.frames).toHaveLength(1); // a zero return address ends the walk
  // After its push (entry+11): rsp+16.
  w = walkStack(c, regs({ rip: BIAS + entry + 11n, rsp: RSP }), memory([[RSP, 0xdeadn], [RSP + 8n, 0n]]));
  expect(w.fail).toBeUndefined();
});

test("hotload's pad jump (no call frame information): a function's entry, the return address at rsp", () => {
  const compute = BigInt(symbol(TARGET, 'compute'));
  const eh = EhFrame.of(ElfFile.open(TARGET))!;
  expect(eh.rowAt(Number(compute - 14n))).toBeUndefined(); // the pad is covered by no FDE
  const pad = BIAS + compute - 14n;
  const main = BIAS + BigInt(symbol(TARGET, 'main'));
  const bytes: [bigint, Buffer][] = [[pad, Buffer.concat([padJump(0x7f0000001000n), Buffer.from([0xeb, 0xf0, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90])])]];
  const w = walkStack(code(mod(TARGET, BIAS)), regs({ rip: pad, rsp: RSP }), memory([[RSP, main + 0x10n], [RSP + 8n, 0n]], bytes));
  expect(w.frames.map((f) => f.pc)).toEqual([pad, main + 0x10n, ...w.frames.slice(2).map((f) => f.pc)]);
  expect(w.frames[1].exact).toBe(false);
  // The same bytes without the entry's jump after them are not hotload's: no row.
  const other: [bigint, Buffer][] = [[pad, Buffer.concat([padJump(0x7f0000001000n), Buffer.alloc(8)])]];
  expect(walkStack(code(mod(TARGET, BIAS)), regs({ rip: pad, rsp: RSP }), memory([[RSP, 0n]], other)).fail?.why).toMatch(/no call frame information/);
});

test("hotload's call stub: the thread's own registers from the ucontext hl_call built (rsp+16 before the stub moves rsp, rsp after)", () => {
  const stub = 0x7f0000100000n;
  const main = BIAS + BigInt(symbol(TARGET, 'main'));
  const uc = (at: bigint): [bigint, bigint][] =>
    SIGCONTEXT_REGS.map((name, i) => [at + BigInt(UC_MCONTEXT + 8 * i), name === 'rip' ? main : name === 'rsp' ? RSP + 0x1000n : name === 'rbx' ? 0xb0b0n : 0n]);
  const c = code(mod(TARGET, BIAS));
  // The called function returned into the stub (its return address, stub+3): ucontext at rsp+16.
  for (const [pc, ucAt] of [
    [stub + 3n, RSP + 16n],
    [stub + 0x1cn, RSP], // stopped after rt_sigreturn's syscall: ucontext at rsp
  ]) {
    const w = walkStack(c, regs({ rip: pc, rsp: RSP }), memory([...uc(ucAt), [RSP + 0x1000n, 0n]]), stub);
    expect(w.fail).toBeUndefined();
    expect(w.frames[1]).toEqual({ pc: main, exact: true }); // where it was stopped before the call
  }
  // At its last instruction (jmp *%rcx) the thread is home but for the jump: not followed.
  expect(walkStack(c, regs({ rip: stub + BigInt(CALL_STUB.length - 2), rsp: RSP }), memory([]), stub).fail?.why).toMatch(/last jump/);
});

/** pc of the FDE that follows a CIE with augmentation "zRS" (glibc's __restore_rt, with a nop before it). */
function signalFde(file: string): number {
  const text = spawnSync('readelf', ['-wf', file], { encoding: 'utf8', maxBuffer: 256 << 20 }).stdout;
  const at = text.indexOf('Augmentation:          "zRS"');
  return parseInt(/FDE cie=\S+ pc=([0-9a-f]+)\.\./.exec(text.slice(at))![1], 16);
}

test("a signal frame: glibc's __restore_rt rules (expressions over rsp) give the interrupted registers, and its pc exactly", () => {
  const libcBias = 0x7f0000000000n;
  const restoreRt = libcBias + BigInt(signalFde(LIBC)) + 1n; // past the nop
  const main = BIAS + BigInt(symbol(TARGET, 'main'));
  const uc = RSP; // the handler returned: rsp is just past pretcode, at the ucontext
  const words: [bigint, bigint][] = SIGCONTEXT_REGS.map((name, i) => [uc + BigInt(UC_MCONTEXT + 8 * i), name === 'rip' ? main : name === 'rsp' ? RSP + 0x2000n : name === 'rbx' ? 0xb0b0n : 0x1111n]);
  words.push([RSP + 0x2000n, 0n]);
  // The handler's return address is __restore_rt (frame 1, not exact), then main where the signal came (exact).
  const handler = BIAS + BigInt(symbol(TARGET, 'main'));
  const w = walkStack(code(mod(TARGET, BIAS), mod(LIBC, libcBias)), regs({ rip: handler, rsp: RSP - 8n }), memory([[RSP - 8n, restoreRt], ...words]));
  expect(w.fail).toBeUndefined();
  expect(w.frames.slice(0, 3)).toEqual([
    { pc: handler, exact: true },
    { pc: restoreRt, exact: false },
    { pc: main, exact: true },
  ]);
});

test('_init (crti.o, no call frame information) at its first instruction: a function entry', () => {
  const init = BigInt(ElfFile.open(TARGET).section('.init')!.addr);
  const w = walkStack(code(mod(TARGET, BIAS)), regs({ rip: BIAS + init, rsp: RSP }), memory([[RSP, 0n]]));
  expect(w.fail).toBeUndefined();
});

test("a CFA in a register this frame does not know (rbx in the loader's lazy-binding trampoline, at the innermost frame): the walk says so", () => {
  const text = spawnSync('readelf', ['-wF', LOADER], { encoding: 'utf8', maxBuffer: 256 << 20 }).stdout;
  const row = /^([0-9a-f]{16}) rbx\+(\d+)/m.exec(text);
  expect(row).not.toBeNull();
  const ldBias = 0x7f0000000000n;
  const w = walkStack(code(mod(LOADER, ldBias)), regs({ rip: ldBias + BigInt(parseInt(row![1], 16)), rsp: RSP }), memory([]));
  expect(w.fail?.why).toBe('its CFA is in rbx, not known in this frame');
  expect(w.fail?.where).toMatch(/ld-linux-x86-64\.so\.2\+0x/);
});

test('a pc in no module: the walk fails there, after reading the maps again', () => {
  let refreshed = 0;
  const c: Code = { find: () => undefined, refresh: () => (refreshed++, false) };
  const w = walkStack(c, regs({ rip: 0x1234n }), memory([]));
  expect(w.fail).toMatchObject({ why: 'in no module', pc: 0x1234n });
  expect(refreshed).toBe(1);
});
