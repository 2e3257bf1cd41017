// The only module that knows x86-64 machine code. Everything hotload writes
// into a function's pad, and every byte pattern it recognises there, is here,
// each with its mnemonic on the same line.
//
// The pad from `-fpatchable-function-entry=16,14` (gcc 12 and clang):
//   entry-14 .. entry-1   14 x `90`                         (before the symbol)
//   entry    .. entry+1    `90 90`, or `66 90` once posted   (at the symbol)
// With -fcf-protection an `endbr64` (f3 0f 1e fa) sits at the entry and the two
// NOP bytes follow it at entry+4.
//
// Patched (the libpulp layout):
//   entry-14  ff 25 00 00 00 00   jmp *0(%rip)
//   entry-8   <8-byte absolute address of the new function>
//   entry     eb f0               jmp .-14   (or eb ec after endbr64)

export const PAD_BEFORE = 14;
export const PAD_AT = 2;

export const NOP1 = 0x90;
export const NOP2 = Buffer.from([0x66, 0x90]); // xchg %ax,%ax (2-byte nop)
export const ENDBR64 = Buffer.from([0xf3, 0x0f, 0x1e, 0xfa]); // endbr64
export const JMP_RIP_INDIRECT = Buffer.from([0xff, 0x25, 0x00, 0x00, 0x00, 0x00]); // jmp *0(%rip)

/** The two bytes at the entry that send control to the pad: `jmp .-14` measured from the entry. */
export function entryJump(hasEndbr: boolean): Buffer {
  // rel8 = (entry - 14) - (site + 2); site = entry (+4 with endbr64)
  return hasEndbr
    ? Buffer.from([0xeb, 0xec]) // jmp .-20  (from entry+4 back to entry-14)
    : Buffer.from([0xeb, 0xf0]); // jmp .-16  (from entry back to entry-14)
}

/** The 14 bytes written before the entry: an absolute indirect jump to `target`. */
export function padJump(target: bigint): Buffer {
  const b = Buffer.alloc(PAD_BEFORE);
  JMP_RIP_INDIRECT.copy(b, 0); // jmp *0(%rip)
  b.writeBigUInt64LE(target, 6); // .quad target
  return b;
}

/** Offset from the entry of the two patchable bytes. */
export function entryNopOffset(hasEndbr: boolean): number {
  return hasEndbr ? ENDBR64.length : 0;
}

export type EntryState = 'nop' | 'posted' | 'jump' | 'other';

/** What the two bytes at the patchable site (at `off` in `b`) hold. Allocation-free: the index calls it per function. */
export function classifyEntryBytes(b: Buffer, hasEndbr: boolean, off = 0): EntryState {
  if (b.length < off + 2) return 'other';
  const b0 = b[off];
  const b1 = b[off + 1];
  if (b0 === 0x90 && b1 === 0x90) return 'nop'; // nop; nop
  if (b0 === 0x66 && b1 === 0x90) return 'posted'; // xchg %ax,%ax
  if (b0 === 0xeb && b1 === (hasEndbr ? 0xec : 0xf0)) return 'jump'; // jmp .-14 (see entryJump)
  return 'other';
}

export function startsWithEndbr(b: Buffer, off = 0): boolean {
  return b.length >= off + 4 && b[off] === 0xf3 && b[off + 1] === 0x0f && b[off + 2] === 0x1e && b[off + 3] === 0xfa;
}

export function isNopRun(b: Buffer, off: number, len: number): boolean {
  if (off < 0 || off + len > b.length) return false;
  for (let i = off; i < off + len; i++) if (b[i] !== NOP1) return false;
  return true;
}

/** Decode the pad's 14 bytes: the jump target when it holds our jump, else undefined. */
export function decodePadJump(b: Buffer): bigint | undefined {
  if (b.length < PAD_BEFORE || !b.subarray(0, 6).equals(JMP_RIP_INDIRECT)) return undefined;
  return b.readBigUInt64LE(6);
}

// The code hotload leaves in the target to run a call on a borrowed thread
// (see native-shim/shim.c, hl_call). Registers on entry: r11 = function,
// rdi/rsi/rdx = arguments, rsp = 16-aligned, with the result slot at 0(%rsp)
// and an rt_sigframe (minus its return-address word) at 16(%rsp).
//
// After the call it stores the result and performs rt_sigreturn on the frame,
// which restores every register (general, FP/SSE/AVX), the signal mask and rip
// of the interrupted code. So the borrowed thread goes home by itself even if
// hotload dies while the call runs. A thread whose restart block must survive
// has this rt_sigreturn skipped by hotload (orig_rax set to -1 at its entry),
// and is then put back by ptrace; if hotload dies right after the skip, the
// jump back makes the thread perform the rt_sigreturn after all.
export const CALL_STUB = Buffer.from([
  0x41, 0xff, 0xd3, //                          call *%r11
  0x48, 0x89, 0x04, 0x24, //                    mov %rax,(%rsp)
  0x48, 0x8d, 0x64, 0x24, 0x10, //              lea 0x10(%rsp),%rsp
  0xb8, 0x0f, 0x00, 0x00, 0x00, //              mov $15,%eax   (rt_sigreturn)
  0x0f, 0x05, //                                syscall
  0xeb, 0xf7, //                                jmp .-9 (back to the mov: rt_sigreturn again)
]);
/** Offset in CALL_STUB just past the `syscall` of rt_sigreturn. */
export const CALL_STUB_SIGRETURN_END = 19;
export * from './thunk';
