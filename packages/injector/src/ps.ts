// `hotload ps`: the processes of this user that can be patched (an executable
// or library of theirs carries pads), with how many patches each has in force
// (and how many reverted ones it still maps).
// And turning what a user typed (pids, "101,102", a process name) into pids.

import * as fs from 'fs';
import { HotloadError } from '@hotload/errors';
import { modules, openModule } from './read-process';
import { isStaged } from './stage-patch';
import { countPatches } from './status';

export interface PatchableProcess {
  pid: number;
  command: string;
  exe: string;
  /** Modules with pads. */
  modules: string[];
  /** Hotload patches in force in it (a function of theirs runs, or lies under a newer patch), read as `status` reads them. */
  patches: number;
  /** Patches it still maps that were reverted (a reverted patch stays mapped: its code may be on a stack). */
  reverted: number;
  /** What the patches in force are, in words, for those that say (HOTLOAD_DESCRIPTION, `mkpatch --description`). */
  descriptions: string[];
}

function uidOf(pid: number): number {
  try {
    return fs.statSync(`/proc/${pid}`).uid;
  } catch {
    return -1;
  }
}

function comm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

function exeOf(pid: number): string {
  try {
    return fs.readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return '';
  }
}

function allPids(): number[] {
  return fs
    .readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((p) => p !== process.pid);
}

const padded = new Map<string, boolean>();

/** Processes of this user (every process for root) with a padded module. */
export function ps(): PatchableProcess[] {
  const uid = process.getuid?.() ?? 0;
  const out: PatchableProcess[] = [];
  for (const pid of allPids()) {
    if (uid !== 0 && uidOf(pid) !== uid) continue;
    let mods;
    try {
      mods = modules(pid);
    } catch {
      continue; // gone, or not readable
    }
    const withPads: string[] = [];
    for (const m of mods) {
      if (!m.mappings.some((x) => x.perms.includes('x')) || isStaged(m.path)) continue;
      const key = `${m.path}:${m.inode}`;
      let has = padded.get(key);
      if (has === undefined) {
        try {
          has = openModule(pid, m).section('__patchable_function_entries') !== undefined;
        } catch {
          has = false;
        }
        padded.set(key, has);
      }
      if (has) withPads.push(m.path);
    }
    if (withPads.length === 0) continue;
    let counts: ReturnType<typeof countPatches> = { inForce: 0, reverted: 0, descriptions: [] };
    if (mods.some((m) => isStaged(m.path))) {
      try {
        counts = countPatches(pid);
      } catch {
        continue; // gone meanwhile, or its memory not readable
      }
    }
    out.push({ pid, command: comm(pid), exe: exeOf(pid), modules: withPads, patches: counts.inForce, reverted: counts.reverted, descriptions: counts.descriptions });
  }
  return out;
}

/** Pids whose command name (comm) or executable's base name is `name`. */
export function pidsByName(name: string): number[] {
  const uid = process.getuid?.() ?? 0;
  return allPids().filter((pid) => (uid === 0 || uidOf(pid) === uid) && (comm(pid) === name.slice(0, 15) || exeOf(pid).split('/').pop() === name));
}

/** Pids running a given executable (by path) or a module with a given build-id. */
export function pidsByExe(exe: string): number[] {
  let real = exe;
  try {
    real = fs.realpathSync(exe);
  } catch {
    /* compare as given */
  }
  return allPids().filter((pid) => exeOf(pid) === real);
}

export function pidsByBuildId(buildId: string): number[] {
  const out: number[] = [];
  for (const pid of allPids()) {
    try {
      if (modules(pid).some((m) => m.mappings.some((x) => x.perms.includes('x')) && openModule(pid, m).buildId() === buildId)) out.push(pid);
    } catch {
      /* gone or unreadable */
    }
  }
  return out;
}

/** "1234", "1234,5678" or a process name, as typed on the command line. */
/** The largest pid Linux can hand out (PID_MAX_LIMIT on 64-bit). */
const PID_MAX = 4194304;

/** A process id written as a number; anything else is a usage error naming it. */
export function parsePid(text: string): number {
  if (!/^[1-9]\d*$/.test(text) || Number(text) > PID_MAX) {
    throw new HotloadError('USAGE', `not a process id: ${JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}...` : text)}`, { hint: `A pid is a whole number from 1 to ${PID_MAX}; \`ps\` or \`pidof NAME\` lists them.` });
  }
  return Number(text);
}

export function resolveTargets(spec: string | number): number[] {
  const text = String(spec);
  if (/^\d+(,\d+)*$/.test(text)) return text.split(',').map(parsePid);
  const pids = pidsByName(text);
  if (pids.length === 0) throw new HotloadError('PID_NOT_FOUND', `no process named ${text}`, { hint: 'Give a pid, a comma-separated list of pids, or the name `ps` shows.' });
  return pids;
}
