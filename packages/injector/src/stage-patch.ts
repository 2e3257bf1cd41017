// Make the process load exactly the bytes hotload checked.
//
// The patch is read once, from one open file descriptor, after checking who
// could have written it (refused when group- or world-writable, or in a
// directory others may write that is not sticky, unless told otherwise). Those
// bytes are then written to a private copy, named by their SHA-256, in a
// directory only this user can write (hotload-UID, mode 0711; the copy is 0444
// so a target running as another user can still open it). The process
// dlopen()s the copy, so replacing the original file after the check changes
// nothing. The copy's path also identifies the patch in /proc/PID/maps.
//
// The directory is in the process's own view of the file system: /tmp (or
// /dev/shm, /var/tmp) as the process sees it, written through
// /proc/PID/root. So a process in its own mount namespace with a private /tmp
// (systemd's PrivateTmp, a container), or in a chroot, opens the copy by the
// path hotload gives it; and every hotload, whatever its TMPDIR or user,
// finds the copy from the process's maps.

import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { HotloadError } from '@hotload/errors';
import { ptraceDenied } from './session';
import * as native from './native';
import { sleepMs } from './call-in-target';

export interface StagedPatch {
  /** The file the user named. */
  source: string;
  /** The private copy the process loads, as the process names it. */
  staged: string;
  /** The same file as hotload reaches it (through /proc/PID/root). */
  file: string;
  sha256: string;
  bytes: Buffer;
}

function othersMayWrite(st: fs.Stats): boolean {
  return (st.mode & 0o022) !== 0;
}

/** Read a patch file, refusing one that another user could have written. */
export function readPatchFile(file: string, allowUnsafe = false): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new HotloadError('FILE_NOT_FOUND', `${file}: no such file`);
    if (code === 'ELOOP') throw new HotloadError('PATCH_UNSAFE_FILE', `${file}: is a symbolic link; name the file itself`);
    throw new HotloadError('FILE_UNREADABLE', `${file}: ${(e as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new HotloadError('PATCH_BAD', `${file}: not a regular file`);
    if (!allowUnsafe) {
      const uid = process.getuid?.() ?? 0;
      const problems: string[] = [];
      if (st.uid !== uid && st.uid !== 0) problems.push(`${file} is owned by uid ${st.uid}, not by you (uid ${uid}) or root`);
      if (othersMayWrite(st)) problems.push(`${file} is writable by group or others (mode ${(st.mode & 0o777).toString(8)})`);
      const dir = path.dirname(path.resolve(file));
      const dst = fs.statSync(dir);
      const sticky = (dst.mode & 0o1000) !== 0;
      if (othersMayWrite(dst) && !(sticky && st.uid === uid)) problems.push(`${dir} is writable by group or others (mode ${(dst.mode & 0o7777).toString(8)})`);
      if (problems.length) throw new HotloadError('PATCH_UNSAFE_FILE', `refusing ${file}: another user could change it`, { details: problems });
    }
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Where, in a process's view of the file system, staged copies may go, in order. */
const STAGE_ROOTS = ['/tmp', '/dev/shm', '/var/tmp'];

/** The directory of staged copies in hotload's own file system view, created and checked (for cleaning). */
export function stageDir(): string {
  return checkedDir(path.join('/tmp', `hotload-${process.getuid?.() ?? 0}`));
}

/**
 * The directory of staged copies in process `pid`'s view: its path there, and
 * the same directory as hotload reaches it. The first of /tmp, /dev/shm,
 * /var/tmp that exists in the process's root and takes the directory.
 */
export function stageDirFor(pid: number): { inner: string; outer: string } {
  const uid = process.getuid?.() ?? 0;
  const root = `/proc/${pid}/root`;
  try {
    fs.statSync(root);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new HotloadError('PID_NOT_FOUND', `no process with pid ${pid}`);
    if (code === 'EACCES' || code === 'EPERM') throw ptraceDenied(pid); // its files are as closed to us as its memory
    throw e;
  }
  const tried: string[] = [];
  for (const base of STAGE_ROOTS) {
    const inner = path.join(base, `hotload-${uid}`);
    const outer = root + inner;
    try {
      if (!fs.statSync(root + base).isDirectory()) continue;
      checkedDir(outer);
      return { inner, outer };
    } catch (e) {
      if (e instanceof HotloadError) throw e;
      // Refused or not there because the process exited meanwhile: say that.
      const code = (e as NodeJS.ErrnoException).code ?? '';
      if (['EACCES', 'EPERM', 'ENOENT'].includes(code) && !fs.existsSync(`/proc/${pid}`)) throw new HotloadError('PID_NOT_FOUND', `no process with pid ${pid}`);
      tried.push(`${base}: ${(e as Error).message}`);
    }
  }
  // Not a dlopen failure: nothing was tried in the process.
  throw new HotloadError('PATCH_NO_STAGING', `process ${pid} has no directory hotload can put the patch in, in its view of the file system (${root}): none of ${STAGE_ROOTS.join(', ')} is there to take it`, {
    details: tried,
  });
}

/** Create (mode 0711) and check a directory of staged copies: ours, closed to others. */
function checkedDir(dir: string): string {
  const uid = process.getuid?.() ?? 0;
  try {
    fs.mkdirSync(dir, { mode: 0o711 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  const st = fs.lstatSync(dir);
  if (!st.isDirectory() || st.uid !== uid || othersMayWrite(st)) {
    throw new HotloadError('PATCH_UNSAFE_FILE', `${dir} is not a directory owned by you and closed to others`, {
      hint: `Remove ${dir} (another user may have created it) and retry.`,
    });
  }
  fs.chmodSync(dir, 0o711);
  return dir;
}

/** Staged copies are cleaned once the directory holds more than this many. */
const CLEAN_ABOVE = 32;
/** A copy younger than this may be about to be loaded by another hotload: kept. */
const KEEP_YOUNG_MS = 10 * 60 * 1000;

/**
 * Remove staged copies no process maps any more (looking at every process's
 * /proc/PID/maps that can be read), older than a few minutes. Runs at most
 * once per hotload run, and only when the directory has grown (`hotload
 * watch` stages a copy per save) and holds old copies, so an attach or a
 * rollout stays fast. Returns how many were removed.
 */
let cleanedOnce = false;

export function cleanStaged(dir = stageDir(), force = false): number {
  // Once per hotload run: a rollout stages for many processes in one run.
  if (cleanedOnce && !force) return 0;
  cleanedOnce = true;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return 0;
  }
  if (!force && names.length <= CLEAN_ABOVE) return 0;
  // Never while another hotload stages a copy it has not had mapped yet (a
  // copy it reuses is touched fresh, but that may land between this run's
  // look at its age and its unlink): staging holds a shared lock on the
  // directory until the process has mapped the copy.
  let lock: number | undefined;
  try {
    lock = native.lockDir(dir, true);
  } catch {
    return 0;
  }
  if (lock === undefined) return 0;
  try {
    return removeOld(dir, names);
  } finally {
    native.unlockProcess(lock);
  }
}

function removeOld(dir: string, names: string[]): number {
  const now = Date.now();
  const old = names.filter((n) => {
    try {
      return now - fs.statSync(path.join(dir, n)).mtimeMs >= KEEP_YOUNG_MS;
    } catch {
      return false;
    }
  });
  if (old.length === 0) return 0;
  const mapped = new Set<string>();
  for (const pid of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    let maps: string;
    try {
      maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
    } catch {
      continue;
    }
    for (const line of maps.split('\n')) {
      const at = line.indexOf(dir + '/');
      if (at >= 0) mapped.add(line.slice(at).replace(/ \(deleted\)$/, ''));
    }
  }
  let removed = 0;
  for (const n of old) {
    const p = path.join(dir, n);
    if (mapped.has(p)) continue;
    try {
      fs.unlinkSync(p);
      removed++;
    } catch {
      /* gone already, or not ours to remove */
    }
  }
  return removed;
}

/**
 * The shared lock on the staging directory that keeps other hotloads' cleaning
 * away from a copy staged here and not yet mapped; held from stagePatch until
 * releaseStaging (attach's end). A cleaner holds it exclusively for tens of
 * ms at most: waited for up to 2 s, then staging goes on without it.
 */
let stagingLock: number | undefined;
function holdStaging(dir: string): void {
  if (stagingLock !== undefined) return;
  const until = Date.now() + 2000;
  for (;;) {
    try {
      stagingLock = native.lockDir(dir, false);
    } catch {
      return; // no directory to lock (staged elsewhere): nothing there to clean either
    }
    if (stagingLock !== undefined || Date.now() > until) return;
    sleepMs(5);
  }
}

/** The staged copies are mapped (or given up): other hotloads may clean again. */
export function releaseStaging(): void {
  if (stagingLock === undefined) return;
  const fd = stagingLock;
  stagingLock = undefined;
  native.unlockProcess(fd);
}

/** Stage `bytes` for process `pid`: a copy it can open by the returned `staged` path. */
export function stagePatch(pid: number, source: string, bytes: Buffer): StagedPatch {
  const sha256 = crypto.createHash('sha256').update(bytes).digest('hex');
  const base = path.basename(source).replace(/[^A-Za-z0-9._-]/g, '_');
  const { inner, outer } = stageDirFor(pid);
  try {
    cleanStaged(stageDir());
  } catch {
    /* cleaning hotload's own directory is a courtesy; it never stops an attach */
  }
  holdStaging(stageDir());
  const name = `${sha256.slice(0, 16)}-${base}`;
  const staged = path.join(outer, name);
  let same = false;
  try {
    same = fs.readFileSync(staged).equals(bytes);
  } catch {
    same = false;
  }
  if (same) {
    // Fresh again, so a cleaning run elsewhere does not take it before the process maps it.
    const now = new Date();
    fs.utimesSync(staged, now, now);
  } else {
    const tmp = `${staged}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, bytes, { mode: 0o444, flag: 'wx' });
    fs.renameSync(tmp, staged);
  }
  return { source, staged: path.join(inner, name), file: staged, sha256, bytes };
}

/** Is `p` (a path in a process's maps) one of hotload's staged copies, staged by any user? */
export function isStaged(p: string): boolean {
  return /\/hotload-\d+\/[0-9a-f]{16}-[^/]+$/.test(p);
}

/** A staged copy mapped by process `pid`, as hotload reaches it. */
export function stagedFile(pid: number, staged: string): string {
  return `/proc/${pid}/root${staged}`;
}
