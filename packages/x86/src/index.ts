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
// rdi/rsi/rdx = arguments, rsp = 16-aligned, with the result slot at 0(%rsp),
// the way home (a byte, below) at 8(%rsp) and an rt_sigframe (minus its
// return-address word) at 16(%rsp): its ucontext, whose sigcontext (at +40)
// holds the thread's registers (r8 r9 r10 r11 r12 r13 r14 r15 rdi rsi rbp rbx
// rdx rax rcx rsp rip eflags, 8 bytes each, from +40), its fpstate pointer
// (+224) and its signal mask (+296), as the kernel lays them out.
//
// After the call it stores the result and the thread goes home by itself,
// with no help from hotload (which may have died meanwhile), one of two ways:
//
// - way 0, rt_sigreturn on the frame: the kernel restores every register
//   (general, FP/SSE/AVX...), the signal mask and rip of the interrupted code.
//   rt_sigreturn also resets the thread's restart block, so it is not used
//   for a thread whose next instruction is a `syscall` (it may be
//   `restart_syscall`, which needs that block; the kernel would fail it with
//   EINTR).
// - way 1 (XSAVE) or 2 (FXSAVE only), for a thread that resumes on a `syscall`
//   instruction (a wait to be issued again, or resumed by restart_syscall):
//   the thread's own code puts everything back, with no rt_sigreturn, so the
//   restart block stays as the kernel left it. rt_sigprocmask puts the mask
//   back; xrstor64 the extended state (the components named in the frame's
//   _fpx_sw_bytes.xfeatures, fpstate+472: those the kernel would restore; the
//   XSAVE header's XSTATE_BV initialises the rest of them) or fxrstor64 the
//   FXSAVE area; popfq the flags; then each general register, rsp last, and a
//   jump through rcx to the `syscall`: that instruction overwrites rcx and r11
//   anyway (with the return address and the flags), exactly as the kernel's
//   own restart does.
//
// hotload, while alive, stops the thread at the first system call of its way
// home (rt_sigreturn or rt_sigprocmask) and puts it back by ptrace instead
// (see hl_call), so what runs by itself is what would run if hotload died.
export const CALL_STUB = Buffer.from([
  0x41, 0xff, 0xd3, //                          call *%r11
  0x48, 0x89, 0x04, 0x24, //                    mov %rax,(%rsp)            result
  0x0f, 0xb6, 0x5c, 0x24, 0x08, //              movzbl 0x8(%rsp),%ebx      the way home
  0x48, 0x8d, 0x64, 0x24, 0x10, //              lea 0x10(%rsp),%rsp        rsp = the ucontext
  0x85, 0xdb, //                                test %ebx,%ebx
  0x75, 0x09, //                                jne user (+9)
  // way 0:
  0xb8, 0x0f, 0x00, 0x00, 0x00, //              mov $15,%eax               rt_sigreturn
  0x0f, 0x05, //                                syscall
  0xeb, 0xf7, //                                jmp .-9 (back to the mov: rt_sigreturn again)
  // user: ways 1 and 2
  0xb8, 0x0e, 0x00, 0x00, 0x00, //              mov $14,%eax               rt_sigprocmask
  0xbf, 0x02, 0x00, 0x00, 0x00, //              mov $2,%edi                SIG_SETMASK
  0x48, 0x8d, 0xb4, 0x24, 0x28, 0x01, 0x00, 0x00, // lea 0x128(%rsp),%rsi    &uc_sigmask
  0x31, 0xd2, //                                xor %edx,%edx              no old mask
  0x41, 0xba, 0x08, 0x00, 0x00, 0x00, //        mov $8,%r10d               sigsetsize
  0x0f, 0x05, //                                syscall
  0x48, 0x8b, 0xac, 0x24, 0xe0, 0x00, 0x00, 0x00, // mov 0xe0(%rsp),%rbp     fpstate
  0x83, 0xfb, 0x02, //                          cmp $2,%ebx
  0x74, 0x13, //                                je fx (+19)
  0x8b, 0x85, 0xd8, 0x01, 0x00, 0x00, //        mov 0x1d8(%rbp),%eax       xfeatures, low
  0x8b, 0x95, 0xdc, 0x01, 0x00, 0x00, //        mov 0x1dc(%rbp),%edx       xfeatures, high
  0x48, 0x0f, 0xae, 0x6d, 0x00, //              xrstor64 0x0(%rbp)
  0xeb, 0x05, //                                jmp gprs (+5)
  // fx:
  0x48, 0x0f, 0xae, 0x4d, 0x00, //              fxrstor64 0x0(%rbp)
  // gprs:
  0xff, 0xb4, 0x24, 0xb0, 0x00, 0x00, 0x00, //  push 0xb0(%rsp)            eflags
  0x9d, //                                      popfq
  0x4c, 0x8b, 0x44, 0x24, 0x28, //              mov 0x28(%rsp),%r8
  0x4c, 0x8b, 0x4c, 0x24, 0x30, //              mov 0x30(%rsp),%r9
  0x4c, 0x8b, 0x54, 0x24, 0x38, //              mov 0x38(%rsp),%r10
  0x4c, 0x8b, 0x5c, 0x24, 0x40, //              mov 0x40(%rsp),%r11
  0x4c, 0x8b, 0x64, 0x24, 0x48, //              mov 0x48(%rsp),%r12
  0x4c, 0x8b, 0x6c, 0x24, 0x50, //              mov 0x50(%rsp),%r13
  0x4c, 0x8b, 0x74, 0x24, 0x58, //              mov 0x58(%rsp),%r14
  0x4c, 0x8b, 0x7c, 0x24, 0x60, //              mov 0x60(%rsp),%r15
  0x48, 0x8b, 0x7c, 0x24, 0x68, //              mov 0x68(%rsp),%rdi
  0x48, 0x8b, 0x74, 0x24, 0x70, //              mov 0x70(%rsp),%rsi
  0x48, 0x8b, 0x6c, 0x24, 0x78, //              mov 0x78(%rsp),%rbp
  0x48, 0x8b, 0x9c, 0x24, 0x80, 0x00, 0x00, 0x00, // mov 0x80(%rsp),%rbx
  0x48, 0x8b, 0x94, 0x24, 0x88, 0x00, 0x00, 0x00, // mov 0x88(%rsp),%rdx
  0x48, 0x8b, 0x84, 0x24, 0x90, 0x00, 0x00, 0x00, // mov 0x90(%rsp),%rax
  0x48, 0x8b, 0x8c, 0x24, 0xa8, 0x00, 0x00, 0x00, // mov 0xa8(%rsp),%rcx     rip
  0x48, 0x8b, 0xa4, 0x24, 0xa0, 0x00, 0x00, 0x00, // mov 0xa0(%rsp),%rsp
  0xff, 0xe1, //                                jmp *%rcx                  onto the `syscall`
]);
/** Offset in CALL_STUB just past the `syscall` of rt_sigreturn (way 0). */
export const CALL_STUB_SIGRETURN_END = 0x1c;
/** Offset in CALL_STUB just past the `syscall` of rt_sigprocmask (ways 1 and 2). */
export const CALL_STUB_SIGPROCMASK_END = 0x3a;
export * from './thunk';
/** Offset in the pad of the pad jump's 8-byte address (after `jmp *0(%rip)`): restacking or reverting rewrites only it. */
export const PAD_JUMP_ADDRESS = JMP_RIP_INDIRECT.length;

// --- x86-64 Linux ABI facts the stack unwinder and the host choice use ---

/** DWARF register numbers of x86-64 (System V psABI, figure 3.36); 16 is the return address (rip). */
export const DWARF_REG = { rax: 0, rdx: 1, rcx: 2, rbx: 3, rsi: 4, rdi: 5, rbp: 6, rsp: 7, r8: 8, r9: 9, r10: 10, r11: 11, r12: 12, r13: 13, r14: 14, r15: 15, rip: 16 } as const;
/** Registers a called function must preserve (psABI 3.2.1): an unwinder keeps their value in a caller's frame unless a rule says where they were saved. */
export const CALLEE_SAVED = [DWARF_REG.rbx, DWARF_REG.rbp, DWARF_REG.r12, DWARF_REG.r13, DWARF_REG.r14, DWARF_REG.r15];
/**
 * The kernel's x86-64 rt_sigframe: the handler's return address (pretcode,
 * glibc's __restore_rt) at +0, then the ucontext; its uc_mcontext (struct
 * sigcontext) at +40 in the ucontext holds these registers, 8 bytes each, in
 * this order (arch/x86/include/uapi/asm/sigcontext.h). hotload's call stub
 * builds the same ucontext (see CALL_STUB).
 */
export const UC_MCONTEXT = 40;
export const SIGCONTEXT_REGS = ['r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rdi', 'rsi', 'rbp', 'rbx', 'rdx', 'rax', 'rcx', 'rsp', 'rip'] as const;
/** Offset in CALL_STUB just past `lea 0x10(%rsp),%rsp`: before it the ucontext is at rsp+16, from it on at rsp. */
export const CALL_STUB_UCONTEXT_AT_RSP = 0x11;
/** Offset in CALL_STUB of its last instruction, `jmp *%rcx` (rsp is the thread's own again: way 1 or 2 is home but for this jump). */
export const CALL_STUB_LAST_JUMP = CALL_STUB.length - 2;

/**
 * System calls a thread waits in, holding none of libc's or the loader's
 * locks in the kernel's eyes, that hotload interrupts and resumes (see
 * INJECTION-NOTES: syscall restart). The host choice looks at idle threads
 * first, and refuses a thread stopped in any other system call (a write, a
 * flock: interrupting those is not transparent).
 */
export const WAITING_SYSCALLS: ReadonlyMap<number, string> = new Map([
  [0, 'read'], [7, 'poll'], [23, 'select'], [34, 'pause'], [35, 'nanosleep'], [43, 'accept'], [45, 'recvfrom'], [47, 'recvmsg'],
  [61, 'wait4'], [128, 'rt_sigtimedwait'], [130, 'rt_sigsuspend'], [202, 'futex'],
  [219, 'restart_syscall'], // nanosleep, poll or a futex wait resumed after a stop
  [230, 'clock_nanosleep'], [232, 'epoll_wait'], [270, 'pselect6'], [271, 'ppoll'], [281, 'epoll_pwait'], [288, 'accept4'],
]);
/** Names of other system calls a thread is often found blocked in (for messages). */
export const OTHER_SYSCALL_NAMES: Readonly<Record<number, string>> = { 1: 'write', 16: 'ioctl', 17: 'pread64', 18: 'pwrite64', 20: 'writev', 44: 'sendto', 46: 'sendmsg', 72: 'fcntl', 73: 'flock', 74: 'fsync', 257: 'openat' };
/** `rax` of a thread stopped inside an interrupted system call: -ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND, -ERESTART_RESTARTBLOCK, and -EINTR. */
export const SYSCALL_INTERRUPTED = [-512n, -513n, -514n, -516n, -4n];
/** `rax` at a system call's entry, before it ran (-ENOSYS). */
export const SYSCALL_ENTRY_RAX = -38n;
