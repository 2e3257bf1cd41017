// Running a function (dlopen, dlerror, a patch's hook) inside the target, on one
// of its own threads, without deadlocking it.
//
// The danger: a thread stopped while it holds the allocator lock or the loader
// lock would wait for itself inside dlopen. So the thread we borrow (the host)
// must be at a moment where it holds neither, and one rule decides it: its
// stack, unwound exactly (unwind.ts), holds no frame of the code that takes
// those locks (the loader, the allocator, dlopen/dlclose, dl_iterate_phdr,
// fork, the exit-handler list, libgcc's unwinder: lockRanges). A thread whose
// stack cannot be unwound is refused for now and looked at again a few ms
// later; so is one stopped in a system call hotload does not know to resume
// transparently (a write, a flock). Candidates are stopped one at a time,
// idle ones first (those waiting in a system call); the others never stop
// for this. If no thread is at such a moment, the process runs for a moment
// and we look again, up to a deadline; then we give up with the process
// untouched. While the host runs the call, every other thread runs too, so a
// lock any of them holds is released; only the host is borrowed. See
// native-shim/shim.c (hl_call) for how the host always returns home, even if
// hotload dies.

import * as fs from 'fs';
import { HotloadError } from '@hotload/errors';
import { CALL_STUB, CALL_STUB_SIGPROCMASK_END, CALL_STUB_SIGRETURN_END, OTHER_SYSCALL_NAMES, SYSCALL_ENTRY_RAX, SYSCALL_INTERRUPTED, WAITING_SYSCALLS } from '@hotload/x86';
import { Session } from './session';
import type { ThreadRegs } from './native';
import { Module, dynamicSymbol, findLibc, findLoader, openModule, setBias, stubSite } from './read-process';
import { CodeMap, Frame, Walk, countWalk, unwindModules, walkStack, warmUnwind } from './unwind';
import { ElfFile, perFile } from '@hotload/elf';

/**
 * Functions of the C library that hold a lock the call on the host needs, or
 * call back into the program holding it: the loader lock (dlopen & co., held
 * by dl_iterate_phdr around its callback), every arena lock (fork), the list
 * of exit handlers (a C++ patch's constructors register destructors with
 * __cxa_atexit). The allocator's code is taken whole (libcLockRanges).
 */
const LOCKING_FUNCTIONS = [
  'dlopen', 'dlclose', 'dlsym', 'dlvsym', 'dladdr', 'dladdr1', 'dlinfo', 'dlmopen', 'dl_iterate_phdr', '__libc_dlopen_mode',
  'fork', '_Fork', '__cxa_atexit', '__cxa_finalize', '__cxa_thread_atexit_impl', 'on_exit',
];
/** The allocator's entry points; the code between and around them is malloc.c's (its internal functions are local symbols). */
const ALLOCATOR_FUNCTIONS = [
  'malloc', 'free', 'calloc', 'realloc', 'reallocarray', 'memalign', 'aligned_alloc', 'posix_memalign', 'valloc', 'pvalloc',
  'malloc_trim', 'malloc_usable_size', 'malloc_info', 'malloc_stats', 'mallinfo', 'mallinfo2', 'mallopt',
];

/** How far up a thread's stack to copy at once when it is stopped (bytes). */
const STACK_SCAN = 16 * 1024;

export interface TargetRuntime {
  stub: bigint;
  dlopen: bigint;
  dlopenMode: bigint;
  dlerror: bigint;
  dlclose: bigint;
  /** System call wrappers, for mapping a rebuilt patch (load-near.ts). */
  libc: { open: bigint; mmap: bigint; munmap: bigint; close: bigint };
  /**
   * Code that runs with the allocator or loader lock held, or another lock
   * the call needs, or that calls back into the program with it held: the
   * loader's and libgcc_s's text, libc's allocator, and LOCKING_FUNCTIONS. A
   * frame of any of them on a thread's stack means it is inside one of them.
   */
  lockRanges: [bigint, bigint][];
  /** The modules' code and call frame information, to unwind a candidate's stack (unwind.ts). */
  unwind: CodeMap;
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
  const lockRanges: [bigint, bigint][] = [];
  const loader = findLoader(mods);
  // libgcc_s: its unwinder holds its own lock while it searches the tables a
  // patch from a rebuild registers (load-near.ts).
  const libgcc = mods.find((m) => /\/libgcc_s\.so\.1$/.test(m.path));
  for (const m of [loader, libgcc]) {
    for (const map of m?.mappings ?? []) if (map.perms.includes('x')) lockRanges.push([map.start, map.end]);
  }
  for (const [lo, hi] of libcLockRanges(libcElf)) lockRanges.push([libc.bias + lo, libc.bias + hi]);
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
  return { libc: libcCalls, dlopen: libc.bias + BigInt(dlopen.value), dlopenMode: mode, dlerror: libc.bias + BigInt(dlerror.value), dlclose: libc.bias + BigInt(dlclose.value), lockRanges, stubCandidates, unwind: unwindModules(pid) };
}

/**
 * The link-time ranges of the C library's code that holds locks (see
 * lockRanges), once per file: each of LOCKING_FUNCTIONS, and the allocator,
 * taken as the span of ALLOCATOR_FUNCTIONS widened to the exported functions
 * of other files on each side. malloc.c's internal functions (_int_malloc,
 * _int_free, the arena code) are local symbols, absent from a stripped libc,
 * and lie in that span: glibc 2.36's malloc.o runs from 0x94500 to 0x9a340,
 * its first export (__default_morecore) at 0x96030, malloc at 0x98930.
 */
export const libcLockRanges = perFile((elf: ElfFile): [bigint, bigint][] => {
  const locking = new Set(LOCKING_FUNCTIONS);
  const allocator = new Set(ALLOCATOR_FUNCTIONS);
  const out: [bigint, bigint][] = [];
  const fns = elf.symbols('.dynsym').filter((sym) => sym.shndx !== 0 && sym.type === 2 && sym.size > 0);
  for (const sym of fns) if (locking.has(sym.name)) out.push([BigInt(sym.value), BigInt(sym.value + sym.size)]);
  const alloc = fns.filter((sym) => allocator.has(sym.name)).sort((a, b) => a.value - b.value);
  // One span per group of allocator functions no more than 64 KiB apart (one object file).
  for (let i = 0; i < alloc.length; ) {
    let j = i;
    while (j + 1 < alloc.length && alloc[j + 1].value - (alloc[j].value + alloc[j].size) < 0x10000) j++;
    const lo = alloc[i].value;
    const hi = Math.max(...alloc.slice(i, j + 1).map((x) => x.value + x.size));
    const others = fns.filter((sym) => !allocator.has(sym.name));
    const below = Math.max(lo - 0x10000, ...others.filter((x) => x.value + x.size <= lo).map((x) => x.value + x.size));
    const above = Math.min(hi + 0x10000, ...others.filter((x) => x.value >= hi).map((x) => x.value));
    out.push([BigInt(below), BigInt(above)]);
    i = j + 1;
  }
  return out;
});

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
 * May this stopped thread host the call? Score 2 (waiting in a system call:
 * the best), 1 (running), or 0 with the reason. One rule over its stack,
 * unwound (`walk`): no frame of lockRanges; a stack that could not be
 * unwound is refused for now. And the system call it is stopped in, if any,
 * must be one hotload interrupts and resumes transparently (WAITING_SYSCALLS).
 */
export function judgeHost(rt: Pick<TargetRuntime, 'lockRanges'>, r: ThreadRegs, walk: Walk): { score: number; why?: string } {
  const inSyscall = r.origRax >= 0n && (SYSCALL_INTERRUPTED.includes(r.rax) || r.rax === r.origRax || r.rax === SYSCALL_ENTRY_RAX);
  const waiting = inSyscall && WAITING_SYSCALLS.has(Number(r.origRax));
  if (inSyscall && !waiting) {
    const name = OTHER_SYSCALL_NAMES[Number(r.origRax)];
    return { score: 0, why: `in system call ${r.origRax}${name ? ` (${name})` : ''}, not a wait hotload may interrupt` };
  }
  // A frame inside lock-holding code decides even when the walk stopped further down.
  if (walk.frames.some((f) => inLockCode(rt, f))) return { score: 0, why: 'inside malloc, dlopen, dl_iterate_phdr or the loader (its stack unwound)' };
  if (walk.fail) return { score: 0, why: `its stack could not be unwound (${walk.fail.why}, in ${walk.fail.where.replace(/^.*\//, '').replace(/\+0x[0-9a-f]+$/, '')})` };
  return { score: waiting ? 2 : 1 };
}

/** Is this frame inside lock-holding code? (A return address may be just past its function: its call is the byte before.) */
export function inLockCode(rt: Pick<TargetRuntime, 'lockRanges'>, f: Frame): boolean {
  return within(rt.lockRanges, f.exact ? f.pc : f.pc - 1n);
}

/** Is x in one of the [start, end) ranges? */
function within(ranges: [bigint, bigint][], x: bigint): boolean {
  return ranges.some(([a, b]) => x >= a && x < b);
}

/**
 * Words of a stopped thread's stack, read through copies of STACK_SCAN bytes:
 * the first from `rsp`, the next from the page of the first word outside
 * them (a read through the shim costs the same for a word as for 16 KiB, and
 * under load a few ms: one per frame made a look a stop of many ms).
 */
export function stoppedStack(s: Session, rsp: bigint): { read8: (at: bigint) => bigint } {
  const copies: { at: bigint; b: Buffer }[] = [];
  const read8 = (at: bigint) => {
    for (const c of copies) {
      const off = at - c.at;
      if (off >= 0n && off + 8n <= BigInt(c.b.length)) return c.b.readBigUInt64LE(Number(off));
    }
    const from = copies.length === 0 && at >= rsp ? rsp : at & ~4095n;
    const b = copy(s, from);
    copies.push({ at: from, b });
    const off = at - from;
    return off + 8n <= BigInt(b.length) ? b.readBigUInt64LE(Number(off)) : s.read(at, 8).readBigUInt64LE(0);
  };
  return { read8 };
}

/** Up to STACK_SCAN bytes from `at`, fewer near the end of its mapping. */
function copy(s: Session, at: bigint): Buffer {
  try {
    return s.read(at, STACK_SCAN);
  } catch {
    // Near the top of the stack mapping the read may be short or fail: take pages one by one.
    const parts: Buffer[] = [];
    for (let off = 0; off < STACK_SCAN; off += 4096) {
      const from = off === 0 ? at : (at & ~4095n) + BigInt(off);
      try {
        parts.push(s.read(from, off === 0 ? Number(4096n - (at & 4095n)) : 4096));
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
  const refusals: Record<number, Record<string, number>> = {}; // per thread, why it was not taken, how often
  for (let tries = 1; ; tries++) {
    // The maps as they are now, read while no thread is stopped: a library
    // loaded or unloaded since the last look would otherwise fail a walk.
    rt.unwind.refresh();
    warmUnwind(rt.unwind);
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
      const v = r ? judgeHost(rt, r, countWalk(walkStack(rt.unwind, r, stoppedStack(s, r.rsp).read8, rt.stub || undefined, (f) => inLockCode(rt, f)))) : { score: 0, why: 'gone' };
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
