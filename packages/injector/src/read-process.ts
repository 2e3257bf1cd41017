// What hotload learns about a live process without tracing it: its mappings
// (/proc/PID/maps), the modules (executable and shared libraries) they come
// from with each one's load bias, and symbol addresses inside them.
//
// A module's file is read through /proc/PID/root so a process in another mount
// namespace (a container) is read from its own view. The load bias is the
// start of the mapping at file offset 0 minus the ELF's lowest PT_LOAD page:
// 0 for a non-PIE executable, the load address for a PIE or library.

import * as fs from 'fs';
import { HotloadError } from '@hotload/errors';
import { ptraceDenied } from './session';
import { ElfFile, ElfSymbol, PF, PT, STT, perFile } from '@hotload/elf';
import type { PatchMeta } from '@hotload/patch';
import * as path from 'path';

export interface Mapping {
  start: bigint;
  end: bigint;
  perms: string;
  offset: bigint;
  inode: number;
  path: string;
}

export interface Module {
  path: string;
  inode: number;
  bias: bigint;
  mappings: Mapping[];
}

/** An address as hotload prints it. */
export function hex(n: bigint): string {
  return '0x' + n.toString(16);
}

/** The process exists and has not exited (a zombie, not yet reaped by its parent, has). */
export function processExists(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export function requireProcess(pid: number): void {
  if (!processExists(pid)) throw new HotloadError('PID_NOT_FOUND', `no process with pid ${pid}`);
}

/**
 * The process exists and is not stopped by a signal (Ctrl-Z): changing its
 * code needs one of its threads to run, which would continue it. A zombie has
 * exited.
 */
/** The process exists and has not exited (a zombie has no memory to read); returns its state letter. */
export function requireAlive(pid: number): string {
  if (!Number.isInteger(pid) || pid <= 0) throw new HotloadError('PID_NOT_FOUND', `no process with pid ${pid}`);
  let state = '';
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    throw new HotloadError('PID_NOT_FOUND', `no process with pid ${pid}`);
  }
  if (state === 'Z' || state === 'X') throw new HotloadError('PID_NOT_FOUND', `process ${pid} has exited (a zombie its parent has not reaped)`);
  return state;
}

/** The process exists, has not exited, and is not stopped (hotload would have to let it run). */
export function requireRunning(pid: number): void {
  const state = requireAlive(pid);
  if (state === 'T') throw new HotloadError('PROCESS_STOPPED', `process ${pid} is stopped (state T)`);
}

export function readMaps(pid: number): Mapping[] {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') throw new HotloadError('PID_NOT_FOUND', `no process with pid ${pid}`);
    if (code === 'EACCES' || code === 'EPERM') throw ptraceDenied(pid); // its maps are as closed to us as its memory
    throw new HotloadError('PTRACE_DENIED', `cannot read /proc/${pid}/maps: ${(e as Error).message}`);
  }
  // The kernel names mapped files from the reader's root: for a process in a
  // chroot, /srv/jail/lib/... where the process itself says /lib/... . Paths
  // are given as the process sees them (what it opens, what /proc/PID/root
  // leads to); a file from outside its root keeps its full name.
  let root = '/';
  try {
    root = fs.readlinkSync(`/proc/${pid}/root`);
  } catch {
    root = '/';
  }
  const strip = root !== '/' && root.startsWith('/') ? root : '';
  const out: Mapping[] = [];
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) \S+ (\d+)\s*(.*)$/.exec(line);
    if (!m) continue;
    const p = strip && m[6].startsWith(strip + '/') ? m[6].slice(strip.length) : m[6];
    out.push({ start: BigInt('0x' + m[1]), end: BigInt('0x' + m[2]), perms: m[3], offset: BigInt('0x' + m[4]), inode: Number(m[5]), path: p });
  }
  return out;
}

/** File-backed modules of the process, in map order. */
export function modules(pid: number, maps = readMaps(pid)): Module[] {
  const byPath = new Map<string, Module>();
  for (const m of maps) {
    if (!m.path.startsWith('/') || m.inode === 0) continue;
    // A file deleted or replaced (a rebuild) since it was mapped: still the module it was.
    const p = m.path.replace(/ \(deleted\)$/, '');
    let mod = byPath.get(p);
    if (!mod) {
      mod = { path: p, inode: m.inode, bias: 0n, mappings: [] };
      byPath.set(p, mod);
    }
    mod.mappings.push(m);
  }
  return [...byPath.values()];
}

// Parsed module files, shared across processes: a rollout to 100 processes of
// one build reads the executable and libc once. Keyed by identity and change
// time, so a rebuilt file is read again.
const moduleCache = new Map<string, ElfFile>();

/** Open a module's ELF file as the process sees it. */
export function openModule(pid: number, mod: Module): ElfFile {
  const file = moduleFile(pid, mod);
  let key = '';
  try {
    const st = fs.statSync(file);
    key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch {
    return ElfFile.open(file); // reports the error
  }
  let elf = moduleCache.get(key);
  if (!elf) {
    elf = ElfFile.open(file);
    if (moduleCache.size >= 64) moduleCache.delete(moduleCache.keys().next().value as string);
    moduleCache.set(key, elf);
  }
  return elf;
}

/**
 * The file a module was mapped from. Usually its path (through the process's
 * root); but when a rebuild has replaced or deleted that file since, the
 * mapped file itself: /proc/PID/map_files (needs privileges), or for the
 * executable /proc/PID/exe.
 */
function moduleFile(pid: number, mod: Module): string {
  const viaRoot = `/proc/${pid}/root${mod.path}`;
  const inode = (f: string) => {
    try {
      return fs.statSync(f).ino;
    } catch {
      return -1;
    }
  };
  if (inode(viaRoot) === mod.inode) return viaRoot;
  const m = mod.mappings[0];
  const mapped = `/proc/${pid}/map_files/${m.start.toString(16)}-${m.end.toString(16)}`;
  if (inode(mapped) === mod.inode) return mapped;
  if (inode(`/proc/${pid}/exe`) === mod.inode) return `/proc/${pid}/exe`;
  return fs.existsSync(viaRoot) ? viaRoot : mod.path;
}

/** Compute the load bias of a module from its ELF program headers. */
export function setBias(mod: Module, elf: ElfFile): Module {
  const first = mod.mappings.find((m) => m.offset === 0n) ?? mod.mappings[0];
  mod.bias = first.start - BigInt(elf.loadBase);
  return mod;
}

/** The C library's module (glibc libc.so.6 or musl's libc). */
export function findLibc(mods: Module[]): Module | undefined {
  return mods.find((m) => /\/libc\.so\.6$|\/libc-[\d.]+\.so$|\/ld-musl-[^/]+\.so\.1$|\/libc\.musl-[^/]+\.so\.1$/.test(m.path));
}

/** The dynamic loader's module. */
export function findLoader(mods: Module[]): Module | undefined {
  return mods.find((m) => /\/ld-linux-x86-64\.so\.2$|\/ld-[\d.]+\.so$/.test(m.path));
}

/** Address of an exported function of a module, preferring its default version. */
export function dynamicSymbol(elf: ElfFile, name: string, preferVersion?: RegExp): ElfSymbol | undefined {
  const c = exportsOf(elf).get(name) ?? [];
  if (preferVersion) {
    const v = c.find((s) => s.version && preferVersion.test(s.version));
    if (v) return v;
  }
  return c[0];
}

/** A module's defined functions and data in .dynsym by name, in table order: built once per file (attach looks up dozens per patch, libc has 3,000). */
const exportsOf = perFile((elf) => {
  const m = new Map<string, ElfSymbol[]>();
  for (const s of elf.symbols('.dynsym')) {
    if (s.shndx === 0 || (s.type !== STT.FUNC && s.type !== STT.GNU_IFUNC && s.type !== STT.OBJECT)) continue;
    const l = m.get(s.name);
    if (l) l.push(s);
    else m.set(s.name, [s]);
  }
  return m;
});

/**
 * Dead bytes in executable memory where hotload can leave its call stub: the
 * end of the last page of an executable segment, past the segment's memsz. The
 * page is mapped r-x from the file, but nothing in the module lies there.
 */
export function stubSite(mod: Module, elf: ElfFile, size: number): bigint | undefined {
  for (const p of elf.programs) {
    if (p.type !== PT.LOAD || !(p.flags & PF.X)) continue;
    const segEnd = mod.bias + BigInt(p.vaddr + p.memsz);
    const map = mod.mappings.find((m) => m.perms.includes('x') && segEnd > m.start && segEnd <= m.end);
    if (!map) continue;
    const slot = (map.end - BigInt(size)) & ~15n;
    if (slot >= segEnd) return slot;
  }
  return undefined;
}

/** The module of the process the patch was built for, matched by build-id. */
export function findTargetModule(pid: number, mods: Module[], meta: PatchMeta): { mod: Module; elf: ElfFile } {
  const byName = mods.filter((m) => path.basename(m.path) === meta.target.module);
  const seen: string[] = [];
  for (const m of [...byName, ...mods.filter((x) => !byName.includes(x))]) {
    let elf: ElfFile;
    try {
      elf = openModule(pid, m);
    } catch {
      continue;
    }
    const id = elf.buildId();
    if (id === meta.target.buildId) return { mod: setBias(m, elf), elf };
    if (byName.includes(m)) seen.push(`${m.path} has build-id ${id ?? '(none)'}`);
  }
  if (seen.length) {
    throw new HotloadError('PATCH_BUILD_MISMATCH', `${meta.file} was built for ${meta.target.module} with build-id ${meta.target.buildId}, but process ${pid} runs another build`, { details: seen });
  }
  const padded = mods.some((m) => {
    try {
      return openModule(pid, m).section('__patchable_function_entries') !== undefined;
    } catch {
      return false;
    }
  });
  if (!padded) {
    throw new HotloadError('PROCESS_NO_PADS', `process ${pid} (${mods[0]?.path ?? '?'}) has no module built with -fpatchable-function-entry, so nothing in it can be patched`);
  }
  throw new HotloadError('PATCH_TARGET_NOT_MAPPED', `${meta.file} is for ${meta.target.module} (build-id ${meta.target.buildId}), which process ${pid} has not loaded`);
}
