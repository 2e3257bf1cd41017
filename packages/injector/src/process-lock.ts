// One hotload at a time per process. Two commands working on the same process
// at once could interleave their reads and writes; the second one waits
// briefly for the first, then fails with PROCESS_BUSY naming it. The lock is
// flock(2) on the process's /proc/PID directory (native-shim: hl_lock_process),
// which holds across users, TMPDIRs and mount namespaces, and is released by
// the kernel when its holder exits, however it exits.

import * as fs from 'fs';
import { HotloadError } from '@hotload/errors';
import { sleepMs } from './call-in-target';
import * as native from './native';

/** The pid holding an flock on /proc/PID, from /proc/locks (0 when not found). */
function holderOf(pid: number): number {
  try {
    const ino = fs.statSync(`/proc/${pid}`).ino;
    for (const line of fs.readFileSync('/proc/locks', 'utf8').split('\n')) {
      const m = /^\d+:\s+FLOCK\s+\S+\s+\S+\s+(\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s/.exec(line);
      if (m && Number(m[2]) === ino) return Number(m[1]);
    }
  } catch {
    /* the process is gone, or /proc/locks is not readable */
  }
  return 0;
}

export function withProcessLock<T>(pid: number, fn: () => T, waitMs = 2000): T {
  const until = Date.now() + waitMs;
  let fd: number | undefined;
  for (;;) {
    try {
      fd = native.lockProcess(pid);
    } catch (e) {
      // ENOENT: no /proc/PID to lock.
      if (e instanceof native.Errno && (e.errno === 2 || e.errno === native.ESRCH)) throw new HotloadError('PID_NOT_FOUND', `no process with pid ${pid}`);
      throw e;
    }
    if (fd !== undefined) break;
    if (Date.now() > until) {
      const holder = holderOf(pid);
      throw new HotloadError('PROCESS_BUSY', `another hotload${holder ? ` (pid ${holder})` : ''} is working on process ${pid}`);
    }
    sleepMs(20);
  }
  try {
    return fn();
  } finally {
    native.unlockProcess(fd);
  }
}
