// Which stopped thread may host dlopen: the rules of hostScore on made-up
// registers and stacks. The real processes behind each rule are in
// tests/attach.test.ts (signals, blocked threads) and tests/attach-stress.test.ts.
import { hostScore, TargetRuntime } from './call-in-target';
import type { ThreadRegs } from './native';

const LIBC: [bigint, bigint] = [0x7f0000000000n, 0x7f0000100000n];
const MALLOC: [bigint, bigint] = [0x7f0000010000n, 0x7f0000011000n];
const SLEEP: [bigint, bigint] = [0x7f0000020000n, 0x7f0000020100n]; // clock_nanosleep
const SYSCALL_AT = 0x7f0000030000n; // `syscall` in some other libc function (a futex wait)
const RESTORE_RT = 0x7f0000040000n;
const PROGRAM = 0x555555555100n;

const rt: TargetRuntime = {
  stub: 0n,
  dlopen: 0n,
  dlopenMode: 2n,
  dlerror: 0n,
  dlclose: 0n,
  libc: { open: 0n, mmap: 0n, munmap: 0n, close: 0n },
  unsafeRanges: [LIBC],
  lockRanges: [MALLOC],
  waitRanges: [SLEEP],
  restoreRt: RESTORE_RT,
};

/** Code bytes: `syscall` (0f 05) at SYSCALL_AT and in the middle of SLEEP, nops elsewhere. */
function code(at: bigint): Buffer {
  const b = Buffer.from([0x90, 0x90]);
  if (at === SYSCALL_AT || at === SLEEP[0] + 0x20n) b.set([0x0f, 0x05]);
  return b;
}

/** A stack of 64 words; `frames` puts a signal frame at word 4 with the given saved rip and rax. */
function stack(opts: { frameRip?: bigint; frameRax?: bigint; lockAt?: number } = {}): Buffer {
  const b = Buffer.alloc(64 * 8 + 512);
  if (opts.frameRip !== undefined) {
    b.writeBigUInt64LE(RESTORE_RT, 32);
    b.writeBigInt64LE(opts.frameRax ?? 0n, 32 + 152);
    b.writeBigUInt64LE(opts.frameRip, 32 + 176);
  }
  if (opts.lockAt !== undefined) b.writeBigUInt64LE(MALLOC[0] + 0x40n, opts.lockAt);
  return b;
}

const regs = (r: Partial<ThreadRegs>): ThreadRegs => ({ tid: 1, rip: PROGRAM, rax: 0n, origRax: -1n, rsp: 0x7ffc00000000n, rbp: 0n, ...r });
const score = (r: Partial<ThreadRegs>, s: Buffer) => hostScore(rt, regs(r), () => s, code);

test('a thread running program code with a clean stack is a host', () => {
  expect(score({}, stack())).toBe(1);
});

test('a thread running libc code is not', () => {
  expect(score({ rip: MALLOC[0] + 4n }, stack())).toBe(0);
});

test('a thread asleep in nanosleep is the best host, even with a lock address on its stack', () => {
  expect(score({ rip: SLEEP[0] + 0x22n, origRax: 230n, rax: -516n }, stack({ lockAt: 400 }))).toBe(2);
});

test('a futex waiter is a host only without a return address into locking code above it', () => {
  const r = { rip: SYSCALL_AT + 2n, origRax: 202n, rax: -512n };
  expect(score(r, stack())).toBe(2);
  expect(score(r, stack({ lockAt: 400 }))).toBe(0);
});

test('restart_syscall (a wait resumed after a stop) may resume a futex wait: judged like futex', () => {
  const r = { rip: SYSCALL_AT + 2n, origRax: 219n, rax: 219n };
  expect(score(r, stack())).toBe(2);
  expect(score(r, stack({ lockAt: 400 }))).toBe(0);
});

test('a handler that interrupted malloc is refused', () => {
  expect(score({}, stack({ frameRip: MALLOC[0] + 0x10n, frameRax: 7n }))).toBe(0);
});

test('a handler that interrupted program code is accepted', () => {
  expect(score({}, stack({ frameRip: PROGRAM + 0x10n }))).toBe(1);
});

test('a handler that interrupted nanosleep is accepted, whatever stale addresses lie above the frame', () => {
  expect(score({}, stack({ frameRip: SLEEP[0] + 0x22n, frameRax: -4n, lockAt: 400 }))).toBe(1);
});

test('a handler over a futex wait is judged by the return addresses above its frame', () => {
  for (const f of [
    { frameRip: SYSCALL_AT, frameRax: 202n }, // SA_RESTART: back at the syscall, rax its number
    { frameRip: SYSCALL_AT + 2n, frameRax: -4n }, // -EINTR after it
  ]) {
    expect(score({}, stack(f))).toBe(1);
    expect(score({}, stack({ ...f, lockAt: 400 }))).toBe(0);
    expect(score({}, stack({ ...f, lockAt: 8 }))).toBe(1); // below the frame: the handler's own, gone
  }
});

test('a frame whose rax says "interrupted" but whose rip is not after a syscall is refused', () => {
  expect(score({}, stack({ frameRip: SYSCALL_AT + 6n, frameRax: -4n }))).toBe(0);
});

test('without __restore_rt known, no frame is looked for', () => {
  const s = stack({ frameRip: MALLOC[0] + 0x10n });
  expect(hostScore({ ...rt, restoreRt: undefined }, regs({}), () => s, code)).toBe(1);
});
