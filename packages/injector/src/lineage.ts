// Servers that fork (nginx, PostgreSQL, Apache prefork): a master forks its
// workers and forks new ones on a reload or when one dies. A worker forked
// later is a copy of the master: a patch applied to the workers only is lost
// then, silently. attach says so when the process it patched has a parent
// running the same build without the patch.

import * as fs from 'fs';
import { PatchMeta } from '@hotload/patch';
import { findTargetModule, modules } from './read-process';
import { status } from './status';

/** The parent pid of `pid` (0 when unknown). */
export function parentOf(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name is in parentheses and may hold spaces: fields follow the last ')'.
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) || 0;
  } catch {
    return 0;
  }
}

/**
 * A warning when the parent of `pid` runs the same build as the patch's
 * target and does not have the patch (staged as `staged`) in force: what it
 * forks from now on will not have it. Undefined otherwise, or when the
 * parent cannot be read (the patch is in: a look that fails is no failure).
 */
export function parentWarning(pid: number, meta: PatchMeta, staged: string): string | undefined {
  const ppid = parentOf(pid);
  if (ppid <= 1) return undefined;
  try {
    findTargetModule(ppid, modules(ppid), meta); // throws when the parent does not run that build
    const has = status(ppid).patches.some((p) => p.staged === staged && p.inForce.length > 0);
    if (has) return undefined;
    return `warning: parent process ${ppid} runs the same build without this patch: processes it forks from now on (a reload, a worker respawned) will not have it; patch process ${ppid} too (a fork takes the patches of its parent)`;
  } catch {
    return undefined;
  }
}
