// Running a function (dlopen, dlerror, a patch's hook) inside the target, on one
// of its own threads, without deadlocking it.
//
// The danger: a thread stopped while it holds the allocator lock or the loader
// lock would wait for itself inside dlopen. So the thread we borrow (the host)
// must be at a moment where it holds neither:
//   - blocked in a waiting syscall (read, futex, nanosleep, epoll_wait, accept,
//     poll, ...): glibc takes neither lock around those waits; or
//   - running code outside the C library and the dynamic loader (its own code,
//     or another library's), where those locks are not held.
// Candidates are stopped one at a time, idle ones first; the others never stop
// for this. If no thread is at such a moment, the process runs for a moment
// and we look again, up to a deadline; then we give up with the process
// untouched. While the host runs the call, every other thread runs too, so a
// lock any of them holds is released; only the host is borrowed. See native-shim/shim.c
// (hl_call) for how the host always returns home, even if hotload dies.

import * as fs from 'fs';
import { HotloadError } from '@hotload/errors';
import { CALL_STUB, CALL_STUB_SIGPROCMASK_END, CALL_STUB_SIGRETURN_END } from '@hotload/x86';
import { Session } from './session';
import type { ThreadRegs } from './native';
import { Module, dynamicSymbol, findLibc, findLoader, openModule, setBias, stubSite } from './read-process';
import { SIGFRAME, UnwindModule, unwind, unwindModules, warmUnwind } from './unwind';
import { ElfFile, PF, PT, perFile } from '@hotload/elf';

/** Syscalls a thread waits in with no allocator or loader lock held. */
const WAITING_SYSCALLS = new Set([
  0, // read
  7, // poll
  23, // select
  34, // pause
  35, // nanosleep
  43, // accept
  45, // recvfrom
  47, // recvmsg
  61, // wait4
  128, // rt_sigtimedwait
  130, // rt_sigsuspend
  202, // futex
  219, // restart_syscall: nanosleep, poll or a futex wait resumed after a stop
  230, // clock_nanosleep
  232, // epoll_wait
  270, // pselect6
  271, // ppoll
  281, // epoll_pwait
  288, // accept4
]);
/** Names of system calls a thread may be blocked in that are not waits hotload interrupts (for messages). */
const OTHER_SYSCALLS: Record<number, string> = { 1: 'write', 16: 'ioctl', 17: 'pread64', 18: 'pwrite64', 20: 'writev', 44: 'sendto', 46: 'sendmsg', 72: 'fcntl', 73: 'flock', 74: 'fsync', 257: 'openat' };
const INTERRUPTED = new Set([-512n, -513n, -514n, -516n, -4n]); // -ERESTART*, -EINTR

/** libc functions that hold the allocator or loader lock while they run (or call back with it held). */
const LOCKING_FUNCTIONS = [
  'malloc', 'free', 'calloc', 'realloc', 'reallocarray', 'memalign', 'aligned_alloc', 'posix_memalign', 'valloc', 'pvalloc',
  'malloc_trim', 'malloc_info', 'malloc_stats', 'mallinfo', 'mallinfo2', 'mallopt',
  'dlopen', 'dlclose', 'dlsym', 'dlvsym', 'dladdr', 'dladdr1', 'dlinfo', 'dlmopen', 'dl_iterate_phdr', '__libc_dlopen_mode',
  'fork', '_Fork',
];

/** libc functions that only wait in a system call other than futex, holding no lock of libc's. */
const WAITING_FUNCTIONS = [
  'read', 'readv', 'pread64', 'poll', 'ppoll', 'select', 'pselect', 'epoll_wait', 'epoll_pwait', 'epoll_pwait2',
  'accept', 'accept4', 'recv', 'recvfrom', 'recvmsg', 'recvmmsg', 'connect', 'pause', 'sigsuspend', 'sigtimedwait',
  'sigwaitinfo', 'sigwait', 'wait', 'waitpid', 'wait4', 'waitid', 'nanosleep', 'clock_nanosleep', 'usleep', 'sleep',
  'msgrcv', 'semop', 'semtimedop', 'mq_receive', 'mq_timedreceive',
];

/** How far up a thread's stack to look for return addresses (bytes). */
const STACK_SCAN = 16 * 1024;

export interface TargetRuntime {
  stub: bigint;
  dlopen: bigint;
  dlopenMode: bigint;
  dlerror: bigint;
  dlclose: bigint;
  /** System call wrappers, for mapping a rebuilt patch (load-near.ts). */
  libc: { open: bigint; mmap: bigint; munmap: bigint; close: bigint };
  /** Executable ranges of libc and the loader: a thread there may hold their locks. */
  unsafeRanges: [bigint, bigint][];
  /**
   * Code that runs with the allocator or loader lock held, or that calls back
   * into the program with it held: the loader's text, and libc's malloc family,
   * dlopen/dlclose and dl_iterate_phdr. A return address into any of them on a
   * thread's stack means it is inside one of them.
   */
  lockRanges: [bigint, bigint][];
  /** libc's WAITING_FUNCTIONS: a signal handler that interrupted one of them interrupted no lock holder. */
  waitRanges: [bigint, bigint][];
  /**
   * glibc's `__restore_rt`, the return address of every signal handler: on a
   * thread's stack it marks a signal frame, whose saved registers say what the
   * handler interrupted. Undefined when not found (then no frame is looked for).
   */
  restoreRt?: bigint;
  /** The modules' code and call frame information, to unwind a candidate's stack (unwind.ts). */
  unwind?: UnwindModule[];
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));
export function sleepMs(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}

/** Find dlopen & co. and the place for the call stub. Reads files only. */
export function findRuntime(pid: number, mods: Module[]): Omit<TargetRuntime, 'stub'> & { stubCandidates: bigint[] } {
  const libc = findLibc(mods);
  if (!libc) throw new HotloadError('PATCH_DLOPEN_FAILED', `process ${pid} has no C library mapped (a static program?); hotload needs its dlopen`);
  const libcElf = openModule(pid, libc);
  setBias(libc, libcElf);
  let dlopen = dynamicSymbol(libcElf, 'dlopen', /^GLIBC_2\.34$/);
  let mode = 2n; // RTLD_NOW
  if (!dlopen) {
    dlopen = dynamicSymbol(libcElf, '__libc_dlopen_mode');
    mode = 2n | 0x80000000n; // RTLD_NOW | __RTLD_DLOPEN
  }
  const dlerror = dynamicSymbol(libcElf, 'dlerror', /^GLIBC_2\.34$/);
  const dlclose = dynamicSymbol(libcElf, 'dlclose', /^GLIBC_2\.34$/);
  if (!dlopen || !dlerror || !dlclose) {
    throw new HotloadError('PATCH_DLOPEN_FAILED', `${libc.path} exports no dlopen/dlerror/dlclose (glibc before 2.34 without libdl loaded?)`);
  }
  const wrappers: Record<string, bigint> = {};
  for (const name of ['open', 'mmap', 'munmap', 'close']) {
    const sym = dynamicSymbol(libcElf, name);
    if (!sym) throw new HotloadError('PATCH_DLOPEN_FAILED', `${libc.path} exports no ${name}`);
    wrappers[name] = libc.bias + BigInt(sym.value);
  }
  const unsafeRanges: [bigint, bigint][] = [];
  const lockRanges: [bigint, bigint][] = [];
  const loader = findLoader(mods);
  // libgcc_s: its unwinder holds its own lock while it searches the tables a
  // patch from a rebuild registers (load-near.ts).
  const libgcc = mods.find((m) => /\/libgcc_s\.so\.1$/.test(m.path));
  for (const m of [libc, loader, libgcc]) {
    if (!m) continue;
    for (const map of m.mappings) {
      if (!map.perms.includes('x')) continue;
      unsafeRanges.push([map.start, map.end]);
      if (m === loader) lockRanges.push([map.start, map.end]);
    }
  }
  const fns = libcFunctions(libcElf);
  for (const [lo, hi] of fns.locking) lockRanges.push([libc.bias + lo, libc.bias + hi]);
  const waitRanges = fns.waiting.map(([lo, hi]): [bigint, bigint] => [libc.bias + lo, libc.bias + hi]);
  const restoreRt = findRestoreRt(libcElf, libc.bias);
  const stubCandidates: bigint[] = [];
  for (const m of [mods[0], libc, loader]) {
    if (!m) continue;
    try {
      const elf = openModule(pid, m);
      setBias(m, elf);
      const s = stubSite(m, elf, CALL_STUB.length);
      if (s !== undefined) stubCandidates.push(s);
    } catch {
      /* an unreadable module just offers no site */
    }
  }
  if (stubCandidates.length === 0) throw new HotloadError('PTRACE_FAILED', `no room for hotload's call stub in process ${pid}`);
  const libcCalls = { open: wrappers.open, mmap: wrappers.mmap, munmap: wrappers.munmap, close: wrappers.close };
  return { restoreRt, libc: libcCalls, dlopen: libc.bias + BigInt(dlopen.value), dlopenMode: mode, dlerror: libc.bias + BigInt(dlerror.value), dlclose: libc.bias + BigInt(dlclose.value), unsafeRanges, lockRanges, waitRanges, stubCandidates, unwind: unwindModules(pid, mods) };
}

/** The link-time ranges of the C library's locking and waiting functions (LOCKING_FUNCTIONS, WAITING_FUNCTIONS), once per file. */
const libcFunctions = perFile((elf) => {
  const f: { locking: [bigint, bigint][]; waiting: [bigint, bigint][] } = { locking: [], waiting: [] };
  const locking = new Set(LOCKING_FUNCTIONS);
  const waiting = new Set(WAITING_FUNCTIONS);
  for (const sym of elf.symbols('.dynsym')) {
    if (sym.shndx === 0 || sym.size === 0) continue;
    const range: [bigint, bigint] = [BigInt(sym.value), BigInt(sym.value + sym.size)];
    if (locking.has(sym.name)) f.locking.push(range);
    if (waiting.has(sym.name)) f.waiting.push(range);
  }
  return f;
});

/** `mov $15, %rax; syscall`: rt_sigreturn, the whole of glibc's __restore_rt (a local symbol, so found by its bytes). */
const RESTORE_RT = Buffer.from('48c7c00f0000000f05', 'hex');

function findRestoreRt(elf: ElfFile, bias: bigint): bigint | undefined {
  const at = restoreRtAt(elf);
  return at === undefined ? undefined : bias + at;
}

/** Its link-time address, once per C library file (a scan of its code: about 1 ms, on every attach). */
const restoreRtAt = perFile(scanRestoreRt);

function scanRestoreRt(elf: ElfFile): bigint | undefined {
  let found: bigint | undefined;
  for (const p of elf.programs) {
    if (p.type !== PT.LOAD || !(p.flags & PF.X)) continue;
    const text = elf.buf.subarray(p.offset, p.offset + p.filesz);
    const at = text.indexOf(RESTORE_RT);
    if (at < 0) continue;
    if (found !== undefined || text.indexOf(RESTORE_RT, at + 1) >= 0) return undefined; // not unique: do not guess
    found = BigInt(p.vaddr + at);
  }
  return found;
}

/** Put the call stub in place (threads stopped); returns its address. */
export function placeStub(s: Session, candidates: bigint[]): bigint {
  // Through /proc/PID/mem this works with the threads running (no thread runs
  // there). A kernel that refuses such writes still allows PTRACE_POKEDATA on
  // a stopped thread: the second pass.
  for (const stopped of [false, true]) {
    if (stopped) s.stopAll();
    for (const at of candidates) {
      const cur = s.read(at, CALL_STUB.length);
      if (cur.equals(CALL_STUB)) return at;
      try {
        s.write(at, CALL_STUB);
        return at;
      } catch {
        /* try the next site */
      }
    }
  }
  throw new HotloadError('PTRACE_FAILED', `could not write hotload's call stub into process ${s.pid}`);
}

/**
 * Is this stopped thread at a moment where it can run dlopen? Higher is better;
 * 0 = no. A thread blocked in a waiting syscall qualifies, except in futex:
 * glibc waits there for one lock while holding another (a thread inside dlopen
 * waits for an arena lock holding the loader lock; the stress test found it).
 * So a futex waiter must also have no return address into code that holds
 * those locks (lockRanges) in the innermost part of its stack. Only futex
 * waiters are scanned: stale return addresses further up a stack (the Lua
 * interpreter has them) would otherwise make busy threads look unsafe forever.
 */
export function hostScore(rt: TargetRuntime, r: ThreadRegs, readStack: () => Buffer, readCode: (at: bigint) => Buffer, read8?: (at: bigint) => bigint): number {
  return judgeHost(rt, r, readStack, readCode, read8).score;
}

/**
 * hostScore, with the reason for a refusal (for NO_SAFE_POINT's message).
 * With `read8` and the runtime's call frame information, the thread's stack
 * is unwound first: when that reaches its outermost frame, the functions on
 * it decide, exactly (inside malloc, dlopen, dl_iterate_phdr or the loader:
 * refused, however it got there, through a signal handler or a callback).
 * Otherwise the guesses below decide.
 */
export function judgeHost(rt: TargetRuntime, r: ThreadRegs, readStack: () => Buffer, readCode: (at: bigint) => Buffer, read8?: (at: bigint) => bigint): { score: number; why?: string } {
  let buf: Buffer | undefined;
  const stack = () => (buf ??= readStack()); // read once, and only when needed
  const waiting = r.origRax >= 0n && WAITING_SYSCALLS.has(Number(r.origRax)) && (INTERRUPTED.has(r.rax) || r.rax === r.origRax);
  if (!waiting && within(rt.unsafeRanges, r.rip)) {
    const inSyscall = r.origRax >= 0n && (INTERRUPTED.has(r.rax) || r.rax === r.origRax || r.rax === -38n); // -ENOSYS: at its entry
    const name = OTHER_SYSCALLS[Number(r.origRax)];
    return { score: 0, why: inSyscall ? `in system call ${r.origRax}${name ? ` (${name})` : ''}, not a wait hotload may interrupt` : 'running libc or the loader' };
  }
  const frames = rt.unwind && read8 ? unwind(rt.unwind, rt.restoreRt, r, read8) : undefined;
  if (frames) {
    const locked = frames.some((f) => within(rt.lockRanges, f.exact ? f.pc : f.pc - 1n));
    if (locked) return { score: 0, why: 'inside malloc, dlopen, dl_iterate_phdr or the loader (its stack unwound)' };
    return { score: waiting ? 2 : 1 };
  }
  // A signal handler that interrupted the C library or the loader: whatever
  // lock the interrupted code held, it holds still (the stress of a SIGALRM
  // handler spinning over malloc found this: dlopen waited for its own lock).
  // Only for threads running code or waiting in futex: a thread asleep in another
  // waiting syscall often has stale signal frames above its stack pointer, and
  // such a handler rarely sleeps over malloc.
  if (waiting && r.origRax !== 202n && r.origRax !== 219n) return { score: 2 }; // 219 may resume a futex wait
  if (inHandlerOverLibc(rt, stack(), readCode)) return { score: 0, why: 'in a signal handler that interrupted libc or the loader' };
  if (waiting) return holdsLock(rt, stack()) ? { score: 0, why: 'waiting in futex inside malloc, dlopen or the loader' } : { score: 2 };
  return { score: 1 };
}

const SIGFRAME_RAX = Number(SIGFRAME.rax);
const SIGFRAME_RIP = Number(SIGFRAME.rip);

/** Is x in one of the [start, end) ranges? */
function within(ranges: [bigint, bigint][], x: bigint): boolean {
  return ranges.some(([a, b]) => x >= a && x < b);
}

/**
 * Is there a signal frame on this stack whose handler may have interrupted a
 * holder of libc's or the loader's locks? A frame whose saved rip is outside
 * them is not. Nor is one that interrupted a wait in a system call other than
 * futex (a signal-counting handler runs there at every signal, and the thread
 * holds nothing): either its rip lies in one of libc's WAITING_FUNCTIONS, or
 * the kernel left it at a `syscall` to be restarted, with rax the syscall's
 * number. A frame over any other wait (rax the number of futex, or -EINTR or
 * -ERESTART* after a `syscall`) is judged like a thread waiting in futex: by the
 * return addresses above it. Any other frame over libc is refused.
 */
function inHandlerOverLibc(rt: TargetRuntime, stack: Buffer, readCode: (at: bigint) => Buffer): boolean {
  if (rt.restoreRt === undefined) return false;
  const isSyscallAt = (at: bigint) => {
    try {
      const c = readCode(at);
      return c.length >= 2 && c[0] === 0x0f && c[1] === 0x05;
    } catch {
      return false;
    }
  };
  for (let o = 0; o + SIGFRAME_RIP + 8 <= stack.length; o += 8) {
    if (stack.readBigUInt64LE(o) !== rt.restoreRt) continue;
    const rip = stack.readBigUInt64LE(o + SIGFRAME_RIP);
    if (!within(rt.unsafeRanges, rip) || within(rt.waitRanges, rip)) continue;
    const rax = stack.readBigInt64LE(o + SIGFRAME_RAX);
    const restart = WAITING_SYSCALLS.has(Number(rax)) && isSyscallAt(rip);
    if (restart && rax !== 202n && rax !== 219n) continue;
    const inWait = restart || (INTERRUPTED.has(rax) && isSyscallAt(rip - 2n));
    if (!inWait || holdsLock(rt, stack.subarray(o))) return true;
  }
  return false;
}

function holdsLock(rt: TargetRuntime, stack: Buffer): boolean {
  let lo = -1n;
  let hi = 0n;
  for (const [a, b] of rt.lockRanges) {
    if (lo < 0n || a < lo) lo = a;
    if (b > hi) hi = b;
  }
  for (let o = 0; o + 8 <= stack.length; o += 8) {
    const w = stack.readBigUInt64LE(o);
    if (w < lo || w >= hi) continue;
    if (rt.lockRanges.some(([a, b]) => w >= a && w < b)) return true;
  }
  return false;
}

/** The innermost part of a stopped thread's stack: from rsp up to STACK_SCAN bytes, within its mapping. */
/**
 * A stopped thread's stack from `rsp`: copied once, when first asked, and
 * words read from the copy (through the shim, one read per word took ms), or
 * from the process beyond it.
 */
export function stoppedStack(s: Session, rsp: bigint): { stack: () => Buffer; read8: (at: bigint) => bigint } {
  let top: Buffer | undefined;
  const stack = () => (top ??= liveStack(s, rsp));
  const read8 = (at: bigint) => {
    const off = at - rsp;
    const b = stack();
    return off >= 0n && off + 8n <= BigInt(b.length) ? b.readBigUInt64LE(Number(off)) : s.read(at, 8).readBigUInt64LE(0);
  };
  return { stack, read8 };
}

function liveStack(s: Session, rsp: bigint): Buffer {
  try {
    return s.read(rsp, STACK_SCAN);
  } catch {
    // Near the top of the stack mapping the read may be short or fail: take pages one by one.
    const parts: Buffer[] = [];
    for (let off = 0; off < STACK_SCAN; off += 4096) {
      const at = off === 0 ? rsp : (rsp & ~4095n) + BigInt(off);
      try {
        parts.push(s.read(at, off === 0 ? Number(4096n - (rsp & 4095n)) : 4096));
      } catch {
        break;
      }
    }
    return Buffer.concat(parts);
  }
}

/** The syscall a thread is blocked in, read from /proc without stopping it (-1: running or unknown). */
function blockedIn(pid: number, tid: number): number {
  try {
    const t = fs.readFileSync(`/proc/${pid}/task/${tid}/syscall`, 'utf8');
    return t.startsWith('running') ? -1 : Number(t.split(' ')[0]);
  } catch {
    return -1;
  }
}

/**
 * Pick a host at a safe moment without stopping the world: trace every thread,
 * then stop candidates one at a time (idle ones first, as /proc shows them),
 * keep the first that is at a safe moment, and let each other one go at once.
 * If none is, let the process run for a moment and look again until
 * `deadlineMs`. Returns with the host stopped and every other thread running.
 */
export function stopAndChooseHost(s: Session, rt: TargetRuntime, deadlineMs: number): { tid: number; tries: number } {
  const until = Date.now() + deadlineMs;
  warmUnwind(rt.unwind);
  const refusals: Record<number, Record<string, number>> = {}; // per thread, why it was not taken, how often
  for (let tries = 1; ; tries++) {
    s.seizeAll();
    let tids: number[];
    try {
      tids = fs.readdirSync(`/proc/${s.pid}/task`).map(Number);
    } catch {
      throw new HotloadError('PID_NOT_FOUND', `process ${s.pid} exited while hotload worked`);
    }
    const idle = (tid: number) => (WAITING_SYSCALLS.has(blockedIn(s.pid, tid)) ? 1 : 0);
    const ranked = tids.map((tid) => ({ tid, idle: idle(tid) })).sort((a, b) => b.idle - a.idle);
    for (const { tid } of ranked) {
      if (!s.stopThread(tid)) continue; // gone, or born after the seize: next round
      const r = s.survey().find((x) => x.tid === tid);
      // The candidate waits stopped while it is judged: its stack is read once
      // and unwound from that copy (a read through the shim per word took ms).
      const st = r && stoppedStack(s, r.rsp);
      const v = r && st ? judgeHost(rt, r, st.stack, (at) => s.read(at, 2), st.read8) : { score: 0, why: 'gone' };
      if (v.score > 0) return { tid, tries };
      s.resumeThread(tid);
      const seen = (refusals[tid] ??= {});
      seen[v.why!] = (seen[v.why!] ?? 0) + 1;
    }
    if (Date.now() > until) {
      const per = Object.entries(refusals).map(([tid, seen]) => `thread ${tid}: ${Object.entries(seen).sort((x, y) => y[1] - x[1]).map(([why, n]) => `${why} (${n}x)`).join(', ')}`);
      throw new HotloadError('NO_SAFE_POINT', `no thread of process ${s.pid} reached a safe moment within ${deadlineMs} ms (${tries} looks)`, { details: per });
    }
    sleepMs(Math.min(5, tries));
  }
}

/**
 * Run fn(args...) on the stopped `host` while the other threads run; returns
 * with the host stopped, the others running. A non-empty `data` is copied to
 * the host's stack and passed as the first argument.
 */
export function callOnHost(s: Session, rt: TargetRuntime, host: number, fn: bigint, data: Buffer, args: bigint[], timeoutMs: number) {
  s.resumeAllExcept(host);
  return s.call(host, rt.stub, { sigreturn: rt.stub + BigInt(CALL_STUB_SIGRETURN_END), sigprocmask: rt.stub + BigInt(CALL_STUB_SIGPROCMASK_END) }, fn, data, args, timeoutMs);
}
