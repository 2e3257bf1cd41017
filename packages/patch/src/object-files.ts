// The object files of a build directory, and whether two files are the same
// bytes: both asked on every watch save, so both remember what they read
// while the files and directories stay as they were.

import * as fs from 'fs';
import * as path from 'path';
import { HotloadError } from '@hotload/errors';

/**
 * Object files of a build: a file, or every .o under a directory (by relative
 * path). A directory read before is read again only when its times changed
 * (an entry added, removed or renamed changes them): watch asks several times
 * per save, and a source tree such as memcached's has 500 entries in 33
 * directories, of which a save changes one or two.
 */
export function objectFiles(build: string): Map<string, string> {
  if (!fs.existsSync(build)) throw new HotloadError('FILE_NOT_FOUND', `${build}: no such file or directory`);
  const out = new Map<string, string>();
  if (!fs.statSync(build).isDirectory()) {
    out.set(path.basename(build), build);
    return out;
  }
  const walk = (dir: string) => {
    for (const [name, isDir] of listing(dir).entries) {
      const p = path.join(dir, name);
      if (isDir) walk(p);
      else out.set(path.relative(build, p), p);
    }
  };
  walk(build);
  if (out.size === 0) throw new HotloadError('FILE_NOT_FOUND', `${build}: no object files (.o) in it`, { hint: 'Give the build directories that hold the objects (keep them: see `hotload flags --diff`).' });
  return out;
}

/** A directory's subdirectories and object files (in the order it lists them), read again when its times change. */
function listing(dir: string): Listing {
  const st = fs.statSync(dir, { bigint: true });
  const stamp = `${st.dev}:${st.ino}:${st.mtimeNs}:${st.ctimeNs}`;
  const known = listings.get(dir);
  if (known && known.stamp === stamp) return known;
  // Changed within the last second: the file system's clock ticks coarsely
  // (milliseconds), so a change later in the same tick would leave these
  // times as they are. Such a directory is read again next time.
  const racy = Date.now() - Number((st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs) / 1000000n) < 1000;
  const l: Listing = { stamp: racy ? '' : stamp, entries: [] };
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) l.entries.push([e.name, true]);
    else if (e.isFile() && e.name.endsWith('.o')) l.entries.push([e.name, false]);
  }
  if (listings.size > 10000) listings.clear();
  listings.set(dir, l);
  return l;
}
type Listing = { stamp: string; entries: [name: string, isDir: boolean][] };
const listings = new Map<string, Listing>();

/** Same size and bytes. */
export function sameFile(a: string, b: string): boolean {
  try {
    const sa = fs.statSync(a, { bigint: true });
    const sb = fs.statSync(b, { bigint: true });
    if (sa.size !== sb.size) return false;
    if (sa.dev === sb.dev && sa.ino === sb.ino) return true; // one file (a hard link)
    // The same two files, neither changed since they were compared (watch asks on every save).
    const key = [a, b, ...[sa, sb].flatMap((x) => [x.dev, x.ino, x.mtimeNs, x.ctimeNs])].join('\0');
    let same = sameFiles.get(key);
    if (same === undefined) {
      same = fs.readFileSync(a).equals(fs.readFileSync(b));
      if (sameFiles.size > 4096) sameFiles.clear();
      sameFiles.set(key, same);
    }
    return same;
  } catch {
    return false;
  }
}
const sameFiles = new Map<string, boolean>();
