// A ptrace session on one process: the shim's operations with errno turned
// into HotloadErrors that say what to do. Open one, do the work, close it in a
// `finally`: close() detaches every thread, and each resumes exactly where it
// was (an interrupted syscall is restarted, not failed).

import * as fs from 'fs';
import { HotloadError } from '@hotload/errors';
import * as native from './native';

export interface StopTimes {
  /** Wall time of the all-threads stops, first interrupt to last resume, added. */
  stoppedMs: number;
  /** The longest of those. */
  maxStopMs: number;
  /** Per thread, from its stop to its resume: the longest any one thread was stopped. */
  threadStopMaxMs: number;
  /** The same added over every thread and stop. */
  threadStopSumMs: number;
}

let open = false;

export class Session {
  private closed = false;
  private attached = false;
  threadCount = 0;

  private constructor(readonly pid: number) {}

  /**
   * Open a session: the process's memory, readable and writable, with nothing
   * stopped yet. stopAll() stops (and, the first time, seizes) every thread.
   */
  static open(pid: number): Session {
    if (open) throw new HotloadError('INTERNAL', 'a ptrace session is already open in this hotload process');
    try {
      native.openMem(pid);
    } catch (e) {
      throw mapAttachError(pid, e);
    }
    // The first call of each FFI function is several times slower than the
    // next; make those first calls now, while nothing is stopped (no threads
    // are traced yet, so they do nothing).
    native.survey();
    native.resumeAllExcept(-1);
    open = true;
    return new Session(pid);
  }

  /** Trace every thread without stopping any (again: also threads born since). */
  seizeAll(): number {
    try {
      this.threadCount = native.seize(this.pid);
    } catch (e) {
      throw mapAttachError(this.pid, e);
    }
    this.attached = true;
    return this.threadCount;
  }

  /** Stop one traced thread; false if it is gone. */
  stopThread(tid: number): boolean {
    try {
      native.stopThread(tid);
      return true;
    } catch (e) {
      if (e instanceof native.Errno && e.errno === native.ESRCH) return false;
      throw this.mapError('stop a thread', e);
    }
  }

  resumeThread(tid: number): void {
    this.wrap('resume a thread', () => native.resumeThread(tid));
  }

  /** Stop every thread (seizing any new one). */
  stopAll(): number {
    if (!this.attached) {
      try {
        this.threadCount = native.attach(this.pid);
      } catch (e) {
        throw mapAttachError(this.pid, e);
      }
      this.attached = true;
      return this.threadCount;
    }
    return (this.threadCount = this.wrap('stop threads', () => native.stopAll()));
  }

  /** Registers of every stopped thread. */
  /** Prepare a batch for apply() (before the threads are stopped: it is not free). */
  static batch(writes: native.CodeWrite[], names: string[]): { encoded: Buffer; names: string[] } {
    return { encoded: native.encodeWrites(writes), names };
  }

  survey(): native.ThreadRegs[] {
    return this.wrap('read registers', () => native.survey());
  }

  /** Write code with every thread stopped: all records or none (see hl_apply). */
  apply(batch: { encoded: Buffer; names: string[] }): void {
    const { encoded, names } = batch;
    try {
      native.apply(encoded);
    } catch (e) {
      if (e instanceof native.ApplyError && e.errno === native.ESTALE) {
        throw new HotloadError('UNPATCHABLE', `the prologue of ${names[e.index] ?? '?'} changed in process ${this.pid} while hotload worked (another hotload?); nothing was written`);
      }
      throw this.mapError('write code', e);
    }
  }

  read(addr: bigint, len: number): Buffer {
    return this.wrap(`read memory at 0x${addr.toString(16)}`, () => native.read(addr, len));
  }

  readU64(addr: bigint): bigint {
    return this.read(addr, 8).readBigUInt64LE(0);
  }

  write(addr: bigint, bytes: Buffer): void {
    this.wrap(`write memory at 0x${addr.toString(16)}`, () => native.write(addr, bytes));
  }

  writeU64(addr: bigint, v: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    this.write(addr, b);
  }

  /** A NUL-terminated string of the process, up to `max` bytes. */
  readString(addr: bigint, max = 4096): string {
    let out = Buffer.alloc(0);
    for (let off = 0; off < max; off += 256) {
      const chunk = this.read(addr + BigInt(off), 256);
      const z = chunk.indexOf(0);
      out = Buffer.concat([out, z >= 0 ? chunk.subarray(0, z) : chunk]);
      if (z >= 0 || chunk.length < 256) break;
    }
    return out.toString('utf8');
  }

  resumeAllExcept(tid: number): void {
    this.wrap('resume threads', () => native.resumeAllExcept(tid));
  }

  /** fn(args...) on stopped thread `tid` through the call stub at `stub`; `ends` are the addresses just past the stub's two ways home's first syscall. */
  call(tid: number, stub: bigint, ends: { sigreturn: bigint; sigprocmask: bigint }, fn: bigint, data: Buffer, args: bigint[], timeoutMs: number): native.CallResult {
    try {
      return native.call(tid, stub, ends.sigreturn, ends.sigprocmask, fn, data, args, timeoutMs);
    } catch (e) {
      if (e instanceof native.Errno && e.errno === native.ETIMEDOUT) {
        throw new HotloadError('CALL_TIMEOUT', `the call in process ${this.pid} did not return within ${timeoutMs} ms`);
      }
      if (e instanceof native.StackError) {
        throw new HotloadError('HOST_STACK_FULL', `thread ${tid} of process ${this.pid} has ${e.room} bytes of stack below its stack pointer; the call needs ${e.need} (its saved registers and room to run)`);
      }
      if (e instanceof native.StateError) {
        const parts = Object.entries(e.parts).filter(([, v]) => v).map(([k]) => k.replace(/[A-Z]/g, (c) => ' ' + c.toLowerCase()));
        const comp = e.component >= 0 ? ` (first difference in XSAVE component ${e.component})` : '';
        throw new HotloadError('REGISTERS_NOT_RESTORED', `thread ${tid} of process ${this.pid} could not be given back its ${parts.join(', ')}${comp} after the call`);
      }
      throw this.mapError('call a function in the process', e);
    }
  }

  /** Detach every thread (each resumes where it was) and close the memory. Safe to call twice. */
  close(): StopTimes {
    if (this.closed) return { stoppedMs: 0, maxStopMs: 0, threadStopMaxMs: 0, threadStopSumMs: 0 };
    this.closed = true;
    open = false;
    try {
      const t = native.detach();
      return { stoppedMs: t.stoppedNs / 1e6, maxStopMs: t.maxStopNs / 1e6, threadStopMaxMs: t.threadMaxNs / 1e6, threadStopSumMs: t.threadSumNs / 1e6 };
    } catch (e) {
      throw this.mapError('detach', e);
    }
  }

  private wrap<T>(what: string, f: () => T): T {
    try {
      return f();
    } catch (e) {
      throw this.mapError(what, e);
    }
  }

  private mapError(what: string, e: unknown): HotloadError {
    if (e instanceof HotloadError) return e;
    if (e instanceof native.Errno && e.errno === native.ESRCH && !fs.existsSync(`/proc/${this.pid}`)) {
      return new HotloadError('PID_NOT_FOUND', `process ${this.pid} exited while hotload worked (${what})`);
    }
    return new HotloadError('PTRACE_FAILED', `could not ${what} in process ${this.pid}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

function mapAttachError(pid: number, e: unknown): HotloadError {
  if (e instanceof HotloadError) return e;
  if (!(e instanceof native.Errno)) return new HotloadError('INTERNAL', String(e));
  if (e.errno === native.ESRCH) return new HotloadError('PID_NOT_FOUND', `no process with pid ${pid}`);
  if (e.errno === native.EPERM) return ptraceDenied(pid);
  return new HotloadError('PTRACE_FAILED', `could not attach to process ${pid}: ${e.message}`);
}

/** Why this hotload may not trace (or reach the files of) process `pid`, and what to do. */
export function ptraceDenied(pid: number): HotloadError {
  const scope = readText('/proc/sys/kernel/yama/ptrace_scope');
  const tracer = tracerOf(pid);
  const root = (process.getuid?.() ?? 0) === 0;
  const owner = statusField(pid, 'Uid').split(/\s+/)[0];
  const mine = owner === String(process.getuid?.() ?? 0);
  // Neither a debugger, nor Yama, nor ownership explains it: something else
  // said no (a seccomp filter on hotload, or an LSM's ptrace rules).
  const seccomp = statusField(process.pid, 'Seccomp');
  const lsm = readText('/sys/kernel/security/lsm').split(',').filter((x) => ['selinux', 'apparmor', 'smack', 'tomoyo', 'landlock'].includes(x));
  const other = [seccomp && seccomp !== '0' ? 'hotload itself runs under a seccomp filter (a container\'s profile?) that may deny ptrace' : '', lsm.length ? `the active security module${lsm.length > 1 ? 's' : ''} (${lsm.join(', ')}) may deny ptrace` : ''].filter(Boolean);
  const yama = scope && scope !== '0' && !(scope === '1' && root) ? `kernel.yama.ptrace_scope is ${scope}` : '';
  const why = tracer
    ? `it is already traced by pid ${tracer}`
    : yama || (!mine && !root ? `it belongs to uid ${owner || '?'}` : other.length ? other.join('; ') : 'it is not dumpable, or a security policy denies it');
  return new HotloadError('PTRACE_DENIED', `not allowed to trace process ${pid}: ${why}`, {
    hint: tracer
      ? `Detach the debugger (pid ${tracer}) first.`
      : yama
        ? 'Run hotload as root, or set /proc/sys/kernel/yama/ptrace_scope to 0 (sysctl kernel.yama.ptrace_scope=0).'
        : !mine && !root
          ? 'Run hotload as the user that owns the process, or as root.'
          : 'Allow ptrace for hotload: in a container, add CAP_SYS_PTRACE (docker run --cap-add=SYS_PTRACE) or a seccomp profile that allows ptrace; with SELinux, the deny_ptrace boolean; with AppArmor, a ptrace rule. See README, Troubleshooting.',
  });
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

/** A field of /proc/PID/status ('' when unreadable). */
function statusField(pid: number, name: string): string {
  const m = new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(readText(`/proc/${pid}/status`));
  return m ? m[1].trim() : '';
}

function tracerOf(pid: number): number {
  try {
    const m = /TracerPid:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}
