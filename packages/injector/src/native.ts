// The one door to the native side: the only module that imports ffi-rs.
// It loads native-shim/build/libhotload-shim.so and types its coarse operations
// by hand. Every call is synchronous, so every ptrace request is made from
// Node's main thread, the thread that attached (the kernel requires that).
// Functions return 0 or a count, or a negative errno; this module turns a
// negative errno into an Errno exception the injector maps to HotloadErrors.

import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DataType, createExternalBuffer, define, open } from 'ffi-rs';
import { HotloadError } from '@hotload/errors';

const LIB = 'hotload-shim';

/** A failed shim call: `errno` is positive (ESRCH = 3, EPERM = 1, ...). */
export class Errno extends Error {
  constructor(readonly op: string, readonly errno: number) {
    super(`${op}: ${errnoName(errno)}`);
  }
}

const NAMES: Record<number, string> = { 1: 'EPERM', 3: 'ESRCH', 5: 'EIO', 11: 'EAGAIN', 12: 'ENOMEM', 13: 'EACCES', 14: 'EFAULT', 16: 'EBUSY', 22: 'EINVAL', 28: 'ENOSPC', 110: 'ETIMEDOUT' };
export function errnoName(e: number): string {
  return NAMES[e] ?? `errno ${e}`;
}
export const ESRCH = 3;
export const EPERM = 1;
export const ETIMEDOUT = 110;
export const EIO = 5;
export const ENOSPC = 28;

const SHIM_SOURCE = path.resolve(__dirname, '../../../native-shim/shim.c');

/** Where the shim may be: HOTLOAD_SHIM, then the one built in the checkout or shipped prebuilt in the package. */
export function shimCandidates(): string[] {
  return [process.env.HOTLOAD_SHIM, path.resolve(__dirname, '../../../native-shim/build/libhotload-shim.so')].filter((p): p is string => !!p && fs.existsSync(p));
}

/**
 * The shim built from the shipped source with the system compiler, once per
 * source (cached by its hash): for systems where the prebuilt one does not
 * load (an older glibc). Returns its path, or why it could not be built.
 */
function buildShim(): { path?: string; why?: string } {
  if (!fs.existsSync(SHIM_SOURCE)) return { why: `no shim source at ${SHIM_SOURCE}` };
  const src = fs.readFileSync(SHIM_SOURCE);
  const hash = crypto.createHash('sha256').update(src).digest('hex').slice(0, 16);
  const dir = path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'hotload');
  const out = path.join(dir, `libhotload-shim-${hash}.so`);
  if (fs.existsSync(out)) return { path: out };
  const cc = process.env.CC || 'cc';
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    return { why: `cannot create ${dir}: ${(e as Error).message}` };
  }
  const tmp = `${out}.${process.pid}.tmp`;
  const r = spawnSync(cc, ['-O2', '-fPIC', '-shared', '-o', tmp, SHIM_SOURCE], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return { why: `${cc} could not build ${SHIM_SOURCE}: ${r.error?.message ?? r.stderr.trim().split('\n').slice(-3).join(' | ')}` };
  fs.renameSync(tmp, out);
  return { path: out };
}

/** The path of the shim that loaded, or the first candidate (for messages). */
let loadedFrom = '';
export function shimPath(): string {
  return loadedFrom || shimCandidates()[0] || '';
}

const I32 = DataType.I32;
const U64 = DataType.BigInt;

function load() {
  const tried: string[] = [];
  const tryOpen = (p: string) => {
    try {
      open({ library: LIB, path: p });
      loadedFrom = p;
      return true;
    } catch (e) {
      tried.push(`${p}: ${(e as Error).message}`);
      return false;
    }
  };
  if (!shimCandidates().some(tryOpen)) {
    const built = buildShim();
    if (!built.path || !tryOpen(built.path)) {
      throw new HotloadError('SHIM_MISSING', 'hotload\'s native shim could not be loaded or built', { details: [...tried, ...(built.why ? [built.why] : [])] });
    }
  }
  return define({
    hl_attach: { library: LIB, retType: I32, paramsType: [I32] },
    hl_stop_all: { library: LIB, retType: I32, paramsType: [] },
    hl_resume_all_except: { library: LIB, retType: I32, paramsType: [I32] },
    hl_detach: { library: LIB, retType: I32, paramsType: [] },
    hl_read: { library: LIB, retType: I32, paramsType: [U64, I32] },
    hl_write: { library: LIB, retType: I32, paramsType: [U64, DataType.U8Array, I32] },
    hl_call: { library: LIB, retType: I32, paramsType: [I32, U64, U64, U64, U64, DataType.U8Array, I32, U64, U64, U64, U64, U64, U64, I32] },
    hl_out_get: { library: LIB, retType: U64, paramsType: [I32] },
    hl_data: { library: LIB, retType: DataType.External, paramsType: [] },
    hl_open_mem: { library: LIB, retType: I32, paramsType: [I32] },
    hl_seize: { library: LIB, retType: I32, paramsType: [I32] },
    hl_stop_thread: { library: LIB, retType: I32, paramsType: [I32] },
    hl_resume_thread: { library: LIB, retType: I32, paramsType: [I32] },
    hl_survey: { library: LIB, retType: I32, paramsType: [] },
    hl_apply: { library: LIB, retType: I32, paramsType: [DataType.U8Array, I32] },
    hl_lock_process: { library: LIB, retType: I32, paramsType: [I32] },
    hl_unlock_process: { library: LIB, retType: I32, paramsType: [I32] },
    hl_lock_dir: { library: LIB, retType: I32, paramsType: [DataType.String, I32] },
  });
}

let lib: ReturnType<typeof load> | undefined;
function shim(): ReturnType<typeof load> {
  return (lib ??= load());
}

function check(op: string, r: number): number {
  if (r < 0) throw new Errno(op, -r);
  return r;
}

function out(i: number): bigint {
  return BigInt.asUintN(64, BigInt(shim().hl_out_get([i]) as unknown as bigint));
}

export interface CallResult {
  value: bigint;
  syscallStops: number;
  ns: number;
  /** What had to be set again after the call: registers, extended state, signal mask. */
  repaired: StateParts;
}

/** Parts of a thread's state, from the shim's mask (1 registers, 2 extended state, 4 signal mask). */
export interface StateParts {
  registers: boolean;
  extendedState: boolean;
  signalMask: boolean;
}
export function anyPart(p: StateParts): boolean {
  return p.registers || p.extendedState || p.signalMask;
}
function stateParts(mask: bigint): StateParts {
  return { registers: (mask & 1n) !== 0n, extendedState: (mask & 2n) !== 0n, signalMask: (mask & 4n) !== 0n };
}

/** The borrowed thread's state could not be put back as it was (the shim's -EIO). */
export class StateError extends Errno {
  constructor(
    readonly parts: StateParts,
    /** The first XSAVE component that differs (0 x87, 1 SSE, 2 AVX, 5-7 AVX-512, 9 PKRU, 17-18 AMX), or -1. */
    readonly component: number,
  ) {
    super('call', EIO);
  }
}

/** The borrowed thread's stack has no room for the call (the shim's -ENOSPC). */
export class StackError extends Errno {
  constructor(
    readonly room: number,
    readonly need: number,
  ) {
    super('call', ENOSPC);
  }
}

/** Seize and stop every thread of `pid`; returns the thread count. */
export function attach(pid: number): number {
  return check('attach', shim().hl_attach([pid]));
}
/** Stop every thread again (seizing new ones). */
export function stopAll(): number {
  return check('stop', shim().hl_stop_all([]));
}
export function resumeAllExcept(tid: number): void {
  check('resume', shim().hl_resume_all_except([tid]));
}
/**
 * Detach every thread. Returns the all-threads stops as wall time (first
 * interrupt to last resume: stoppedNs added, maxStopNs the longest) and per
 * thread (from its stop to its resume: threadSumNs added over threads,
 * threadMaxNs the longest one thread was stopped at a time).
 */
export function detach(): { stoppedNs: number; maxStopNs: number; threadSumNs: number; threadMaxNs: number } {
  const r = shim().hl_detach([]);
  const res = { stoppedNs: Number(out(0)), maxStopNs: Number(out(1)), threadSumNs: Number(out(2)), threadMaxNs: Number(out(3)) };
  check('detach', r);
  return res;
}
export function read(addr: bigint, len: number): Buffer {
  const n = check('read', shim().hl_read([addr, len]));
  if (n === 0) return Buffer.alloc(0);
  return Buffer.from(createExternalBuffer(shim().hl_data([]), n)); // copy out of the shim's buffer
}
export function write(addr: bigint, bytes: Buffer): void {
  check('write', shim().hl_write([addr, bytes, bytes.length]));
}
/**
 * fn(args...) on thread `tid` (up to six integer arguments). A non-empty `data`
 * is copied onto the thread's stack and its address replaces the first argument.
 */
export function call(tid: number, stub: bigint, stubSigreturnEnd: bigint, stubSigprocmaskEnd: bigint, fn: bigint, data: Buffer, args: bigint[], timeoutMs: number): CallResult {
  if (args.length > 6) throw new Error('at most six arguments');
  const a = [...args, 0n, 0n, 0n, 0n, 0n, 0n].slice(0, 6);
  const r = shim().hl_call([tid, stub, stubSigreturnEnd, stubSigprocmaskEnd, fn, data.length ? data : Buffer.alloc(1), data.length, ...a, timeoutMs]);
  if (r === -EIO) throw new StateError(stateParts(out(4)), out(6) ? Number(out(6)) - 1 : -1);
  if (r === -ENOSPC) throw new StackError(Number(out(4)), Number(out(5)));
  check('call', r);
  return { value: out(0), syscallStops: Number(out(1)), ns: Number(out(2)), repaired: stateParts(out(3)) };
}

/** Open /proc/PID/mem for reads and writes that need no stop. */
export function openMem(pid: number): void {
  check('open /proc/PID/mem', shim().hl_open_mem([pid]));
}

export interface ThreadRegs {
  tid: number;
  rip: bigint;
  rax: bigint; // signed
  origRax: bigint; // signed
  rsp: bigint;
  rbp: bigint;
}

/** Registers of every stopped thread, in one call. */
export function survey(): ThreadRegs[] {
  const n = check('survey', shim().hl_survey([]));
  if (n === 0) return [];
  const b = Buffer.from(createExternalBuffer(shim().hl_data([]), n * 48));
  const out: ThreadRegs[] = [];
  for (let i = 0; i < n; i++) {
    const o = i * 48;
    out.push({ tid: Number(b.readBigUInt64LE(o)), rip: b.readBigUInt64LE(o + 8), rax: b.readBigInt64LE(o + 16), origRax: b.readBigInt64LE(o + 24), rsp: b.readBigUInt64LE(o + 32), rbp: b.readBigUInt64LE(o + 40) });
  }
  return out;
}

export interface CodeWrite {
  addr: bigint;
  expect: Buffer;
  bytes: Buffer;
  /** A 2-byte entry site: threads stopped in its middle are moved past it first. */
  entry?: boolean;
}

/** Encode a batch of code writes for apply(); done before the threads are stopped. */
export function encodeWrites(writes: CodeWrite[]): Buffer {
  let size = 0;
  for (const w of writes) {
    if (w.expect.length !== w.bytes.length || w.bytes.length === 0 || w.bytes.length > 64) throw new Error('apply: bad record');
    size += 16 + 2 * w.bytes.length;
  }
  const buf = Buffer.alloc(size);
  let o = 0;
  for (const w of writes) {
    buf.writeBigUInt64LE(w.addr, o);
    buf.writeUInt32LE(w.bytes.length, o + 8);
    buf.writeUInt32LE(w.entry ? 1 : 0, o + 12);
    w.expect.copy(buf, o + 16);
    w.bytes.copy(buf, o + 16 + w.bytes.length);
    o += 16 + 2 * w.bytes.length;
  }
  return buf;
}

/** Check and write an encoded batch of code with every thread stopped; all or nothing. */
export function apply(encoded: Buffer): void {
  const r = shim().hl_apply([encoded.length ? encoded : Buffer.alloc(1), encoded.length]);
  if (r < 0) throw new ApplyError(-r, Number(out(0)));
}

export class ApplyError extends Errno {
  constructor(errno: number, readonly index: number) {
    super('apply', errno);
  }
}
export const ESTALE = 116;

/** Lock a process for this hotload: the lock's descriptor, or undefined when another hotload holds it. */
export function lockProcess(pid: number): number | undefined {
  const r = shim().hl_lock_process([pid]);
  if (r === -EAGAIN) return undefined;
  return check('lock process', r);
}
export function unlockProcess(fd: number): void {
  check('unlock process', shim().hl_unlock_process([fd]));
}
export const EAGAIN = 11;
/** An flock on directory `dir` (shared or exclusive), never waiting: its descriptor, or undefined while another holds it in a conflicting mode. unlockProcess releases it. */
export function lockDir(dir: string, exclusive: boolean): number | undefined {
  const r = shim().hl_lock_dir([dir, exclusive ? 1 : 0]);
  if (r === -EAGAIN) return undefined;
  return check('lock directory', r);
}

/** Seize every thread without stopping any; returns the thread count. */
export function seize(pid: number): number {
  return check('seize', shim().hl_seize([pid]));
}
/** Stop one thread (it stays stopped until resumed or detached). */
export function stopThread(tid: number): void {
  check('stop thread', shim().hl_stop_thread([tid]));
}
export function resumeThread(tid: number): void {
  check('resume thread', shim().hl_resume_thread([tid]));
}
