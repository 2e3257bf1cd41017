// One hotload at a time per process. Two commands working on the same process
// at once could interleave their reads and writes; the second one waits
// briefly for the first, then fails with PROCESS_BUSY. The lock is a file in
// hotload's private directory holding the owner's pid; a lock whose owner is
// gone (killed with SIGKILL) is taken over.

import * as fs from 'fs';
import * as path from 'path';
import { HotloadError } from '@hotload/errors';
import { sleepMs } from './call-in-target';
import { stageDir } from './stage-patch';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function withProcessLock<T>(pid: number, fn: () => T, waitMs = 2000): T {
  const lock = path.join(stageDir(), `pid-${pid}.lock`);
  const until = Date.now() + waitMs;
  const me = String(process.pid);
  for (;;) {
    try {
      fs.writeFileSync(lock, me, { flag: 'wx', mode: 0o644 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let holder = 0;
    try {
      holder = Number(fs.readFileSync(lock, 'utf8'));
    } catch {
      continue; // released meanwhile
    }
    if (!holder || holder === process.pid || !alive(holder)) {
      fs.rmSync(lock, { force: true }); // stale: its owner is gone
      continue;
    }
    if (Date.now() > until) {
      throw new HotloadError('PROCESS_BUSY', `another hotload (pid ${holder}) is working on process ${pid}`);
    }
    sleepMs(20);
  }
  try {
    return fn();
  } finally {
    try {
      if (fs.readFileSync(lock, 'utf8') === me) fs.rmSync(lock, { force: true });
    } catch {
      /* already gone */
    }
  }
}
